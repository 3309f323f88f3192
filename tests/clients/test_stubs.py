"""The client's generated stubs: one source of truth with the server's, drift detected."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

CLIENT_V1 = Path("clients") / "python" / "skillsvc_client" / "v1"
SERVER_V1 = Path("skillsvc") / "v1"


def test_the_client_copy_differs_only_in_python_import_paths(repo_root: Path) -> None:
    server = sorted(p.name for p in (repo_root / SERVER_V1).iterdir() if p.is_file())
    client = sorted(p.name for p in (repo_root / CLIENT_V1).iterdir() if p.is_file())
    assert server == client
    for name in server:
        ours = (repo_root / CLIENT_V1 / name).read_text()
        theirs = (repo_root / SERVER_V1 / name).read_text()
        # Descriptors and RPC paths are untouched; only module references move.
        assert ours.replace("skillsvc_client.v1", "skillsvc.v1") == theirs, name
        assert ours.count("/skillsvc.v1.SkillService/") == theirs.count(
            "/skillsvc.v1.SkillService/"
        )


def test_both_copies_load_in_one_process_and_share_message_classes() -> None:
    from skillsvc.v1 import resources_pb2 as server_pb
    from skillsvc_client.v1 import resources_pb2 as client_pb

    assert client_pb.Operation is server_pb.Operation
    assert client_pb.DESCRIPTOR.serialized_pb == server_pb.DESCRIPTOR.serialized_pb


def test_gen_protos_check_catches_drift_in_the_client_copy(repo_root: Path, tmp_path: Path) -> None:
    for part in ("scripts", "protos", str(SERVER_V1), str(CLIENT_V1)):
        shutil.copytree(
            repo_root / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__")
        )

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "scripts/gen_protos.py", "--check"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert check().returncode == 0
    stub = tmp_path / CLIENT_V1 / "resources_pb2.pyi"
    stub.write_text(stub.read_text() + "\n# edited by hand\n")
    stale = check()
    assert stale.returncode == 1
    assert str(CLIENT_V1 / "resources_pb2.pyi") in stale.stdout
