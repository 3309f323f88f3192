"""Bearer tokens: turn ``authorization`` metadata into a :class:`Caller`, mint tokens.

Token rules (SPEC §7):

- ``authorization: Bearer <jwt>``, exactly one such header;
- signed with one of the configured keys (a JWKS key named by the token's ``kid``,
  else each secret and the public key in turn), with the one algorithm that key
  admits (see :mod:`skillsvc.auth._keys`); ``exp`` is required, ``iat``/``nbf`` are
  checked when present, all JSON numbers (RFC 7519 NumericDate) and with a small
  leeway for clock skew; ``iss``/``aud`` must match when
  configured (and a token carrying an ``aud`` is refused when none is configured);
- claims: ``sub`` (required, non-empty string), ``tenant`` (required string, empty
  for platform callers: a missing claim is refused rather than read as "platform"),
  ``roles`` (list of strings; missing means no roles). Roles other than ``admin``,
  ``publisher`` and ``reader`` are ignored, so one token may serve several services.

Failures raise :class:`~skillsvc.errors.Unauthenticated` with a stable reason:
``TOKEN_MISSING``, ``TOKEN_EXPIRED`` or ``TOKEN_INVALID``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final, Protocol

import jwt

from skillsvc.auth._keys import HS256, KeySet, VerificationKey, check_secret
from skillsvc.auth._policy import ROLES
from skillsvc.core.definitions import MAX_TENANT
from skillsvc.core.models import ANONYMOUS_ADMIN, Caller
from skillsvc.errors import Unauthenticated

MAX_SUBJECT: Final = 256
"""Longest ``sub`` accepted (it is stored as ``requested_by``)."""

_REQUIRED: Final = ("exp", "sub", "tenant")


class Authenticator(Protocol):
    """Turns the ``authorization`` metadata values of a call into a caller."""

    def authenticate(self, authorization: Sequence[str]) -> Caller:
        """The caller, or raise Unauthenticated."""
        ...


class NoAuthentication:
    """``SKILLSVC_AUTH=none``: every caller is the platform admin (loopback only)."""

    def authenticate(self, authorization: Sequence[str]) -> Caller:
        """Always :data:`~skillsvc.core.models.ANONYMOUS_ADMIN`; tokens are not read."""
        return ANONYMOUS_ADMIN


def _invalid(message: str) -> Unauthenticated:
    return Unauthenticated(message, reason="TOKEN_INVALID")


class JwtAuthentication:
    """``SKILLSVC_AUTH=jwt``: verifies bearer tokens with a set of keys that may rotate."""

    def __init__(
        self,
        keys: KeySet,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_seconds: float = 30.0,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds

    @property
    def keys(self) -> KeySet:
        """The keys that verify tokens now."""
        return self._keys

    def replace_keys(self, keys: KeySet) -> None:
        """Verify with ``keys`` from now on (SIGHUP); calls in flight are not affected."""
        # One attribute assignment: a call sees the old set or the new one, never a mix.
        self._keys = keys

    def authenticate(self, authorization: Sequence[str]) -> Caller:
        """Verify the one ``Bearer`` token in ``authorization``."""
        if not authorization:
            raise Unauthenticated(
                "a bearer token is required: send `authorization: Bearer <token>` metadata",
                reason="TOKEN_MISSING",
            )
        if len(authorization) > 1:
            raise _invalid("send exactly one authorization header")
        scheme, _, token = authorization[0].strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _invalid("the authorization header must be `Bearer <token>`")
        return self.verify(token)

    def verify(self, token: str) -> Caller:
        """The caller a token names, or raise Unauthenticated."""
        try:
            key, signed = self._verify_signature(token)
            # The times must be JSON numbers (RFC 7519 NumericDate) before PyJWT
            # compares them, since it would read a numeric string as a number.
            check_numeric_dates(signed["payload"])
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": list(_REQUIRED), "enforce_minimum_key_length": True},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired", reason="TOKEN_EXPIRED") from None
        except jwt.PyJWTError as exc:
            raise _invalid(f"invalid token: {exc}") from None
        except (ValueError, TypeError) as exc:  # garbage PyJWT did not classify
            raise _invalid(f"invalid token: {type(exc).__name__}") from None
        caller = caller_from_claims(claims)
        return dataclasses.replace(caller, expires_at=float(claims["exp"]) + self._leeway)

    def _verify_signature(self, token: str) -> tuple[VerificationKey, dict[str, Any]]:
        """The configured key that signed the token, and PyJWS's decoded parts."""
        header = jwt.get_unverified_header(token)
        candidates = self._keys.candidates(header.get("alg"), header.get("kid"))
        if not candidates:
            raise _invalid(
                "invalid token: no configured key verifies its alg/kid "
                f"({str(header.get('alg'))[:20]!r}, kid {str(header.get('kid'))[:64]!r})"
            )
        for key in candidates[:-1]:
            try:
                return key, jwt.api_jws.decode_complete(token, key.key, algorithms=[key.algorithm])
            except (jwt.InvalidSignatureError, jwt.InvalidKeyError):
                # Another key of the rotation may have signed it (an unusable one, such
                # as an SSH public key pasted into the secrets file, does not stop the
                # others from being tried).
                continue
        last = candidates[-1]
        return last, jwt.api_jws.decode_complete(token, last.key, algorithms=[last.algorithm])


