"""The live view of a running mission: clock, phase, step rate, vehicles, events.

It asks the services over gRPC at display rate (a few times a wall second)
rather than listening to the bus, so it shows exactly what `twin status`
would; a run's :class:`LiveFacts` (the CLI's bus listener) adds each
vehicle's link and the events. On a terminal it is a rich Live view with a
progress bar over the mission; elsewhere (CI logs, pipes) it writes plain
lines that are never wrapped or cut: each event as it is seen, and the clock
and vehicles whenever the mission phase changes and at most every few wall
seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.text import Text

from services.cli.grpc_client import TwinChannels, TwinRpcError
from services.cli.output import Cell, Column, Grid, say
from services.dynamics.timescale import iso_utc
from services.kernel.twin_pb import clock_pb2, control_pb2

__all__ = [
    "EventFeed",
    "LiveFacts",
    "Snapshot",
    "StatusOrError",
    "clock_line",
    "follow_mission",
    "mission_time",
    "render_snapshot",
    "restarts_line",
    "short_utc",
    "state_cells",
    "status_table",
    "take_snapshot",
    "vehicle_table",
]

FINISHED = "finished"
_PLAIN_LINE_EVERY_S = 5.0
#: What a vehicle with no body of its own (stowed in a stack, or gone) shows
#: for its state, in `twin status` and in the run view alike.
NO_VALUE = "-"

StatusOrError = control_pb2.GetStatusResponse | TwinRpcError
#: The progress bar's length when the clock does not say when the plan ends.
MISSION_S = 53 * 86400.0


class LiveFacts(Protocol):
    """What the CLI's own bus listener knows (see mission_log.TelemetryRecorder)."""

    @property
    def links(self) -> Mapping[str, str]: ...

    @property
    def recent(self) -> Iterable[str]: ...

    @property
    def timeline(self) -> Sequence[tuple[float, str]]:
        """Every event shown so far, as (mission time s, "name (vehicle)")."""
        ...


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
    waiting = f"  waiting for {', '.join(clock.waiting_for)}" if clock.waiting_for else ""
    return (
        f"{short_utc(clock.utc)}  {mission_time(clock.mission_time_s)}{_plan_end(clock)}  "
        f"phase {clock.phase or '-'}  {clock.mode}  step {clock.step}  "
        f"{clock.steps_per_second:.1f} steps/s  warp {warp}{waiting}"
    )


def _plan_end(clock: clock_pb2.ClockState) -> str:
    """While it runs, the latest the plan lets the mission go on; once finished,
    nothing: the mission time is then the mission's own end, often earlier."""
    if clock.mode == FINISHED or clock.end_mission_time_s <= 0:
        return ""
    return f" (plan ends by {mission_time(clock.end_mission_time_s)})"


# --- a service's state, the same in every view -------------------------------------


@dataclass(frozen=True)
class StateCells:
    body: str
    altitude_km: str
    speed_m_s: str
    mass_kg: str
    sample_g: str


def state_cells(status: control_pb2.GetStatusResponse) -> StateCells:
    """A vehicle's state as text, NO_VALUE for what it does not know.

    Without a body of its own (ground; a vehicle stowed in a stack, which its
    carrier flies; the probe still on its launcher) it has no altitude or
    speed, and a mass of 0 means "not tracked here", not "weightless".
    """
    s = status.state
    if not status.HasField("state"):
        return StateCells(*(NO_VALUE,) * 5)
    tracked = bool(s.central_body) or s.mass_kg > 0.0
    mass = f"{s.mass_kg:,.1f}" if tracked else NO_VALUE
    sample = f"{s.sample_mass_g:,.1f}" if tracked else NO_VALUE
    if not s.central_body:
        return StateCells(NO_VALUE, NO_VALUE, NO_VALUE, mass, sample)
    return StateCells(s.central_body, f"{s.altitude_m / 1000.0:,.1f}", f"{s.speed_m_s:,.1f}",
                      mass, sample)


