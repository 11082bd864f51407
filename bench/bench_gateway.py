"""What the CCSDS gateway (services/gateway/) costs: how many packets it
sustains, what one costs in-process, and what turning it on costs the
nominal mission.

Run: ``.venv/bin/python bench/bench_gateway.py [--seconds 10] [--repeat 3] [--no-mission]``

Prints tables; asserts nothing. The downlink is the nominal mission's own:
every ``dl.*`` message a whole nominal run publishes (SimLoop, the six real
cores in one thread, seed 6; ~15,000 messages, relay's forwarded frames
among them), replayed as often as needed with each origin's frame numbers
and the times moved on by a whole mission per replay, so that every replayed
frame is new to ground and becomes an HK packet.

1. **Packets per second.** A real nats-server (plaintext, no JetStream) and
   a real gateway process (``python -m services.gateway``, TWIN_INSECURE,
   telemetry to a UDP socket of the bench). The bench publishes the frames in
   delivery order, as orbiter, relay, ... would, 200 at a time, each batch
   followed by an event of ground's whose time has passed their
   ``deliver_at_s`` (what makes ground, and so the gateway, hear them). It
   keeps at most a window of HK packets unreceived, so it publishes as fast
   as the gateway keeps up and no faster; a receiving thread counts the HK
   packets. Reported over ``--seconds`` of wall time after a one-second
   warm-up: HK packets per wall second (overall, and the slowest and fastest
   whole second), the CPU the gateway and nats-server used in that time (per
   cent of one core) and the gateway's RSS. The bench, nats-server and the
   gateway share the machine's cores.
2. **In-process cost per HK packet**, one thread, no I/O: ``hk_packet``
   alone; :class:`GroundView` (``on_downlink`` for each message, ``clock``
   after each batch, the HK packets included); and that plus what the
   gateway's handlers add before it (the envelope decode and the source
   check). Microseconds per HK packet.
3. **The nominal mission with the gateway off and on**: ``twin run --report``
   by turns, off then on (``--ccsds-tm`` to a UDP socket the bench drains),
   ``--repeat`` times each; the report's ``wall_s`` (start to the final
   snapshot), median and min-max, and the cost of on against off in per cent
   (target: at most 5 %), of the medians and pair by pair. Wall time moves
   with whatever else the machine runs, so the CPU seconds are given too,
   sampled every 0.1 s from /proc while the run lasts: the gateway's own, and
   all of the run's processes'. The packets received in each "on" run are
   counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import orjson
import psutil
from prometheus_client import CollectorRegistry

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from services.gateway import packets  # noqa: E402
from services.gateway.ground_view import GroundView  # noqa: E402
from services.ground.vehicle import GroundCore  # noqa: E402
from services.kernel.config import SERVICE_NAMES, ServiceConfig  # noqa: E402
from services.kernel.envelope import decode, encode_fields  # noqa: E402
from services.kernel.natsauth import Publishers  # noqa: E402
from services.kernel.natsd import NatsServer  # noqa: E402
from services.kernel.subjects import Subjects  # noqa: E402
from services.kernel.vehicle import VehicleCore  # noqa: E402
from services.local.simloop import SimLoop  # noqa: E402

MISSION = "ce6"
TWIN = [sys.executable, "-m", "services.cli.app"]
#: Messages per batch, each batch followed by one event of ground's whose time
#: delivers it (a busy step of the nominal mission carries a few dozen; 200
#: keeps the events' share small).
BATCH = 200
#: HK packets the publisher may be ahead of the receiver.
WINDOW = 2000
#: The CCSDS packet id octet of a TM packet, and HK's id.
PACKET_ID_OCTET, HK = 12, 1
WARMUP_S = 1.0
#: Wall seconds without a packet before the receiver's lag counts as loss.
STALL_S = 2.0
READY_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 600.0


# --- the nominal mission's downlink -----------------------------------------------------
@dataclass(frozen=True)
class Downlink:
    """One ``dl.*`` message of the nominal run: its publisher and body."""

    src: str
    body: dict[str, Any]

    @property
    def frame(self) -> dict[str, Any]:
        inner: dict[str, Any] = (self.body["frame"] if self.body.get("type") == "forwarded"
                                 else self.body)
        return inner


def _core(name: str, seed: int) -> VehicleCore:
    config = ServiceConfig(service=name, seed=seed, flight_plan=None, metrics_port=-1,
                           insecure=True)  # only its core is used
    core: VehicleCore = importlib.import_module(f"services.{name}.service").make(
        config, CollectorRegistry()).core
    return core


def nominal_downlink(seed: int) -> tuple[list[Downlink], float]:
    """Every downlink message of a nominal run, in the order ground receives
    them (delivery time), and the mission's end (mission s)."""
    cores = {name: _core(name, seed) for name in SERVICE_NAMES}
    ground = cores.pop("ground")
    assert isinstance(ground, GroundCore)
    loop = SimLoop(ground, cores, record=True)
    result = loop.run()
    assert loop.published is not None
    out = [Downlink(env.src, env.body) for subject, env in loop.published if ".dl." in subject]
    out.sort(key=lambda d: float(d.frame["deliver_at_s"]))
    return out, result.t_s