_NUMERIC_DATES: Final = ("exp", "nbf", "iat")


def check_numeric_dates(payload: bytes) -> None:
    """Refuse ``exp``/``nbf``/``iat`` that are not JSON numbers (RFC 7519 §2 NumericDate).

    ``"exp": "1700000000"``, ``true``, ``null``, ``NaN`` or ``Infinity`` are
    TOKEN_INVALID, whatever value they spell: a token means exactly what it says.
    """
    claims = json.loads(payload)
    if not isinstance(claims, dict):
        raise jwt.DecodeError("the payload must be a JSON object")
    for name in _NUMERIC_DATES:
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise jwt.InvalidTokenError(
                f"the {name} claim must be a JSON number (NumericDate), got {type(value).__name__}"
            )
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer beyond any float, e.g. 10**400
            finite = False
        if not finite:
            raise jwt.InvalidTokenError(f"the {name} claim must be a finite number")


def caller_from_claims(claims: dict[str, Any]) -> Caller:
    """The caller named by verified claims; Unauthenticated if they are malformed."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT:
        raise _invalid(f"the sub claim must be a string of 1-{MAX_SUBJECT} characters")
    tenant = claims.get("tenant")
    if not isinstance(tenant, str) or len(tenant) > MAX_TENANT:
        raise _invalid(
            f"the tenant claim must be a string of at most {MAX_TENANT} characters "
            "(empty for platform callers)"
        )
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise _invalid("the roles claim must be a list of strings")
    return Caller(subject=subject, tenant=tenant, roles=frozenset(r for r in roles if r in ROLES))


_TTL: Final = re.compile(r"(\d+)([smhd]?)")
_UNIT_SECONDS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    """Seconds in ``30s``, ``15m``, ``1h``, ``7d`` or a plain number; ValueError otherwise."""
    match = _TTL.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        raise ValueError(f"expected a positive duration such as 30m, 1h or 7d, got {text!r}")
    return int(match[1]) * _UNIT_SECONDS[match[2]]


def mint_token(
    secret: str,
    *,
    subject: str,
    tenant: str,
    roles: Iterable[str],
    ttl_seconds: int,
    issuer: str | None = None,
    audience: str | None = None,
    now: float | None = None,
) -> str:
    """An HS256 token for development and tests; ValueError for unusable input."""
    key = check_secret(secret)
    role_list = list(dict.fromkeys(roles))
    unknown = [r for r in role_list if r not in ROLES]
    if unknown:
        raise ValueError(f"unknown role(s) {', '.join(unknown)}; use {', '.join(ROLES)}")
    if not subject or len(subject) > MAX_SUBJECT:
        raise ValueError(f"the subject must be 1-{MAX_SUBJECT} characters")
    if len(tenant) > MAX_TENANT:
        raise ValueError(f"the tenant must be at most {MAX_TENANT} characters")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": subject,
        "tenant": tenant,
        "roles": role_list,
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, key, algorithm=HS256[0])
