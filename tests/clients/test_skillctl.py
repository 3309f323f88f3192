"""skillctl as users run it: a real process against a real server.

stdout and stderr are pipes here, so the progress display is the plain-line one.
"""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg

from skillsvc.server import App
from tests.clients.conftest import HttpSource, make_skill_folder, skillctl
from tests.packages import make_archive, skill_archive, skill_md
from tests.processes import free_port


async def test_install_a_folder_with_progress_then_again_as_a_no_op(
    app: App, tmp_path: Path
) -> None:
    folder = make_skill_folder(tmp_path / "pdf-tools", big=True)
    first = await skillctl(app.address, "install", str(folder), "--create")
    assert first.code == 0, first.err
    assert first.out.startswith("installed pdf-tools 1.0.0 (current) sha256 ")
    progress = first.err.splitlines()
    # Every stage, and the upload's bytes by quarters, as plain lines.
    assert re.fullmatch(r"receiving: 1\.0 MiB of 2\.5 MiB \(39%\)", progress[0])
    assert re.fullmatch(r"receiving: 2\.0 MiB of 2\.5 MiB \(79%\)", progress[1])
    assert re.fullmatch(r"receiving: 2\.5 MiB of 2\.5 MiB \(100%\)", progress[2])
    # Then a line per stage the server reports (it sends the current stage when the
    # watch starts, so a fast install may skip early ones), in pipeline order, to done.
    stages = [line.split(":")[0] for line in progress[3:]]
    order = ["queued", "verifying", "extracting", "validating", "committing", "activating"]
    assert stages[0] == "queued" and stages[-1] == "done", first.err
    assert stages[:-1] == sorted(stages[:-1], key=order.index), first.err
    sha = first.out.split("sha256 ")[1].split()[0]

    second = await skillctl(app.address, "install", str(folder), "--json")
    assert second.code == 0, second.err
    assert second.err == ""  # --json: no progress, stdout is one JSON document
    op = second.json()
    assert (op["state"], op["version"], op["skillId"]) == (
        "OPERATION_STATE_SUCCEEDED",
        "1.0.0",
        "pdf-tools",
    )
    versions = await skillctl(app.address, "versions", "pdf-tools", "--json")
    assert [(p["version"], p["sha256"]) for p in versions.json()["packages"]] == [("1.0.0", sha)]
    human = await skillctl(app.address, "versions", "pdf-tools")
    assert human.out.startswith(f"* 1.0.0                READY      {sha[:12]} ")


async def test_a_missing_definition_is_reported_before_any_byte(
    app: App, db: asyncpg.Connection, tmp_path: Path
) -> None:
    folder = make_skill_folder(tmp_path / "pdf-tools")
    result = await skillctl(app.address, "install", str(folder))
    assert result.code == 3
    assert result.err == (
        "skillctl: NOT_FOUND: skill 'pdf-tools' does not exist; create it with "
        "`skillctl create pdf-tools` or pass --create\n"
    )
    assert await db.fetchval("SELECT count(*) FROM skill_install_logs") == 0


async def test_a_hostile_archive_fails_naming_the_violation(app: App, tmp_path: Path) -> None:
    hostile = tmp_path / "evil.zip"
    hostile.write_bytes(make_archive({"SKILL.md": skill_md("pdf-tools"), "../escape": "x"}, "zip"))
    checked = await skillctl(app.address, "validate", str(hostile))
    assert checked.code == 1
    assert "error    PATH_TRAVERSAL       ../escape:" in checked.out
    assert checked.err.startswith("skillctl: invalid package: PATH_TRAVERSAL ../escape: ")

    installed = await skillctl(app.address, "install", str(hostile), "--create")
    assert installed.code == 1
    last = installed.err.splitlines()[-1]
    assert last.startswith("skillctl: install of pdf-tools failed: INVALID_ARGUMENT: ")
    assert "PATH_TRAVERSAL (../escape)" in last
    as_json = await skillctl(app.address, "install", str(hostile), "--json")
    assert as_json.code == 1
    error = as_json.json()["error"]
    assert [v["code"] for v in error["report"]["violations"]] == ["PATH_TRAVERSAL"]
    assert error["operation"]["state"] == "OPERATION_STATE_FAILED"


