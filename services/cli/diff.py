"""Where two missions differ: the comparison behind `twin diff A B` (pure).

A what-if fork flies its parent mission under a new id from some instant on,
and the operator's question is where the two part ways and what that did to
the mission. Both sides are event rows as a report's ``events`` hold them
(services/kernel/eventrows.py), whether read from a report or from a mission
log on NATS, so one comparison serves both; docs/report.md ("Comparing two
missions") describes what it reports. A is the reference (the parent), B the
other (the fork): differences read B - A.

Compared are each event's name, vehicle, mission time and own values.
``utc`` is the time again, and ``step`` and ``seq`` are the bus's
bookkeeping (a fork that publishes one more message shifts every ``seq``
after it without flying differently), so those three are left out. Times
agree within a tolerance (``--tolerance-s``, default exact); values only
when equal, since the twin is deterministic: the same inputs give the same
bits.

A log read while its mission still runs ends early without having diverged:
what it has not reached yet is said to be "not yet", not missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from services.cli.output import Cell, Column, Grid
from services.dynamics.change6 import SIZIWANG_LAT_DEG, SIZIWANG_LON_DEG
from services.dynamics.constants import (
    F_EARTH,
    LANDING_SITE_HEIGHT_M,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
    R_EARTH_EQ_M,
    R_MOON_M,
)
from services.dynamics.timescale import iso_utc
from services.kernel.events import KEY_EVENTS
from services.kernel.parameters import PARAMETERS_EVENT

__all__ = ["DiffInputError", "Divergence", "EventShift", "LatLon", "Mission", "MissionDiff",
           "Quantity", "compare", "diff_grids", "diff_json", "divergences", "format_duration",
           "great_circle_m", "plot_diff", "row_difference", "rows_of_report", "verdict_lines"]

#: Row keys that say nothing about the mission flown (see the module docstring).
BOOKKEEPING = frozenset({"utc", "step", "seq"})
MISSION_END = "mission_end"
#: The events whose times are compared, in mission order: the key events, then the end.
TIMED_EVENTS = (*KEY_EVENTS, MISSION_END)
#: Both touchdowns lie on the floor of Apollo basin: distances on the sphere
#: through the LROC site, 5.3 km below the 1,737.4 km reference sphere.
MOON_SITE_RADIUS_M = R_MOON_M + LANDING_SITE_HEIGHT_M
#: The IUGG mean radius R1 = (2a + b) / 3 of the WGS 84 ellipsoid (6,371,008.8 m):
#: a sphere's distance between two landing points is within 0.5 % of the
#: ellipsoid's, far finer than a comparison in km needs.
R_EARTH_MEAN_M = (2.0 * R_EARTH_EQ_M + R_EARTH_EQ_M * (1.0 - F_EARTH)) / 3.0
_SHOWN_VALUES = 3  # differing values named in one divergence; the rest are counted


class DiffInputError(ValueError):
    """What was given is not something to compare; the message says what to fix."""


@dataclass(frozen=True)
class Mission:
    """One side: a label for people, its event rows in report order, and
    whether its log is complete (a report; a log holding ``mission_end``)."""

    label: str
    rows: Sequence[Mapping[str, Any]]
    finished: bool = True


@dataclass(frozen=True)
class LatLon:
    lat_deg: float
    lon_deg: float


@dataclass(frozen=True)
class Divergence:
    """The first event of one vehicle where the two part: at ``t_s`` (the
    earlier side's time), ``name`` (A's event, or B's where A has none).
    ``pending``: a still-running side has not got there yet, nothing more."""

    t_s: float
    vehicle: str
    name: str
    what: str
    pending: bool = False


@dataclass(frozen=True)
class EventShift:
    """One timed event's first occurrence on each side (None: never)."""

    name: str
    t_a_s: float | None
    t_b_s: float | None
    status: str  # same, within tolerance, moved, missing in B, added in B, not yet in A/B

    @property
    def dt_s(self) -> float | None:
        return None if self.t_a_s is None or self.t_b_s is None else self.t_b_s - self.t_a_s

    @property
    def changed(self) -> bool:
        return self.status not in ("same", "within tolerance")


@dataclass(frozen=True)
class Quantity:
    """One figure of each mission (None where its event or value is absent)."""

    label: str
    unit: str
    a: float | None
    b: float | None
    fmt: str = ",.3f"

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a


@dataclass(frozen=True)
class MissionDiff:
    a: str
    b: str
    tolerance_s: float
    #: Per vehicle, where its events part (pending ones included).
    by_vehicle: Mapping[str, Divergence]
    parameters_a: Mapping[str, Any]
    parameters_b: Mapping[str, Any]
    shifts: Sequence[EventShift]
    touchdown_a: LatLon | None
    touchdown_b: LatLon | None
    landing_a: LatLon | None
    landing_b: LatLon | None
    in_zone_a: bool | None
    in_zone_b: bool | None
    quantities: Sequence[Quantity] = field(default_factory=tuple)

    @property
    def first(self) -> Divergence | None:
        """The earliest divergence of any vehicle (a side still running is no divergence)."""
        real = [d for d in self.by_vehicle.values() if not d.pending]
        return min(real, key=lambda d: (d.t_s, d.vehicle), default=None)

    @property
    def identical(self) -> bool:
        return not self.by_vehicle and self.parameters_a == self.parameters_b

    @property
    def touchdown_apart_m(self) -> float | None:
        return _apart(self.touchdown_a, self.touchdown_b, MOON_SITE_RADIUS_M)

    @property
    def landing_apart_km(self) -> float | None:
        metres = _apart(self.landing_a, self.landing_b, R_EARTH_MEAN_M)
        return None if metres is None else metres / 1000.0

    def site_miss_m(self, point: LatLon | None) -> float | None:
        """A touchdown's great-circle miss from the LROC landing site."""
        return _apart(point, LatLon(LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG),
                      MOON_SITE_RADIUS_M)


# --- reading -------------------------------------------------------------------------


def rows_of_report(report: object, where: str) -> list[dict[str, Any]]:
    """A report's event rows, each checked to have a name, a vehicle and a time."""
    if not isinstance(report, dict) or not isinstance(report.get("events"), list):
        raise DiffInputError(f"{where} is not a twin report (no 'events' list): give a file "
                             "written by `twin run --report PATH`")
    rows: list[dict[str, Any]] = report["events"]
    for i, row in enumerate(rows):
        if not (isinstance(row, dict) and isinstance(row.get("name"), str)
                and isinstance(row.get("vehicle"), str) and _number(row.get("t_s")) is not None):
            raise DiffInputError(f"{where}: event {i} lacks a name, vehicle or t_s: is it a "
                                 "report written by `twin run --report PATH`?")
    return rows


# --- geometry ------------------------------------------------------------------------


def great_circle_m(p: LatLon, q: LatLon, radius_m: float) -> float:
    """Distance along a sphere of ``radius_m``: the atan2 form (Vincenty's,
    on a sphere), exact near zero and at the antipode, where the arccos of a
    dot product loses its digits."""
    phi1, phi2 = math.radians(p.lat_deg), math.radians(q.lat_deg)
    dlon = math.radians(q.lon_deg - p.lon_deg)
    across = math.hypot(math.cos(phi2) * math.sin(dlon),
                        math.cos(phi1) * math.sin(phi2)
                        - math.sin(phi1) * math.cos(phi2) * math.cos(dlon))
    along = math.sin(phi1) * math.sin(phi2) + math.cos(phi1) * math.cos(phi2) * math.cos(dlon)
    return radius_m * math.atan2(across, along)


def _apart(p: LatLon | None, q: LatLon | None, radius_m: float) -> float | None:
    return None if p is None or q is None else great_circle_m(p, q, radius_m)


# --- comparing -----------------------------------------------------------------------


def compare(a: Mission, b: Mission, tolerance_s: float = 0.0) -> MissionDiff:
    """Everything `twin diff` reports about B against A."""
    if not (math.isfinite(tolerance_s) and tolerance_s >= 0.0):
        raise DiffInputError(f"tolerance {tolerance_s!r} s: give a finite number >= 0")
    return MissionDiff(
        a=a.label, b=b.label, tolerance_s=tolerance_s,
        by_vehicle=divergences(a, b, tolerance_s),
        parameters_a=_parameters(a.rows), parameters_b=_parameters(b.rows),
        shifts=tuple(s for s in (_shift(n, a, b, tolerance_s) for n in TIMED_EVENTS)
                     if s is not None),
        touchdown_a=_point(a.rows, "lunar_touchdown"),
        touchdown_b=_point(b.rows, "lunar_touchdown"),
        landing_a=_point(a.rows, "earth_landing"), landing_b=_point(b.rows, "earth_landing"),
        in_zone_a=_flag(a.rows, "earth_landing", "in_zone"),
        in_zone_b=_flag(b.rows, "earth_landing", "in_zone"),
        quantities=tuple(Quantity(label, unit, _value(a.rows, event, key),
                                  _value(b.rows, event, key), fmt)
                         for label, unit, event, key, fmt in _QUANTITIES),
    )


#: (label, unit, event, value, format): the figures compared at the end.
_QUANTITIES = (
    ("lander propellant at touchdown", "kg", "lunar_touchdown", "propellant_kg", ",.3f"),
    ("ascender propellant at docking", "kg", "ascender_docked", "propellant_kg", ",.3f"),
    ("orbiter propellant after TEI-2", "kg", "tei_burn_2", "propellant_kg", ",.3f"),
    ("entry peak deceleration", "g", "earth_landing", "peak_decel_g", ",.3f"),
    ("entry peak heat flux", "W/m2", "earth_landing", "peak_heat_flux_w_m2", ",.0f"),
)


def divergences(a: Mission, b: Mission, tolerance_s: float) -> dict[str, Divergence]:
    """Each vehicle's first event where A and B part, vehicles in name order.

    Walked per vehicle, since two vehicles' events at nearly the same time may
    swap places in the merged list when one shifts within the tolerance."""
    streams_a, streams_b = _by_vehicle(a.rows), _by_vehicle(b.rows)
    out = {}
    for vehicle in sorted(streams_a.keys() | streams_b.keys()):
        found = _first_in_stream(streams_a.get(vehicle, []), streams_b.get(vehicle, []),
                                 a, b, tolerance_s)
        if found is not None:
            out[vehicle] = found
    return out


def _by_vehicle(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    streams: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row["name"] != PARAMETERS_EVENT:  # compared on their own (parameters_a/_b)
            streams.setdefault(str(row["vehicle"]), []).append(row)
    return streams


def _first_in_stream(rows_a: Sequence[Mapping[str, Any]], rows_b: Sequence[Mapping[str, Any]],
                     a: Mission, b: Mission, tolerance_s: float) -> Divergence | None:
    for ra, rb in zip(rows_a, rows_b, strict=False):
        what = row_difference(ra, rb, tolerance_s)
        if what is not None:
            return Divergence(min(_t(ra), _t(rb)), str(ra["vehicle"]), str(ra["name"]), what)
    if len(rows_a) == len(rows_b):
        return None
    # One side's events of this vehicle end where the other's go on.
    longer, shorter, short = ((rows_a, b, "B") if len(rows_a) > len(rows_b)
                              else (rows_b, a, "A"))
    extra = longer[min(len(rows_a), len(rows_b))]
    pending = not shorter.finished
    if pending:
        what = f"{short} has not got here yet"
    else:
        what = (f"{'missing in B' if short == 'B' else 'added in B'} ({short}'s "
                f"{extra['vehicle']} events end before it)")
    return Divergence(_t(extra), str(extra["vehicle"]), str(extra["name"]), what, pending)


def row_difference(ra: Mapping[str, Any], rb: Mapping[str, Any],
                   tolerance_s: float = 0.0) -> str | None:
    """What differs between two events, for people; None when they agree."""
    if (ra["name"], ra["vehicle"]) != (rb["name"], rb["vehicle"]):
        return (f"A: {ra['name']} at {iso_utc(_t(ra))}, B: {rb['name']} at {iso_utc(_t(rb))}")
    dt_s = _t(rb) - _t(ra)
    if abs(dt_s) > tolerance_s:
        return f"time: B {format_duration(dt_s)} from A"
    keys = sorted((ra.keys() | rb.keys()) - BOOKKEEPING - {"name", "vehicle", "t_s"})
    differing = [k for k in keys if ra.get(k) != rb.get(k)]
    if not differing:
        return None
    shown = "; ".join(f"{k} {ra.get(k, '(none)')!r} -> {rb.get(k, '(none)')!r}"
                      for k in differing[:_SHOWN_VALUES])
    more = len(differing) - _SHOWN_VALUES
    return shown + (f"; and {more} more" if more > 0 else "")


def _shift(name: str, a: Mission, b: Mission, tolerance_s: float) -> EventShift | None:
    t_a, t_b = _first_time(a.rows, name), _first_time(b.rows, name)
    if t_a is None and t_b is None:
        return None
    if t_a is not None and t_b is not None:
        dt_s = abs(t_b - t_a)
        status = ("same" if dt_s == 0.0 else "within tolerance" if dt_s <= tolerance_s
                  else "moved")
    elif t_b is None:
        status = "not yet in B" if _not_yet(b, t_a) else "missing in B"
    else:
        status = "not yet in A" if _not_yet(a, t_b) else "added in B"
    return EventShift(name, t_a, t_b, status)


def _not_yet(side: Mission, t_s: float | None) -> bool:
    """Whether a running side's log simply stops before ``t_s``."""
    last = max((_t(r) for r in side.rows), default=-math.inf)
    return not side.finished and t_s is not None and t_s > last


# --- picking values out of rows -----------------------------------------------------


def _t(row: Mapping[str, Any]) -> float:
    return float(row["t_s"])


def _number(value: object) -> float | None:
    """A JSON number as a float; booleans and anything else are not numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _first(rows: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    return next((r for r in rows if r["name"] == name), None)


def _first_time(rows: Sequence[Mapping[str, Any]], name: str) -> float | None:
    row = _first(rows, name)
    return None if row is None else _t(row)


def _value(rows: Sequence[Mapping[str, Any]], name: str, key: str) -> float | None:
    row = _first(rows, name)
    return None if row is None else _number(row.get(key))


def _flag(rows: Sequence[Mapping[str, Any]], name: str, key: str) -> bool | None:
    row = _first(rows, name)
    value = None if row is None else row.get(key)
    return value if isinstance(value, bool) else None


def _point(rows: Sequence[Mapping[str, Any]], name: str) -> LatLon | None:
    lat, lon = _value(rows, name, "lat_deg"), _value(rows, name, "lon_deg")
    return None if lat is None or lon is None else LatLon(lat, lon)


def _parameters(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Every dispersed parameter the vehicles announced (path -> value)."""
    out: dict[str, Any] = {}
    for row in rows:
        if row["name"] == PARAMETERS_EVENT and isinstance(row.get("parameters"), dict):
            out |= row["parameters"]
    return dict(sorted(out.items()))


# --- the table -----------------------------------------------------------------------

_SMALL_S = 1e-3  # below a millisecond, differences read in scientific notation
_MINUTE_S = 60.0
_HOUR_S = 3_600.0
_DAY_S = 86_400.0
_STATUS_STYLES = {"same": "dim", "within tolerance": "green", "moved": "yellow",
                  "missing in B": "bold red", "added in B": "bold red",
                  "not yet in A": "dim", "not yet in B": "dim"}


def format_duration(dt_s: float) -> str:
    """A signed time difference in the unit that reads best (+0.250 s, -12.5 min)."""
    size = abs(dt_s)
    if size == 0.0:
        return "0 s"
    if size < _SMALL_S:  # the last bits of a float: shown, not rounded to +0.000
        return f"{dt_s:+.2e} s"
    if size < _MINUTE_S:
        return f"{dt_s:+.3f} s"
    if size < _HOUR_S:
        return f"{dt_s / _MINUTE_S:+.2f} min"
    if size < _DAY_S:
        return f"{dt_s / _HOUR_S:+.2f} h"
    return f"{dt_s / _DAY_S:+.3f} d"


def _when(t_s: float | None, side: str, shift: EventShift) -> str:
    if t_s is not None:
        return iso_utc(t_s)[:19] + "Z"
    return "not yet" if shift.status == f"not yet in {side}" else "never"


def diff_grids(d: MissionDiff) -> list[Grid]:
    """The key-event table and the outcome table, with the verdict as notes."""
    events = Grid(
        (Column("event"), Column("A (UTC)"), Column("B (UTC)"), Column("B - A", right=True),
         Column("status")),
        [[s.name, _when(s.t_a_s, "A", s), _when(s.t_b_s, "B", s),
          "-" if s.dt_s is None else format_duration(s.dt_s),
          Cell(s.status, _STATUS_STYLES[s.status])] for s in d.shifts],
        title="key events, B against A")
    outcomes = Grid((Column("outcome"), Column("A", right=True), Column("B", right=True),
                     Column("B - A", right=True)), _outcome_rows(d),
                    title="outcomes", notes=tuple(verdict_lines(d)))
    return [events, outcomes]


def _outcome_rows(d: MissionDiff) -> list[list[str]]:
    rows = [["lunar touchdown (lat, lon deg)", _ll(d.touchdown_a), _ll(d.touchdown_b),
             _num(d.touchdown_apart_m, ",.1f", " m apart")],
            _quantity_row(Quantity("touchdown miss from the LROC site", "m",
                                   d.site_miss_m(d.touchdown_a), d.site_miss_m(d.touchdown_b),
                                   ",.1f"))]
    rows += [_quantity_row(q) for q in d.quantities[:3]]
    rows += [["Earth landing (lat, lon deg)", _ll(d.landing_a), _ll(d.landing_b),
              _num(d.landing_apart_km, ",.3f", " km apart")],
             ["Earth landing in the zone", _yes(d.in_zone_a), _yes(d.in_zone_b),
              "" if d.in_zone_a == d.in_zone_b else "changed"]]
    rows += [_quantity_row(q) for q in d.quantities[3:]]
    return rows


def _quantity_row(q: Quantity) -> list[str]:
    delta = q.delta
    return [f"{q.label} ({q.unit})", _num(q.a, q.fmt), _num(q.b, q.fmt),
            "same" if delta == 0.0 else _num(delta, "+" + q.fmt)]


def _num(value: float | None, fmt: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, fmt) + suffix


def _ll(p: LatLon | None) -> str:
    return "-" if p is None else f"{p.lat_deg:.6f}, {p.lon_deg:.6f}"


def _yes(flag: bool | None) -> str:
    return "-" if flag is None else ("yes" if flag else "no")


def verdict_lines(d: MissionDiff) -> list[str]:
    lines = [f"A: {d.a}", f"B: {d.b}"]
    if d.parameters_a != d.parameters_b:
        changed = sorted(k for k in d.parameters_a.keys() | d.parameters_b.keys()
                         if d.parameters_a.get(k) != d.parameters_b.get(k))
        lines.append("parameters differ: " + ", ".join(
            f"{k} {d.parameters_a.get(k, 'nominal')} -> {d.parameters_b.get(k, 'nominal')}"
            for k in changed))
    first = d.first
    if first is not None:
        lines.append(f"first divergence: {iso_utc(first.t_s)} {first.vehicle} {first.name}: "
                     f"{first.what}")
    pending = sorted(v for v, div in d.by_vehicle.items() if div.pending)
    if pending:
        lines.append(f"not reached yet by the running side: {', '.join(pending)}")
    tolerance = f" (times within {d.tolerance_s:g} s)" if d.tolerance_s > 0.0 else ""
    lines.append(("identical" if d.identical else "the missions differ") + tolerance)
    return lines


# --- JSON and the plot ---------------------------------------------------------------


def diff_json(d: MissionDiff) -> dict[str, Any]:
    """The diff as JSON: what the tables show, with full-precision numbers."""
    first = d.first
    return {
        "a": d.a, "b": d.b, "tolerance_s": d.tolerance_s, "identical": d.identical,
        "first_divergence": None if first is None else asdict(first),
        "by_vehicle": {v: asdict(div) for v, div in d.by_vehicle.items()},
        "parameters": {"a": dict(d.parameters_a), "b": dict(d.parameters_b)},
        "key_events": [{**asdict(s), "dt_s": s.dt_s} for s in d.shifts],
        "lunar_touchdown": {
            "a": _ll_json(d.touchdown_a), "b": _ll_json(d.touchdown_b),
            "apart_m": d.touchdown_apart_m, "a_site_miss_m": d.site_miss_m(d.touchdown_a),
            "b_site_miss_m": d.site_miss_m(d.touchdown_b)},
        "earth_landing": {
            "a": _ll_json(d.landing_a), "b": _ll_json(d.landing_b),
            "apart_km": d.landing_apart_km, "a_in_zone": d.in_zone_a, "b_in_zone": d.in_zone_b},
        "quantities": [{"label": q.label, "unit": q.unit, "a": q.a, "b": q.b,
                        "delta": q.delta} for q in d.quantities],
    }


def _ll_json(p: LatLon | None) -> dict[str, float] | None:
    return None if p is None else asdict(p)


_DPI = 110
_COLOURS = {"A": "tab:blue", "B": "tab:orange"}


def plot_diff(d: MissionDiff, path: Path) -> Path:
    """Key-event time differences (bars, mission order) and both landing points."""
    fig = Figure(figsize=(12.0, 8.0), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplot_mosaic([["shifts", "shifts"], ["moon", "earth"]],
                              height_ratios=[1.3, 1.0])
    _plot_shifts(axes["shifts"], d)
    _plot_points(axes["moon"], d.touchdown_a, d.touchdown_b,
                 (LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG, "LROC site"),
                 "Lunar touchdown (selenographic)")
    _plot_points(axes["earth"], d.landing_a, d.landing_b,
                 (SIZIWANG_LAT_DEG, SIZIWANG_LON_DEG, "Siziwang target"),
                 "Earth landing (geodetic)")
    fig.suptitle(f"B against A\nA: {d.a}\nB: {d.b}", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _plot_shifts(ax: Axes, d: MissionDiff) -> None:
    shifts = list(d.shifts)
    largest = max((abs(s.dt_s) for s in shifts if s.dt_s is not None), default=0.0)
    unit, scale = ("s", 1.0) if largest < 10 * _MINUTE_S else (
        ("min", _MINUTE_S) if largest < 10 * _HOUR_S else ("h", _HOUR_S))
    heights = [0.0 if s.dt_s is None else s.dt_s / scale for s in shifts]
    colours = ["tab:grey" if not s.changed else "tab:red" if s.dt_s is None else "tab:orange"
               for s in shifts]
    ax.bar(range(len(shifts)), heights, color=colours)
    for i, s in enumerate(shifts):
        if s.dt_s is None:
            ax.text(i, 0.0, s.status, rotation=90, ha="center", va="bottom", fontsize=7,
                    color="tab:red")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xticks(range(len(shifts)), [s.name for s in shifts], rotation=60, ha="right",
                  fontsize=8)
    ax.set_ylabel(f"B - A [{unit}]")
    ax.set_title("Key-event time differences, in mission order")
    ax.grid(axis="y", alpha=0.3)


def _plot_points(ax: Axes, a: LatLon | None, b: LatLon | None,
                 reference: tuple[float, float, str], title: str) -> None:
    lat0, lon0, name = reference
    ax.plot(lon0, lat0, "*", color="red", ms=12, label=name)
    for side, point, marker in (("A", a, "o"), ("B", b, "x")):
        if point is not None:
            ax.plot(point.lon_deg, point.lat_deg, marker, color=_COLOURS[side], ms=9, mew=2,
                    label=side)
    if a is None and b is None:
        ax.text(0.5, 0.5, "neither landed", ha="center", va="center", transform=ax.transAxes,
                color="grey")
    ax.set_xlabel("longitude [deg E]")
    ax.set_ylabel("latitude [deg]")
    ax.set_title(title, fontsize=10)
    # A degree of longitude is cos(latitude) of a degree of latitude: equal
    # distances on both axes, so the two points' separation is seen true.
    ax.set_aspect(1.0 / math.cos(math.radians(lat0)), adjustable="datalim")
    ax.ticklabel_format(useOffset=False)
    ax.xaxis.set_major_locator(MaxNLocator(4))  # long labels at six decimals: few of them
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
