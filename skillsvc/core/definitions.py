"""Skill definitions: the rules of creating, reading, listing, updating and deleting them.

No gRPC and no SQL here: the servicer hands in plain values and a :class:`Caller`,
the repository does the queries.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from skillsvc.core.cache import ReadCache, visible
from skillsvc.core.models import Caller, Definition, DefinitionChanges
from skillsvc.core.naming import SKILL_NAME_RULE, is_valid_skill_name
from skillsvc.core.paging import next_page_token, page_request
from skillsvc.core.quotas import check_definition_quota
from skillsvc.db import Database
from skillsvc.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)

MAX_DISPLAY_NAME: Final = 200
MAX_DESCRIPTION: Final = 1024
MAX_TENANT: Final = 64
UPDATABLE_FIELDS: Final = frozenset({"display_name", "description", "active", "public"})


@dataclass(frozen=True)
class NewDefinition:
    """What a caller asks to create."""

    skill_id: str
    """Requested id."""
    tenant: str
    """Requested tenant (admins only may choose one other than their own)."""
    display_name: str
    """Human-readable name."""
    description: str
    """What the skill does."""
    active: bool | None
    """None: true."""
    public: bool | None
    """None: true for platform definitions, false for a tenant's."""


def check_skill_id(skill_id: str, field: str = "skill_id") -> None:
    """Raise InvalidArgument naming ``field`` unless ``skill_id`` is well formed."""
    if not skill_id:
        raise InvalidArgument.field(field, "is required")
    if not is_valid_skill_name(skill_id):
        raise InvalidArgument.field(field, f"must be {SKILL_NAME_RULE}; got {skill_id!r}")


def _text_violations(
    prefix: str, display_name: str | None, description: str | None
) -> list[FieldViolation]:
    violations = []
    if display_name is not None and len(display_name) > MAX_DISPLAY_NAME:
        violations.append(
            FieldViolation(
                f"{prefix}display_name", f"must be at most {MAX_DISPLAY_NAME} characters"
            )
        )
    if description is not None and len(description) > MAX_DESCRIPTION:
        violations.append(
            FieldViolation(f"{prefix}description", f"must be at most {MAX_DESCRIPTION} characters")
        )
    return violations


