"""The live view of a running mission: clock, phase, step rate, vehicles.

It asks the services over gRPC at display rate (a few times a wall second)
rather than listening to the bus, so it shows exactly what `twin status`
would; a run's :class:`LiveFacts` (the CLI's bus listener) adds each
vehicle's link and the latest events. On a terminal it is a rich Live view
with a progress bar over the mission; elsewhere (CI logs, pipes) it prints
one line whenever the mission phase changes, and a few lines at most every
few wall seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from services.cli.grpc_client import TwinChannels, TwinRpcError
from services.kernel.twin_pb import clock_pb2, control_pb2

__all__ = [
    "LiveFacts",
    "Snapshot",
    "clock_line",
    "comparison_table",
    "follow_mission",
    "mission_time",
    "render_snapshot",
    "short_utc",
    "status_table",
    "take_snapshot",
    "vehicle_lines",
    "vehicle_table",
]

FINISHED = "finished"
_PLAIN_LINE_EVERY_S = 5.0

StatusOrError = control_pb2.GetStatusResponse | TwinRpcError
#: The progress bar's length when the clock does not say when the plan ends.
MISSION_S = 53 * 86400.0


class LiveFacts(Protocol):
    """What the CLI's own bus listener knows (see mission_log.TelemetryRecorder)."""

    @property
    def links(self) -> Mapping[str, str]: ...

    @property
    def recent(self) -> Iterable[str]: ...


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


def vehicle_table(statuses: Mapping[str, StatusOrError],
                  links: Mapping[str, str] | None = None) -> Table:
    """The run's view: a row per vehicle with phase, body, altitude, speed, mass, link."""
    table = Table(expand=False)
    for column in ("vehicle", "phase", "body", "altitude km", "speed m/s", "mass kg",
                   "sample g", "link"):
        table.add_column(column, justify="right" if column[0] in "asm" and column != "link"
                         else "left", no_wrap=True)
    for name, status in statuses.items():
        if name == "ground":
            continue
        if isinstance(status, TwinRpcError):
            table.add_row(name, Text("unreachable", style="bold red"), "", "", "", "", "", "")
            continue
        table.add_row(name, *_vehicle_cells(status), (links or {}).get(name, "-"))
    return table


def _vehicle_cells(status: control_pb2.GetStatusResponse) -> list[str]:
    s = status.state
    if not (status.HasField("state") and s.central_body):
        return [status.phase or "-", "-", "-", "-", "-", "-"]
    return [status.phase or "-", s.central_body, f"{s.altitude_m / 1000.0:,.1f}",
            f"{s.speed_m_s:,.1f}", f"{s.mass_kg:,.1f}", f"{s.sample_mass_g:,.1f}"]


def vehicle_lines(statuses: Mapping[str, StatusOrError],
                  links: Mapping[str, str] | None = None) -> list[str]:
    """The vehicle table as plain lines (for logs)."""
    lines = []
    for name, status in statuses.items():
        if name == "ground" or isinstance(status, TwinRpcError):
            continue
        phase, body, alt, speed, mass, sample = _vehicle_cells(status)
        link = (links or {}).get(name, "-")
        lines.append(f"  {name:<8} {phase:<18} {body:<5} {alt:>10} km {speed:>8} m/s "
                     f"{mass:>8} kg {sample:>6} g {link}")
    return lines


def _progress_bar(clock: clock_pb2.ClockState | TwinRpcError) -> Progress:
    bar = Progress(TextColumn("{task.description}"), BarColumn(bar_width=50),
                   TaskProgressColumn(), TextColumn("{task.fields[when]}"), expand=False)
    if isinstance(clock, clock_pb2.ClockState):
        total = clock.end_mission_time_s if clock.end_mission_time_s > 0 else MISSION_S
        bar.add_task("mission", total=total, completed=int(min(clock.mission_time_s, total)),
                     when=f"{mission_time(clock.mission_time_s)} / {mission_time(total)}")
    return bar


