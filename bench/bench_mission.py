"""The whole 53-day nominal mission, all six services over NATS, as fast as possible.

Run: ``.venv/bin/python bench/bench_mission.py [--seed 6] [--plan PATH] [--no-simloop]``

Prints tables; asserts nothing.

1. Over NATS: a private nats-server, the six services as processes (the
   supervisor `twin run` uses), warp max. Three wall times, all monotonic:

   - start to first tick: from just before nats-server starts to ground's
     first tick seen on the bus (the clock starts on the last hello);
   - first tick to finish: from that tick to GetTime saying finished (asked
     every FINISH_POLL_S): the mission's own stepping;
   - whole process: from just before nats-server starts to the finish seen and
     one more snapshot of every service: what `twin run` reports as `wall_s`
     (services/cli/launch.py starts that clock before nats-server too and
     stops it after its final snapshot). `twin run` also records every
     telemetry frame and event meanwhile and sees the finish on a 0.25 s
     poll, so its `wall_s` comes out somewhat longer on the same machine.

   Each process's CPU time from the first tick to the finish is read from
   /proc/<pid>/stat (utime + stime): start-up (imports, connecting) excluded.
2. In one process (SimLoop): the same cores, the same seed and plan, the same
   step semantics without any bus. Timing each core's advance() (with
   after_step, the on-board downlink) and apply() gives the physics CPU per
   service; the difference to that service's CPU over NATS is what
   messaging and the runtime cost (encode/decode, NATS client, inbox,
   metrics, telemetry).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from prometheus_client import CollectorRegistry

from services.cli.grpc_client import TwinChannels
from services.cli.progress import take_snapshot
from services.cli.supervisor import RunConfig, Supervisor
from services.ground.vehicle import GroundCore
from services.kernel.config import SERVICE_NAMES, ServiceConfig
from services.kernel.natsd import NatsServer
from services.kernel.security import OPERATOR, Security, provision
from services.kernel.twin_pb import clock_pb2
from services.kernel.vehicle import VehicleCore
from services.local.simloop import SimLoop

CLOCK_TICKS_S = os.sysconf("SC_CLK_TCK")
FINISH_POLL_S = 0.05  # wall s between GetTime calls watching for the finish
MISSION_ID = "bench"


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLOCK_TICKS_S


@dataclass
class NatsRun:
    to_first_tick_s: float  # wall s, just before nats-server starts -> first tick on the bus
    ticking_s: float  # wall s, first tick -> finish seen
    whole_s: float  # wall s, just before nats-server starts -> finish and final snapshot
    healthy_step: int  # steps flown when the supervisor saw all six SERVING
    steps: int
    mission_s: float
    cpu_s: dict[str, float]  # per service, plus "nats-server", first tick -> finish


@dataclass
class FirstTick:
    """When the clock's first tick was on the bus, and every process's CPU then."""

    at: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    seen: asyncio.Event = field(default_factory=asyncio.Event)


async def _watch_first_tick(nc: Any, pids: Callable[[], Mapping[str, int]]) -> FirstTick:
    first = FirstTick()

    async def on_tick(msg: Any) -> None:
        if not first.seen.is_set():
            first.at = time.monotonic()
            first.cpu_s = {name: process_cpu_s(pid) for name, pid in pids().items()}
            first.seen.set()

    # One message, then the subscription goes: the run is not watched further.
    await nc.subscribe(f"twin.{MISSION_ID}.clock.tick", cb=on_tick, max_msgs=1)
    await nc.flush()
    return first


async def _wait_finished(channels: TwinChannels) -> clock_pb2.ClockState:
    clock = channels.clock()
    while True:
        state = await clock.get_time()
        if state.mode == "finished":
            return state
        await asyncio.sleep(FINISH_POLL_S)


async def run_over_nats(seed: int, plan: Path | None, work: Path,
                        insecure: bool = False) -> NatsRun:
    """As `twin run` runs it: secure (mTLS, NATS identities) unless ``insecure``."""
    started = time.monotonic()  # where `twin run` starts its wall_s: before nats-server
    made = None if insecure else provision(work, MISSION_ID)
    security = Security.plaintext() if made is None else made.security()
    with NatsServer(work / "nats", config=made.server_config if made else None) as server:
        config = RunConfig(state_dir=work, nats_url=server.url, mission_id=MISSION_ID,
                           free_ports=True, seed=seed, flight_plan=plan, warp="max",
                           log_level="WARNING", security=security)
        nc = await nats.connect(server.url, **security.nats_options(MISSION_ID, OPERATOR))
        sup = Supervisor(config)

        def pids() -> dict[str, int]:
            return {**sup.pids, "nats-server": int(server.pid or 0)}

        first = await _watch_first_tick(nc, pids)
        async with sup:
            await sup.wait_healthy(120.0)
            async with TwinChannels(sup.endpoints, timeout_s=10.0,
                                    credentials=sup.channel_credentials()) as channels:
                healthy_step = (await channels.clock().get_time()).step
                clock = await _wait_finished(channels)
                finished = time.monotonic()
                cpu = {name: process_cpu_s(pid) - first.cpu_s[name]
                       for name, pid in pids().items()}
                await take_snapshot(channels)  # as `twin run` does before its wall_s
                whole_s = time.monotonic() - started
        await nc.close()
    assert first.seen.is_set()
    return NatsRun(first.at - started, finished - first.at, whole_s, int(healthy_step),
                   int(clock.step), clock.mission_time_s, cpu)


# --- the same cores in one process ----------------------------------------------


@dataclass
class CoreTimes:
    advance_s: float = 0.0
    apply_s: float = 0.0


@dataclass
class SimRun:
    wall_s: float
    cpu_s: float
    steps: int
    times: dict[str, CoreTimes] = field(default_factory=dict)


def _timed(fn: Callable[..., Any], times: CoreTimes, attr: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            setattr(times, attr, getattr(times, attr) + time.process_time() - t0)

    return wrapper


def _core(name: str, seed: int, plan: Path | None) -> VehicleCore:
    """The core each service would run, built by the service's own `make`."""
    config = ServiceConfig(service=name, seed=seed, flight_plan=plan, metrics_port=-1,
                           insecure=True)  # only its core is used
    module = importlib.import_module(f"services.{name}.service")
    core: VehicleCore = module.make(config, CollectorRegistry()).core
    return core


