"""``skillsvc token``: mint an HS256 token from ``SKILLSVC_JWT_SECRET``.

For development and tests: production tokens come from the platform's identity
provider. The token goes to stdout alone, so ``TOKEN=$(skillsvc token ...)`` works.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from skillsvc.auth._policy import ROLES
from skillsvc.auth._tokens import mint_token, parse_ttl
from skillsvc.config import Settings


def add_token_parser(commands: Any) -> None:
    """Register ``token`` on the ``skillsvc`` subcommand parsers."""
    parser = commands.add_parser(
        "token",
        help="mint an HS256 bearer token from SKILLSVC_JWT_SECRET (development, tests)",
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


def token_command(settings: Settings, args: argparse.Namespace) -> int:
    """Print the token; exit status 2 for unusable settings or arguments."""
    if not settings.jwt_secret:
        print(
            "skillsvc: configuration error: SKILLSVC_JWT_SECRET: required to mint a token",
            file=sys.stderr,
        )
        return 2
    try:
        token = mint_token(
            settings.jwt_secret,
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
