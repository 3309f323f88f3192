"""Authentication and authorization (SPEC §7), free of gRPC.

- :func:`build_authenticator` turns the settings into an :class:`Authenticator`
  (``SKILLSVC_AUTH=none``: the loopback admin; ``jwt``: bearer-token verification
  with a :class:`KeySet` that :func:`load_key_set` re-reads on SIGHUP);
- :func:`authorize` applies the role table :data:`RPC_CAPABILITIES`;
- :func:`mint_token` makes HS256 tokens for development (``skillsvc token``).

The API layer (``skillsvc.api._auth``) calls these from a server interceptor; the
tenant rules live in the domain (``skillsvc.core``).
"""

from skillsvc.auth._build import AUTH_MODES, build_authenticator, load_key_set
from skillsvc.auth._command import add_token_parser, token_command
from skillsvc.auth._keys import (
    MIN_SECRET_BYTES,
    KeySet,
    VerificationKey,
    load_public_key,
    parse_jwks,
    parse_secrets,
)
from skillsvc.auth._policy import (
    ROLE_CAPABILITIES,
    ROLES,
    RPC_CAPABILITIES,
    Capability,
    authorize,
    capabilities,
    policy_table,
)
from skillsvc.auth._tokens import (
    Authenticator,
    JwtAuthentication,
    NoAuthentication,
    caller_from_claims,
    check_numeric_dates,
    mint_token,
    parse_ttl,
)

__all__ = [
    "AUTH_MODES",
    "MIN_SECRET_BYTES",
    "ROLES",
    "ROLE_CAPABILITIES",
    "RPC_CAPABILITIES",
    "Authenticator",
    "Capability",
    "JwtAuthentication",
    "KeySet",
    "NoAuthentication",
    "VerificationKey",
    "add_token_parser",
    "authorize",
    "build_authenticator",
    "caller_from_claims",
    "capabilities",
    "check_numeric_dates",
    "load_key_set",
    "load_public_key",
    "mint_token",
    "parse_jwks",
    "parse_secrets",
    "parse_ttl",
    "policy_table",
    "token_command",
]
