"""`twin clock until X --wait`: wait for a target within a deadline, showing progress.

The wait runs on ground (RunUntil with wait) and its gRPC deadline is the whole
``--timeout``: ground alone knows when an event has been seen, so its answer
"reached" cannot be fooled by other operators' calls the way a client reading
GetTime could, and it says why a target never will be (mission finished,
target replaced). Beside that call, GetTime is polled for the progress line,
which also shows at once a ground that stopped answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from rich.console import Console
from rich.live import Live
from rich.text import Text

from services.cli.grpc_client import ClockClient
from services.cli.output import say
from services.cli.progress import mission_time, short_utc
from services.dynamics.timescale import iso_utc, mission_s_from_utc
from services.kernel.twin_pb import clock_pb2

__all__ = [
    "PLAIN_EVERY_S",
    "POLL_S",
    "Target",
    "WaitProgress",
    "timed_out_message",
    "until_suffix",
    "wait_for",
]

POLL_S = 0.5  # wall seconds between GetTime calls for the progress line
PLAIN_EVERY_S = 5.0  # wall seconds between progress lines when not on a terminal
POLL_TIMEOUT_S = 5.0  # wall seconds one GetTime may take before ground counts as unreachable


@dataclass(frozen=True)
class Target:
    """What `until` runs to: a UTC instant or a name (plan item id or event)."""

    utc: str | None = None
    event: str | None = None

    @property
    def label(self) -> str:
        return self.event or self.utc or "?"


def until_suffix(state: clock_pb2.ClockState) -> str:
    """"  until X" while the clock runs toward a target, else ""."""
    if state.run_until_event:
        return f"  until {state.run_until_event}"
    if state.run_until_mission_time_s >= 0:
        return f"  until {short_utc(iso_utc(state.run_until_mission_time_s))}"
    return ""


def progress_line(state: clock_pb2.ClockState, target: Target, elapsed_s: float,
                  timeout_s: float | None) -> str:
    """What the wait is at, most telling first (a narrow terminal cuts the end)."""
    bound = f" of {timeout_s:g}" if timeout_s is not None else ""
    warp = "max" if state.as_fast_as_possible else f"x{state.warp:g}"
    parts = [f"waiting for {target.label} ({elapsed_s:.0f}{bound} s)", short_utc(state.utc),
             mission_time(state.mission_time_s), state.mode,
             f"{state.steps_per_second:.1f} steps/s", f"warp {warp}"]
    if state.run_until_mission_time_s >= 0:
        hours = (state.run_until_mission_time_s - state.mission_time_s) / 3600.0
        parts.append(f"{hours:,.1f} mission h to go")
    if state.waiting_for:
        parts.append(f"acks due from {', '.join(state.waiting_for)}")
    return "  ".join([*parts, f"phase {state.phase or '-'}"])


class WaitProgress:
    """A live line on a terminal; elsewhere (logs, CI, pipes) a plain line every
    PLAIN_EVERY_S, so a long wait is never silent and never floods."""

    def __init__(self, console: Console, target: Target, timeout_s: float | None) -> None:
        self.console, self.target, self.timeout_s = console, target, timeout_s
        self._live = Live(console=console, transient=True) if console.is_terminal else None
        self._last_plain = -PLAIN_EVERY_S

    def show(self, state: clock_pb2.ClockState, elapsed_s: float) -> None:
        line = progress_line(state, self.target, elapsed_s, self.timeout_s)
        if self._live is not None:
            self._live.update(Text(line, no_wrap=True, overflow="ellipsis"))
        elif elapsed_s - self._last_plain >= PLAIN_EVERY_S:
            say(self.console, line)
            self._last_plain = elapsed_s

    def __enter__(self) -> Self:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.stop()


async def wait_for(clock: ClockClient, target: Target, timeout_s: float | None,
                   progress: WaitProgress) -> clock_pb2.ClockState:
    """The clock's state once `target` is reached. Raises WaitTimedOut past
    `timeout_s` (None: no limit), ServiceRejected when ground refuses or gives up."""
    waiter = asyncio.create_task(
        clock.wait_until(utc=target.utc, event=target.event, timeout_s=timeout_s))
    started = time.monotonic()  # wall time, for the progress line only
    try:
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=POLL_S)
            if done:
                return waiter.result()
            progress.show(await clock.get_time(POLL_TIMEOUT_S), time.monotonic() - started)
    finally:
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await waiter


def timed_out_message(target: Target, timeout_s: float, state: clock_pb2.ClockState) -> str:
    """Where the mission is after the wait gave up, and whether it still heads for it."""
    if target.utc is not None:
        target_s = mission_s_from_utc(target.utc)
        still = abs(state.run_until_mission_time_s - target_s) < 1e-6  # the same instant
    else:
        still = state.run_until_event == target.event
    where = f"at {short_utc(state.utc)}, {state.mode}"
    if still and state.mode != "finished":
        return (f"timed out after {timeout_s:g} s waiting for {target.label}; the mission is "
                f"still running toward it ({where}): `twin clock until {target.label} --wait` "
                "waits again, `twin clock pause` stops it")
    return (f"timed out after {timeout_s:g} s waiting for {target.label}; the clock no longer "
            f"runs toward it ({where}{until_suffix(state)})")