def run_in_process(seed: int, plan: Path | None) -> SimRun:
    cores = {name: _core(name, seed, plan) for name in SERVICE_NAMES}
    times = {name: CoreTimes() for name in SERVICE_NAMES}
    for name, core in cores.items():
        # Instance attributes shadow the methods: the loop calls the timed ones.
        advance, after = core.advance, core.after_step
        core.advance = _timed(advance, times[name], "advance_s")  # type: ignore[method-assign]
        core.after_step = _timed(after, times[name], "advance_s")  # type: ignore[method-assign]
        core.apply = _timed(core.apply, times[name], "apply_s")  # type: ignore[method-assign]
    ground = cores.pop("ground")
    assert isinstance(ground, GroundCore)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = SimLoop(ground, cores).run()
    return SimRun(time.perf_counter() - wall0, time.process_time() - cpu0, result.steps, times)


# --- output ------------------------------------------------------------------------


def print_tables(nats: NatsRun, sim: SimRun | None) -> None:
    days = nats.mission_s / 86400.0
    print(f"\nwhole mission over NATS: {days:.2f} mission days, {nats.steps} steps\n"
          f"  start to first tick    {nats.to_first_tick_s:6.2f} s wall "
          f"(nats-server, six services importing, the roll call)\n"
          f"  first tick to finish   {nats.ticking_s:6.2f} s wall "
          f"({nats.steps / nats.ticking_s:,.0f} steps/s, "
          f"{nats.mission_s / nats.ticking_s / 86400.0:,.2f} mission days per wall s)\n"
          f"  whole process          {nats.whole_s:6.2f} s wall "
          f"(what `twin run` reports as wall_s)\n"
          f"  steps flown before the supervisor saw all six healthy: {nats.healthy_step}")
    if sim is not None:
        print(f"same cores in one process (SimLoop): {sim.steps} steps in {sim.wall_s:.2f} s "
              f"wall ({sim.cpu_s:.2f} s CPU), {sim.steps / sim.wall_s:,.0f} steps/s"
              + ("" if sim.steps == nats.steps else "  [step counts differ!]"))
    header = f"{'process':<12} {'CPU s':>8} {'physics s':>10} {'apply s':>8} " \
             f"{'messaging s':>12} {'msg share':>9}"
    print("\n" + header + "\n" + "-" * len(header))
    total = {"cpu": 0.0, "phys": 0.0, "apply": 0.0}
    for name in (*SERVICE_NAMES, "nats-server"):
        cpu = nats.cpu_s[name]
        t = sim.times.get(name) if sim is not None else None
        phys = t.advance_s if t else float("nan")
        apply_s = t.apply_s if t else float("nan")
        overhead = cpu - phys - apply_s if t else cpu
        share = overhead / cpu if cpu > 0 else float("nan")
        print(f"{name:<12} {cpu:>8.2f} {phys:>10.2f} {apply_s:>8.2f} {overhead:>12.2f} "
              f"{share:>9.0%}")
        total["cpu"] += cpu
        total["phys"] += phys if t else 0.0
        total["apply"] += apply_s if t else 0.0
    overhead = total["cpu"] - total["phys"] - total["apply"]
    print("-" * len(header))
    print(f"{'total':<12} {total['cpu']:>8.2f} {total['phys']:>10.2f} {total['apply']:>8.2f} "
          f"{overhead:>12.2f} {overhead / total['cpu']:>9.0%}")
    print(f"\nCPU over NATS, first tick to finish: {total['cpu']:.2f} s in "
          f"{nats.ticking_s:.2f} s wall on "
          f"{os.cpu_count()} CPUs; physics = advance()+after_step() measured in SimLoop, "
          "messaging = the rest (runtime, bus, NATS client, nats-server).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--plan", type=Path, default=None, help="flight plan (default nominal)")
    parser.add_argument("--no-simloop", action="store_true", help="skip the in-process run")
    parser.add_argument("--insecure", action="store_true",
                        help="plaintext NATS and gRPC (twin run --insecure)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-mission-") as tmp:
        nats = asyncio.run(run_over_nats(args.seed, args.plan, Path(tmp), args.insecure))
    sim = None if args.no_simloop else run_in_process(args.seed, args.plan)
    print_tables(nats, sim)


if __name__ == "__main__":
    main()
