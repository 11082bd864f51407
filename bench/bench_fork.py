"""What a what-if fork costs: the time from the request to the fork flying, and
its memory, beside a fresh mission's start as the baseline.

Run: ``.venv/bin/python bench/bench_fork.py [--repeat 3] [--at undocking]``

Prints a table; asserts nothing. Real parts throughout: a parent `twin up`
(its own nats-server, six service processes, mTLS and NATS identities) paused
at ``--at``; each repetition is a real `twin fork --at now` (no change) that
flies to the end. Measured per fork, in wall seconds from the moment `twin
fork` is started:

* **recorded**: the parent's ground answered the Fork call (the CLI's start,
  provisioning and the call itself);
* **running**: the fork's clock has taken its first step after the branch
  commit (its six processes started, healthy, the commit copied, every
  service restored): from here the fork flies on its own;
* **RSS**: the fork's six service processes, summed, once running; and the
  parent's six at the same moment.

Baseline: a fresh `twin up --paused` of the whole mission, from start to all
six services healthy (its own nats-server included), the cost of a mission
that is not forked.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from services.cli.grpc_client import Endpoint, TwinChannels  # noqa: E402
from services.kernel.security import Security  # noqa: E402

TWIN = [sys.executable, "-m", "services.cli.app"]
POLL_S = 0.02  # how often the fork's clock is asked for its step
DEADLINE_S = 300.0


def _env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


def _wait(cond: Any, what: str, timeout_s: float = DEADLINE_S) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"{what}: not within {timeout_s} s")
        time.sleep(POLL_S)
    return time.monotonic()


def _record(state: Path) -> dict[str, Any] | None:
    try:
        out: dict[str, Any] = orjson.loads((state / "run.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return out


def _rss_mb(record: dict[str, Any]) -> float:
    total = 0
    for svc in record["services"].values():
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(int(svc["pid"])).memory_info().rss
    return total / 2**20


async def _step(port: int, security: Security) -> int:
    async with TwinChannels({"ground": Endpoint("ground", "127.0.0.1", port)}, timeout_s=2.0,
                            credentials=security.grpc_channel_credentials()) as ch:
        return int((await ch.clock().get_time()).step)


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([*TWIN, *args], cwd=REPO, env=_env(), stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)


def _healthy(log: Path) -> bool:
    return log.exists() and "healthy in" in log.read_text(errors="replace")


def baseline(where: Path) -> float:
    """A fresh mission, from `twin up` to every service healthy."""
    log = where / "base.out"
    t0 = time.monotonic()
    proc = _start(["up", "--paused", "--free-ports", "--state-dir", str(where / "base"),
                   "--log-level", "WARNING"], log)
    try:
        return _wait(lambda: _healthy(log), "baseline healthy") - t0
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def fork_once(state: Path, child: str, security: Security, parent_rss: list[float]
              ) -> dict[str, float]:
    log = state.parent / f"{child}.out"
    t0 = time.monotonic()
    proc = _start(["fork", "ce6", "--as", child, "--at", "now", "--state-dir", str(state),
                   "--no-live"], log)
    try:
        recorded = _wait(lambda: log.exists() and "recorded in" in log.read_text(
            errors="replace"), "fork recorded") - t0
        spec_line = next(ln for ln in log.read_text().splitlines() if "commit of step" in ln)
        commit_step = int(spec_line.split("commit of step ")[1].split()[0])
        fork_state = state / "forks" / child
        _wait(lambda: (r := _record(fork_state)) is not None and "ground" in r["services"],
              "fork run.json")
        rec = _record(fork_state)
        assert rec is not None
        port = int(rec["services"]["ground"]["grpc_port"])

        def past_commit() -> bool:
            try:
                return asyncio.run(_step(port, security)) > commit_step
            except Exception:  # not up yet: the channel is refused; ask again
                return False

        running = _wait(past_commit, "fork running") - t0
        rss = _rss_mb(rec)
        parent = _record(state)
        assert parent is not None
        parent_rss.append(_rss_mb(parent))
        proc.wait(timeout=DEADLINE_S)
        return {"recorded_s": recorded, "running_s": running, "rss_mb": rss}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--at", default="undocking", help="where the parent is paused")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fork-") as tmp:
        where = Path(tmp)
        base = [baseline(where / f"b{i}") for i in range(args.repeat)]
        state = where / "p"
        plog = where / "parent.out"
        parent = _start(["up", "--paused", "--free-ports", "--state-dir", str(state),
                         "--log-level", "WARNING"], plog)
        try:
            _wait(lambda: _healthy(plog), "parent healthy")
            subprocess.run([*TWIN, "clock", "until", args.at, "--wait", "--state-dir",
                            str(state)], cwd=REPO, env=_env(), check=True,
                           capture_output=True, timeout=DEADLINE_S)
            security = Security.for_state_dir(state)
            parent_rss: list[float] = []
            forks = [fork_once(state, f"bench-{i}", security, parent_rss)
                     for i in range(args.repeat)]
        finally:
            parent.terminate()
            parent.wait(timeout=60)
    med = statistics.median
    print(f"forks of a parent paused at {args.at}, {args.repeat} each "
          f"(median, min-max), wall s from the command's start:")
    rows = [("fresh mission: start to all six healthy (baseline)", base),
            ("fork: recorded by the parent's ground", [f["recorded_s"] for f in forks]),
            ("fork: flying (first step after the branch commit)",
             [f["running_s"] for f in forks])]
    for name, values in rows:
        print(f"  {name:52s} {med(values):6.2f}  ({min(values):.2f}-{max(values):.2f})")
    rss = [f["rss_mb"] for f in forks]
    print(f"  {'fork: RSS of its six services, MB':52s} {med(rss):6.1f}  "
          f"({min(rss):.1f}-{max(rss):.1f})")
    print(f"  {'parent: RSS of its six services, MB':52s} {med(parent_rss):6.1f}")


if __name__ == "__main__":
    main()
