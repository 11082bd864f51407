"""The live view of a running mission: clock, phase, step rate, vehicles.

It asks the services over gRPC at display rate (a few times a wall second)
rather than listening to the bus, so it shows exactly what `twin status`
would. On a terminal it is a rich Live table; elsewhere (CI logs, pipes) it
prints one line whenever the mission phase changes, and a line at most every
few wall seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from services.cli.grpc_client import TwinChannels, TwinRpcError
from services.kernel.twin_pb import clock_pb2, control_pb2

__all__ = [
    "Snapshot",
    "clock_line",
    "follow_mission",
    "mission_time",
    "render_snapshot",
    "short_utc",
    "status_table",
    "take_snapshot",
]

FINISHED = "finished"
_PLAIN_LINE_EVERY_S = 5.0

StatusOrError = control_pb2.GetStatusResponse | TwinRpcError


@dataclass(frozen=True)
class Snapshot:
    clock: clock_pb2.ClockState | TwinRpcError
    statuses: Mapping[str, StatusOrError]

    @property
    def finished(self) -> bool:
        return isinstance(self.clock, clock_pb2.ClockState) and self.clock.mode == FINISHED


async def take_snapshot(channels: TwinChannels, timeout_s: float = 2.0) -> Snapshot:
    clock_call = channels.clock().get_time(timeout_s)
    clock, statuses = await asyncio.gather(
        clock_call, channels.all_statuses(timeout_s), return_exceptions=True
    )
    if isinstance(clock, BaseException) and not isinstance(clock, TwinRpcError):
        raise clock
    if isinstance(statuses, BaseException):
        raise statuses
    return Snapshot(clock, statuses)


def mission_time(seconds: float) -> str:
    """Mission elapsed time as T+<days>d hh:mm:ss."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"T+{days}d {hours:02d}:{minutes:02d}:{secs:02d}"


def short_utc(utc: str) -> str:
    """ISO UTC to the second (the services send milliseconds)."""
    return f"{utc[:19]}Z" if len(utc) >= 19 else (utc or "-")


def clock_line(clock: clock_pb2.ClockState | TwinRpcError) -> str:
    """One line about the clock: UTC, mission time, phase, mode, step rate."""
    if isinstance(clock, TwinRpcError):
        return f"clock unavailable: {clock}"
    warp = "max" if clock.as_fast_as_possible else f"x{clock.warp:g}"
    end = f" of {mission_time(clock.end_mission_time_s)}" if clock.end_mission_time_s > 0 else ""
    waiting = f"  waiting for {', '.join(clock.waiting_for)}" if clock.waiting_for else ""
    return (
        f"{short_utc(clock.utc)}  {mission_time(clock.mission_time_s)}{end}  "
        f"phase {clock.phase or '-'}  {clock.mode}  step {clock.step}  "
        f"{clock.steps_per_second:.1f} steps/s  warp {warp}{waiting}"
    )


def status_table(statuses: Mapping[str, StatusOrError], title: str | None = None) -> Table:
    """A row per service: phase, time, step, mass, altitude, faults (or its error)."""
    table = Table(title=title, expand=False)
    for column in ("service", "phase", "UTC", "step", "mass kg", "altitude km", "faults"):
        numeric = column in ("step", "mass kg", "altitude km")
        table.add_column(column, justify="right" if numeric else "left", no_wrap=column != "faults")
    for name, status in statuses.items():
        if isinstance(status, TwinRpcError):
            table.add_row(name, Text("unreachable", style="bold red"), Text(status.detail), "",
                          "", "", "")
            continue
        table.add_row(*_status_cells(name, status))
    return table


def _status_cells(name: str, status: control_pb2.GetStatusResponse) -> list[str]:
    has_state = status.HasField("state")
    mass = f"{status.state.mass_kg:,.1f}" if has_state else "-"
    altitude = f"{status.state.altitude_m / 1000.0:,.1f}" if has_state else "-"
    faults = ", ".join(f.kind for f in status.faults) or "-"
    return [name, status.phase or "-", short_utc(status.utc), str(status.step), mass, altitude,
            faults]


def render_snapshot(snapshot: Snapshot) -> Group:
    return Group(Text(clock_line(snapshot.clock), style="bold"), status_table(snapshot.statuses))


def _phase(snapshot: Snapshot) -> str:
    return snapshot.clock.phase if isinstance(snapshot.clock, clock_pb2.ClockState) else ""


async def follow_mission(
    channels: TwinChannels,
    console: Console,
    *,
    interval_s: float = 0.25,
    live: bool | None = None,
) -> Snapshot:
    """Show the mission until the clock says finished; return the last snapshot.

    Never returns on its own if the mission does not finish: the caller
    races it against Ctrl-C and against a service dying.
    """
    live = console.is_terminal if live is None else live
    if live:
        return await _follow_live(channels, console, interval_s)
    return await _follow_plain(channels, console, interval_s)


async def _follow_live(channels: TwinChannels, console: Console, interval_s: float) -> Snapshot:
    snapshot = await take_snapshot(channels)
    with Live(render_snapshot(snapshot), console=console, refresh_per_second=8) as view:
        while not snapshot.finished:
            await asyncio.sleep(interval_s)
            snapshot = await take_snapshot(channels)
            view.update(render_snapshot(snapshot))
    return snapshot


async def _follow_plain(channels: TwinChannels, console: Console, interval_s: float) -> Snapshot:
    snapshot = await take_snapshot(channels)
    last_phase, last_print = "", float("-inf")
    while True:
        now = time.monotonic()
        changed = _phase(snapshot) != last_phase or snapshot.finished
        if changed or now - last_print >= _PLAIN_LINE_EVERY_S:
            console.print(clock_line(snapshot.clock), highlight=False)
            last_phase, last_print = _phase(snapshot), now
        if snapshot.finished:
            return snapshot
        await asyncio.sleep(interval_s)
        snapshot = await take_snapshot(channels)
