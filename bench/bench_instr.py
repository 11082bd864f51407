"""Instructions per pass of the lock-step's hot paths, counted by valgrind.

Run: ``.venv/bin/python bench/bench_instr.py [--ticks 5000] [--base REF]``

Wall time on this shared 2-core machine drifts by tens of per cent within
minutes, so a kernel change of a few per cent hides in it (``ab_kernel.py``
needs a dozen window pairs to see 3 %). An instruction count does not drift:
run the same code twice and it agrees to a few instructions in tens of
thousands. This bench counts, warm, the Python the twin runs per message:

- a vehicle answering a tick (envelope decode, its step, its truth-telemetry
  frame, the ack), against the floor's node (``_baseline_node.py``: ``loads``,
  ``dumps``, publish);
- ground's whole step (the tick out, five acks in, its own step and the next
  step's size), against the floor's clock;
- the kernel's parts: one envelope decoded, one ack sent, one telemetry frame.

Each case runs in one process against a stub publisher: no NATS, no sockets.
nats-py's read loop and flusher, the event loop and the system calls are the
same for the floor and the kernel, and are left out. The case runs twice under
``valgrind --tool=callgrind``, once with only its warm-up and once with
``--ticks`` more passes; the difference over ``--ticks`` is one pass.

In the running twin one such instruction costs about 0.8 ns of CPU (the
answerers' measured 46 us per step more than the floor's, for about 57,000
instructions more), so instructions x 0.8 ns estimates a change's CPU per step.

``--base REF`` counts the kernel cases of a git revision too (checked out into a
temporary worktree, as ``ab_kernel.py`` does) and prints the change.

Prints a table; asserts nothing. Needs valgrind (``apt install valgrind``):
without it, says so and exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

SELF = Path(__file__).resolve()
REPO_ROOT = SELF.parent.parent
WARMUP = 2_000
MISSION = "bench-1a2b3c4d"  # as long as bench_kernel.py's mission ids
#: The five answerers (services.kernel.config.VEHICLES, not imported here: a case
#: imports ``services`` only once the checkout it counts is first on sys.path).
VEHICLES = ("orbiter", "lander", "ascender", "reentry", "relay")
T0_S = 7_234.123456789  # a mission time with every digit, as real steps have
STEP_S = 600.0

#: (case, what it counts); the kernel cases are counted again at ``--base``.
FLOOR_CASES = {"floor-node": "floor node answers a tick",
               "floor-clock": "floor clock's whole step (tick, 5 acks)"}
KERNEL_CASES = {"vehicle": "vehicle answers a tick",
                "ground": "ground's whole step (tick, 5 acks, own step)",
                "decode": "  decode one tick envelope",
                "send-ack": "  encode and send one ack",
                "telemetry": "  one truth-telemetry frame (summary, frame, JSON)"}


# --- the cases, run inside valgrind ------------------------------------------------------
class _Msg:
    __slots__ = ("data", "subject")

    def __init__(self, data: bytes, subject: str) -> None:
        self.data, self.subject = data, subject


class _StubNats:
    """What the kernel's Bus calls on a nats-py client: publish and subscribe."""

    is_closed = False

    def __init__(self) -> None:
        self.callbacks: dict[str, Callable[[Any], Coroutine[Any, Any, None]]] = {}

    async def publish(self, subject: str, payload: bytes) -> None:
        return None

    async def subscribe(self, subject: str, cb: Callable[[Any], Coroutine[Any, Any, None]],
                        **_: Any) -> None:
        self.callbacks[subject] = cb


def _drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """One ``send`` into a coroutine: it runs to its end or to its first real wait."""
    try:
        return coro.send(None)
    except StopIteration:
        return None


def _tick_body(k: int) -> dict[str, Any]:
    t_from = T0_S + (k - 1) * STEP_S
    return {"step": k, "t_from": t_from, "t_to": t_from + STEP_S, "expect": {}}


async def _case(name: str, passes: int, ticks: int) -> None:
    """Warm up, then make ``passes`` more passes of case ``name``. Its messages are
    made for ``ticks`` passes whatever ``passes`` is, so that both runs of a case
    spend the same on making them."""
    made = WARMUP + ticks
    if name in ("floor-node", "floor-clock"):
        step, done = _floor_node(made) if name == "floor-node" else _floor_clock(made)
    else:
        step, done = await _kernel_case(name, made)
    for k in range(1, WARMUP + passes + 1):
        step(k)
    if done() != WARMUP + passes:  # a path that went wrong counts nothing worth printing
        raise SystemExit(f"case {name}: {done()} passes completed of {WARMUP + passes}")


#: One pass of a case, and how many passes have completed (read once at the end).
Case = tuple[Callable[[int], object], Callable[[], int]]


