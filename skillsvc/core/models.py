"""Domain records: what the repository returns and the domain layer works with.

Plain frozen dataclasses, free of asyncpg records and protobuf messages; the API
layer converts them to and from the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Caller:
    """Who is calling: from the verified token, or the anonymous admin of auth=none."""

    subject: str
    """The token's ``sub``; ``anonymous`` without authentication."""
    tenant: str
    """The caller's tenant; empty for platform callers."""
    roles: frozenset[str]
    """Any of ``admin``, ``publisher``, ``reader``."""

    @property
    def is_admin(self) -> bool:
        """Admins see and manage everything."""
        return "admin" in self.roles


ANONYMOUS_ADMIN = Caller(subject="anonymous", tenant="", roles=frozenset({"admin"}))
"""The caller of every RPC when ``SKILLSVC_AUTH=none``."""


@dataclass(frozen=True)
class Definition:
    """A skill definition (the management layer)."""

    skill_id: str
    """Immutable id; follows the package ``name`` rule."""
    tenant: str
    """Owning tenant; empty for a platform definition."""
    display_name: str
    """Human-readable name."""
    description: str
    """What the skill does."""
    active: bool
    """Whether the skill is offered to agents."""
    public: bool
    """Whether other tenants may see it."""
    current_version: str | None
    """The current package version, if any."""
    create_time: datetime
    """When it was created."""
    update_time: datetime
    """When it last changed."""


@dataclass(frozen=True)
class DefinitionChanges:
    """The updatable fields of a definition; ``None`` leaves a field unchanged."""

    display_name: str | None = None
    """New display name."""
    description: str | None = None
    """New description."""
    active: bool | None = None
    """New active flag."""
    public: bool | None = None
    """New public flag."""
