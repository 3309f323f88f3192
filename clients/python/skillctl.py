"""skillctl: a small command-line client for skillsvc, built on the generated stubs.

    skillctl [--addr HOST:PORT] [--token TOKEN] install SKILL ARCHIVE [--version V] [--no-activate]
    skillctl validate ARCHIVE [--skill SKILL] [--version V]
    skillctl packages SKILL
    skillctl history SKILL
    skillctl rollback SKILL [--to VERSION] [--reason TEXT]

`install` uploads the archive in 1 MiB chunks with a progress bar for the upload, then
follows InstallProgress stage by stage until DONE or FAILED (exit code 1 on failure).
The token defaults to $SKILLSVC_TOKEN, the address to $SKILLSVC_ADDR or 127.0.0.1:50051.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import grpc

from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc

CHUNK = 1 << 20
STAGES = resources_pb2.InstallStage
STATES = resources_pb2.OperationState


class ProgressBar:
    """A one-line progress bar on a terminal; plain lines elsewhere."""

    def __init__(self, total: int, out: TextIO, width: int = 30) -> None:
        self.total, self.out, self.width = total, out, width
        self.tty = out.isatty()
        self.shown = -1

    def update(self, done: int, label: str) -> None:
        percent = 100 if self.total <= 0 else min(100, done * 100 // self.total)
        if self.tty:
            filled = self.width * percent // 100
            bar = "#" * filled + "-" * (self.width - filled)
            self.out.write(f"\r{label:<12} [{bar}] {percent:3d}%")
            self.out.flush()
        elif percent // 25 != self.shown // 25 or (percent == 100 and self.shown != 100):
            self.out.write(f"{label}: {percent}%\n")
        self.shown = percent

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


async def _install(stub: Any, args: argparse.Namespace, metadata: Any, out: TextIO) -> int:
    data = await asyncio.to_thread(Path(args.archive).read_bytes)
    bar = ProgressBar(len(data), out)

    async def messages() -> AsyncIterator[skill_service_pb2.InstallRequest]:
        spec = skill_service_pb2.InstallSpec(
            skill_id=args.skill,
            version=args.version or "",
            upload=skill_service_pb2.UploadSource(size_bytes=len(data)),
            sha256=hashlib.sha256(data).hexdigest(),
            activate=not args.no_activate,
        )
        yield skill_service_pb2.InstallRequest(spec=spec)
        for start in range(0, len(data), CHUNK):
            yield skill_service_pb2.InstallRequest(chunk=data[start : start + CHUNK])
            bar.update(min(start + CHUNK, len(data)), "uploading")

    op = await stub.Install(messages(), metadata=metadata)
    bar.close()
    out.write(f"operation {op.operation_id}\n")
    last = None
    async for event in stub.InstallProgress(
        skill_service_pb2.InstallProgressRequest(operation_id=op.operation_id), metadata=metadata
    ):
        stage = STAGES.Name(event.stage).removeprefix("INSTALL_STAGE_").lower()
        if stage != last:
            out.write(f"  {stage:<11} {event.message}\n")
            last = stage
        if event.state == STATES.Value("OPERATION_STATE_FAILED"):
            out.write(f"failed: {event.error.message}\n")
            return 1
    out.write(f"installed {args.skill}\n")
    return 0


async def _validate(stub: Any, args: argparse.Namespace, metadata: Any, out: TextIO) -> int:
    data = await asyncio.to_thread(Path(args.archive).read_bytes)

    async def messages() -> AsyncIterator[skill_service_pb2.ValidateRequest]:
        yield skill_service_pb2.ValidateRequest(
            spec=skill_service_pb2.ValidateSpec(
                skill_id=args.skill or "",
                version=args.version or "",
                upload=skill_service_pb2.UploadSource(size_bytes=len(data)),
            )
        )
        for start in range(0, len(data), CHUNK):
            yield skill_service_pb2.ValidateRequest(chunk=data[start : start + CHUNK])

    report = await stub.Validate(messages(), metadata=metadata)
    for v in report.violations:
        severity = resources_pb2.Severity.Name(v.severity).removeprefix("SEVERITY_").lower()
        out.write(f"{severity:<8} {v.code:<20} {v.path or '-':<30} {v.message}\n")
    out.write(
        f"{'valid' if report.valid else 'INVALID'}: {report.manifest.name} "
        f"{report.manifest.version}, {report.file_count} files, {report.unpacked_bytes} bytes\n"
    )
    return 0 if report.valid else 1


async def _packages(stub: Any, args: argparse.Namespace, metadata: Any, out: TextIO) -> int:
    token = ""
    while True:
        page = await stub.ListPackages(
            skill_service_pb2.ListPackagesRequest(skill_id=args.skill, page_token=token),
            metadata=metadata,
        )
        for p in page.packages:
            state = resources_pb2.PackageState.Name(p.state).removeprefix("PACKAGE_STATE_")
            out.write(f"{'*' if p.current else ' '} {p.version:<20} {state:<10} {p.sha256[:12]}\n")
        token = page.next_page_token
        if not token:
            return 0


async def _history(stub: Any, args: argparse.Namespace, metadata: Any, out: TextIO) -> int:
    page = await stub.ListOperations(
        skill_service_pb2.ListOperationsRequest(skill_id=args.skill, page_size=20),
        metadata=metadata,
    )
    for op in page.operations:
        kind = resources_pb2.OperationType.Name(op.type).removeprefix("OPERATION_TYPE_")
        state = STATES.Name(op.state).removeprefix("OPERATION_STATE_")
        out.write(f"{op.create_time.ToJsonString()} {kind:<8} {op.version:<16} {state}\n")
        if op.error.message:
            out.write(f"    {op.error.message}\n")
    return 0


async def _rollback(stub: Any, args: argparse.Namespace, metadata: Any, out: TextIO) -> int:
    op = await stub.Rollback(
        skill_service_pb2.RollbackRequest(
            skill_id=args.skill, target_version=args.to or "", reason=args.reason or ""
        ),
        metadata=metadata,
    )
    out.write(f"rolled back {args.skill}: {op.from_version} -> {op.to_version}\n")
    return 0


COMMANDS = {
    "install": _install,
    "validate": _validate,
    "packages": _packages,
    "history": _history,
    "rollback": _rollback,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skillctl", description=__doc__.split("\n")[0])
    parser.add_argument("--addr", default=os.environ.get("SKILLSVC_ADDR", "127.0.0.1:50051"))
    parser.add_argument("--token", default=os.environ.get("SKILLSVC_TOKEN"))
    sub = parser.add_subparsers(dest="command", required=True)
    install = sub.add_parser("install", help="upload and install a package")
    install.add_argument("skill")
    install.add_argument("archive")
    install.add_argument("--version")
    install.add_argument("--no-activate", action="store_true")
    validate = sub.add_parser("validate", help="validate a package without installing")
    validate.add_argument("archive")
    validate.add_argument("--skill")
    validate.add_argument("--version")
    sub.add_parser("packages", help="list a skill's packages").add_argument("skill")
    sub.add_parser("history", help="a skill's recent operations").add_argument("skill")
    rollback = sub.add_parser("rollback", help="make an earlier version current")
    rollback.add_argument("skill")
    rollback.add_argument("--to")
    rollback.add_argument("--reason")
    return parser


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    async with grpc.aio.insecure_channel(args.addr) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        try:
            return await COMMANDS[args.command](stub, args, _metadata(args.token), out)
        except grpc.aio.AioRpcError as exc:
            out.write(f"skillctl: {exc.code().name}: {exc.details()}\n")
            return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return asyncio.run(_run(_parser().parse_args(argv), sys.stdout))


if __name__ == "__main__":
    raise SystemExit(main())