def _floor_node(made: int) -> Case:
    """``_baseline_node.py``'s node answering ticks."""
    import orjson
    from _baseline_node import Node

    node = Node(_StubNats(), "r.ack.orbiter")  # type: ignore[arg-type]
    ticks = [_Msg(orjson.dumps(_tick_body(k)), "r.tick") for k in range(1, made + 1)]
    return lambda k: _drive(node.on_tick(ticks[k - 1])), lambda: node.ticks


def _floor_clock(made: int) -> Case:
    """``_baseline_node.py``'s clock: one step, its five acks fed in."""
    import orjson
    from _baseline_node import Clock, one_step

    nats, clock = _StubNats(), Clock("r", len(VEHICLES))
    acks = [[_Msg(orjson.dumps({"step": k, "max_dt_s": 600.0}), f"r.ack.{v}") for v in VEHICLES]
            for k in range(1, made + 1)]

    def step(k: int) -> None:
        coro = one_step(nats, clock, clock.step * STEP_S)  # type: ignore[arg-type]
        _drive(coro)  # the tick is out; waiting for the acks
        for msg in acks[k - 1]:
            _drive(clock.on_ack(msg))  # type: ignore[arg-type]
        _drive(coro)

    return step, lambda: clock.step if len(clock.acked) == len(VEHICLES) else -1


async def _kernel_case(name: str, made: int) -> Case:
    """A kernel case from the checkout on ``sys.path`` (this one or ``--base``'s)."""
    from _kernel_inproc import IdleCore
    from bench_kernel import write_coast_plan
    from prometheus_client import CollectorRegistry

    from services.ground.plan import load_plan
    from services.ground.service import GroundRuntime
    from services.kernel.config import ServiceConfig
    from services.kernel.envelope import Envelope, decode, encode
    from services.kernel.runtime import ServiceRuntime
    from services.kernel.telemetry import telemetry_frame

    if name == "ground":
        with tempfile.TemporaryDirectory() as tmp:
            plan = load_plan(write_coast_plan(Path(tmp) / "plan.json", 3650))
        config = ServiceConfig.from_env("ground", {"TWIN_MISSION_ID": MISSION})
        ground = GroundRuntime(config, CollectorRegistry(), plan)
        nats = ground.bus.nc = _StubNats()  # type: ignore[assignment]
        clock = ground.clock
        await clock.attach()
        on_ack = nats.callbacks[ground.subjects.all_of("clock.ack")]
        acks = [[_Msg(encode(Envelope(MISSION, v, k, STEP_S * k, k, "ack",
                                      {"step": k, "max_dt_s": STEP_S})), ground.subjects.ack(v))
                 for v in VEHICLES] for k in range(1, made + 1)]

        def ground_step(k: int) -> None:
            t_from = ground.t_s
            coro = clock._do_step(ground.step + 1, t_from, clock._next_t_to(t_from))
            _drive(coro)  # the tick is out; waiting for the acks
            for msg in acks[ground.step]:
                _drive(on_ack(msg))
            _drive(coro)
            clock._after_step()

        return ground_step, lambda: ground.step

    config = ServiceConfig.from_env("orbiter", {"TWIN_MISSION_ID": MISSION})
    rt = ServiceRuntime(IdleCore("orbiter", 1), config, CollectorRegistry())
    nats = rt.bus.nc = _StubNats()  # type: ignore[assignment]
    await rt.subscribe_clock()
    ticks = [_Msg(encode(Envelope(MISSION, "ground", k, T0_S + (k - 1) * STEP_S, k - 1, "tick",
                                  _tick_body(k))), rt.subjects.tick) for k in range(1, made + 1)]
    if name == "vehicle":
        on_tick = nats.callbacks[rt.subjects.tick]
        return lambda k: _drive(on_tick(ticks[k - 1])), lambda: rt.step
    last: list[Any] = [None]
    if name == "decode":
        def decode_one(k: int) -> None:
            last[0] = decode(ticks[k - 1].data, mission=MISSION)

        return decode_one, lambda: int(last[0].body["step"])
    if name == "send-ack":
        return (lambda k: _drive(rt.bus.send(rt.subjects.ack("orbiter"), "ack",
                                             {"step": k, "max_dt_s": STEP_S}, k * STEP_S, k)),
                lambda: rt.bus.control_seq.last)

    import orjson

    core = rt.core

    def frame(k: int) -> None:
        last[0] = orjson.dumps(telemetry_frame(core.summary(), k, k * STEP_S),
                               option=orjson.OPT_SERIALIZE_NUMPY)

    def frame_step() -> int:  # a positional frame, or a named one (before 2026-11)
        raw = orjson.loads(last[0])
        return int(raw[0] if isinstance(raw, list) else raw["step"])

    return frame, frame_step