_STATUS_COLUMNS = (
    Column("service"), Column("state"), Column("phase"), Column("UTC"), Column("step", True),
    Column("mass kg", True), Column("altitude km", True), Column("faults"))


def status_table(statuses: Mapping[str, StatusOrError], title: str | None = None) -> Grid:
    """A row per service: up or down, phase, time, step, mass, altitude, faults.

    A service that did not answer is only marked down here: its error is one
    line for the caller to print below, not a cell that would swamp the table.
    """
    rows: list[list[str | Cell]] = []
    for name, status in statuses.items():
        if isinstance(status, TwinRpcError):
            rows.append([name, Cell("down", "bold red"), *(NO_VALUE,) * 6])
            continue
        cells = state_cells(status)
        faults = ", ".join(f.kind for f in status.faults) or NO_VALUE
        rows.append([name, Cell("up", "green"), status.phase or NO_VALUE, short_utc(status.utc),
                     str(status.step), cells.mass_kg, cells.altitude_km, faults])
    return Grid(_STATUS_COLUMNS, rows, title=title)


_VEHICLE_COLUMNS = (
    Column("vehicle", min_width=8), Column("phase", min_width=21), Column("body", min_width=5),
    Column("altitude km", True, 11), Column("speed m/s", True, 9), Column("mass kg", True, 9),
    Column("sample g", True, 8), Column("link", min_width=14))


def vehicle_table(statuses: Mapping[str, StatusOrError],
                  links: Mapping[str, str] | None = None) -> Grid:
    """The run's view: a row per vehicle with phase, body, altitude, speed, mass, link."""
    rows: list[list[str | Cell]] = []
    for name, status in statuses.items():
        if name == "ground":
            continue
        if isinstance(status, TwinRpcError):
            rows.append([name, Cell("down", "bold red"), *(NO_VALUE,) * 6])
            continue
        c = state_cells(status)
        rows.append([name, status.phase or NO_VALUE, c.body, c.altitude_km, c.speed_m_s,
                     c.mass_kg, c.sample_g, (links or {}).get(name, NO_VALUE)])
    return Grid(_VEHICLE_COLUMNS, rows)


def _progress_bar(clock: clock_pb2.ClockState | TwinRpcError) -> Progress:
    bar = Progress(TextColumn("{task.description}"), BarColumn(bar_width=50),
                   TaskProgressColumn(), TextColumn("{task.fields[when]}"), expand=False)
    if isinstance(clock, clock_pb2.ClockState):
        total = clock.end_mission_time_s if clock.end_mission_time_s > 0 else MISSION_S
        bar.add_task("mission", total=total, completed=int(min(clock.mission_time_s, total)),
                     when=f"{mission_time(clock.mission_time_s)} / {mission_time(total)}")
    return bar


def restarts_line(restarts: Mapping[str, int]) -> str:
    """``restarts: lander 1, nats-server 2``, or "" while nothing was restarted."""
    counted = [f"{name} {count}" for name, count in restarts.items() if count > 0]
    return f"restarts: {', '.join(counted)}" if counted else ""


def render_snapshot(snapshot: Snapshot, facts: LiveFacts | None = None,
                    restarts: Mapping[str, int] | None = None,
                    notes: Sequence[str] = ()) -> Group:
    parts: list[RenderableType] = [Text(clock_line(snapshot.clock), style="bold")]
    if facts is None:
        parts.append(vehicle_table(snapshot.statuses).rich())
    else:
        recent = list(facts.recent)
        parts += [
            _progress_bar(snapshot.clock),
            vehicle_table(snapshot.statuses, facts.links).rich(),
            Text("latest events: " + (", ".join(recent[-5:]) or NO_VALUE), style="dim"),
        ]
    restarted = restarts_line(restarts or {})
    if restarted:
        parts.append(Text(restarted, style="yellow"))
    parts += [Text(note, style="cyan") for note in notes]
    return Group(*parts)


