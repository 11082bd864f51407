"""Watch a lock-step clock from outside and time its steps.

::

    python bench/_bus_observer.py --nats URL --root twin.<mission>.clock --nodes 5 \\
        --warmup-s 1 --seconds 10 [--idle-s 3] [--loop uvloop]

One wildcard subscription on ``<root>.>`` receives ticks (``<root>.tick``) and
acks (``<root>.ack.<service>``) in the order nats-server relays them; the
callback stamps ``perf_counter_ns`` and keeps the bytes (it decodes ticks only
until the clock has settled); the rest is decoded after the window. Ticks and
acks reach the observer through the same server hop, so its delay mostly
cancels in "tick -> last ack". It cannot see the tick's first hop (publisher
-> server), so its round trips read a little shorter than the publisher's
own; the bench shows both on the floor, whose clock times itself.

Prints ``ready`` once subscribed, then one JSON line: the window, steps/s from
the ticks seen, round trip (tick -> last of ``--nodes`` acks) and period (tick
-> next tick) statistics. The window starts at a settled tick plus the warm-up
and ends after ``--seconds``, or when no message came for ``--idle-s`` (the
mission ended). The warm-up starts at the ``SETTLE_STEPS``-th tick, not the
first: the first steps of real services are slow for reasons of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import nats
import orjson
from _stats import LOOPS, run_on, summarize_s
from nats.aio.msg import Msg

Record = tuple[int, str, bytes]
#: Steps to let pass before the warm-up: the first steps of a service can be
#: slow for reasons that are not the clock's (lazy imports, ephemeris loads).
SETTLE_STEPS = 5


def _step_of(data: bytes) -> int | None:
    raw: Any = orjson.loads(data)
    # the kernel's envelope (an array, body last) or the floor's bare object
    body = raw[-1] if isinstance(raw, list) and raw else raw
    step = body.get("step") if isinstance(body, dict) else None
    return step if isinstance(step, int) else None


def analyze(records: list[Record], root: str, nodes: int, warmup_s: float) -> dict[str, Any]:
    """Pair each tick with its acks; statistics over ticks after the warm-up."""
    tick_subject, ack_prefix = f"{root}.tick", f"{root}.ack."
    ticks: dict[int, int] = {}
    acks: dict[int, dict[str, int]] = {}
    for t_ns, subject, data in records:
        step = _step_of(data)
        if step is None:
            continue
        if subject == tick_subject:
            ticks.setdefault(step, t_ns)  # a resent tick keeps its first time
        elif subject.startswith(ack_prefix):
            acks.setdefault(step, {}).setdefault(subject[len(ack_prefix):], t_ns)
    settled = min(ticks) + SETTLE_STEPS
    if settled not in ticks:
        return {"steps": 0}
    start_ns = ticks[settled] + int(warmup_s * 1e9)
    steps = sorted(k for k, t in ticks.items() if t >= start_ns)
    rtts = [(max(acks[k].values()) - ticks[k]) / 1e9 for k in steps
            if len(acks.get(k, {})) >= nodes]
    periods = [(ticks[k + 1] - ticks[k]) / 1e9 for k in steps if k + 1 in ticks]
    window_s = (ticks[steps[-1]] - ticks[steps[0]]) / 1e9 if len(steps) > 1 else 0.0
    return {"steps": len(steps), "window_s": window_s,
            "steps_per_s": (len(steps) - 1) / window_s if window_s > 0 else 0.0,
            "rtt": summarize_s(rtts), "period": summarize_s(periods),
            "incomplete_steps": len(steps) - len(rtts)}


async def observe(url: str, root: str, warmup_s: float, seconds: float,
                  idle_s: float) -> list[Record]:
    nc = await nats.connect(url, name="bench-observer")
    records: list[Record] = []
    settled = asyncio.Event()
    tick_subject = f"{root}.tick"
    first_step: int | None = None

    async def on_msg(msg: Msg) -> None:
        nonlocal first_step
        records.append((time.perf_counter_ns(), msg.subject, msg.data))
        if msg.subject == tick_subject and not settled.is_set():
            step = _step_of(msg.data)
            if step is None:
                return
            first_step = step if first_step is None else first_step
            if step >= first_step + SETTLE_STEPS:
                settled.set()

    await nc.subscribe(f"{root}.>", cb=on_msg, pending_msgs_limit=10_000_000)
    await nc.flush()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await settled.wait()
    deadline = time.monotonic() + warmup_s + seconds
    seen = 0
    while time.monotonic() < deadline:
        await asyncio.sleep(min(idle_s, max(deadline - time.monotonic(), 0.0)))
        if len(records) == seen:
            break  # nothing for idle_s: the clock stopped
        seen = len(records)
    await nc.close()
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats", required=True)
    parser.add_argument("--root", required=True, help="subject root, e.g. twin.ce6.clock")
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--idle-s", type=float, default=3.0)
    parser.add_argument("--loop", choices=LOOPS, default="uvloop")
    a = parser.parse_args()
    result: dict[str, Any] = {}

    async def go() -> None:
        records = await observe(a.nats, a.root, a.warmup_s, a.seconds, a.idle_s)
        result.update(analyze(records, a.root, a.nodes, a.warmup_s))

    run_on(a.loop, go)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
