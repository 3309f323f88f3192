"""The README's "Clients" examples for Python and skillctl, run as written."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from skillsvc.server import App
from tests.clients.conftest import make_skill_folder, skillctl

README_ADDRESS = "127.0.0.1:50051"


def _section(repo_root: Path, title: str) -> str:
    text = (repo_root / "README.md").read_text()
    start = text.index(f"\n### {title}\n")
    end = text.index("\n#", start + 1)
    return text[start:end]


async def test_python_library_example(
    app: App, repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (code,) = re.findall(r"```python\n(.*?)```", _section(repo_root, "Python library"), re.S)
    make_skill_folder(tmp_path / "pdf-tools", big=True)
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()

    def run() -> None:
        namespace: dict[str, Any] = {}
        with contextlib.redirect_stdout(printed):
            exec(compile(code.replace(README_ADDRESS, app.address), "README.md", "exec"), namespace)

    # The blocking client must not block the event loop the server runs on.
    await asyncio.to_thread(run)
    lines = printed.getvalue().splitlines()
    assert lines[0].startswith("2 1048576 ")  # INSTALL_STAGE_RECEIVING, bytes so far
    assert re.fullmatch(r"1\.0\.0 [0-9a-f]{64}", lines[-1])


async def test_skillctl_example(app: App, repo_root: Path, tmp_path: Path) -> None:
    (block,) = re.findall(r"```sh\n(.*?)```", _section(repo_root, "skillctl"), re.S)
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    runs = [shlex.split(c)[1:] for c in commands if c.startswith("skillctl ")]
    assert len(runs) == 4
    make_skill_folder(tmp_path / "pdf-tools")
    for argv in runs:
        result = await skillctl(app.address, *argv, cwd=tmp_path)
        assert result.code == 0, (argv, result.err)
    assert (tmp_path / "pdf-tools.tgz").is_file()
