"""How fast the twin recovers from a crash, and what its snapshots cost.

Run: ``.venv/bin/python bench/bench_recovery.py [--seed 6] [--plan PATH]
[--repeat 2] [--cells lander@descent ground@ascent nats-server@descent]
[--snapshot-every 1000]``

Prints tables; asserts nothing. Every run is a real ``twin run`` (the CLI,
nats-server, six service processes), driven by scripts/chaos.py.

1. Recovery, per cell (a kill -9 at a seeded mission time in a window):
   wall s from the kill until ground's mission time advances again (the
   killed child restarted and the clock stepping: after a rollback, from the
   restored snapshot), and until it passes the mission time it had at the kill
   (the work lost to the rollback redone). Also whether the report equals the
   baseline's.
2. The mission's wall time with snapshots off (TWIN_SNAPSHOT_EVERY_STEPS=0)
   and on (every N steps), run by turns so machine load drifts over both:
   the report's ``wall_s`` (start to the final snapshot, what `twin run`
   prints).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the tests' loader of scripts/chaos.py
    sys.path.insert(0, str(REPO))
from tests.chaos_script import chaos  # noqa: E402

DEFAULT_CELLS = ("lander@descent", "ground@ascent", "nats-server@descent")




def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _median(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    return _s(statistics.median(known)) if known else "-"


def _print_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


async def _recovery(cells: Sequence[Any], plan: Path, seed: int, repeat: int, out: Path,
                    snapshot_every: int | None) -> None:
    base = await chaos.run_twin(out / "baseline", plan, seed, snapshot_every=snapshot_every)
    if base.report is None:
        raise SystemExit(f"the baseline run failed:\n{base.output_tail()}")
    rows = []
    for cell in cells:
        verdicts = [chaos.judge(cell, await chaos.run_twin(
            out / f"{cell.label}-{i}", plan, seed, cell, snapshot_every), base.report,
            expect_sample=plan == chaos.NOMINAL_PLAN) for i in range(repeat)]
        rows.append([
            cell.label, f"{sum(v.ok for v in verdicts)}/{repeat}",
            " ".join(_s(v.to_running_s) for v in verdicts),
            _median([v.to_running_s for v in verdicts]),
            _median([v.to_caught_up_s for v in verdicts]),
            _median([v.wall_s for v in verdicts]), _s(base.wall_s)])
    print("\n1. recovery from a kill -9 (wall s)")
    _print_table(["cell", "identical", "to running (each)", "to running p50",
                  "to caught up p50", "run wall p50", "baseline wall"], rows)


async def _snapshot_cost(plan: Path, seed: int, repeat: int, out: Path, every: int) -> None:
    walls: dict[str, list[float]] = {"off (0)": [], f"every {every} steps": []}
    for i in range(repeat):
        for label, setting in zip(walls, (0, every), strict=True):
            result = await chaos.run_twin(out / f"snap-{setting}-{i}", plan, seed,
                                          snapshot_every=setting)
            if result.report is None:
                raise SystemExit(f"run with snapshots {label} failed:\n{result.output_tail()}")
            walls[label].append(float(result.report["wall_s"]))
    print("\n2. the mission's wall time with and without snapshots (report wall_s, s)")
    off = statistics.median(walls["off (0)"])
    rows = [[label, " ".join(f"{w:.2f}" for w in ws), f"{statistics.median(ws):.2f}",
             f"{100.0 * (statistics.median(ws) / off - 1.0):+.1f} %"]
            for label, ws in walls.items()]
    _print_table(["snapshots", "runs", "p50", "vs off"], rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Recovery time and snapshot cost.")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--plan", type=Path, default=chaos.NOMINAL_PLAN)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--cells", nargs="*", default=list(DEFAULT_CELLS))
    parser.add_argument("--snapshot-every", type=int, default=1000,
                        help="steps between snapshots for the 'on' runs (the default config)")
    args = parser.parse_args(argv)
    known = {c.label: c for c in chaos.full_matrix()}
    if unknown := [label for label in args.cells if label not in known]:
        parser.error(f"unknown cells {unknown}: use labels of scripts/chaos.py, e.g. "
                     f"{', '.join(DEFAULT_CELLS)}")
    cells = [known[label] for label in args.cells]
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        asyncio.run(_recovery(cells, args.plan, args.seed, args.repeat, Path(tmp), None))
        asyncio.run(_snapshot_cost(args.plan, args.seed, args.repeat, Path(tmp),
                                   args.snapshot_every))


if __name__ == "__main__":
    main()