def cycle_batches(base: list[Downlink]) -> list[tuple[list[Downlink], float, int]]:
    """The nominal downlink in batches of BATCH messages, each with the tick
    time that delivers it all and the HK packets that makes the gateway send
    (worked out by the GroundView it runs: a frame both sent direct and
    forwarded by the relay is one packet)."""
    view = GroundView()
    out = []
    for i in range(0, len(base), BATCH):
        batch = base[i:i + BATCH]
        t_s = max(float(d.frame["deliver_at_s"]) for d in batch)
        sent = [p for d in batch for p in view.on_downlink(d.body, float(d.frame["t_s"]))]
        sent += view.clock(t_s)
        out.append((batch, t_s, sum(1 for p in sent if p[PACKET_ID_OCTET] == HK)))
    return out


def replay(base: list[Downlink], mission_end_s: float
           ) -> Iterator[tuple[list[Downlink], float, int]]:
    """:func:`cycle_batches` again and again, each time with every origin's
    frame numbers after the last replay's and every time a mission later: all
    new to ground, so each replay makes as many HK packets as the first."""
    top: dict[str, int] = {}
    for d in base:
        origin = str(d.frame["origin"])
        top[origin] = max(top.get(origin, 0), int(d.frame["frame_seq"]))
    span_s = mission_end_s + 86400.0
    first = cycle_batches(base)
    cycle = 0
    while True:
        shift_s = cycle * span_s
        for batch, t_s, hk in first:
            moved = []
            for d in batch:
                frame = dict(d.frame)
                frame["frame_seq"] = (int(frame["frame_seq"])
                                      + cycle * (top[str(frame["origin"])] + 1))
                for key in ("t_s", "sent_at_s", "deliver_at_s"):
                    frame[key] = float(frame[key]) + shift_s
                body = ({**d.body, "frame": frame} if d.body.get("type") == "forwarded"
                        else frame)
                moved.append(Downlink(d.src, body))
            yield moved, t_s + shift_s, hk
        cycle += 1


