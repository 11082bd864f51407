"""Generate services/kernel/twin_pb from proto/ (python, grpc, .pyi stubs).

Imports inside the generated modules are rewritten to be package-relative so
that the generated code lives in one importable package.

    gen_proto.py          regenerate services/kernel/twin_pb in place
    gen_proto.py --check  generate into a temporary directory and compare with
                          the tree, which is never touched; exit 1 naming the
                          files that differ

The output depends on the versions of grpcio-tools and mypy-protobuf (the
grpc modules carry `GRPC_GENERATED_VERSION`), which requirements/dev.lock pins:
the same lock gives byte-identical code on every machine.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "services" / "kernel" / "twin_pb"
INIT_TEXT = '"""Generated protobuf and gRPC code for twin.v1 (do not edit; run `task proto`)."""\n'


def _protoc(raw_dir: Path) -> bool:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    # protoc finds the mypy plugins on PATH; they sit beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={raw_dir}",
        f"--grpc_python_out={raw_dir}",
        f"--mypy_out={raw_dir}",
        f"--mypy_grpc_out={raw_dir}",
        *protos,
    ]
    # The mypy plugins print a line per file on stderr: kept, and shown only if protoc fails.
    with tempfile.TemporaryFile() as log:
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            ok = bool(protoc.main(args) == 0)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        if not ok:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace"))
    return ok


def generate(out_dir: Path) -> None:
    """Write the whole generated package into `out_dir` (which must be empty or absent)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="twin_pb_raw_") as raw:
        if not _protoc(Path(raw)):
            raise RuntimeError("protoc failed (its message is above)")
        for src in sorted(Path(raw).rglob("*.py*")):
            text = src.read_text()
            text = re.sub(r"^from twin\.v1 import", "from . import", text, flags=re.M)
            text = re.sub(r"^import twin\.v1\.(\w+) as", r"from . import \1 as", text, flags=re.M)
            (out_dir / src.name).write_text(text)
    (out_dir / "__init__.py").write_text(INIT_TEXT)
    (out_dir / "py.typed").write_text("")


def _tracked(directory: Path) -> set[str]:
    kinds = (".py", ".pyi", ".typed")
    return {p.name for p in directory.iterdir() if p.is_file() and p.suffix in kinds}


def differences(fresh: Path, tree: Path) -> list[str]:
    """Files that differ between a fresh generation and the tree, each with why."""
    new, old = _tracked(fresh), _tracked(tree) if tree.is_dir() else set()
    out = [f"{name}: missing from the tree" for name in sorted(new - old)]
    out += [f"{name}: in the tree but no longer generated" for name in sorted(old - new)]
    out += [f"{name}: content differs" for name in sorted(new & old)
            if not filecmp.cmp(fresh / name, tree / name, shallow=False)]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare a fresh generation with the tree; change nothing")
    args = parser.parse_args(argv)
    if not args.check:
        # Into a temporary directory first, so a failing protoc leaves the tree as it was.
        with tempfile.TemporaryDirectory(prefix="twin_pb_") as tmp:
            fresh = Path(tmp) / "twin_pb"
            generate(fresh)
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            for old in OUT_DIR.iterdir():
                if old.is_file():
                    old.unlink()
            for new in fresh.iterdir():
                shutil.copy2(new, OUT_DIR / new.name)
        return 0
    with tempfile.TemporaryDirectory(prefix="twin_pb_") as tmp:
        generate(Path(tmp) / "twin_pb")
        diff = differences(Path(tmp) / "twin_pb", OUT_DIR)
    if diff:
        print("generated code out of date (run `./task proto` and commit):", file=sys.stderr)
        for line in diff:
            print(f"  services/kernel/twin_pb/{line}", file=sys.stderr)
        return 1
    print(f"generated code up to date ({len(_tracked(OUT_DIR))} files)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