async def test_url_watch_retry_rollback_download_history_and_delete(
    app: App, http_source: HttpSource, tmp_path: Path
) -> None:
    url = http_source.url("/mirror.tgz")
    created = await skillctl(app.address, "create", "mirror", "--description", "a mirror")
    assert created.out == "created mirror\n"
    failed = await skillctl(app.address, "install", url, "--skill", "mirror", "--version", "1.0.0")
    assert failed.code == 1 and "404" in failed.err.splitlines()[-1]
    history = await skillctl(app.address, "history", "mirror", "--json")
    failed_id = history.json()["operations"][0]["operationId"]

    http_source.files["/mirror.tgz"] = skill_archive("mirror", "1.0.0")
    retried = await skillctl(app.address, "retry", failed_id)
    assert retried.code == 0, retried.err
    assert retried.out.startswith("installed mirror 1.0.0 (attempt 2, operation ")
    assert "done" in retried.err
    new_id = retried.out.split("operation ")[1].rstrip(")\n")
    watched = await skillctl(app.address, "watch", new_id)
    assert (watched.code, watched.out) == (0, "mirror 1.0.0: done\n")
    assert (await skillctl(app.address, "watch", failed_id)).code == 1

    archive = tmp_path / "mirror-1.1.0.tgz"
    archive.write_bytes(skill_archive("mirror", "1.1.0"))
    assert (await skillctl(app.address, "install", str(archive))).code == 0
    shown = await skillctl(app.address, "show", "mirror")
    assert "current:     1.1.0" in shown.out

    back = await skillctl(app.address, "rollback", "mirror", "--reason", "1.1.0 is broken")
    assert back.out == "rolled back mirror: 1.1.0 -> 1.0.0\n"
    history = await skillctl(app.address, "history", "mirror")
    assert history.out.splitlines()[0].split()[1:6] == [
        "ROLLBACK",
        "1.0.0",
        "SUCCEEDED",
        "1.1.0",
        "->",
    ]

    target = tmp_path / "copy.tgz"
    got = await skillctl(app.address, "download", "mirror", "--version", "1.1.0", "-o", str(target))
    assert got.code == 0 and "verified" in got.out
    assert target.read_bytes() == archive.read_bytes()

    listed = await skillctl(app.address, "list", "--json")
    assert [d["skillId"] for d in listed.json()["definitions"]] == ["mirror"]
    refused = await skillctl(app.address, "delete", "mirror")
    assert refused.code == 1 and refused.err.startswith("skillctl: FAILED_PRECONDITION: ")
    assert (await skillctl(app.address, "delete", "mirror", "--force")).code == 0
    gone = await skillctl(app.address, "show", "mirror", "--json")
    assert gone.code == 3
    assert gone.json()["error"]["code"] == "NOT_FOUND"


