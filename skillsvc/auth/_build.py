"""Building the authenticator from the settings, refusing unsafe combinations."""

from __future__ import annotations

from skillsvc.auth._keys import HS256, PublicKey, check_secret, load_public_key
from skillsvc.auth._tokens import Authenticator, JwtAuthentication, NoAuthentication
from skillsvc.config import ConfigError, Settings, is_loopback_address

AUTH_MODES = ("none", "jwt")


def build_authenticator(settings: Settings) -> Authenticator:
    """The authenticator ``settings`` describe; ConfigError naming the variable if unusable.

    ``SKILLSVC_AUTH=none`` makes every caller an admin, so it is refused unless the
    service listens on loopback only, TLS or not: a certificate says who the server
    is, not who may call it.
    """
    if settings.auth not in AUTH_MODES:
        raise ConfigError(f"SKILLSVC_AUTH: must be none or jwt, got {settings.auth!r}")
    if settings.auth == "none":
        if not is_loopback_address(settings.listen_addr):
            raise ConfigError(
                "SKILLSVC_AUTH: none (every caller is an admin) is only allowed when "
                f"SKILLSVC_LISTEN_ADDR is a loopback address, not {settings.listen_addr!r}; "
                "set SKILLSVC_AUTH=jwt with SKILLSVC_JWT_SECRET or "
                "SKILLSVC_JWT_PUBLIC_KEY_FILE, or listen on 127.0.0.1"
            )
        return NoAuthentication()

    def verifying_with(key: bytes | PublicKey, algorithms: tuple[str, ...]) -> Authenticator:
        return JwtAuthentication(
            key,
            algorithms,
            issuer=settings.jwt_issuer or None,
            audience=settings.jwt_audience or None,
            leeway_seconds=settings.jwt_leeway_seconds,
        )

    if settings.jwt_secret and settings.jwt_public_key_file:
        raise ConfigError(
            "SKILLSVC_JWT_SECRET: set either it (HS256) or SKILLSVC_JWT_PUBLIC_KEY_FILE "
            "(RS256/ES256), not both"
        )
    if settings.jwt_secret:
        try:
            secret = check_secret(settings.jwt_secret)
        except ValueError as exc:
            raise ConfigError(f"SKILLSVC_JWT_SECRET: {exc}") from None
        return verifying_with(secret, HS256)
    if settings.jwt_public_key_file:
        path = settings.jwt_public_key_file
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"SKILLSVC_JWT_PUBLIC_KEY_FILE: cannot read {str(path)!r}: {exc.strerror}"
            ) from None
        try:
            key, algorithms = load_public_key(pem)
        except ValueError as exc:
            raise ConfigError(f"SKILLSVC_JWT_PUBLIC_KEY_FILE: {exc}") from None
        return verifying_with(key, algorithms)
    raise ConfigError(
        "SKILLSVC_AUTH: jwt needs SKILLSVC_JWT_SECRET (HS256) or "
        "SKILLSVC_JWT_PUBLIC_KEY_FILE (RS256/ES256)"
    )
