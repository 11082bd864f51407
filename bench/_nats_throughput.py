"""Raw nats-py publish/subscribe throughput: one publisher, one subscriber.

::

    python bench/_nats_throughput.py sub --nats URL --subject S --count N [--loop uvloop]
    python bench/_nats_throughput.py pub --nats URL --subject S --count N --size 16

Run the subscriber first and wait for its ``ready`` line. Each prints one
JSON line: the subscriber the time from its first to its last message, the
publisher the time to publish all and flush.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from typing import Any

import nats
import orjson
from _stats import LOOPS, run_on
from nats.aio.msg import Msg

SUB_TIMEOUT_S = 60.0


async def subscribe(url: str, subject: str, count: int) -> dict[str, Any]:
    nc = await nats.connect(url, name="bench-sub")
    got = 0
    first_ns = last_ns = 0
    done = asyncio.get_running_loop().create_future()

    async def on_msg(msg: Msg) -> None:
        nonlocal got, first_ns, last_ns
        last_ns = time.perf_counter_ns()
        if got == 0:
            first_ns = last_ns
        got += 1
        if got == count:
            done.set_result(None)

    await nc.subscribe(subject, cb=on_msg, pending_msgs_limit=count + 1,
                       pending_bytes_limit=1 << 30)
    await nc.flush()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    # On timeout, report what arrived: a slow consumer shows as msgs < count.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done, SUB_TIMEOUT_S)
    await nc.close()
    elapsed_s = (last_ns - first_ns) / 1e9
    return {"msgs": got, "elapsed_s": elapsed_s,
            "msgs_per_s": (got - 1) / elapsed_s if elapsed_s > 0 else 0.0}


async def publish(url: str, subject: str, count: int, size: int) -> dict[str, Any]:
    nc = await nats.connect(url, name="bench-pub", pending_size=64 * 1024 * 1024)
    payload = b"x" * size
    start = time.perf_counter()
    for _ in range(count):
        await nc.publish(subject, payload)
    await nc.flush(timeout=60)
    elapsed_s = time.perf_counter() - start
    await nc.close()
    return {"msgs": count, "elapsed_s": elapsed_s, "msgs_per_s": count / elapsed_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("pub", "sub"))
    parser.add_argument("--nats", required=True)
    parser.add_argument("--subject", required=True)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    a = parser.parse_args()
    result: dict[str, Any] = {}

    async def go() -> None:
        if a.role == "sub":
            result.update(await subscribe(a.nats, a.subject, a.count))
        else:
            result.update(await publish(a.nats, a.subject, a.count, a.size))

    run_on(a.loop, go)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