async def test_exit_codes_and_one_line_errors(make_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.auth.conftest import SECRET, mint

    app: App = await make_app(auth="jwt", jwt_secret=SECRET)
    reader = mint("bob", "acme", ["reader"])
    usage = await skillctl(app.address)
    assert usage.code == 2 and "required" in usage.err
    assert (await skillctl(app.address, "--help")).code == 0
    missing = await skillctl(app.address, "install", str(tmp_path / "nope.zip"))
    assert (missing.code, missing.err) == (
        2,
        f"skillctl: {tmp_path / 'nope.zip'}: no such file or folder\n",
    )
    (tmp_path / "empty").mkdir()
    not_a_skill = await skillctl(app.address, "install", str(tmp_path / "empty"))
    assert not_a_skill.code == 2 and "no SKILL.md" in not_a_skill.err
    bad_id = await skillctl(app.address, "create", "Bad_Id", "--token", mint("root", "", ["admin"]))
    assert bad_id.code == 1
    assert (
        bad_id.err.startswith("skillctl: INVALID_ARGUMENT: ")
        and "definition.skill_id" in bad_id.err
    )
    denied = await skillctl(app.address, "create", "pdf-tools", SKILLSVC_TOKEN=reader)
    assert denied.code == 4 and denied.err.startswith("skillctl: PERMISSION_DENIED")
    anonymous = await skillctl(app.address, "list")
    assert anonymous.code == 4 and anonymous.err.startswith("skillctl: UNAUTHENTICATED")
    assert (await skillctl(app.address, "show", "nothing", "--token", reader)).code == 3
    down = await skillctl(f"127.0.0.1:{free_port()}", "list", "--timeout", "2")
    assert down.code == 5 and down.err.startswith("skillctl: UNAVAILABLE")


def test_the_progress_display_on_a_terminal() -> None:
    import io

    from skillsvc_client._progress import ProgressView
    from skillsvc_client.v1 import resources_pb2 as pb

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    total = 3 << 20
    with ProgressView(screen) as view:
        for done in (1 << 20, 2 << 20, total):
            view.update(
                pb.InstallEvent(
                    stage=pb.INSTALL_STAGE_RECEIVING,
                    bytes_done=done,
                    bytes_total=total,
                    message="uploading",
                )
            )
        for stage, message in (
            (pb.INSTALL_STAGE_VALIDATING, "validating the package"),
            (pb.INSTALL_STAGE_DONE, "1.0.0 installed and current"),
        ):
            view.update(pb.InstallEvent(stage=stage, message=message))
    raw = screen.getvalue()
    shown = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", raw)
    # rich redraws in place (cursor controls), keeps a ticked line per finished stage,
    # and shows the upload in bytes.
    assert "\x1b[" in raw
    assert "✓ receiving: uploading" in shown
    assert "✓ validating: validating the package" in shown
    assert "done: 1.0.0 installed and current" in shown
    assert "2.0 MiB of 3.0 MiB" in shown


async def test_skillctl_over_mutual_tls_with_a_token_from_the_environment(
    make_app, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from tests.auth.certs import CertificateAuthority
    from tests.auth.conftest import SECRET, mint

    ca = CertificateAuthority()
    cert, key = ca.issue("skillsvc", server=True).write(tmp_path, "server")
    client_cert, client_key = ca.issue("ci", server=False).write(tmp_path, "client")
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    app: App = await make_app(
        tls_cert_file=cert,
        tls_key_file=key,
        tls_client_ca_file=tmp_path / "ca.pem",
        auth="jwt",
        jwt_secret=SECRET,
    )
    env = {
        "SKILLSVC_CA": str(tmp_path / "ca.pem"),
        "SKILLSVC_CERT": str(client_cert),
        "SKILLSVC_KEY": str(client_key),
        "SKILLSVC_TOKEN": mint("root", "", ["admin"]),
    }
    created = await skillctl(
        app.address, "create", "pdf-tools", "--server-name", "localhost", **env
    )
    assert created.code == 0, created.err
    listed = await skillctl(app.address, "list", "--json", "--server-name", "localhost", **env)
    assert [d["skillId"] for d in listed.json()["definitions"]] == ["pdf-tools"]
    # The same with flags instead of the environment; plaintext is refused.
    flags = [
        "--ca",
        env["SKILLSVC_CA"],
        "--cert",
        env["SKILLSVC_CERT"],
        "--key",
        env["SKILLSVC_KEY"],
    ]
    shown = await skillctl(
        app.address,
        "show",
        "pdf-tools",
        "--server-name",
        "localhost",
        *flags,
        "--token",
        env["SKILLSVC_TOKEN"],
    )
    assert shown.code == 0 and "skill:       pdf-tools" in shown.out
    half = await skillctl(
        app.address, "list", "--ca", env["SKILLSVC_CA"], "--cert", str(client_cert)
    )
    assert half.code == 2 and "needs both a client certificate and its key" in half.err
    plain = await skillctl(
        app.address, "list", "--timeout", "2", SKILLSVC_TOKEN=env["SKILLSVC_TOKEN"]
    )
    assert plain.code == 5
