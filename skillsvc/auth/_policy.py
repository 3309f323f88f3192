"""Who may call which RPC: the one authorization table of skillsvc.

Authorization has two layers, and this module is the first:

1. **Role** (here, checked by the API's auth interceptor before any handler runs):
   each RPC needs a :class:`Capability`, and each role grants some capabilities.
   A caller whose roles grant none of what the RPC needs gets ``PERMISSION_DENIED``,
   whatever the request names, so the answer says nothing about other tenants.
2. **Tenant** (in the domain, ``skillsvc.core``): reads are filtered by
   :attr:`~skillsvc.core.models.Caller.visible_tenant`, so another tenant's private
   skill, package or operation is ``NOT_FOUND``; writes on a visible definition
   need :meth:`~skillsvc.core.definitions.Definitions.check_can_manage` (admins:
   anything; publishers: their own tenant's definitions), else ``PERMISSION_DENIED``.

:func:`policy_table` renders the table for the README, and a test checks the README
carries it verbatim, so code and documentation cannot drift apart.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

from skillsvc.core.models import Caller
from skillsvc.errors import PermissionDenied


class Capability(enum.StrEnum):
    """What an RPC needs from the caller's roles."""

    READ = "read"
    """Read definitions, packages and operations the caller's tenant may see."""
    VALIDATE = "validate"
    """Upload an archive to be checked; nothing is stored."""
    MANAGE = "manage"
    """Change definitions and their packages (tenant rules apply in the domain)."""


ADMIN: Final = "admin"
PUBLISHER: Final = "publisher"
READER: Final = "reader"
ROLES: Final = (ADMIN, PUBLISHER, READER)
"""The roles a token may carry; others are ignored."""

ROLE_CAPABILITIES: Final[Mapping[str, frozenset[Capability]]] = {
    ADMIN: frozenset(Capability),
    PUBLISHER: frozenset(Capability),
    READER: frozenset({Capability.READ}),
}
"""What each role may do (before the tenant rules)."""

RPC_CAPABILITIES: Final[Mapping[str, Capability]] = {
    "CreateSkillDefinition": Capability.MANAGE,
    "GetSkillDefinition": Capability.READ,
    "ListSkillDefinitions": Capability.READ,
    "UpdateSkillDefinition": Capability.MANAGE,
    "DeleteSkillDefinition": Capability.MANAGE,
    "Install": Capability.MANAGE,
    "InstallProgress": Capability.READ,
    "GetOperation": Capability.READ,
    "ListOperations": Capability.READ,
    "Retry": Capability.MANAGE,
    "Rollback": Capability.MANAGE,
    "Validate": Capability.VALIDATE,
    "ListPackages": Capability.READ,
    "GetPackage": Capability.READ,
    "DeletePackage": Capability.MANAGE,
    "DownloadPackage": Capability.READ,
    "WatchSkills": Capability.READ,
}
"""``skillsvc.v1.SkillService`` method name → the capability it needs.

An RPC missing here is refused for everyone (fail closed); a test checks the table
names exactly the service's methods.
"""

_TENANT_RULE: Final[Mapping[Capability, str]] = {
    Capability.READ: "skills of the caller's tenant and public ones; admins: all",
    Capability.VALIDATE: "none (nothing is stored)",
    Capability.MANAGE: "admins: any skill; publishers: their own tenant's skills",
}


def capabilities(caller: Caller) -> frozenset[Capability]:
    """Everything the caller's roles grant."""
    granted: set[Capability] = set()
    for role in caller.roles:
        granted |= ROLE_CAPABILITIES.get(role, frozenset())
    return frozenset(granted)


def authorize(caller: Caller, rpc: str) -> None:
    """Raise PERMISSION_DENIED unless the caller's roles may call ``rpc`` at all."""
    needed = RPC_CAPABILITIES.get(rpc)
    if needed is None:
        raise PermissionDenied(f"{rpc} is not open to any role", reason="RPC_NOT_ALLOWED")
    if needed not in capabilities(caller):
        allowed = " or ".join(r for r in ROLES if needed in ROLE_CAPABILITIES[r])
        raise PermissionDenied(
            f"{rpc} needs the {allowed} role", reason="ROLE_NOT_ALLOWED", metadata={"rpc": rpc}
        )


def policy_table() -> str:
    """The README's authorization table, in Markdown."""
    header = "| RPC | Needs | " + " | ".join(ROLES) + " | Tenant rule |"
    rows = [header, "| --- | --- |" + " :---: |" * len(ROLES) + " --- |"]
    for rpc, needed in RPC_CAPABILITIES.items():
        marks = " | ".join("✓" if needed in ROLE_CAPABILITIES[r] else "—" for r in ROLES)
        rows.append(f"| `{rpc}` | {needed.value} | {marks} | {_TENANT_RULE[needed]} |")
    return "\n".join(rows)
