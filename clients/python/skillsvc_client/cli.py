"""skillctl: install, inspect and roll back skills on a skillsvc server.

Exit codes: 0 ok; 1 invalid package, failed install or other refusal; 2 usage or
unusable local input (a missing file, a folder without SKILL.md); 3 not found;
4 permission denied or not authenticated; 5 server unavailable or too slow.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from skillsvc_client._common import Connection
from skillsvc_client._errors import (
    InstallFailed,
    InvalidArgument,
    LocalError,
    NotFound,
    PermissionDenied,
    SkillsvcError,
    Unavailable,
    describe,
    error_violations,
)
from skillsvc_client._files import IntegrityError
from skillsvc_client._progress import ProgressView, human_bytes, stage_name
from skillsvc_client._sync import Client
from skillsvc_client.v1 import resources_pb2

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_PERMISSION, EXIT_UNAVAILABLE = range(6)

EPILOG = """\
environment: SKILLSVC_ADDR (default 127.0.0.1:50051), SKILLSVC_TOKEN, SKILLSVC_CA,
SKILLSVC_CERT, SKILLSVC_KEY (flags win).
exit codes: 0 ok, 1 invalid package or failed install, 2 usage, 3 not found,
4 permission denied, 5 unavailable.
"""


class Usage(Exception):
    """A command line that cannot run (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: scripts grep stderr.
        raise Usage(f"{message} (see `{self.prog} --help`)")


class Output:
    """Where a command writes: results on stdout, progress and errors on stderr."""

    def __init__(self, out: TextIO, err: TextIO, *, as_json: bool) -> None:
        self.out, self.err, self.json = out, err, as_json

    def emit(self, human: str, data: Any) -> None:
        """Print ``human`` text, or ``data`` as JSON with ``--json``."""
        if self.json:
            self.out.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        elif human:
            self.out.write(human.rstrip("\n") + "\n")

    def progress(self) -> ProgressView:
        """The live display (silent with ``--json``: stdout stays one JSON document)."""
        return ProgressView(self.err, enabled=not self.json)


def as_dict(message: Message) -> dict[str, Any]:
    """A message in protobuf's JSON mapping (lowerCamelCase names)."""
    result: dict[str, Any] = json_format.MessageToDict(message)
    return result


def _enum(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix)


# -- commands -------------------------------------------------------------------------


def _follow(client: Client, events: Any, out: Output) -> resources_pb2.Operation:
    """Show ``events`` and return the finished operation (InstallFailed if it failed)."""
    operation_id = ""
    with out.progress() as view:
        for event in events:
            operation_id = event.operation_id or operation_id
            view.update(event)
    op = client.operation(operation_id)
    if op.state != resources_pb2.OPERATION_STATE_SUCCEEDED:
        raise InstallFailed(op)
    return op


def cmd_install(client: Client, args: argparse.Namespace, out: Output) -> int:
    install = client.install(args.source, args.skill, args.version, not args.no_activate)
    skill = install.skill_id
    # A missing definition is found before a byte of the package is sent.
    try:
        client.get(skill)
    except NotFound:
        if not args.create:
            raise NotFound(
                grpc.StatusCode.NOT_FOUND,
                f"skill {skill!r} does not exist; create it with `skillctl create {skill}` "
                "or pass --create",
            ) from None
        package = install.package
        client.create(
            skill,
            display_name=skill,
            description=package.description[:1024] if package else "",
        )
    op = _follow(client, install, out)
    activated = "" if args.no_activate else " (current)"
    out.emit(
        f"installed {skill} {op.version}{activated} sha256 {install.sha256 or '-'} "
        f"(operation {op.operation_id})",
        as_dict(op),
    )
    return EXIT_OK


def cmd_validate(client: Client, args: argparse.Namespace, out: Output) -> int:
    report = client.validate(args.source, args.skill, args.version)
    lines = []
    for v in report.violations:
        severity = _enum(resources_pb2.Severity, v.severity, "SEVERITY_").lower()
        lines.append(f"{severity:<8} {v.code:<20} {v.path or '-'}: {v.message}")
    verdict = "valid" if report.valid else "INVALID"
    lines.append(
        f"{verdict}: {report.manifest.name or '?'} {report.manifest.version or '(no version)'}, "
        f"{report.file_count} files, {human_bytes(report.unpacked_bytes)} unpacked, "
        f"sha256 {report.sha256}"
    )
    out.emit("\n".join(lines), as_dict(report))
    if not report.valid:
        out.err.write("skillctl: invalid package: " + "; ".join(error_violations(report)) + "\n")
        return EXIT_FAILED
    return EXIT_OK


def cmd_create(client: Client, args: argparse.Namespace, out: Output) -> int:
    definition = client.create(
        args.skill,
        display_name=args.display_name or "",
        description=args.description or "",
        tenant=args.tenant or "",
        public=False if args.private else None,
        active=False if args.inactive else None,
    )
    out.emit(f"created {definition.skill_id}", as_dict(definition))
    return EXIT_OK


def _definition_line(d: resources_pb2.SkillDefinition) -> str:
    flags = ("" if d.active else " inactive") + ("" if d.public else " private")
    return f"{d.skill_id:<32} {d.current_version or '-':<16} {d.display_name}{flags}"


def cmd_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    definitions = client.list(include_inactive=args.all)
    out.emit(
        "\n".join(_definition_line(d) for d in definitions) or "no skills",
        {"definitions": [as_dict(d) for d in definitions]},
    )
    return EXIT_OK


def cmd_show(client: Client, args: argparse.Namespace, out: Output) -> int:
    d = client.get(args.skill)
    package = client.package(args.skill) if d.current_version else None
    lines = [
        f"skill:       {d.skill_id}",
        f"name:        {d.display_name}",
        f"description: {d.description}",
        f"tenant:      {d.tenant or '(platform)'}",
        f"active:      {str(d.active).lower()}",
        f"public:      {str(d.public).lower()}",
        f"current:     {d.current_version or '-'}",
    ]
    if package is not None:
        lines += [
            f"sha256:      {package.sha256}",
            f"files:       {package.file_count} ({human_bytes(package.unpacked_bytes)})",
            f"path:        {package.path}",
        ]
    data = as_dict(d)
    if package is not None:
        data["currentPackage"] = as_dict(package)
    out.emit("\n".join(lines), data)
    return EXIT_OK


def cmd_versions(client: Client, args: argparse.Namespace, out: Output) -> int:
    packages = client.versions(args.skill)
    lines = [
        f"{'*' if p.current else ' '} {p.version:<20} "
        f"{_enum(resources_pb2.PackageState, p.state, 'PACKAGE_STATE_'):<10} "
        f"{p.sha256[:12]} {human_bytes(p.size_bytes)}"
        for p in packages
    ]
    out.emit("\n".join(lines) or "no versions", {"packages": [as_dict(p) for p in packages]})
    return EXIT_OK


def cmd_history(client: Client, args: argparse.Namespace, out: Output) -> int:
    operations = client.history(args.skill)
    lines = []
    for op in operations:
        kind = _enum(resources_pb2.OperationType, op.type, "OPERATION_TYPE_")
        state = _enum(resources_pb2.OperationState, op.state, "OPERATION_STATE_")
        line = f"{op.create_time.ToJsonString()} {kind:<8} {op.version or '-':<16} {state}"
        if op.type == resources_pb2.OPERATION_TYPE_ROLLBACK:
            line += f" {op.from_version} -> {op.to_version}"
        if op.error.message:
            line += f": {op.error.message}"
        lines.append(line + f" ({op.operation_id})")
    out.emit(
        "\n".join(lines) or "no operations", {"operations": [as_dict(op) for op in operations]}
    )
    return EXIT_OK


def cmd_rollback(client: Client, args: argparse.Namespace, out: Output) -> int:
    op = client.rollback(args.skill, to=args.to or "", reason=args.reason or "")
    out.emit(f"rolled back {op.skill_id}: {op.from_version} -> {op.to_version}", as_dict(op))
    return EXIT_OK


def cmd_retry(client: Client, args: argparse.Namespace, out: Output) -> int:
    op = client.retry(args.operation_id)
    op = _follow(client, client.watch(op.operation_id), out)
    out.emit(
        f"installed {op.skill_id} {op.version} (attempt {op.attempt}, operation {op.operation_id})",
        as_dict(op),
    )
    return EXIT_OK


def cmd_watch(client: Client, args: argparse.Namespace, out: Output) -> int:
    op = _follow(client, client.watch(args.operation_id), out)
    out.emit(f"{op.skill_id} {op.version}: {stage_name(op.stage)}", as_dict(op))
    return EXIT_OK


def _skill_event_line(e: resources_pb2.SkillEvent) -> str:
    kind = _enum(resources_pb2.SkillEventType, e.type, "SKILL_EVENT_TYPE_")
    if e.type == resources_pb2.SKILL_EVENT_TYPE_SYNCED:
        return f"{e.seq} {kind} (following changes from here)"
    if e.type == resources_pb2.SKILL_EVENT_TYPE_CURRENT_CHANGED:
        detail = f" {e.from_version or '-'} -> {e.to_version or '-'}"
    else:
        detail = f" {e.version}" if e.version else ""
    return f"{e.seq} {kind} {e.skill_id}{detail}"


def cmd_watch_skills(client: Client, args: argparse.Namespace, out: Output) -> int:
    # One line per event as it arrives (with --json, one compact JSON object per line),
    # flushed at once so a pipe sees each event when it happens.
    changes = 0
    for event in client.watch_skills(args.skills, args.since):
        if out.json:
            out.out.write(json.dumps(as_dict(event), sort_keys=True) + "\n")
        else:
            out.out.write(_skill_event_line(event) + "\n")
        out.out.flush()
        if event.type != resources_pb2.SKILL_EVENT_TYPE_SYNCED:
            changes += 1
            if args.count is not None and changes >= args.count:
                break
    return EXIT_OK


def cmd_download(client: Client, args: argparse.Namespace, out: Output) -> int:
    info = client.download(args.skill, args.output, version=args.version or "")
    out.emit(
        f"downloaded {info.skill_id} {info.version} to {args.output} "
        f"({human_bytes(info.size_bytes)}, sha256 {info.sha256} verified)",
        {**as_dict(info), "path": str(args.output)},
    )
    return EXIT_OK


def cmd_delete(client: Client, args: argparse.Namespace, out: Output) -> int:
    client.delete(args.skill, force=args.force)
    out.emit(f"deleted {args.skill}", {"deleted": args.skill})
    return EXIT_OK


# -- parsing --------------------------------------------------------------------------


def _common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On subcommands the defaults are suppressed, so `skillctl --json list` and
    # `skillctl list --json` both work and the top-level value is not overwritten.
    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("connection")
    group.add_argument("--addr", default=default(None), help="server host:port ($SKILLSVC_ADDR)")
    group.add_argument("--token", default=default(None), help="bearer token ($SKILLSVC_TOKEN)")
    group.add_argument("--tls", action="store_true", default=default(False), help="use TLS")
    group.add_argument("--ca", type=Path, default=default(None), help="CA file ($SKILLSVC_CA)")
    group.add_argument(
        "--cert", type=Path, default=default(None), help="client certificate ($SKILLSVC_CERT)"
    )
    group.add_argument("--key", type=Path, default=default(None), help="client key ($SKILLSVC_KEY)")
    group.add_argument(
        "--server-name", default=default(None), help="name to verify in the server certificate"
    )
    group.add_argument(
        "--timeout", type=float, default=default(None), help="unary call deadline, s (default 30)"
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON on stdout"
    )


COMMANDS: dict[str, tuple[Callable[[Client, argparse.Namespace, Output], int], str]] = {
    "install": (cmd_install, "install a skill folder, archive or URL, showing progress"),
    "validate": (cmd_validate, "check a folder, archive or URL without installing"),
    "create": (cmd_create, "create a skill definition"),
    "list": (cmd_list, "list skill definitions"),
    "show": (cmd_show, "show a skill definition and its current version"),
    "versions": (cmd_versions, "list a skill's installed versions"),
    "history": (cmd_history, "list a skill's operations (install log)"),
    "rollback": (cmd_rollback, "make an earlier version current"),
    "retry": (cmd_retry, "retry a failed install and follow it"),
    "download": (cmd_download, "download a version's archive, verifying its sha256"),
    "watch": (cmd_watch, "follow an operation's progress to its end"),
    "watch-skills": (cmd_watch_skills, "print changes of skills as they happen"),
    "delete": (cmd_delete, "delete a skill definition"),
}


def build_parser() -> argparse.ArgumentParser:
    """skillctl's argument parser."""
    parser = _Parser(
        prog="skillctl",
        description=(__doc__ or "").split("\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers: dict[str, argparse.ArgumentParser] = {}
    for name, (_, text) in COMMANDS.items():
        parsers[name] = sub.add_parser(name, help=text, description=text)
        _common_options(parsers[name], top=False)

    p = parsers["install"]
    p.add_argument("source", metavar="PATH|ARCHIVE|URL")
    p.add_argument("--skill", help="skill id (default: SKILL.md's name)")
    p.add_argument("--version", help="version (default: from the package, or assigned)")
    p.add_argument("--no-activate", action="store_true", help="install without making current")
    p.add_argument("--create", action="store_true", help="create the definition if missing")
    p = parsers["validate"]
    p.add_argument("source", metavar="PATH|ARCHIVE|URL")
    p.add_argument("--skill", help="check the package's name against this id")
    p.add_argument("--version", help="check the package's version against this")
    p = parsers["create"]
    p.add_argument("skill")
    p.add_argument("--display-name")
    p.add_argument("--description")
    p.add_argument("--tenant", help="owning tenant (admins only; default: the caller's)")
    p.add_argument("--private", action="store_true", help="visible to its tenant only")
    p.add_argument("--inactive", action="store_true", help="create it inactive")
    parsers["list"].add_argument("--all", action="store_true", help="include inactive ones")
    for name in ("show", "versions", "history"):
        parsers[name].add_argument("skill")
    p = parsers["rollback"]
    p.add_argument("skill")
    p.add_argument("--to", help="target version (default: the last known-good one)")
    p.add_argument("--reason", help="why, kept in the history")
    parsers["retry"].add_argument("operation_id")
    parsers["watch"].add_argument("operation_id")
    p = parsers["watch-skills"]
    p.add_argument("skills", nargs="*", metavar="SKILL", help="default: every visible skill")
    p.add_argument(
        "--since",
        type=int,
        help="resume after this seq (the last one printed); default: from now",
    )
    p.add_argument("--count", type=int, help="exit after this many changes (default: never)")
    p = parsers["download"]
    p.add_argument("skill")
    p.add_argument("--version", help="default: the current version")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    p = parsers["delete"]
    p.add_argument("skill")
    p.add_argument("--force", action="store_true", help="also remove its packages and files")
    return parser


def exit_code(error: Exception) -> int:
    """The documented exit code for an error."""
    if isinstance(error, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(error, PermissionDenied):
        return EXIT_PERMISSION
    if isinstance(error, Unavailable):
        return EXIT_UNAVAILABLE
    if isinstance(error, IntegrityError | SkillsvcError):
        return EXIT_FAILED
    return EXIT_USAGE


def _message(error: Exception) -> str:
    if isinstance(error, InstallFailed):
        what = f"{error.operation.skill_id} {error.operation.version}".strip()
        return f"install of {what} failed: {describe(error)}"
    if isinstance(error, InvalidArgument | SkillsvcError):
        return describe(error)
    return str(error)


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run skillctl; returns the exit code (the console script exits with it)."""
    out = Output(stdout or sys.stdout, stderr or sys.stderr, as_json=False)
    try:
        args = build_parser().parse_args(argv)
        out.json = args.json
        connection = Connection.from_env(
            address=args.addr,
            token=args.token,
            tls=args.tls or None,
            ca_file=args.ca,
            cert_file=args.cert,
            key_file=args.key,
            server_name=args.server_name,
            timeout=args.timeout,
        )
        with Client(connection) as client:
            return COMMANDS[args.command][0](client, args, out)
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0)
    except (Usage, LocalError, SkillsvcError) as exc:
        out.err.write(f"skillctl: {_message(exc)}\n")
        if out.json and isinstance(exc, SkillsvcError):
            error: dict[str, Any] = {"code": exc.code.name, "message": exc.message}
            if exc.reason:
                error["reason"] = exc.reason
            if exc.field_violations:
                error["fieldViolations"] = [
                    {"field": v.field, "description": v.description} for v in exc.field_violations
                ]
            if exc.report is not None:
                error["report"] = as_dict(exc.report)
            if isinstance(exc, InstallFailed):
                error["operation"] = as_dict(exc.operation)
            out.emit("", {"error": error})
        return exit_code(exc)
    except KeyboardInterrupt:
        out.err.write("skillctl: interrupted\n")
        return 130
    except Exception as exc:
        out.err.write(f"skillctl: unexpected {type(exc).__name__}: {exc}\n")
        return EXIT_FAILED


def run() -> None:
    """Console-script entry point."""
    raise SystemExit(main())


if __name__ == "__main__":
    run()
