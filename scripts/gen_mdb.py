"""Generate the mission databases from the one CCSDS dictionary (services/gateway/dictionary.py).

    gen_mdb.py          write deploy/yamcs/mdb/change6.xml (XTCE 1.2, for Yamcs) and
                        deploy/cosmos/ (plugin.txt, targets/*/cmd_tlm/*.txt, for COSMOS)
    gen_mdb.py --check  generate in memory and compare with the tree, which is never
                        touched; exit 1 naming the files that differ

``--root DIR`` works on another checkout's deploy/ (tests check a copy). The
output is a pure function of the dictionary, so it is byte-identical on every
machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the project's packages
    sys.path.insert(0, str(ROOT))

from services.gateway import cosmos, xtce  # noqa: E402

XTCE_FILE = Path("deploy/yamcs/mdb/change6.xml")
COSMOS_DIR = Path("deploy/cosmos")


def generate() -> dict[Path, str]:
    """Every generated file, by path relative to the repository root."""
    files = {XTCE_FILE: xtce.render()}
    files.update({COSMOS_DIR / rel: text for rel, text in cosmos.render().items()})
    return files


def _tree_files(root: Path) -> set[Path]:
    """The generated files the tree holds: the XTCE file, and all of deploy/cosmos/
    (generated whole; deploy/yamcs/ besides mdb/change6.xml is written by hand)."""
    found = {XTCE_FILE} if (root / XTCE_FILE).is_file() else set()
    cosmos_dir = root / COSMOS_DIR
    if cosmos_dir.is_dir():
        found |= {p.relative_to(root) for p in cosmos_dir.rglob("*") if p.is_file()}
    return found


def differences(fresh: dict[Path, str], root: Path) -> list[str]:
    """Files that differ between a fresh generation and the tree at ``root``, each with why."""
    old = _tree_files(root)
    out = [f"{p}: missing from the tree" for p in sorted(set(fresh) - old)]
    out += [f"{p}: in the tree but no longer generated" for p in sorted(old - set(fresh))]
    out += [f"{p}: content differs" for p in sorted(set(fresh) & old)
            if (root / p).read_text() != fresh[p]]
    return out


def write(fresh: dict[Path, str], root: Path) -> None:
    for stale in _tree_files(root) - set(fresh):
        (root / stale).unlink()
    for rel, text in fresh.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare a fresh generation with the tree; change nothing")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the checkout whose deploy/ to write or check (default: this one)")
    args = parser.parse_args(argv)
    fresh = generate()
    if not args.check:
        write(fresh, args.root)
        print(f"wrote {len(fresh)} files under {args.root / 'deploy'}")
        return 0
    diff = differences(fresh, args.root)
    if diff:
        print("generated mission databases out of date (run `./task mdb` and commit):",
              file=sys.stderr)
        for line in diff:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"generated mission databases up to date ({len(fresh)} files)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
