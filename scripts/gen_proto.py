"""Generate services/kernel/twin_pb from proto/ (python, grpc, .pyi stubs).

Imports inside the generated modules are rewritten to be package-relative so
that the generated code lives in one importable package.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "services" / "kernel" / "twin_pb"


def main() -> int:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    tmp = OUT_DIR.with_name("_twin_pb_tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # protoc finds the mypy plugins on PATH; they sit beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={tmp}",
        f"--grpc_python_out={tmp}",
        f"--mypy_out={tmp}",
        f"--mypy_grpc_out={tmp}",
        *protos,
    ]
    if protoc.main(args) != 0:
        print("protoc failed", file=sys.stderr)
        return 1
    shutil.rmtree(OUT_DIR, ignore_errors=True)
    OUT_DIR.mkdir(parents=True)
    for src in sorted(tmp.rglob("*.py*")):
        text = src.read_text()
        text = re.sub(r"^from twin\.v1 import", "from . import", text, flags=re.M)
        text = re.sub(r"^import twin\.v1\.(\w+) as", r"from . import \1 as", text, flags=re.M)
        (OUT_DIR / src.name).write_text(text)
    (OUT_DIR / "__init__.py").write_text(
        '"""Generated protobuf and gRPC code for twin.v1 (do not edit; run `task proto`)."""\n'
    )
    (OUT_DIR / "py.typed").write_text("")
    shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
