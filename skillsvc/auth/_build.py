"""Building the authenticator from the settings, and re-reading its keys on SIGHUP.

:class:`~skillsvc.config.Settings` has already checked the values (the mode, the
loopback rule, that some key is configured); here the key files are read, each
failure a ConfigError naming its variable.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from skillsvc.auth._keys import (
    KeySet,
    PublicKey,
    VerificationKey,
    check_secret,
    load_public_key,
    parse_jwks,
    parse_secrets,
    unnamed_keys,
)
from skillsvc.auth._tokens import Authenticator, JwtAuthentication, NoAuthentication
from skillsvc.config import AUTH_MODES, ConfigError, Settings

__all__ = ["AUTH_MODES", "build_authenticator", "load_key_set"]

_T = TypeVar("_T")


def _from_file(variable: str, path: Path, parse: Callable[[bytes], _T]) -> _T:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {str(path)!r}: {exc.strerror}") from None
    try:
        return parse(data)
    except ValueError as exc:
        raise ConfigError(f"{variable}: {exc}") from None


def load_key_set(settings: Settings) -> KeySet:
    """Every verification key the settings name, files read now; ConfigError if unusable."""
    secrets: list[bytes] = []
    if settings.jwt_secret:
        try:
            secrets.append(check_secret(settings.jwt_secret))
        except ValueError as exc:
            raise ConfigError(f"SKILLSVC_JWT_SECRET: {exc}") from None
    if settings.jwt_secrets_file:
        secrets += _from_file(
            "SKILLSVC_JWT_SECRETS_FILE",
            settings.jwt_secrets_file,
            lambda data: parse_secrets(data.decode("utf-8", "replace")),
        )
    public_key: tuple[PublicKey, tuple[str, ...]] | None = None
    if settings.jwt_public_key_file:
        public_key = _from_file(
            "SKILLSVC_JWT_PUBLIC_KEY_FILE", settings.jwt_public_key_file, load_public_key
        )
    named: tuple[VerificationKey, ...] = ()
    if settings.jwt_jwks_file:
        named = tuple(
            _from_file(
                "SKILLSVC_JWT_JWKS_FILE",
                settings.jwt_jwks_file,
                lambda data: parse_jwks(data.decode("utf-8", "replace")),
            )
        )
    keys = KeySet(unnamed=unnamed_keys(secrets, public_key), named=named)
    if not keys.unnamed and not keys.named:
        raise ConfigError(
            "SKILLSVC_AUTH: jwt needs SKILLSVC_JWT_SECRET or SKILLSVC_JWT_SECRETS_FILE "
            "(HS256), SKILLSVC_JWT_PUBLIC_KEY_FILE (RS256/ES256) or SKILLSVC_JWT_JWKS_FILE"
        )
    return keys


def build_authenticator(settings: Settings) -> Authenticator:
    """The authenticator ``settings`` describe; ConfigError naming the variable if unusable.

    ``SKILLSVC_AUTH=none`` makes every caller an admin; ``Settings`` already refuses it
    unless the service listens on loopback only, TLS or not.
    """
    settings.check()
    if settings.auth == "none":
        return NoAuthentication()
    return JwtAuthentication(
        load_key_set(settings),
        issuer=settings.jwt_issuer or None,
        audience=settings.jwt_audience or None,
        leeway_seconds=settings.jwt_leeway_seconds,
    )
