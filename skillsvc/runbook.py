"""The runbook's subcommands of ``skillsvc``: fsck, gc, backup, restore, history, status.

They work on the configured database and store directly (no server needed, and safe
while one runs) and print text, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from skillsvc.blobs import BlobStore, open_blob_store
from skillsvc.config import Settings, parse_duration
from skillsvc.core import maintenance
from skillsvc.db import Database
from skillsvc.store import Store

Runner = Callable[[Settings, argparse.Namespace, Database, Store, BlobStore], Awaitable[int]]


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (e.g. 90s, 15m, 12h, 7d)"
        ) from None


def add_commands(commands: Any) -> None:
    """Register the operator subcommands on the ``skillsvc`` parser."""
    fsck = commands.add_parser(
        "fsck", help="check installed packages against their recorded digests"
    )
    fsck.add_argument("--repair", action="store_true", help="restore or retire what is broken")
    gc = commands.add_parser("gc", help="remove what failed installs and crashes left")
    gc.add_argument(
        "--older-than",
        type=_duration,
        default=None,
        help="retention for failed attempts (default SKILLSVC_FAILED_RETENTION)",
    )
    gc.add_argument("--dry-run", action="store_true", help="only report what would go")
    backup = commands.add_parser("backup", help="back up the database and the store")
    backup.add_argument("dir", type=Path, metavar="DIR", help="an empty or new directory")
    restore = commands.add_parser("restore", help="restore a backup into an empty deployment")
    restore.add_argument("dir", type=Path, metavar="DIR", help="a directory made by backup")
    history = commands.add_parser("history", help="a skill's recent operations")
    history.add_argument("skill", metavar="SKILL")
    history.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    commands.add_parser("status", help="install success rate, failures and storage")
    for parser in (fsck, gc, backup, restore, history, commands.choices["status"]):
        parser.add_argument("--json", action="store_true", help="print JSON")


def _print(args: argparse.Namespace, report: Any, text: Callable[[Any], str]) -> None:
    print(json.dumps(report, indent=2, default=str) if args.json else text(report))


def _fsck_text(report: dict[str, Any]) -> str:
    lines = ["store is healthy" if report["healthy"] else "problems found:"]
    for item in report["damaged_packages"]:
        lines.append(
            f"  damaged {item['skill_id']} {item['version']}: {'; '.join(item['problems'])}"
        )
        if "repair" in item:
            lines.append(f"    -> {item['repair']}")
    for item in report["orphan_directories"]:
        repair = f" -> {item['repair']}" if "repair" in item else ""
        lines.append(f"  orphan directory packages/{item['skill_id']}/{item['version']}{repair}")
    for item in report["current_link_mismatches"]:
        repair = f" -> {item['repair']}" if "repair" in item else ""
        lines.append(
            f"  {item['skill_id']}/current is {item['link']}, the database says "
            f"{item['database']}{repair}"
        )
    lines += [f"  orphan staging of process {i}" for i in report["orphan_staging"]]
    lines += [f"  unreferenced archive {d} (run gc)" for d in report["orphan_blobs"]]
    return "\n".join(lines)


async def _fsck(
    settings: Settings, args: argparse.Namespace, db: Database, store: Store, blobs: BlobStore
) -> int:
    from skillsvc.server import installer_settings

    report = await maintenance.fsck(
        db,
        store,
        repair=args.repair,
        limits=installer_settings(settings).limits,
        stale_after=3 * settings.heartbeat_seconds,
        blobs=blobs,
    )
    _print(args, report, _fsck_text)
    return 0 if report["healthy"] or args.repair else 1


def _gc_text(report: dict[str, Any]) -> str:
    verb = "would remove" if report["dry_run"] else "removed"
    return "\n".join(
        [
            f"{verb} {report['failed_operations']} failed operation(s) from the log",
            f"{verb} {len(report['failed_packages'])} failed package record(s)",
            f"{verb} {len(report['blobs'])} archive(s), {report['freed_bytes']} bytes",
            f"{verb} staging of {len(report['orphan_staging'])} stopped process(es)",
            f"left {len(report['unowned_archives_in_grace'])} unowned archive(s) younger "
            "than the grace (maybe installs in flight)",
        ]
    )


async def _gc(
    settings: Settings, args: argparse.Namespace, db: Database, store: Store, blobs: BlobStore
) -> int:
    older_than = settings.failed_retention_seconds if args.older_than is None else args.older_than
    report = await maintenance.gc(
        db,
        store,
        older_than=older_than,
        dry_run=args.dry_run,
        stale_after=3 * settings.heartbeat_seconds,
        blobs=blobs,
    )
    _print(args, report, _gc_text)
    return 0


async def _backup(
    settings: Settings, args: argparse.Namespace, db: Database, store: Store, blobs: BlobStore
) -> int:
    from skillsvc.backup import backup

    report = await backup(db.url, store, args.dir, blobs)
    _print(args, report, lambda r: _backup_text(r, args.dir))
    # Written whole either way; 1 says it lacks something the deployment should have.
    return 1 if report["missing_from_store_copy"] or report["damaged_archives"] else 0


def _backup_text(report: dict[str, Any], where: Path) -> str:
    lines = [f"backed up {report['ready_packages']} package(s) to {where}"]
    if report["missing_from_store_copy"]:
        lines.append(f"missing from the copy: {', '.join(report['missing_from_store_copy'])}")
    lines += [
        f"not copied: archive {d['sha256']}: {d['problem']}" for d in report["damaged_archives"]
    ]
    return "\n".join(lines)


async def _restore(
    settings: Settings, args: argparse.Namespace, db: Database, store: Store, blobs: BlobStore
) -> int:
    from skillsvc.backup import restore

    report = await restore(db.url, store, args.dir, blobs)
    _print(args, report, lambda r: f"restored {r['ready_packages']} package(s) from {args.dir}")
    return 0


def _history_text(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        what = (
            r["version"] if r["type"] == "INSTALL" else f"{r['from_version']} -> {r['to_version']}"
        )
        line = (
            f"{r['create_time']}  {r['type']:<8} {what:<20} {r['state']:<9} by {r['requested_by']}"
        )
        if r["error_code"]:
            line += f"\n    {r['error_code']} ({r['error_reason']}): {r['error_message']}"
        elif r["reason"]:
            line += f"\n    reason: {r['reason']}"
        lines.append(line)
    return "\n".join(lines) or "no operations"


async def _history(
    settings: Settings, args: argparse.Namespace, db: Database, store: Store, blobs: BlobStore
) -> int:
    _print(args, await maintenance.history(db, args.skill, args.limit), _history_text)
    return 0


def _status_text(r: dict[str, Any]) -> str:
    installs = r["installs"]
    rate = "n/a" if r["success_rate"] is None else f"{100 * r['success_rate']:.1f} %"
    mean = installs["mean_seconds"]
    lines = [
        "last 24 h: "
        f"{installs['succeeded']} succeeded, {installs['failed']} failed, "
        f"{installs['running']} running; success rate {rate}; mean install time "
        + ("n/a" if mean is None else f"{mean:.2f} s"),
        f"store: {r['store_bytes']} bytes",
        f"blob store: {r['blob_store']['location']} "
        + ("answers" if r["blob_store"]["up"] else f"DOES NOT ANSWER: {r['blob_store']['error']}"),
    ]
    if r["recent_failures"]:
        lines.append("recent failures:")
        lines += [
            f"  {f['update_time']} {f['skill_id']} {f['version']}: {f['error_code']} "
            f"({f['error_reason']}) {f['error_message']}"
            for f in r["recent_failures"]
        ]
    lines.append("storage per skill:")
    lines += [
        f"  {s['skill_id']:<30} {s['bytes']:>14} bytes  {s['ready_versions']} version(s), "
        f"current {s['current_version']}"
        for s in r["storage"]
    ]
    return "\n".join(lines)


async def _status(
    settings: Settings, args: argparse.Namespace, db: Database, store: Store, blobs: BlobStore
) -> int:
    _print(args, await maintenance.status(db, store, blobs=blobs), _status_text)
    return 0


RUNNERS: dict[str, Runner] = {
    "fsck": _fsck,
    "gc": _gc,
    "backup": _backup,
    "restore": _restore,
    "history": _history,
    "status": _status,
}


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Open the database and the store, run the command, close everything."""
    from skillsvc.server import open_database

    # restore checks that its targets are empty before it changes anything, so it
    # must not migrate the database or create the store's directories first.
    restoring = args.command == "restore"
    db, embedded = await open_database(settings, run_migrations=not restoring)
    try:
        store = Store(settings.store_root)
        if not restoring:
            store.init()
        blobs = open_blob_store(settings.blob_store or "", store.root, settings.blob_store_options)
        try:
            return await RUNNERS[args.command](settings, args, db, store, blobs)
        finally:
            await blobs.close()
    finally:
        await db.close()
        if embedded is not None:
            await embedded.stop()
        sys.stdout.flush()
