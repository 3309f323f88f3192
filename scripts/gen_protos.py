"""Generate the Python code of the contract: the only writer of ``skillsvc/v1/``.

Runs ``grpc_tools.protoc`` with the mypy-protobuf plugins on ``protos/skillsvc/v1``.
Because the directory mirrors the package (``protos/skillsvc/v1`` <-> ``skillsvc.v1``),
``--python_out=.`` writes ``skillsvc/v1/`` with imports that resolve unchanged.

    python scripts/gen_protos.py           # regenerate
    python scripts/gen_protos.py --check   # exit 1 if the committed code is stale
"""

from __future__ import annotations

import argparse
import filecmp
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
    parser.add_argument("--check", action="store_true", help="fail if skillsvc/v1 is stale")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = _tree(Path(tmp) / OUT_PACKAGE)
        committed = _tree(ROOT / OUT_PACKAGE)
        if opts.check:
            stale = sorted(
                name
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
        shutil.rmtree(ROOT / OUT_PACKAGE, ignore_errors=True)
        shutil.copytree(Path(tmp) / OUT_PACKAGE, ROOT / OUT_PACKAGE)
    print(f"wrote {OUT_PACKAGE}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