# --- the driver ----------------------------------------------------------------------------
async def _count(case: str, passes: int, ticks: int, repo: Path,
                 sem: asyncio.Semaphore) -> int:
    """Instructions of one run of ``case`` with ``passes`` passes after the warm-up."""
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
           sys.executable, str(SELF), "--case", case, "--passes",
           str(passes), "--ticks", str(ticks), "--repo", str(repo)]
    env = {**os.environ, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1"}
    async with sem:
        proc = await asyncio.create_subprocess_exec(*cmd, env=env,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
    found = re.search(r"Collected\s*:\s*(\d+)", err.decode())
    if proc.returncode != 0 or found is None:
        tail = err.decode().strip().splitlines()[-5:]
        raise RuntimeError(f"case {case} ({repo}) failed: " + " | ".join(tail))
    return int(found.group(1))


async def _per_pass(case: str, ticks: int, repo: Path, sem: asyncio.Semaphore) -> float:
    idle, busy = await asyncio.gather(_count(case, 0, ticks, repo, sem),
                                      _count(case, ticks, ticks, repo, sem))
    return (busy - idle) / ticks


async def measure(ticks: int, base: Path | None) -> dict[str, dict[str, float]]:
    sem = asyncio.Semaphore(os.cpu_count() or 1)
    jobs: dict[tuple[str, str], Any] = {}
    for case in (*FLOOR_CASES, *KERNEL_CASES):
        jobs["work", case] = _per_pass(case, ticks, REPO_ROOT, sem)
    if base is not None:
        for case in KERNEL_CASES:
            jobs["base", case] = _per_pass(case, ticks, base, sem)
    values = await asyncio.gather(*jobs.values())
    out: dict[str, dict[str, float]] = {"work": {}, "base": {}}
    for (side, case), value in zip(jobs, values, strict=True):
        out[side][case] = value
    return out


def print_table(counts: dict[str, dict[str, float]], ticks: int, base_ref: str | None) -> None:
    work, base = counts["work"], counts["base"]
    print(f"Instructions per pass, warm, counted by callgrind over {ticks:,} passes "
          f"(Python {sys.version.split()[0]}); stub publisher, no NATS")
    head = "| path | floor | kernel | kernel - floor |"
    rule = "|------|-------|--------|----------------|"
    if base:
        head += f" kernel at {base_ref} | change |"
        rule += "------------|--------|"
    print(head)
    print(rule)
    whole_floor = work["floor-clock"] + len(VEHICLES) * work["floor-node"]
    whole = work["ground"] + len(VEHICLES) * work["vehicle"]
    rows: list[tuple[str, float | None, float, float | None]] = [
        (KERNEL_CASES["vehicle"], work["floor-node"], work["vehicle"],
         base.get("vehicle")),
        (KERNEL_CASES["ground"], work["floor-clock"], work["ground"], base.get("ground")),
        ("whole lock-step (ground + 5 vehicles)", whole_floor, whole,
         base["ground"] + len(VEHICLES) * base["vehicle"] if base else None),
        *((KERNEL_CASES[c], None, work[c], base.get(c))
          for c in ("decode", "send-ack", "telemetry")),
    ]
    for title, floor, kernel, before in rows:
        line = (f"| {title} | {'' if floor is None else f'{floor:,.0f}'} | {kernel:,.0f} | "
                f"{'' if floor is None else f'+{kernel - floor:,.0f} ({kernel / floor:.2f}x)'} |")
        if base:
            line += (f" {before:,.0f} | {(kernel - before) / before:+.1%} |"
                     if before else " | |")
        print(line)
    print(f"At about 0.8 ns per instruction in the running twin, the kernel's "
          f"{whole - whole_floor:,.0f} instructions more per lock-step are about "
          f"{(whole - whole_floor) * 0.8e-3:,.0f} us of CPU per step.")


def _child(case: str, passes: int, ticks: int, repo: Path) -> None:
    sys.path[:0] = [str(repo / "bench"), str(repo)]  # that checkout's services and benches
    asyncio.run(_case(case, passes, ticks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=5_000,
                        help="passes counted per case, after the warm-up")
    parser.add_argument("--base", default=None, help="git revision to compare the kernel with")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--passes", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        _child(args.case, args.passes, args.ticks, args.repo)
        return
    if args.ticks < 1:
        parser.error(f"--ticks {args.ticks}: give at least 1 pass")
    if shutil.which("valgrind") is None:
        print("bench_instr: valgrind is not installed; install it (apt install valgrind) "
              "to count instructions", file=sys.stderr)
        raise SystemExit(2)
    if args.base is None:
        counts = asyncio.run(measure(args.ticks, None))
    else:
        from ab_kernel import worktree

        with worktree(args.base) as (path, commit):
            counts = asyncio.run(measure(args.ticks, path))
            args.base = f"{args.base} ({commit[:10]})"
    print_table(counts, args.ticks, args.base)


if __name__ == "__main__":
    main()