# --- plain lines, off a terminal ---------------------------------------------------------


class EventFeed:
    """Writes each event the bus listener has seen, once, as a plain line."""

    def __init__(self, facts: LiveFacts) -> None:
        self.facts = facts
        self._written = 0

    def write_new(self, console: Console) -> None:
        timeline = self.facts.timeline
        # Vehicles publish on their own connections: put what arrived since the
        # last look in mission-time order (a stable sort keeps ties as seen).
        fresh = sorted(timeline[self._written:], key=lambda item: item[0])
        self._written = len(timeline)
        for t_s, what in fresh:
            say(console, f"{short_utc(iso_utc(t_s))}  {mission_time(t_s)}  event {what}")


def _write_status(snapshot: Snapshot, console: Console, facts: LiveFacts | None) -> None:
    say(console, clock_line(snapshot.clock))
    grid = vehicle_table(snapshot.statuses, facts.links if facts is not None else None)
    for line in grid.lines():
        say(console, f"  {line}")


def _phase(snapshot: Snapshot) -> str:
    return snapshot.clock.phase if isinstance(snapshot.clock, clock_pb2.ClockState) else ""


async def follow_mission(
    channels: TwinChannels,
    console: Console,
    *,
    interval_s: float = 0.25,
    live: bool | None = None,
    facts: LiveFacts | None = None,
    feed: EventFeed | None = None,
    restarts: Mapping[str, int] | None = None,
    notes: Callable[[], list[str]] | None = None,
) -> Snapshot:
    """Show the mission until the clock says finished; return the last snapshot.

    `notes` gives lines about the mission's family (a fork's parent and
    branch; a parent's forks in flight), shown under the view, or off a
    terminal written each time they change.

    Off a terminal, `feed` (when given) writes the events as they are seen.
    `restarts` (the supervisor's live counts) shows on the live view; off a
    terminal each restart has its own line, printed by whoever restarted.
    Never returns on its own if the mission does not finish: the caller
    races it against Ctrl-C and against a service dying.
    """
    live = console.is_terminal if live is None else live
    notes = notes or (lambda: [])
    if live:
        return await _follow_live(channels, console, interval_s, facts, restarts, notes)
    return await _follow_plain(channels, console, interval_s, facts, feed, notes)


async def _follow_live(channels: TwinChannels, console: Console, interval_s: float,
                       facts: LiveFacts | None, restarts: Mapping[str, int] | None,
                       notes: Callable[[], list[str]]) -> Snapshot:
    snapshot = await take_snapshot(channels)
    with Live(render_snapshot(snapshot, facts, restarts, notes()), console=console,
              refresh_per_second=8) as view:
        while not snapshot.finished:
            await asyncio.sleep(interval_s)
            snapshot = await take_snapshot(channels)
            view.update(render_snapshot(snapshot, facts, restarts, notes()))
    return snapshot


async def _follow_plain(channels: TwinChannels, console: Console, interval_s: float,
                        facts: LiveFacts | None, feed: EventFeed | None,
                        notes: Callable[[], list[str]]) -> Snapshot:
    snapshot = await take_snapshot(channels)
    last_phase, last_print = "", float("-inf")
    said: list[str] = []
    while True:
        if feed is not None:
            feed.write_new(console)
        if (now_notes := notes()) != said:
            for note in now_notes:
                say(console, note, style="cyan")
            said = now_notes
        now = time.monotonic()
        changed = _phase(snapshot) != last_phase or snapshot.finished
        if changed or now - last_print >= _PLAIN_LINE_EVERY_S:
            _write_status(snapshot, console, facts)
            last_phase, last_print = _phase(snapshot), now
        if snapshot.finished:
            return snapshot
        await asyncio.sleep(interval_s)
        snapshot = await take_snapshot(channels)