# --- 1. packets per second -----------------------------------------------------------------
class Receiver:
    """Counts the HK packets that arrive on a UDP socket, on a thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.hk = 0
        self.packets = 0
        self.per_second: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            self.packets += 1
            if len(data) > PACKET_ID_OCTET and data[PACKET_ID_OCTET] == HK:
                self.hk += 1
                second = int(time.monotonic())
                self.per_second[second] = self.per_second.get(second, 0) + 1


@dataclass
class Throughput:
    hk: int = 0
    wall_s: float = 0.0
    lost: int = 0
    per_second: list[int] = field(default_factory=list)
    gateway_cpu_pct: float = 0.0
    nats_cpu_pct: float = 0.0
    gateway_rss_mb: float = 0.0
    messages: int = 0


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


async def _publish(url: str, base: list[Downlink], mission_end_s: float, seconds: float,
                   rx: Receiver, gateway: psutil.Process, nats_proc: psutil.Process
                   ) -> Throughput:
    nc = await nats.connect(url, pending_size=256 * 1024 * 1024)
    s = Subjects(MISSION)
    out = Throughput()
    seqs: dict[str, int] = {}
    step = sent_hk = hk_from = messages_from = 0
    start = time.monotonic()
    measure_from: float | None = None
    cpu_from = (0.0, 0.0)
    try:
        for batch, t_s, hk in replay(base, mission_end_s):
            for d in batch:
                seqs[d.src] = seqs.get(d.src, 0) + 1
                await nc.publish(s.downlink(d.src), encode_fields(
                    MISSION, d.src, seqs[d.src], float(d.frame["t_s"]), step, "downlink",
                    d.body))
            step += 1
            seqs["ground"] = seqs.get("ground", 0) + 1
            # ground's event at t_s: its time tells the gateway ground's clock
            # has passed the batch's arrivals (services/gateway/ground_view.py)
            await nc.publish(s.event("ground"), encode_fields(
                MISSION, "ground", seqs["ground"], t_s, step, "event",
                {"name": "plan_item_issued", "id": f"b{step}"}))
            out.messages += len(batch) + 1
            sent_hk += hk
            await nc.flush()
            now = time.monotonic()
            if measure_from is None and now - start >= WARMUP_S:
                measure_from, hk_from, messages_from = now, rx.hk, out.messages
                cpu_from = (_cpu_s(gateway), _cpu_s(nats_proc))
            if measure_from is not None and now - measure_from >= seconds:
                break
            # Keep at most WINDOW packets unreceived: as fast as the gateway goes.
            waited_from, seen = time.monotonic(), rx.hk
            while sent_hk - out.lost - rx.hk > WINDOW:
                await asyncio.sleep(0.001)
                if rx.hk != seen:
                    waited_from, seen = time.monotonic(), rx.hk
                elif time.monotonic() - waited_from > STALL_S:
                    out.lost += sent_hk - out.lost - rx.hk  # dropped somewhere on the way
        assert measure_from is not None
        end = time.monotonic()
        out.wall_s = end - measure_from
        out.hk = rx.hk - hk_from
        out.messages -= messages_from
        out.gateway_cpu_pct = 100.0 * (_cpu_s(gateway) - cpu_from[0]) / out.wall_s
        out.nats_cpu_pct = 100.0 * (_cpu_s(nats_proc) - cpu_from[1]) / out.wall_s
        out.gateway_rss_mb = gateway.memory_info().rss / 2**20
        whole = range(int(measure_from) + 1, int(end))  # whole seconds inside the window
        out.per_second = [rx.per_second.get(sec, 0) for sec in whole]
    finally:
        await nc.close()
    return out


def _wait_for_line(log: Path, text: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while text not in (log.read_text(errors="replace") if log.exists() else ""):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the gateway did not get ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def packets_per_second(base: list[Downlink], mission_end_s: float, seconds: float,
                       where: Path) -> Throughput:
    with NatsServer(where / "nats", jetstream=False) as server, Receiver() as rx:
        log = where / "gateway.log"
        env = {**os.environ, "PYTHONPATH": str(REPO), "TWIN_INSECURE": "true",
               "TWIN_MISSION_ID": MISSION, "TWIN_NATS_URL": server.url,
               "TWIN_CCSDS_TM": f"127.0.0.1:{rx.port}", "TWIN_GRPC_HOST": "127.0.0.1",
               "TWIN_GRPC_PORT": "0", "TWIN_METRICS_PORT": "-1", "TWIN_LOG_LEVEL": "INFO"}
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "services.gateway"], cwd=REPO,
                                    env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_for_line(log, "gateway ready", proc)
            assert server.pid is not None
            return asyncio.run(_publish(server.url, base, mission_end_s, seconds, rx,
                                        psutil.Process(proc.pid), psutil.Process(server.pid)))
        finally:
            proc.terminate()
            proc.wait(timeout=30)


# --- 2. in-process cost ----------------------------------------------------------------
@dataclass
class InProcess:
    hk: int
    hk_packet_us: float
    view_us: float
    handlers_us: float


def in_process(base: list[Downlink], mission_end_s: float, cycles: int = 3) -> InProcess:
    """Microseconds per HK packet over ``cycles`` replays of the nominal downlink."""
    messages = replay(base, mission_end_s)
    per_cycle = len(cycle_batches(base))
    work = [(batch, t_s) for batch, t_s, _hk in (next(messages)
                                                 for _ in range(cycles * per_cycle))]
    s = Subjects(MISSION)
    encoded = [[(s.downlink(d.src), encode_fields(MISSION, d.src, i, float(d.frame["t_s"]), 0,
                                                  "downlink", d.body))
                for i, d in enumerate(batch, 1)] for batch, _t in work]
    ticks = [encode_fields(MISSION, "ground", i, t, i, "event",
                           {"name": "plan_item_issued", "id": f"b{i}"})
             for i, (_b, t) in enumerate(work, 1)]

    view = GroundView()
    t0 = time.perf_counter()
    hk = 0
    for batch, t_s in work:
        sent = [p for d in batch for p in view.on_downlink(d.body, float(d.frame["t_s"]))]
        hk += sum(1 for p in [*sent, *view.clock(t_s)] if p[PACKET_ID_OCTET] == HK)
    view_s = time.perf_counter() - t0

    # What the gateway's handlers do around it (service.py _guard): decode the
    # envelope, check its source may publish there, then the view.
    publishers = Publishers(MISSION)
    view = GroundView()
    t0 = time.perf_counter()
    for batch_msgs, tick in zip(encoded, ticks, strict=True):
        for subject, data in batch_msgs:
            env = decode(data, mission=MISSION)
            assert env.src in publishers.of(subject)
            view.on_downlink(env.body, env.t)
        tick_env = decode(tick, mission=MISSION)
        assert tick_env.src in publishers.of(s.event("ground"))
        view.on_event(tick_env.src, tick_env.seq, tick_env.t, "plan_item_issued",
                      tick_env.body)
    handlers_s = time.perf_counter() - t0

    # hk_packet alone, on the frames that became packets.
    seen: set[tuple[str, int]] = set()
    frames = []
    for batch, _t in work:
        for d in batch:
            key = (str(d.frame["origin"]), int(d.frame["frame_seq"]))
            if key not in seen:
                seen.add(key)
                frames.append(d.frame)
    t0 = time.perf_counter()
    for i, frame in enumerate(frames):
        packets.hk_packet(frame, i & 0x3FFF)
    packet_s = time.perf_counter() - t0
    return InProcess(hk, 1e6 * packet_s / len(frames), 1e6 * view_s / hk, 1e6 * handlers_s / hk)


# --- 3. the nominal mission, gateway off and on -------------------------------------------
class Drain:
    """A UDP socket the "on" runs send their telemetry to, emptied on a thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sock.recv(65536)
            except TimeoutError:
                continue
            self.count += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


