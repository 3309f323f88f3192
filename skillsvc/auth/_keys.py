"""Verification keys, which algorithm each admits, and the key set that rotates.

The algorithm a token may use follows from the key that verifies it, never from the
token's header alone: an HS256 secret admits only HS256, an RSA public key only RS256,
a P-256 public key only ES256. That is what defeats ``alg: none`` and the classic
confusion of verifying an HS256 signature with a public key as the HMAC secret.

A :class:`KeySet` holds every key that may verify a token at once (SPEC §7, rotation
without downtime): the HS256 secrets of ``SKILLSVC_JWT_SECRET`` and
``SKILLSVC_JWT_SECRETS_FILE`` and the public key of ``SKILLSVC_JWT_PUBLIC_KEY_FILE``
(unnamed keys), and the keys of ``SKILLSVC_JWT_JWKS_FILE`` (named by ``kid``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from skillsvc.config import MIN_SECRET_BYTES

__all__ = [
    "ALGORITHMS",
    "ES256",
    "HS256",
    "MIN_RSA_BITS",
    "MIN_SECRET_BYTES",
    "RS256",
    "KeySet",
    "PublicKey",
    "VerificationKey",
    "check_secret",
    "key_algorithm",
    "load_public_key",
    "parse_jwks",
    "parse_secrets",
    "unnamed_keys",
]

PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

MIN_RSA_BITS: Final = 2048
"""Smaller RSA keys are refused (and PyJWT would warn about them)."""

HS256: Final = ("HS256",)
RS256: Final = ("RS256",)
ES256: Final = ("ES256",)
ALGORITHMS: Final = (*HS256, *RS256, *ES256)
"""Every algorithm some key may admit."""


@dataclass(frozen=True)
class VerificationKey:
    """One key and the one algorithm it verifies."""

    key: bytes | PublicKey
    """An HS256 secret, or an RSA/EC public key."""
    algorithm: str
    """``HS256``, ``RS256`` or ``ES256``."""
    kid: str | None = None
    """The JWKS ``kid``; None for keys from the secret and public-key settings."""

    def __repr__(self) -> str:
        # Never show a secret in logs or tracebacks.
        return f"VerificationKey(algorithm={self.algorithm!r}, kid={self.kid!r})"


@dataclass(frozen=True)
class KeySet:
    """Every key that currently verifies tokens."""

    unnamed: tuple[VerificationKey, ...] = ()
    """Keys tried in turn for a token whose ``kid`` names no JWKS key."""
    named: tuple[VerificationKey, ...] = ()
    """JWKS keys, chosen by the token's ``kid``."""

    def candidates(self, algorithm: Any, kid: Any) -> list[VerificationKey]:
        """The keys that may verify a token with these ``alg`` and ``kid`` headers."""
        if isinstance(kid, str):
            for key in self.named:
                if key.kid == kid:
                    return [key] if key.algorithm == algorithm else []
        return [key for key in self.unnamed if key.algorithm == algorithm]

    def describe(self) -> str:
        """What the set holds, for a log line (no key material)."""
        kinds: dict[str, int] = {}
        for key in self.unnamed:
            kinds[key.algorithm] = kinds.get(key.algorithm, 0) + 1
        parts = [f"{n} {alg} key(s)" for alg, n in sorted(kinds.items())]
        if self.named:
            parts.append("JWKS kids " + ", ".join(str(k.kid) for k in self.named))
        return "; ".join(parts) or "no keys"


def load_public_key(pem: bytes) -> tuple[PublicKey, tuple[str, ...]]:
    """The PEM public key and the one algorithm it verifies; ValueError if unusable."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM public key ({exc})") from None
    return key_algorithm(key)


def key_algorithm(key: Any) -> tuple[PublicKey, tuple[str, ...]]:
    """The public key and its one algorithm; ValueError for a kind or size we refuse."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA keys need at least {MIN_RSA_BITS} bits, got {key.key_size}")
        return key, RS256
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name != ec.SECP256R1.name:
            raise ValueError(f"ES256 needs a P-256 (secp256r1) key, got {key.curve.name}")
        return key, ES256
    raise ValueError("must be an RSA (RS256) or P-256 EC (ES256) public key")


def check_secret(secret: str | bytes) -> bytes:
    """The HS256 secret as bytes; ValueError if it is too short to be safe."""
    raw = secret.encode() if isinstance(secret, str) else secret
    if len(raw) < MIN_SECRET_BYTES:
        raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes long, got {len(raw)}")
    return raw


def parse_secrets(text: str) -> list[bytes]:
    """The secrets of a secrets file: one per line, blank lines and ``#`` comments skipped.

    ValueError names the line (never the secret) of one that is too short.
    """
    secrets = []
    for number, line in enumerate(text.splitlines(), start=1):
        value = line.strip()
        if not value or value.startswith("#"):
            continue
        try:
            secrets.append(check_secret(value))
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
    if not secrets:
        raise ValueError("holds no secret")
    return secrets


def parse_jwks(text: str) -> list[VerificationKey]:
    """The keys of a JWKS document; ValueError naming the key at fault.

    Every key needs a unique ``kid``; a ``use`` other than ``sig`` and an ``alg`` other
    than the one its key type admits are refused rather than ignored, so a typo cannot
    silently drop a key an identity provider is already signing with.
    """
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('not a JWKS document: expected {"keys": [...]}')  # noqa: TRY004
    keys: list[VerificationKey] = []
    for index, jwk in enumerate(document["keys"]):
        keys.append(_jwk_key(index, jwk))
    kids = [k.kid for k in keys]
    duplicates = sorted({str(k) for k in kids if kids.count(k) > 1})
    if duplicates:
        raise ValueError(f"kid {', '.join(duplicates)} appears more than once")
    if not keys:
        raise ValueError("holds no key")
    return keys


def _jwk_key(index: int, jwk: Any) -> VerificationKey:
    where = f"key {index}"
    if not isinstance(jwk, dict):
        raise ValueError(f"{where}: not a JSON object")  # noqa: TRY004
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ValueError(f"{where}: needs a kid")
    where = f"key {kid!r}"
    if jwk.get("use", "sig") != "sig":
        raise ValueError(f"{where}: use must be sig")
    if jwk.get("kty") not in {"RSA", "EC", "oct"}:
        raise ValueError(f"{where}: kty must be RSA, EC or oct")
    try:
        parsed = jwt.PyJWK(jwk)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    key: bytes | PublicKey
    algorithms: tuple[str, ...]
    try:
        if jwk["kty"] == "oct":
            key, algorithms = check_secret(parsed.key), HS256
        else:
            if isinstance(parsed.key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                raise ValueError("holds a private key; publish only the public part")
            key, algorithms = key_algorithm(parsed.key)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if jwk.get("alg", algorithms[0]) != algorithms[0]:
        raise ValueError(f"{where}: alg {jwk.get('alg')!r} does not fit the key ({algorithms[0]})")
    return VerificationKey(key=key, algorithm=algorithms[0], kid=kid)


def unnamed_keys(
    secrets: Iterable[bytes], public_key: tuple[PublicKey, tuple[str, ...]] | None
) -> tuple[VerificationKey, ...]:
    """The keys without a ``kid``: HS256 secrets first, then the public key."""
    keys = [VerificationKey(key=s, algorithm=HS256[0]) for s in dict.fromkeys(secrets)]
    if public_key is not None:
        keys.append(VerificationKey(key=public_key[0], algorithm=public_key[1][0]))
    return tuple(keys)
