"""Crash the twin mid-mission and check it finishes with the report it would have.

Each cell runs ``twin run`` (real processes: nats-server and the six services
under the CLI's supervisor), waits until ground's clock reaches a seeded
mission time inside a window (powered descent, ascent, entry), then does one
fault: ``kill -9`` of a service or of nats-server, or a SIGSTOP of nats-server
for a while. The run must finish, and its report must equal a run of the
same seed and plan without the fault, wall-clock fields aside, with the
sample's 1,935.3 g where the plan takes it.

    .venv/bin/python scripts/chaos.py                  # the full matrix, nominal
    .venv/bin/python scripts/chaos.py --only lander@descent nats-server@entry
    .venv/bin/python scripts/chaos.py --snapshot-every 50 --out DIR

Prints a table: cell, recovered, identical, wall s, kill to running again,
kill to back where it was. Exit 1 if any cell did not recover identically.
tests/integration/test_chaos.py and bench/bench_recovery.py load this file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the repository's services, not an installed copy
    sys.path.insert(0, str(REPO))

from services.cli.grpc_client import Endpoint, TwinChannels, TwinRpcError  # noqa: E402
from services.cli.report import without_wall  # noqa: E402
from services.dynamics.constants import SAMPLE_MASS_G  # noqa: E402
from services.dynamics.timescale import mission_s_from_utc  # noqa: E402
from services.kernel.config import SERVICE_NAMES  # noqa: E402
from services.kernel.security import Security  # noqa: E402
from services.kernel.twin_pb import clock_pb2  # noqa: E402

NATS = "nats-server"
NOMINAL_PLAN = REPO / "services" / "ground" / "plans" / "nominal.json"
SNAPSHOT_ENV = "TWIN_SNAPSHOT_EVERY_STEPS"
#: Wall seconds between looks at ground's clock while waiting for a kill point
#: or for the mission to run again: at warp max a powered step takes a few ms.
POLL_S = 0.02
#: Wall-clock allowances: they bound a hang, not a speed (a 2-core machine).
RUN_DEADLINE_S = 600.0
START_DEADLINE_S = 120.0
#: The sample is conserved to this (g): the services report it to 0.1 g.
SAMPLE_TOLERANCE_G = 0.05
STALL_S = 10.0
#: Wall s without a step (or without an answer from ground) that counts as the
#: mission not running: far longer than a step takes at warp max, even loaded.
STALL_GAP_S = 1.0


@dataclass(frozen=True)
class Window:
    """A stretch of mission time (UTC) in which a fault is placed."""

    name: str
    start_utc: str
    end_utc: str

    def point_s(self, rng: random.Random) -> float:
        """A mission time inside the window, kept off its very edges."""
        start_s, end_s = mission_s_from_utc(self.start_utc), mission_s_from_utc(self.end_utc)
        margin_s = 0.1 * (end_s - start_s)
        return rng.uniform(start_s + margin_s, end_s - margin_s)


#: From docs/mission.md and docs/reference/change6-timeline.csv, as the
#: nominal mission flies them (see the report's events).
DESCENT = Window("descent", "2024-06-01T22:09:00Z", "2024-06-01T22:23:16Z")
ASCENT = Window("ascent", "2024-06-03T23:38:10Z", "2024-06-03T23:44:01Z")
ENTRY = Window("entry", "2024-06-25T05:41:00Z", "2024-06-25T06:06:59Z")
WINDOWS = (DESCENT, ASCENT, ENTRY)


@dataclass(frozen=True)
class Fault:
    """``kill`` sends SIGKILL to `target`; ``stall`` stops it for `stall_s`."""

    kind: str
    target: str
    stall_s: float = STALL_S

    def __post_init__(self) -> None:
        if self.kind not in ("kill", "stall"):
            raise ValueError(f"fault kind {self.kind!r}: use 'kill' or 'stall'")
        if self.target not in (*SERVICE_NAMES, NATS):
            raise ValueError(f"fault target {self.target!r}: use {SERVICE_NAMES} or {NATS}")

    @property
    def label(self) -> str:
        return self.target if self.kind == "kill" else f"{self.target}-stall"


@dataclass(frozen=True)
class Cell:
    fault: Fault
    window: Window

    @property
    def label(self) -> str:
        return f"{self.fault.label}@{self.window.name}"

    def point_s(self, seed: int) -> float:
        return self.window.point_s(random.Random(f"{seed}:{self.label}"))


def nominal_cut(end_utc: str, path: Path) -> Path:
    """The nominal plan ending at `end_utc` (items due later never come), at `path`."""
    plan = orjson.loads(NOMINAL_PLAN.read_bytes())
    plan["name"] = f"{plan['name']}-until-{end_utc}"
    plan["end"] = {"at": end_utc}
    path.write_bytes(orjson.dumps(plan, option=orjson.OPT_INDENT_2))
    return path


def full_matrix() -> list[Cell]:
    """Every service at every window, nats-server killed and stalled once each."""
    cells = [Cell(Fault("kill", name), w) for w in WINDOWS for name in SERVICE_NAMES]
    return [*cells, Cell(Fault("kill", NATS), DESCENT), Cell(Fault("stall", NATS), ENTRY)]


# --- one run of `twin run` -----------------------------------------------------------


@dataclass
class Recovery:
    """Ground's clock as seen after a fault: (wall s since the fault, mission s).

    Running again is the start of the stretch of stepping that carries the
    mission past where it was at the fault: it begins at the first step after
    the last rollback (mission time going back) or the last stall (no step for
    STALL_GAP_S, or ground not answering) before that. A step or two between
    the fault and a rollback that follows is not running again.
    """

    fault_mission_s: float
    samples: list[tuple[float, float]] = field(default_factory=list)

    def _recovered(self) -> tuple[float, float] | None:
        """(to running again, to caught up), or None while not caught up."""
        start_s: float | None = None
        last_step_s = self.samples[0][0] if self.samples else 0.0
        caught: tuple[float, float] | None = None
        for (_, m0), (t1, m1) in zip(self.samples, self.samples[1:], strict=False):
            if m1 < m0:  # a rollback: what came before it does not count
                start_s, caught = None, None
            elif m1 > m0:
                if start_s is None or t1 - last_step_s >= STALL_GAP_S:
                    start_s = t1
                last_step_s = t1
            if caught is None and start_s is not None and m1 > self.fault_mission_s:
                caught = (start_s, t1)
        return caught

    @property
    def to_running_s(self) -> float | None:
        got = self._recovered()
        return None if got is None else got[0]

    @property
    def to_caught_up_s(self) -> float | None:
        got = self._recovered()
        return None if got is None else got[1]


@dataclass
class RunResult:
    exit_code: int
    wall_s: float
    report: dict[str, Any] | None
    state_dir: Path
    recovery: Recovery | None = None
    restarts: dict[str, int] = field(default_factory=dict)

    def output_tail(self, lines: int = 30) -> str:
        path = self.state_dir / "twin-run.out"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _run_env(snapshot_every: int | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    if snapshot_every is not None:
        env[SNAPSHOT_ENV] = str(snapshot_every)
    return env


def _output_path(state_dir: Path) -> Path:
    """Where the CLI's output goes; a state dir used before loses its last run's
    record and report, which would otherwise be read as this run's."""
    state_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("run.json", "report.json"):
        (state_dir / stale).unlink(missing_ok=True)
    return state_dir / "twin-run.out"