#: The processes of a `twin run`, by what their command line names.
PARTS = ("gateway", "nats-server", "services", "CLI")


@dataclass
class MissionRun:
    wall_s: float
    cpu_s: dict[str, float]  # by part (PARTS)

    @property
    def total_cpu_s(self) -> float:
        return sum(self.cpu_s.values())


def _part(cmdline: list[str]) -> str:
    line = " ".join(cmdline)
    if "services.gateway" in line:
        return "gateway"
    if cmdline and cmdline[0].endswith("nats-server"):
        return "nats-server"
    if "services.cli.app" in line:
        return "CLI"
    return "services"


def _tree_cpu(root: psutil.Process, last: dict[int, tuple[str, float]]) -> None:
    """Note the CPU seconds of ``root`` and every process under it, by pid
    (sampled until each exits: a finished child's are not readable)."""
    for proc in [root, *root.children(recursive=True)]:
        try:
            # Named once, while it runs: an exiting process's command line is empty.
            part = last[proc.pid][0] if proc.pid in last else _part(proc.cmdline())
            last[proc.pid] = (part, _cpu_s(proc))
        except psutil.Error:
            continue


def twin_run(where: Path, ccsds_tm: str | None) -> MissionRun:
    """`twin run --report` of the nominal mission; its processes' CPU sampled
    every 0.1 s while it runs (the gateway's on its own)."""
    report = where / "report.json"
    extra = ["--ccsds-tm", ccsds_tm] if ccsds_tm else []
    log = where / "run.log"
    where.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen([*TWIN, "run", "--report", str(report), "--state-dir",
                                 str(where / "state"), "--log-level", "WARNING", *extra],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "COLUMNS": "200"})
    cpu: dict[int, tuple[str, float]] = {}
    root = psutil.Process(proc.pid)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(psutil.Error):
            _tree_cpu(root, cpu)
        time.sleep(0.1)
    if proc.poll() is None:
        proc.kill()
    if proc.wait() != 0 or not report.exists():
        raise SystemExit(f"twin run {' '.join(extra)} failed ({proc.returncode}):\n"
                         f"{log.read_text(errors='replace')[-3000:]}")
    wall = float(orjson.loads(report.read_bytes())["wall_s"])
    return MissionRun(wall, {part: sum(c for p, c in cpu.values() if p == part)
                             for part in PARTS})


