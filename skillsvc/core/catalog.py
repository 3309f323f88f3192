"""Reading the install log and the installed packages: get, list, watch, download."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Final, TypeVar

from skillsvc.blobs import BlobStore, LocalBlobs
from skillsvc.core.definitions import Definitions, check_skill_id
from skillsvc.core.models import Caller, Change, Operation, Package, PackageState
from skillsvc.core.naming import is_valid_semver
from skillsvc.core.paging import next_page_token, page_request
from skillsvc.core.progress import ProgressHub, parse_operation_id
from skillsvc.db import Database
from skillsvc.errors import FailedPrecondition, InvalidArgument, NotFound
from skillsvc.store import Store

DOWNLOAD_CHUNK_BYTES: Final = 1024 * 1024
T = TypeVar("T")


def _position(after: object) -> tuple[datetime, str] | None:
    """Decode a (time, key) page position."""
    if after is None:
        return None
    if not (isinstance(after, list) and len(after) == 2 and all(isinstance(a, str) for a in after)):
        raise InvalidArgument.field("page_token", "not a token returned by this RPC")
    try:
        return datetime.fromisoformat(after[0]), after[1]
    except ValueError:
        raise InvalidArgument.field("page_token", "not a token returned by this RPC") from None


class Catalog:
    """The read use cases of operations and packages."""

    def __init__(
        self,
        db: Database,
        store: Store,
        definitions: Definitions,
        hub: ProgressHub,
        *,
        blobs: BlobStore | None = None,
    ) -> None:
        self._db = db
        self._store = store
        self._blobs: BlobStore = blobs if blobs is not None else LocalBlobs(store.root)
        self._definitions = definitions
        self._hub = hub

    async def get_operation(self, caller: Caller, operation_id: str) -> Operation:
        """One operation, NOT_FOUND if unknown or not visible."""
        operation_id = parse_operation_id(operation_id)
        found = await self._db.repo.get_operation(operation_id, caller.visible_tenant)
        if found is None:
            raise NotFound(f"operation {operation_id} not found")
        return found

    async def list_operations(
        self, caller: Caller, skill_id: str, *, page_size: int, page_token: str
    ) -> tuple[list[Operation], str]:
        """A skill's install log, newest first."""
        return await self._newest_first(
            caller,
            skill_id,
            page_size,
            page_token,
            fetch=self._db.repo.list_operations,
            position=lambda op: [op.create_time.isoformat(), op.operation_id],
        )

    async def list_packages(
        self, caller: Caller, skill_id: str, *, page_size: int, page_token: str
    ) -> tuple[list[Package], str]:
        """A skill's packages, newest first."""
        return await self._newest_first(
            caller,
            skill_id,
            page_size,
            page_token,
            fetch=self._db.repo.list_packages,
            position=lambda p: [p.create_time.isoformat(), p.version],
        )

    async def _newest_first(
        self,
        caller: Caller,
        skill_id: str,
        page_size: int,
        page_token: str,
        *,
        fetch: Callable[[str, tuple[datetime, str] | None, int], Awaitable[list[T]]],
        position: Callable[[T], list[str]],
    ) -> tuple[list[T], str]:
        """One page of a skill's rows ordered by (time, key) descending."""
        await self._definitions.get(caller, skill_id)
        filters = {"skill": skill_id}
        page = page_request(page_size, page_token, filters)
        # One extra row tells whether another page exists without a count query.
        rows = await fetch(skill_id, _position(page.after), page.size + 1)
        if len(rows) <= page.size:
            return rows, ""
        rows = rows[: page.size]
        return rows, next_page_token(position(rows[-1]), filters)

    async def get_package(self, caller: Caller, skill_id: str, version: str) -> Package:
        """One package; an empty version means the current one."""
        check_skill_id(skill_id)
        if version and not is_valid_semver(version):
            raise InvalidArgument.field("version", f"must be a semantic version; got {version!r}")
        cache = self._definitions.cache
        if cache.online:
            # The definition first (cached like the package): it decides visibility,
            # so a cached package of another tenant's private skill is NOT_FOUND, as
            # from SQL.
            await self._definitions.get(caller, skill_id)
            cached = cache.package(skill_id, version)
            if cached is not None:
                found = cached.value
            else:
                generation = cache.generation
                found = await self._db.repo.get_package_or_current(skill_id, version or None, None)
                cache.put_package(skill_id, version, found, generation)
        else:
            # No cache (turned off, or changes unheard): one query that filters itself.
            found = await self._db.repo.get_package_or_current(
                skill_id, version or None, caller.visible_tenant
            )
            if found is None:
                # Only on the way out: say precisely what is missing (NOT_FOUND for
                # an invisible skill too).
                await self._definitions.get(caller, skill_id)
        if found is not None:
            return found
        if not version:
            raise NotFound(f"{skill_id} has no current version")
        raise NotFound(f"package {skill_id} {version} not found")

    async def download(
        self, caller: Caller, skill_id: str, version: str
    ) -> tuple[Package, AsyncIterator[bytes]]:
        """A READY package and its original archive, streamed from the store."""
        package = await self.get_package(caller, skill_id, version)
        if package.state is not PackageState.READY:
            raise FailedPrecondition(
                f"package {skill_id} {package.version} is {package.state.value}, not READY",
                reason="PACKAGE_NOT_READY",
            )
        pieces = self._blobs.stream(
            "archive", package.sha256, DOWNLOAD_CHUNK_BYTES, expected_size=package.size_bytes
        )
        # The first piece is read here, so a missing archive, a blob store that does not
        # answer or an object of another size than recorded fails the call before its
        # first message (NOT_FOUND, UNAVAILABLE, DATA_LOSS).
        first = await anext(pieces, b"")

        async def chunks() -> AsyncIterator[bytes]:
            try:
                if first:
                    yield first
                async for chunk in pieces:
                    yield chunk
            finally:
                await pieces.aclose()

        return package, chunks()

    def watch(self, caller: Caller, operation_id: str) -> AsyncIterator[Operation | Change]:
        """The operation's current state, then each change until it ends."""
        return self._hub.watch(self._db, caller.visible_tenant, operation_id)
