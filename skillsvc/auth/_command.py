"""``skillsvc token``: mint an HS256 token from ``SKILLSVC_JWT_SECRET``.

Without that variable it signs with the first secret of ``SKILLSVC_JWT_SECRETS_FILE``
(the newest, by the rotation convention of the README: new secrets go on top).

For development and tests: production tokens come from the platform's identity
provider. The token goes to stdout alone, so ``TOKEN=$(skillsvc token ...)`` works.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from skillsvc.auth._keys import parse_secrets
from skillsvc.auth._policy import ROLES
from skillsvc.auth._tokens import mint_token, parse_ttl
from skillsvc.config import Settings


def add_token_parser(commands: Any) -> None:
    """Register ``token`` on the ``skillsvc`` subcommand parsers."""
    parser = commands.add_parser(
        "token",
        help="mint an HS256 bearer token from SKILLSVC_JWT_SECRET or the first secret of "
        "SKILLSVC_JWT_SECRETS_FILE (development, tests)",
        description="Print a signed token: sub, tenant, roles, iat, exp "
        "(and iss/aud when SKILLSVC_JWT_ISSUER/SKILLSVC_JWT_AUDIENCE are set).",
    )
    parser.add_argument("--sub", required=True, help="the caller's name (the token's sub)")
    parser.add_argument(
        "--tenant", default="", help="the caller's tenant; empty (default) for platform callers"
    )
    parser.add_argument(
        "--role",
        action="append",
        required=True,
        choices=ROLES,
        help="a role to grant; repeat for several",
    )
    parser.add_argument(
        "--ttl", default="1h", help="lifetime: seconds, or a number with s, m, h or d (1h)"
    )


def _signing_secret(settings: Settings) -> str:
    """The secret to sign with; ValueError (naming the variable) when there is none."""
    if settings.jwt_secret:
        return settings.jwt_secret
    if settings.jwt_secrets_file:
        try:
            text = settings.jwt_secrets_file.read_text()
        except OSError as exc:
            raise ValueError(f"SKILLSVC_JWT_SECRETS_FILE: cannot read: {exc.strerror}") from None
        try:
            return parse_secrets(text)[0].decode()
        except ValueError as exc:
            raise ValueError(f"SKILLSVC_JWT_SECRETS_FILE: {exc}") from None
    raise ValueError("SKILLSVC_JWT_SECRET: required to mint a token (or SKILLSVC_JWT_SECRETS_FILE)")


def token_command(settings: Settings, args: argparse.Namespace) -> int:
    """Print the token; exit status 2 for unusable settings or arguments."""
    try:
        secret = _signing_secret(settings)
    except ValueError as exc:
        print(f"skillsvc: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        token = mint_token(
            secret,
            subject=args.sub,
            tenant=args.tenant,
            roles=args.role,
            ttl_seconds=parse_ttl(args.ttl),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
    except ValueError as exc:
        print(f"skillsvc token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0