def render_snapshot(snapshot: Snapshot, facts: LiveFacts | None = None) -> Group:
    if facts is None:
        return Group(Text(clock_line(snapshot.clock), style="bold"),
                     status_table(snapshot.statuses))
    recent = list(facts.recent)
    return Group(
        Text(clock_line(snapshot.clock), style="bold"),
        _progress_bar(snapshot.clock),
        vehicle_table(snapshot.statuses, facts.links),
        Text("latest events: " + (", ".join(recent[-5:]) or "-"), style="dim"),
    )


def comparison_table(rows: Sequence[Mapping[str, Any]],
                     title: str = "key events: twin vs the real Chang'e-6") -> Table:
    """Each key event's twin time beside the real mission's (report `comparison`)."""
    table = Table(title=title, expand=False)
    for column in ("event", "real UTC", "twin UTC", "twin-real", "ok"):
        table.add_column(column, justify="right" if column == "twin-real" else "left",
                         no_wrap=True)
    for row in rows:
        diff = row.get("diff_min")
        within = row.get("within")
        mark = (Text("-", style="dim") if within is None else
                Text(f"yes ±{row['tolerance_min']:g}m", style="green") if within else
                Text(f"NO ±{row['tolerance_min']:g}m", style="bold red"))
        # An unconfirmed real time (confidence U) carries a question mark.
        unsure = "?" if str(row["confidence"]).startswith("U") else ""
        table.add_row(str(row["event"]),
                      _precise_utc(str(row["real_utc"]), str(row["precision"])) + unsure,
                      _compact_utc(str(row["twin_utc"])) if row.get("twin_utc") else "never",
                      "-" if diff is None else _minutes(float(diff)), mark)
    return table


def _compact_utc(utc: str) -> str:
    """2024-06-01T22:23:16.000Z -> 06-01 22:23:16 (the year is always 2024)."""
    return f"{utc[5:10]} {utc[11:19]}" if len(utc) >= 19 else utc


def _precise_utc(utc: str, precision: str) -> str:
    """The real time only as finely as it is known."""
    if precision == "day":
        return f"{utc[5:10]} (day)"
    if precision == "ten_minutes":
        return f"{utc[5:10]} {utc[11:15]}x"
    return _compact_utc(utc)


def _minutes(diff_min: float) -> str:
    if abs(diff_min) >= 600.0:
        return f"{diff_min / 60.0:+,.1f} h"
    return f"{diff_min:+,.1f} min"


def _phase(snapshot: Snapshot) -> str:
    return snapshot.clock.phase if isinstance(snapshot.clock, clock_pb2.ClockState) else ""


async def follow_mission(
    channels: TwinChannels,
    console: Console,
    *,
    interval_s: float = 0.25,
    live: bool | None = None,
    facts: LiveFacts | None = None,
) -> Snapshot:
    """Show the mission until the clock says finished; return the last snapshot.

    Never returns on its own if the mission does not finish: the caller
    races it against Ctrl-C and against a service dying.
    """
    live = console.is_terminal if live is None else live
    if live:
        return await _follow_live(channels, console, interval_s, facts)
    return await _follow_plain(channels, console, interval_s, facts)


async def _follow_live(channels: TwinChannels, console: Console, interval_s: float,
                       facts: LiveFacts | None) -> Snapshot:
    snapshot = await take_snapshot(channels)
    with Live(render_snapshot(snapshot, facts), console=console, refresh_per_second=8) as view:
        while not snapshot.finished:
            await asyncio.sleep(interval_s)
            snapshot = await take_snapshot(channels)
            view.update(render_snapshot(snapshot, facts))
    return snapshot


async def _follow_plain(channels: TwinChannels, console: Console, interval_s: float,
                        facts: LiveFacts | None) -> Snapshot:
    snapshot = await take_snapshot(channels)
    last_phase, last_print = "", float("-inf")
    while True:
        now = time.monotonic()
        changed = _phase(snapshot) != last_phase or snapshot.finished
        if changed or now - last_print >= _PLAIN_LINE_EVERY_S:
            console.print(clock_line(snapshot.clock), highlight=False)
            if facts is not None:
                for line in vehicle_lines(snapshot.statuses, facts.links):
                    console.print(line, highlight=False)
            last_phase, last_print = _phase(snapshot), now
        if snapshot.finished:
            return snapshot
        await asyncio.sleep(interval_s)
        snapshot = await take_snapshot(channels)
