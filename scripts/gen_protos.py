"""Generate the Python code of the contract: the only writer of ``skillsvc/v1/`` and of
the client's copy, ``clients/python/skillsvc_client/v1/``.

Runs ``grpc_tools.protoc`` with the mypy-protobuf plugins on ``protos/skillsvc/v1``.
Because the directory mirrors the package (``protos/skillsvc/v1`` <-> ``skillsvc.v1``),
``--python_out=.`` writes ``skillsvc/v1/`` with imports that resolve unchanged.

The ``skillsvc-client`` distribution must install beside the server or alone, so it
cannot ship a second ``skillsvc`` package; it carries the same generated modules as
``skillsvc_client.v1``. Only the Python import paths are rewritten (``skillsvc.v1`` ->
``skillsvc_client.v1``); the serialized descriptors, proto file names and RPC paths stay
byte-for-byte the same, so when both copies are imported in one process protobuf's
default pool sees one identical file twice and both modules share the message classes.

    python scripts/gen_protos.py           # regenerate both copies
    python scripts/gen_protos.py --check   # exit 1 if either committed copy is stale
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT_PACKAGE = Path("skillsvc") / "v1"
INIT_TEXT = (
    '"""Generated protobuf and gRPC code for skillsvc.v1. Do not edit: run `make proto`."""\n'
)
CLIENT_PACKAGE = Path("clients") / "python" / "skillsvc_client" / "v1"
# A Python reference to a generated module: `from skillsvc.v1 import x_pb2` or
# `skillsvc.v1.x_pb2`. RPC paths ('/skillsvc.v1.SkillService/...') and the serialized
# descriptors never match, so the wire contract is untouched by the rewrite.
_MODULE_REF = re.compile(r"\bskillsvc\.v1(?= import |\.\w+_pb2(?:_grpc)?\b)")


def _include_dirs() -> list[str]:
    # google/protobuf/*.proto ship with grpc_tools; google/rpc/*.proto with
    # googleapis-common-protos (the same files the runtime imports).
    grpc_tools_protos = resources.files("grpc_tools") / "_proto"
    import google.rpc

    googleapis_root = Path(next(iter(google.rpc.__path__))).parent.parent
    return [str(PROTO_ROOT), str(grpc_tools_protos), str(googleapis_root)]


def generate(out_root: Path) -> None:
    """Write the generated package under ``out_root / skillsvc / v1``."""
    protos = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / OUT_PACKAGE).glob("*.proto")
    )
    target = out_root / OUT_PACKAGE
    target.mkdir(parents=True, exist_ok=True)
    bindir = Path(sys.executable).parent
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        *(f"-I{d}" for d in _include_dirs()),
        # The mypy-protobuf plugins live beside this interpreter, which need not be on PATH.
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    subprocess.run(args, check=True, cwd=PROTO_ROOT)
    (target / "__init__.py").write_text(INIT_TEXT)


def client_copy(server_tree: Path, out: Path) -> None:
    """Write the client's copy of the generated package ``server_tree`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for source in sorted(server_tree.iterdir()):
        if source.is_file():
            text = _MODULE_REF.sub("skillsvc_client.v1", source.read_text())
            (out / source.name).write_text(text)


def _tree(root: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(root)): p
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check", action="store_true", help="fail if either generated copy is stale"
    )
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        client_copy(Path(tmp) / OUT_PACKAGE, Path(tmp) / CLIENT_PACKAGE)
        targets = (OUT_PACKAGE, CLIENT_PACKAGE)
        if opts.check:
            stale: list[str] = []
            for target in targets:
                fresh = _tree(Path(tmp) / target)
                committed = _tree(ROOT / target)
                stale += sorted(
                    str(target / name)
                    for name in fresh.keys() | committed.keys()
                    if name not in fresh
                    or name not in committed
                    or not filecmp.cmp(fresh[name], committed[name], shallow=False)
                )
            if stale:
                print("generated code is stale; run `make proto`:", *stale, sep="\n  ")
                return 1
            print("generated code is up to date")
            return 0
        for target in targets:
            shutil.rmtree(ROOT / target, ignore_errors=True)
            shutil.copytree(Path(tmp) / target, ROOT / target)
            print(f"wrote {target}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