def mission_off_on(repeat: int, where: Path) -> tuple[dict[str, list[MissionRun]], list[int]]:
    runs: dict[str, list[MissionRun]] = {"off": [], "on": []}
    received: list[int] = []
    drain = Drain()
    try:
        for i in range(repeat):
            runs["off"].append(twin_run(where / f"off-{i}", None))
            before = drain.count
            runs["on"].append(twin_run(where / f"on-{i}", f"127.0.0.1:{drain.port}"))
            time.sleep(0.5)  # the last datagrams
            received.append(drain.count - before)
    finally:
        drain.close()
    return runs, received


# --- output -------------------------------------------------------------------------------
def _spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="wall seconds the packet rate is measured over")
    parser.add_argument("--repeat", type=int, default=3,
                        help="nominal missions with the gateway off, and as many on")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--no-mission", action="store_true",
                        help="skip the whole-mission comparison (3.)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    base, mission_end_s = nominal_downlink(args.seed)
    hk_per_mission = sum(hk for _b, _t, hk in cycle_batches(base))
    print(f"nominal downlink: {len(base):,} dl messages, {hk_per_mission:,} HK packets "
          f"(SimLoop, seed {args.seed}, {time.perf_counter() - t0:.1f} s)")
    print(f"load average at start: {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} cores")

    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        where = Path(tmp)
        rate = packets_per_second(base, mission_end_s, args.seconds, where / "rate")
        print(f"\n1. the gateway process: HK packets per wall second over "
              f"{rate.wall_s:.1f} s (batches of {BATCH} frames + an event, "
              f"window {WINDOW})")
        print(f"  HK packets per second      {rate.hk / rate.wall_s:10,.0f}  (whole seconds: "
              f"{min(rate.per_second, default=0):,}-{max(rate.per_second, default=0):,})")
        print(f"  messages published per s   {rate.messages / rate.wall_s:10,.0f}"
              "  (downlink and events)")
        print(f"  gateway CPU                {rate.gateway_cpu_pct:9.0f} %  of one core")
        print(f"  nats-server CPU            {rate.nats_cpu_pct:9.0f} %")
        print(f"  gateway RSS                {rate.gateway_rss_mb:9.0f} MB")
        print(f"  HK packets lost            {rate.lost:10,}")

        cost = in_process(base, mission_end_s)
        print(f"\n2. in-process, one thread, no I/O: microseconds per HK packet "
              f"({cost.hk:,} packets)")
        print(f"  hk_packet alone                                  {cost.hk_packet_us:7.1f} us")
        print(f"  GroundView: on_downlink + clock (HK included)    {cost.view_us:7.1f} us")
        print(f"  + envelope decode and source check (handlers)    {cost.handlers_us:7.1f} us")
        print(f"  a nominal mission's {hk_per_mission:,} HK packets: "
              f"{cost.handlers_us * hk_per_mission / 1e6:.2f} s of CPU")

        if not args.no_mission:
            runs, received = mission_off_on(args.repeat, where / "mission")
            walls = {k: [r.wall_s for r in v] for k, v in runs.items()}
            off, on = statistics.median(walls["off"]), statistics.median(walls["on"])
            pairs = [100.0 * (b / a - 1.0) for a, b in zip(walls["off"], walls["on"],
                                                             strict=True)]
            print(f"\n3. nominal mission, `twin run` wall_s, gateway off / on by turns, "
                  f"{args.repeat} each (median (min-max), s)")
            for label in ("off", "on"):
                print(f"  {label:4s} {_spread(walls[label])}   runs: "
                      + " ".join(f"{w:.2f}" for w in walls[label]))
            print(f"  cost of the gateway: {100.0 * (on / off - 1.0):+.1f} % of the medians "
                  f"(target <= 5 %); each pair: "
                  + ", ".join(f"{p:+.1f} %" for p in pairs)
                  + f" (median {statistics.median(pairs):+.1f} %)")
            print("  CPU s per mission, median (min-max), by process:")
            for part in PARTS:
                print(f"    {part:12s} off {_spread([r.cpu_s[part] for r in runs['off']]):20s}"
                      f" on {_spread([r.cpu_s[part] for r in runs['on']])}")
            print(f"    {'all':12s} off {_spread([r.total_cpu_s for r in runs['off']]):20s}"
                  f" on {_spread([r.total_cpu_s for r in runs['on']])}")
            print(f"  packets received per 'on' run: {', '.join(f'{n:,}' for n in received)}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
