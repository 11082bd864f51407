"""The idle kernel of two versions of the code side by side: is a change faster?

Run: ``.venv/bin/python bench/ab_kernel.py [--base HEAD] [--pairs 12] [--window-s 1.5]``

``base`` is a git revision, checked out into a temporary worktree; ``work`` is
this checkout as it is, uncommitted changes included. Both kernels (ground and
five ``_kernel_idle_service.py`` vehicles each, as in ``bench_kernel.py``'s
section 3) stay up on one private nats-server, paused, and run by turns in
short windows. The order inside a pair alternates and the first pair warms up
and is dropped: this machine's speed drifts by tens of per cent within
minutes, so only neighbouring windows compare fairly, and a change of a few per
cent shows only in the median of many pairs. CPU per step is every process of
the side plus nats-server, from /proc, so it is less noisy than the rate.
Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import bench_kernel as bk  # run as a script: bench/ is first on sys.path

from services.kernel.config import VEHICLES
from services.kernel.natsd import NatsServer

SIDES = ("base", "work")


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(bk.REPO_ROOT), *args], check=True,
                          capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[tuple[Path, str]]:
    """``ref`` checked out in a temporary worktree: (its path, its commit)."""
    try:
        commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        why = (getattr(exc, "stderr", "") or str(exc)).strip()
        print(f"{Path(sys.argv[0]).stem}: --base {ref!r} is not a commit of this repository "
              f"({why}); give a branch, tag or commit id", file=sys.stderr)
        raise SystemExit(2) from None
    with tempfile.TemporaryDirectory(prefix="twin-ab-") as tmp:
        path = Path(tmp) / "base"
        _git("worktree", "add", "--detach", str(path), commit)
        try:
            yield path, commit
        finally:
            _git("worktree", "remove", "--force", str(path))


async def run_pairs(repos: dict[str, Path], args: argparse.Namespace,
                    work: Path) -> list[dict[str, bk.Window]]:
    plan = bk.write_coast_plan(work / "plan.json", args.plan_days)
    async with NatsServer(work / "nats") as server, contextlib.AsyncExitStack() as stack:
        assert server.pid is not None  # started
        kernels = {side: await stack.enter_async_context(
            bk.idle_kernel(server.url, plan, args, work / side, repo=repos[side]))
            for side in SIDES}
        pids: dict[str, dict[str, list[int]]] = {
            side: {"clock": [k.pids["ground"]], "answerers": [k.pids[v] for v in VEHICLES],
                   "nats-server": [server.pid]} for side, k in kernels.items()}
        pairs: list[dict[str, bk.Window]] = []
        for i in range(args.pairs + 1):
            pair: dict[str, bk.Window] = {}
            for side in SIDES if i % 2 else reversed(SIDES):
                pair[side] = await bk.kernel_window(kernels[side].grpc_port, pids[side],
                                                    args.window_s)
            pairs.append(pair)
        return pairs[1:]


def report(pairs: list[dict[str, bk.Window]], base: str) -> None:
    print(f"\nbase = {base}, work = this checkout; {len(pairs)} pairs of "
          f"{pairs[0]['base'].window_s:.1f} s windows; CPU = ground, the five vehicles "
          "and nats-server, per step")
    print("| pair | base steps/s | work steps/s | work / base | base CPU us | work CPU us "
          "| work / base CPU |")
    print("|------|--------------|--------------|-------------|-------------|-------------"
          "|-----------------|")
    for i, p in enumerate(pairs, 1):
        b, w = p["base"], p["work"]
        print(f"| {i:4d} | {b.rate:12,.0f} | {w.rate:12,.0f} | {w.rate / b.rate:11.3f} "
              f"| {b.cpu_us:11,.0f} | {w.cpu_us:11,.0f} | {w.cpu_us / b.cpu_us:15.3f} |")
    rate = [p["work"].rate / p["base"].rate for p in pairs]
    cpu = [p["work"].cpu_us / p["base"].cpu_us for p in pairs]
    q = statistics.quantiles(rate, n=4) if len(rate) > 1 else [rate[0]] * 3
    print(f"median work / base: rate {statistics.median(rate):.3f} (middle half "
          f"{q[0]:.3f}-{q[2]:.3f}), CPU per step {statistics.median(cpu):.3f} "
          "(rate above 1 and CPU below 1: work is faster)")
    for side in SIDES:
        parts = {role: statistics.median(p[side].part_us(role) for p in pairs)
                 for role in ("clock", "answerers", "nats-server")}
        print(f"  {side} median CPU us per step: ground {parts['clock']:.0f}, each vehicle "
              f"{parts['answerers'] / len(VEHICLES):.0f}, nats-server {parts['nats-server']:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="git revision to compare against")
    parser.add_argument("--pairs", type=int, default=12, help="window pairs (one more warms up)")
    parser.add_argument("--window-s", type=float, default=1.5, help="wall seconds per window")
    parser.add_argument("--plan-days", type=float, default=3650.0,
                        help="mission days the coast plan spans")
    parser.add_argument("--log-level", default="warning", help="the services' TWIN_LOG_LEVEL")
    args = parser.parse_args()
    if args.pairs < 1 or args.window_s <= 0:
        parser.error("--pairs must be >= 1 and --window-s > 0")
    with worktree(args.base) as (base_repo, commit), \
            tempfile.TemporaryDirectory(prefix="twin-ab-run-") as tmp:
        repos = {"base": base_repo, "work": bk.REPO_ROOT}
        pairs = asyncio.run(run_pairs(repos, args, Path(tmp)))
    report(pairs, f"{args.base} ({commit[:10]})")


if __name__ == "__main__":
    main()