async def _start_twin(state_dir: Path, report: Path, plan: Path, seed: int,
                      snapshot_every: int | None) -> asyncio.subprocess.Process:
    argv = [sys.executable, "-P", "-m", "services.cli.app", "run", "--report", str(report),
            "--state-dir", str(state_dir), "--seed", str(seed), "--plan", str(plan)]
    with _output_path(state_dir).open("wb") as out:
        return await asyncio.create_subprocess_exec(
            *argv, cwd=REPO, env=_run_env(snapshot_every), stdin=asyncio.subprocess.DEVNULL,
            stdout=out, stderr=asyncio.subprocess.STDOUT)


def run_record(state_dir: Path) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = orjson.loads((state_dir / "run.json").read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    return record


def recorded_pid(state_dir: Path, target: str) -> int | None:
    record = run_record(state_dir)
    if record is None:
        return None
    owner = record["nats"] if target == NATS else record["services"][target]
    return None if owner["pid"] is None else int(owner["pid"])


def recorded_restarts(state_dir: Path) -> dict[str, int]:
    record = run_record(state_dir) or {"services": {}, "nats": {}}
    counts = {n: int(s.get("restarts", 0)) for n, s in record["services"].items()}
    counts[NATS] = int(record["nats"].get("restarts", 0))
    return {name: count for name, count in counts.items() if count}


async def _ground_endpoint(state_dir: Path, proc: asyncio.subprocess.Process) -> Endpoint:
    """Ground's gRPC endpoint once the run has recorded it."""
    async with asyncio.timeout(START_DEADLINE_S):
        while (record := run_record(state_dir)) is None:
            if proc.returncode is not None:
                raise RuntimeError("twin run ended before it recorded its services")
            await asyncio.sleep(POLL_S)
    return Endpoint("ground", "127.0.0.1", int(record["services"]["ground"]["grpc_port"]))


async def _clock(channels: TwinChannels) -> clock_pb2.ClockState | None:
    """Ground's clock, or None while ground does not answer (down, restarting)."""
    try:
        return await channels.clock().get_time(timeout_s=1.0)
    except TwinRpcError:
        return None


async def _until_mission_time(channels: TwinChannels, point_s: float) -> float | None:
    """Wait until the clock reaches `point_s`; its mission time then, or None
    if the mission finished first."""
    while True:
        clock = await _clock(channels)
        if clock is not None and clock.mode == "finished":
            return None
        if clock is not None and clock.mission_time_s >= point_s:
            return float(clock.mission_time_s)
        await asyncio.sleep(POLL_S)


async def _do_fault(fault: Fault, state_dir: Path) -> int:
    """Apply the fault; the pid it hit."""
    pid = recorded_pid(state_dir, fault.target)
    if pid is None:
        raise RuntimeError(f"no pid recorded for {fault.target}")
    if fault.kind == "kill":
        os.kill(pid, signal.SIGKILL)
        return pid
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(fault.stall_s)
    finally:
        os.kill(pid, signal.SIGCONT)
    return pid


async def _watch_recovery(channels: TwinChannels, state_dir: Path, fault: Fault, hit_pid: int,
                          recovery: Recovery, fault_at: float) -> None:
    """Record ground's clock into `recovery` until the mission finishes, once
    the fault is over (a killed child restarted, a stopped one continued)."""
    while True:
        await asyncio.sleep(POLL_S)
        if fault.kind == "kill" and recorded_pid(state_dir, fault.target) == hit_pid:
            continue
        clock = await _clock(channels)
        if clock is None:
            continue
        recovery.samples.append((time.monotonic() - fault_at, float(clock.mission_time_s)))
        if clock.mode == "finished":
            return


def ground_channels(state_dir: Path, endpoint: Endpoint) -> TwinChannels:
    """A channel to ground with the operator's certificate that `twin run`
    (secure by default) made in the state dir."""
    creds = Security.for_state_dir(state_dir).grpc_channel_credentials()
    return TwinChannels({"ground": endpoint}, timeout_s=2.0, credentials=creds)


async def _inject(cell: Cell, seed: int, state_dir: Path, proc: asyncio.subprocess.Process,
                  recoveries: list[Recovery]) -> None:
    """Wait for the cell's point, do its fault, follow the recovery (appended
    to `recoveries` at once, so what was seen survives a cancellation)."""
    endpoint = await _ground_endpoint(state_dir, proc)
    async with ground_channels(state_dir, endpoint) as channels:
        at_s = await _until_mission_time(channels, cell.point_s(seed))
        if at_s is None:
            return
        fault_at = time.monotonic()
        recovery = Recovery(at_s)
        recoveries.append(recovery)
        hit_pid = await _do_fault(cell.fault, state_dir)
        await _watch_recovery(channels, state_dir, cell.fault, hit_pid, recovery, fault_at)


async def run_twin(state_dir: Path, plan: Path, seed: int, cell: Cell | None = None,
                   snapshot_every: int | None = None) -> RunResult:
    """One ``twin run`` of `plan`, with `cell`'s fault if given."""
    report_path = state_dir / "report.json"
    started = time.monotonic()
    proc = await _start_twin(state_dir, report_path, plan, seed, snapshot_every)
    recoveries: list[Recovery] = []
    inject = asyncio.ensure_future(_inject(cell, seed, state_dir, proc, recoveries)
                                   if cell is not None else asyncio.sleep(0))
    try:
        async with asyncio.timeout(RUN_DEADLINE_S):
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            await proc.wait()
        inject.cancel()
        await asyncio.gather(inject, return_exceptions=True)
    report = orjson.loads(report_path.read_bytes()) if report_path.exists() else None
    return RunResult(code, time.monotonic() - started, report, state_dir,
                     recoveries[0] if recoveries else None, recorded_restarts(state_dir))


# --- judging a run --------------------------------------------------------------------


def differences(report: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """Where two reports differ, wall-clock fields aside: keys, or the first event."""
    ours, theirs = without_wall(report), without_wall(baseline)
    found = [key for key in sorted(set(ours) | set(theirs)) if ours.get(key) != theirs.get(key)]
    if "events" in found:
        events = zip(ours.get("events", []), theirs.get("events", []), strict=False)
        first = next((i for i, (a, b) in enumerate(events) if a != b), None)
        counts = f"{len(ours.get('events', []))} vs {len(theirs.get('events', []))}"
        found[found.index("events")] = f"events (first at #{first}; {counts})"
    return found


def sample_held_g(report: dict[str, Any]) -> float:
    """The sample mass the vehicle holding it reports at the end (g)."""
    return max(float(s.get("sample_mass_g") or 0.0) for s in report["final"].values())


@dataclass(frozen=True)
class Verdict:
    cell: str
    recovered: bool
    identical: bool
    wall_s: float
    to_running_s: float | None
    to_caught_up_s: float | None
    restarts: dict[str, int]
    detail: str

    @property
    def ok(self) -> bool:
        return self.recovered and self.identical


def _sample_problems(report: dict[str, Any] | None, expect_sample: bool) -> list[str]:
    if report is None or not expect_sample:
        return []
    held_g = sample_held_g(report)
    if abs(held_g - SAMPLE_MASS_G) <= SAMPLE_TOLERANCE_G:
        return []
    return [f"sample {held_g} g, not {SAMPLE_MASS_G} g"]


def judge(cell: Cell, result: RunResult, baseline: dict[str, Any],
          expect_sample: bool) -> Verdict:
    """Recovered: the run finished (exit 0) after the fault and the clock ran
    again; identical: its report is the baseline's (and the sample is whole)."""
    report, recovery = result.report, result.recovery
    mismatch = differences(report, baseline) if report is not None else ["no report"]
    mismatch += _sample_problems(report, expect_sample)
    recovered = (result.exit_code == 0 and report is not None and recovery is not None
                 and recovery.to_running_s is not None)
    problems = list(mismatch)
    if recovery is None:
        problems.append("the fault was not applied (the mission finished first?)")
    if result.exit_code != 0:
        problems.append(f"twin run exited {result.exit_code}:\n{result.output_tail()}")
    return Verdict(cell.label, recovered, not mismatch, result.wall_s,
                   recovery.to_running_s if recovery else None,
                   recovery.to_caught_up_s if recovery else None, result.restarts,
                   "; ".join(problems))


# --- the table ------------------------------------------------------------------------


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(verdicts: Sequence[Verdict]) -> list[str]:
    head = ("cell", "recovered", "identical", "wall s", "to running s", "to caught up s",
            "restarts")
    rows = [head] + [
        (v.cell, "yes" if v.recovered else "NO", "yes" if v.identical else "NO", _s(v.wall_s),
         _s(v.to_running_s), _s(v.to_caught_up_s),
         ", ".join(f"{k} {n}" for k, n in v.restarts.items()) or "-")
        for v in verdicts]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


# --- main -----------------------------------------------------------------------------


def _select(only: Sequence[str]) -> list[Cell]:
    cells = full_matrix()
    if not only:
        return cells
    known = {c.label: c for c in cells}
    unknown = [label for label in only if label not in known]
    if unknown:
        raise SystemExit(f"unknown cells {unknown}: use e.g. {', '.join(list(known)[:3])}")
    return [known[label] for label in only]


async def run_matrix(cells: Sequence[Cell], plan: Path, seed: int, out: Path,
                     snapshot_every: int | None, expect_sample: bool) -> list[Verdict]:
    base = await run_twin(out / "baseline", plan, seed, snapshot_every=snapshot_every)
    if base.exit_code != 0 or base.report is None:
        raise SystemExit(f"the baseline run failed ({base.exit_code}):\n{base.output_tail()}")
    print(f"baseline: {base.wall_s:.2f} s wall", flush=True)
    verdicts = []
    for cell in cells:
        result = await run_twin(out / cell.label, plan, seed, cell, snapshot_every)
        verdict = judge(cell, result, base.report, expect_sample)
        print(f"{cell.label}: {'ok' if verdict.ok else 'FAILED ' + verdict.detail}", flush=True)
        verdicts.append(verdict)
    return verdicts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--only", nargs="*", default=[], help="cells, e.g. lander@descent")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--plan", type=Path, default=NOMINAL_PLAN)
    parser.add_argument("--snapshot-every", type=int, default=None,
                        help=f"sets {SNAPSHOT_ENV} for every run (0: no snapshots)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where each run's state dir goes (default: a temporary dir)")
    args = parser.parse_args(argv)
    cells = _select(args.only)
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        out = args.out or Path(tmp)
        verdicts = asyncio.run(run_matrix(cells, args.plan, args.seed, out, args.snapshot_every,
                                          expect_sample=args.plan == NOMINAL_PLAN))
    print("\n".join(table(verdicts)))
    return 0 if all(v.ok for v in verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