class Definitions:
    """The definition use cases."""

    def __init__(
        self,
        db: Database,
        *,
        max_skills_per_tenant: int = 100,
        cache: ReadCache | None = None,
    ) -> None:
        self._db = db
        self._max_skills_per_tenant = max_skills_per_tenant
        self.cache = cache if cache is not None else ReadCache(0, 0)
        """The read cache shared with the catalog (size 0: off)."""

    @staticmethod
    def check_can_manage(caller: Caller, tenant: str) -> None:
        """Admins manage everything; a publisher manages its own tenant's definitions."""
        if caller.is_admin:
            return
        if "publisher" in caller.roles and tenant and tenant == caller.tenant:
            return
        raise PermissionDenied("the caller's role may not manage this skill definition")

    async def create(self, caller: Caller, new: NewDefinition) -> Definition:
        """Create a definition; ALREADY_EXISTS if the id is taken."""
        violations: list[FieldViolation] = []
        if not new.skill_id:
            violations.append(FieldViolation("definition.skill_id", "is required"))
        elif not is_valid_skill_name(new.skill_id):
            violations.append(
                FieldViolation(
                    "definition.skill_id", f"must be {SKILL_NAME_RULE}; got {new.skill_id!r}"
                )
            )
        if len(new.tenant) > MAX_TENANT:
            violations.append(
                FieldViolation("definition.tenant", f"must be at most {MAX_TENANT} characters")
            )
        violations += _text_violations("definition.", new.display_name, new.description)
        if violations:
            raise InvalidArgument("invalid skill definition", violations)
        tenant = new.tenant if caller.is_admin else caller.tenant
        if new.tenant and new.tenant != tenant:
            raise PermissionDenied("only admins may create definitions for another tenant")
        self.check_can_manage(caller, tenant)
        public = new.public if new.public is not None else tenant == ""
        active = new.active if new.active is not None else True
        async with self._db.transaction() as repo:
            await repo.lock_tenant(tenant)
            await check_definition_quota(repo, tenant, self._max_skills_per_tenant)
            return await repo.insert_definition(
                new.skill_id,
                tenant,
                new.display_name,
                new.description,
                active=active,
                public=public,
            )

    async def get(self, caller: Caller, skill_id: str, *, fresh: bool = False) -> Definition:
        """The definition, or NOT_FOUND when it does not exist or is not visible.

        ``fresh`` reads the table, not the cache: writes decide who may act on a skill
        from its current owner, never from a row another replica may have replaced
        since (a deleted id re-created by another tenant).
        """
        check_skill_id(skill_id)
        found = await (
            self._db.repo.get_definition(skill_id, None) if fresh else self.lookup(skill_id)
        )
        # The rule the SQL would apply, applied to the cached row: another tenant's
        # private definition is NOT_FOUND, exactly as when read from the table.
        if found is None or not visible(found, caller.visible_tenant):
            raise NotFound(f"skill definition {skill_id!r} not found")
        return found

    async def lookup(self, skill_id: str) -> Definition | None:
        """The definition whoever owns it (no visibility check), from the cache if held."""
        if not self.cache.online:
            return await self._db.repo.get_definition(skill_id, None)
        cached = self.cache.definition(skill_id)
        if cached is not None:
            return cached.value
        generation = self.cache.generation
        found = await self._db.repo.get_definition(skill_id, None)
        self.cache.put_definition(skill_id, found, generation)
        return found

    async def list(
        self, caller: Caller, *, page_size: int, page_token: str, include_inactive: bool
    ) -> tuple[list[Definition], str]:
        """One page of visible definitions ordered by id, and the next page's token."""
        filters = {"inactive": include_inactive, "tenant": caller.visible_tenant}
        page = page_request(page_size, page_token, filters)
        if page.after is not None and not isinstance(page.after, str):
            raise InvalidArgument.field("page_token", "not a token returned by this RPC")
        # One extra row tells whether another page exists without a count query.
        rows = await self._db.repo.list_definitions(
            caller.visible_tenant,
            include_inactive=include_inactive,
            after=page.after or "",
            limit=page.size + 1,
        )
        if len(rows) <= page.size:
            return rows, ""
        rows = rows[: page.size]
        return rows, next_page_token(rows[-1].skill_id, filters)

    async def update(
        self, caller: Caller, skill_id: str, values: DefinitionChanges, mask: Collection[str]
    ) -> Definition:
        """Apply the fields named in ``mask`` from ``values``."""
        check_skill_id(skill_id, "definition.skill_id")
        paths = set(mask)
        if not paths:
            raise InvalidArgument.field("update_mask", "is required (or `*` for every field)")
        if "*" in paths:
            paths = set(UPDATABLE_FIELDS)
        unknown = sorted(paths - UPDATABLE_FIELDS)
        allowed = ", ".join(sorted(UPDATABLE_FIELDS))
        if unknown:
            raise InvalidArgument(
                "update_mask names fields that cannot be updated",
                [
                    FieldViolation(
                        "update_mask",
                        f"{path!r} cannot be updated; allowed: {allowed}",
                    )
                    for path in unknown
                ],
            )
        violations = _text_violations(
            "definition.",
            values.display_name if "display_name" in paths else None,
            values.description if "description" in paths else None,
        )
        if violations:
            raise InvalidArgument("invalid skill definition", violations)
        changes = DefinitionChanges(
            display_name=values.display_name if "display_name" in paths else None,
            description=values.description if "description" in paths else None,
            # An unset optional bool in the mask means "false", as protobuf would say.
            active=bool(values.active) if "active" in paths else None,
            public=bool(values.public) if "public" in paths else None,
        )
        async with self._db.transaction() as repo:
            current = await repo.get_definition(skill_id, caller.visible_tenant)
            if current is None:
                raise NotFound(f"skill definition {skill_id!r} not found")
            self.check_can_manage(caller, current.tenant)
            updated = await repo.update_definition(skill_id, changes)
        assert updated is not None  # the row was read in this transaction
        return updated
