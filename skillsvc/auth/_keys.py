"""Verification keys for RS256/ES256 tokens, and which algorithms each key admits.

The algorithm a token may use follows from the configured key, never from the
token's header: an HS256 secret admits only HS256, an RSA public key only RS256, a
P-256 public key only ES256. That is what defeats ``alg: none`` and the classic
confusion of verifying an HS256 signature with a public key as the HMAC secret.
"""

from __future__ import annotations

from typing import Final, TypeAlias

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

MIN_RSA_BITS: Final = 2048
"""Smaller RSA keys are refused (and PyJWT would warn about them)."""
MIN_SECRET_BYTES: Final = 32
"""An HS256 secret must be at least as long as the SHA-256 output."""

HS256: Final = ("HS256",)
RS256: Final = ("RS256",)
ES256: Final = ("ES256",)


def load_public_key(pem: bytes) -> tuple[PublicKey, tuple[str, ...]]:
    """The PEM public key and the one algorithm it verifies; ValueError if unusable."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM public key ({exc})") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA keys need at least {MIN_RSA_BITS} bits, got {key.key_size}")
        return key, RS256
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name != ec.SECP256R1.name:
            raise ValueError(f"ES256 needs a P-256 (secp256r1) key, got {key.curve.name}")
        return key, ES256
    raise ValueError("must be an RSA (RS256) or P-256 EC (ES256) public key")


def check_secret(secret: str) -> bytes:
    """The HS256 secret as bytes; ValueError if it is too short to be safe."""
    raw = secret.encode()
    if len(raw) < MIN_SECRET_BYTES:
        raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes long, got {len(raw)}")
    return raw
