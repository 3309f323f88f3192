"""The Python client in clients/python against a real server."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

from skillsvc.server import App
from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.packages import make_archive, skill_archive, skill_md


def _skillctl(repo_root: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "skillctl", repo_root / "clients" / "python" / "skillctl.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["skillctl"] = module
    spec.loader.exec_module(module)
    return module


async def _run(skillctl: ModuleType, app: App, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = await skillctl._run(skillctl._parser().parse_args(["--addr", app.address, *argv]), out)
    return code, out.getvalue()


async def test_install_validate_list_history_rollback(
    app: App, stub: skill_service_pb2_grpc.SkillServiceStub, repo_root: Path, tmp_path: Path
) -> None:
    skillctl = _skillctl(repo_root)
    await stub.CreateSkillDefinition(
        skill_service_pb2.CreateSkillDefinitionRequest(
            definition=resources_pb2.SkillDefinition(skill_id="pdf-tools")
        )
    )
    for version in ("1.0.0", "1.1.0"):
        archive = tmp_path / f"{version}.tgz"
        archive.write_bytes(skill_archive("pdf-tools", version))
        code, out = await _run(skillctl, app, "install", "pdf-tools", str(archive))
        assert code == 0, out
        assert "uploading: 100%" in out
        assert "committing" in out
        assert out.endswith("installed pdf-tools\n")
    code, out = await _run(skillctl, app, "packages", "pdf-tools")
    assert out.splitlines()[0].startswith("* 1.1.0")
    code, out = await _run(skillctl, app, "rollback", "pdf-tools", "--reason", "bad")
    assert out == "rolled back pdf-tools: 1.1.0 -> 1.0.0\n"
    code, out = await _run(skillctl, app, "history", "pdf-tools")
    assert out.splitlines()[0].split()[1:] == ["ROLLBACK", "1.0.0", "SUCCEEDED"]

    bad = tmp_path / "bad.zip"
    bad.write_bytes(make_archive({"SKILL.md": skill_md("pdf-tools"), "../x": "y"}, "zip"))
    code, out = await _run(skillctl, app, "validate", str(bad))
    assert code == 1
    assert "PATH_TRAVERSAL" in out
    code, out = await _run(skillctl, app, "install", "pdf-tools", str(bad), "--version", "3.0.0")
    assert code == 1
    assert "failed: package validation failed" in out
    code, out = await _run(skillctl, app, "packages", "no-such-skill")
    assert (code, out.split(":")[1].strip()) == (2, "NOT_FOUND")


def test_progress_bar_draws_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    skillctl_bar = _skillctl(Path(__file__).resolve().parent.parent).ProgressBar
    out = Tty()
    bar = skillctl_bar(200, out, width=10)
    bar.update(100, "uploading")
    bar.update(200, "uploading")
    bar.close()
    assert out.getvalue() == ("\ruploading    [#####-----]  50%\ruploading    [##########] 100%\n")
