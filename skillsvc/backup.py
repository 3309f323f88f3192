"""``skillsvc backup DIR`` and ``skillsvc restore DIR``.

A backup directory holds ``database.dump`` (``pg_dump --format=custom`` of the service's
database), ``store/`` (``packages/`` of the file store, links kept, and ``blobs/sha256/``:
the original archives, from local ``blobs/`` or from the bucket of
``SKILLSVC_BLOB_STORE``, in the same layout either way) and ``backup.json`` (what was
backed up, from which versions). The database is dumped first,
from one snapshot; packages are immutable, so copying the store afterwards gives every
package in the dump its files unless it was deleted in between, which the backup checks
and reports. An archive the bucket holds damaged (or lost after the listing) is not
copied; the backup goes on and lists it in ``backup.json`` (``damaged_archives``, and
its packages in ``missing_from_store_copy``), and the command exits 1.

Restore loads the dump into an empty database (refusing one that has skills), applies
any newer migrations, and copies the store into an empty store (the archives into an
empty blob store: local ``blobs/``, or uploaded to an empty bucket prefix). The restored service
then starts like after a crash: operations left running in the backup are marked
interrupted, processes of the old deployment are forgotten.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from skillsvc import __version__
from skillsvc.blobs import BlobStore, LocalBlobs
from skillsvc.db import (
    forget_instances,
    holds_skills,
    load_migrations,
    migrate,
    schema_version,
    server_major,
)
from skillsvc.db._embedded import EmbeddedPostgres
from skillsvc.db._maintenance import Maintenance
from skillsvc.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from skillsvc.store import Store

FORMAT = 1

logger = logging.getLogger(__name__)


def _tool_major(path: Path) -> int | None:
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\) (\d+)", out)
    return int(match[1]) if match else None


def pg_tool(name: str, major: int) -> Path:
    """The ``pg_dump``/``pg_restore`` to use against a server of ``major``.

    A tool of the server's own major version is preferred (Debian's
    /usr/lib/postgresql/<major>/bin, then PATH): pg_dump refuses newer servers, and an
    older server may not understand what a newer pg_restore sends. Otherwise the
    embedded package's tools, the newest PostgreSQL skillsvc supports.
    """
    candidates = [Path(f"/usr/lib/postgresql/{major}/bin/{name}")]
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    candidates.append(EmbeddedPostgres.tools_dir() / name)
    for candidate in candidates:
        if candidate.is_file() and _tool_major(candidate) == major:
            return candidate
    embedded = EmbeddedPostgres.tools_dir() / name
    if embedded.is_file() and (_tool_major(embedded) or 0) >= major:
        return embedded
    raise Unavailable(f"no {name} found that can work with PostgreSQL {major}")


async def _server_major(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return await server_major(conn)
    finally:
        await conn.close()


async def _run(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise Unavailable(
            f"{Path(args[0]).name} failed ({proc.returncode}): {(err or out).decode()[-2000:]}"
        )


def _copy_tree(src: Path, dest: Path) -> None:
    if src.exists():
        shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)


def _empty_or_missing(path: Path) -> bool:
    return not path.exists() or not any(path.iterdir())


def _prepare_destination(dest: Path) -> None:
    if not _empty_or_missing(dest):
        raise InvalidArgument.field("DIR", f"{dest} exists and is not empty")
    dest.mkdir(parents=True, exist_ok=True)


def _read_backup_info(src: Path) -> dict[str, Any]:
    info_file = src / "backup.json"
    if not info_file.is_file() or not (src / "database.dump").is_file():
        raise InvalidArgument.field("DIR", f"{src} is not a skillsvc backup")
    info: dict[str, Any] = json.loads(info_file.read_text())
    if info.get("format") != FORMAT:
        raise InvalidArgument.field("DIR", f"unsupported backup format {info.get('format')}")
    return info


def _missing_from_copy(dest: Path, ready: list[Any]) -> list[str]:
    return [
        f"{p.skill_id} {p.version}"
        for p in ready
        if not (dest / "store" / "packages" / p.skill_id / p.version).is_dir()
        or not (dest / "store" / "blobs" / "sha256" / p.sha256).is_file()
    ]


async def _copy_blobs_out(
    blobs: BlobStore, dest: Path, sizes: dict[str, int]
) -> list[dict[str, str]]:
    """Every archive of the blob store into ``dest`` (from a bucket, each checked
    against its digest and, for a package's, its recorded size in ``sizes``).

    A damaged object is not copied: it is listed (``sha256``, ``problem``) and the
    copy goes on, so a backup can be taken during exactly the incident it is for. So
    is a package's object that disappeared after the listing (an unowned one that
    did was reaped by gc, which is no loss).
    """
    if isinstance(blobs, LocalBlobs):
        await asyncio.to_thread(_copy_tree, blobs.directory("archive"), dest)
        return []
    await asyncio.to_thread(dest.mkdir, parents=True, exist_ok=True)
    unreadable: list[dict[str, str]] = []
    for digest in await blobs.digests("archive"):
        try:
            await blobs.fetch("archive", digest, dest / digest, expected_size=sizes.get(digest))
        except DataLoss as exc:
            logger.warning("backup: archive %s not copied: %s", digest, exc.message)
            unreadable.append({"sha256": digest, "problem": exc.message})
        except NotFound as exc:
            if digest in sizes:
                logger.warning("backup: archive %s not copied: %s", digest, exc.message)
                unreadable.append({"sha256": digest, "problem": exc.message})
    return unreadable


async def _copy_blobs_in(src: Path, blobs: BlobStore) -> None:
    """Every archive of a backup into the blob store."""
    if isinstance(blobs, LocalBlobs):
        await asyncio.to_thread(_copy_tree, src, blobs.directory("archive"))
        return
    names = await asyncio.to_thread(lambda: sorted(p.name for p in src.glob("*")))
    for name in names:
        await blobs.put("archive", name, src / name)


async def backup(
    url: str, store: Store, dest: Path, blobs: BlobStore | None = None
) -> dict[str, Any]:
    """Write a backup of the database at ``url``, of ``store`` and of the archives in
    ``blobs`` (default: local blobs in ``store``) into ``dest``."""
    await asyncio.to_thread(_prepare_destination, dest)
    major = await _server_major(url)
    await _run(
        str(pg_tool("pg_dump", major)),
        "--format=custom",
        "--no-owner",
        "--no-privileges",
        f"--file={dest / 'database.dump'}",
        url,
    )
    await asyncio.to_thread(_copy_tree, store.packages, dest / "store" / "packages")
    conn = await asyncpg.connect(url)
    try:
        await conn.set_type_codec(
            "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
        ready = await Maintenance(conn).ready_packages()
        schema = await schema_version(conn)
    finally:
        await conn.close()
    damaged = await _copy_blobs_out(
        blobs or LocalBlobs(store.root),
        dest / "store" / "blobs" / "sha256",
        {p.sha256: p.size_bytes for p in ready},
    )
    missing = await asyncio.to_thread(_missing_from_copy, dest, ready)
    info = {
        "format": FORMAT,
        "created": datetime.now(UTC).isoformat(),
        "skillsvc_version": __version__,
        "schema_version": schema,
        "postgres_major": major,
        "ready_packages": len(ready),
        "missing_from_store_copy": missing,
        "damaged_archives": damaged,
    }
    await asyncio.to_thread((dest / "backup.json").write_text, json.dumps(info, indent=2) + "\n")
    return info


async def restore(
    url: str, store: Store, src: Path, blobs: BlobStore | None = None
) -> dict[str, Any]:
    """Restore the backup in ``src`` into the empty database at ``url``, ``store`` and
    ``blobs`` (default: local blobs in ``store``)."""
    blobs = blobs or LocalBlobs(store.root)
    info = await asyncio.to_thread(_read_backup_info, src)
    if int(info.get("schema_version") or 0) > load_migrations()[-1].version:
        raise FailedPrecondition(
            "the backup comes from a newer skillsvc; upgrade before restoring",
            reason="BACKUP_TOO_NEW",
        )
    conn = await asyncpg.connect(url)
    try:
        if await holds_skills(conn):
            raise FailedPrecondition(
                "the target database already holds skills; restore into an empty one",
                reason="TARGET_NOT_EMPTY",
            )
        major = await server_major(conn)
    finally:
        await conn.close()
    empty = await asyncio.to_thread(_empty_or_missing, store.packages)
    if not empty or await blobs.digests("archive"):
        where = store.root if not empty else blobs.location
        raise FailedPrecondition(
            f"the store at {where} is not empty; restore into an empty one",
            reason="TARGET_NOT_EMPTY",
        )
    await _run(
        str(pg_tool("pg_restore", major)),
        "--clean",
        "--if-exists",
        "--no-owner",
        "--no-privileges",
        "--single-transaction",
        "--exit-on-error",
        f"--dbname={url}",
        str(src / "database.dump"),
    )
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        # The processes of the backed-up deployment are gone; recovery reaps their
        # unfinished operations at the next start.
        await forget_instances(conn)
    finally:
        await conn.close()
    await asyncio.to_thread(store.init)
    await asyncio.to_thread(_copy_tree, src / "store" / "packages", store.packages)
    await _copy_blobs_in(src / "store" / "blobs" / "sha256", blobs)
    return {"restored_from": str(src), **info}
