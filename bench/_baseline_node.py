"""The lock-step protocol's floor: a clock and trivial nodes over NATS, nothing else.

::

    python bench/_baseline_node.py node  --nats URL --root R --name N [--loop uvloop]
    python bench/_baseline_node.py clock --nats URL --root R --nodes 5 \\
                                         --warmup-s 1 --seconds 10 [--loop uvloop]
    python bench/_baseline_node.py gated --nats URL --root R --nodes 5 [--loop uvloop]

The message pattern of the kernel's clock, stripped: the clock publishes a
tick (an orjson object) on ``R.tick``; every node decodes it and publishes an
ack (an orjson object) on ``R.ack.<name>``; when all acks are in the clock sends
the next tick. No envelope validation, inbox, telemetry, metrics or logging.
Start-up is a roll call like the kernel's (``R.roll`` -> ``R.hello.<name>``),
and the clock tells the nodes to leave on ``R.stop``.

The clock measures itself (perf_counter from publishing a tick to the last
ack) and prints one JSON line: steps, window, steps/s, round-trip stats,
its CPU seconds. Each node prints the ticks it answered and its CPU seconds.

``gated`` is the same clock kept waiting between windows: after the roll call
it prints ``ready`` and runs one window per request on ``R.go`` (body
``{"seconds": s}``), answering with that window's steps, wall seconds and its
own CPU seconds, until ``R.stop``. The bench uses it to interleave short floor
and kernel windows on processes that stay up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from typing import Any

import nats
import orjson
from _stats import LOOPS, run_on, summarize_s
from nats.aio.client import Client
from nats.aio.msg import Msg

ROLL_PERIOD_S = 0.1


class Node:
    """One trivial answerer: decode the tick, publish an ack."""

    def __init__(self, nc: Client, ack_subject: str) -> None:
        self.nc, self.ack_subject = nc, ack_subject
        self.ticks = 0

    async def on_tick(self, msg: Msg) -> None:
        self.ticks += 1
        tick = orjson.loads(msg.data)
        await self.nc.publish(self.ack_subject,
                              orjson.dumps({"step": tick["step"], "max_dt_s": 600.0}))


async def run_node(url: str, root: str, name: str) -> None:
    nc = await nats.connect(url, name=f"bench-node-{name}")
    hello_subject = f"{root}.hello.{name}"
    stop = asyncio.Event()
    node = Node(nc, f"{root}.ack.{name}")

    async def on_roll(msg: Msg) -> None:
        await nc.publish(hello_subject, b"{}")

    async def on_stop(msg: Msg) -> None:
        stop.set()

    await nc.subscribe(f"{root}.tick", cb=node.on_tick)
    await nc.subscribe(f"{root}.roll", cb=on_roll)
    await nc.subscribe(f"{root}.stop", cb=on_stop)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await nc.publish(hello_subject, b"{}")
    await stop.wait()
    await nc.close()
    _print_json({"ticks": node.ticks, "cpu_s": time.process_time()})


class Clock:
    """Tick, wait for every ack, tick again; time each round trip."""

    def __init__(self, root: str, nodes: int) -> None:
        self.root, self.nodes = root, nodes
        self.step = 0
        self.acked: set[str] = set()
        self.present: set[str] = set()
        self.all_acked: asyncio.Future[None] | None = None
        self.all_present = asyncio.Event()

    async def on_ack(self, msg: Msg) -> None:
        if orjson.loads(msg.data)["step"] != self.step:
            return
        self.acked.add(msg.subject.rsplit(".", 1)[1])
        if len(self.acked) == self.nodes and self.all_acked is not None:
            self.all_acked.set_result(None)

    async def on_hello(self, msg: Msg) -> None:
        self.present.add(msg.subject.rsplit(".", 1)[1])
        if len(self.present) >= self.nodes:
            self.all_present.set()


async def roll_call(nc: Client, clock: Clock) -> None:
    while not clock.all_present.is_set():
        await nc.publish(f"{clock.root}.roll", b"{}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(clock.all_present.wait(), ROLL_PERIOD_S)


async def one_step(nc: Client, clock: Clock, t_from: float) -> float:
    """One lock-step round trip; returns its wall duration in seconds."""
    clock.step += 1
    clock.acked.clear()
    # A bare future, no timeout: the floor has no retry logic (the bench's own
    # deadline ends a run whose node died).
    clock.all_acked = asyncio.get_running_loop().create_future()
    tick = orjson.dumps({"step": clock.step, "t_from": t_from, "t_to": t_from + 600.0,
                         "expect": {}})
    sent = time.perf_counter()
    await nc.publish(f"{clock.root}.tick", tick)
    await clock.all_acked
    return time.perf_counter() - sent


async def run_clock(url: str, root: str, nodes: int, warmup_s: float, seconds: float) -> None:
    nc = await nats.connect(url, name="bench-clock")
    clock = Clock(root, nodes)
    await nc.subscribe(f"{root}.ack.*", cb=clock.on_ack)
    await nc.subscribe(f"{root}.hello.*", cb=clock.on_hello)
    await roll_call(nc, clock)
    start = time.perf_counter()
    while time.perf_counter() - start < warmup_s:
        await one_step(nc, clock, clock.step * 600.0)
    rtts: list[float] = []
    window_start = time.perf_counter()
    while (now := time.perf_counter()) - window_start < seconds:
        rtts.append(await one_step(nc, clock, clock.step * 600.0))
    window_s = now - window_start
    await nc.publish(f"{root}.stop", b"{}")
    await nc.flush()
    await nc.close()
    _print_json({"steps": len(rtts), "window_s": window_s, "steps_per_s": len(rtts) / window_s,
                 "rtt": summarize_s(rtts), "total_steps": clock.step,
                 "cpu_s": time.process_time()})


async def run_gated_clock(url: str, root: str, nodes: int) -> None:
    nc = await nats.connect(url, name="bench-clock")
    clock = Clock(root, nodes)
    stop = asyncio.Event()
    await nc.subscribe(f"{root}.ack.*", cb=clock.on_ack)
    await nc.subscribe(f"{root}.hello.*", cb=clock.on_hello)
    await roll_call(nc, clock)

    async def on_go(msg: Msg) -> None:  # its own subscription task: acks keep flowing
        seconds = float(orjson.loads(msg.data)["seconds"])
        cpu0, steps, start = time.process_time(), 0, time.perf_counter()
        while (now := time.perf_counter()) - start < seconds:
            await one_step(nc, clock, clock.step * 600.0)
            steps += 1
        await msg.respond(orjson.dumps({"steps": steps, "window_s": now - start,
                                        "cpu_s": time.process_time() - cpu0}))

    async def on_stop(msg: Msg) -> None:
        stop.set()

    await nc.subscribe(f"{root}.go", cb=on_go)
    await nc.subscribe(f"{root}.stop", cb=on_stop)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await nc.flush()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await stop.wait()
    await nc.close()


def _print_json(report: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(report).decode() + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("node", "clock", "gated"))
    parser.add_argument("--nats", required=True)
    parser.add_argument("--root", required=True, help="subject root, e.g. bench.x.clock")
    parser.add_argument("--name", default="n")
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    a = parser.parse_args()
    if a.role == "node":
        run_on(a.loop, lambda: run_node(a.nats, a.root, a.name))
    elif a.role == "gated":
        run_on(a.loop, lambda: run_gated_clock(a.nats, a.root, a.nodes))
    else:
        run_on(a.loop, lambda: run_clock(a.nats, a.root, a.nodes, a.warmup_s, a.seconds))


if __name__ == "__main__":
    main()
