"""The mission report written by `twin run --report PATH` (schema: docs/report.md).

Pure: it is built from the mission log (events read back from JetStream), the
services' final statuses and the real mission's reference times, so the same
seed gives the same report. The only wall-clock value is `wall_s`;
everything else is a function of the run's
inputs. Keys come out in a fixed order and floats as the services produced
them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from services.cli.grpc_client import TwinRpcError
from services.dynamics.timescale import iso_utc, mission_s_from_utc
from services.kernel.config import SERVICE_NAMES
from services.kernel.eventrows import LoggedEvent, event_from_envelope, event_rows
from services.kernel.twin_pb import clock_pb2, control_pb2

__all__ = [
    "REFERENCE_PATH",
    "REPORT_VERSION",
    "WALL_KEYS",
    "LinkInterval",
    "LoggedEvent",
    "ReferenceEvent",
    "build_report",
    "comparison_rows",
    "event_from_envelope",
    "event_rows",
    "final_order",
    "final_states",
    "first_times",
    "link_intervals",
    "link_statistics",
    "load_reference",
    "read_report",
    "returner_outcome",
    "without_wall",
    "write_report",
]

REPORT_VERSION = 2
REFERENCE_PATH = Path(__file__).resolve().parents[1] / "ground" / "plans" / "reference.json"
#: The report's only wall-clock values: ignore them to compare two runs.
WALL_KEYS = ("wall_s",)
#: Keys an event row starts with, in this order; the event's own values follow sorted.
_EVENT_HEAD = ("name", "vehicle", "utc", "t_s", "step", "seq")
#: Ground summary keys about the flight plan, not the links.
_PLAN_KEYS = frozenset({"plan", "plan_items_issued", "plan_items_total", "events_seen"})
_SECONDS_PER_MIN = 60.0

StatusOrError = control_pb2.GetStatusResponse | TwinRpcError


@dataclass(frozen=True)
class ReferenceEvent:
    """A key event of the real mission (services/ground/plans/reference.json)."""

    event: str
    utc: str
    precision: str
    confidence: str
    timeline_id: str
    label: str
    tolerance_min: float | None = None

    @property
    def t_s(self) -> float:
        return mission_s_from_utc(self.utc)


def load_reference(path: Path = REFERENCE_PATH) -> list[ReferenceEvent]:
    raw = orjson.loads(path.read_bytes())
    return [
        ReferenceEvent(
            event=str(e["event"]), utc=str(e["utc"]), precision=str(e["precision"]),
            confidence=str(e["confidence"]), timeline_id=str(e["timeline_id"]),
            label=str(e["label"]),
            tolerance_min=None if e.get("tolerance_min") is None else float(e["tolerance_min"]),
        )
        for e in raw["events"]
    ]


# --- events -------------------------------------------------------------------


def first_times(events: Iterable[LoggedEvent]) -> dict[str, float]:
    """Mission time of the first occurrence of each event name."""
    first: dict[str, float] = {}
    for ev in sorted(events, key=lambda e: e.order_key):
        first.setdefault(ev.name, ev.t_s)
    return first


# --- final states ---------------------------------------------------------------


def _state(status: control_pb2.GetStatusResponse) -> dict[str, Any]:
    s = status.state
    out: dict[str, Any] = {
        "phase": status.phase, "mission_time_s": status.mission_time_s, "utc": status.utc,
        "step": int(status.step),
    }
    if status.HasField("state") and s.central_body:
        out |= {
            "frame": s.frame, "central_body": s.central_body,
            "r_m": [s.position_m.x, s.position_m.y, s.position_m.z],
            "v_m_s": [s.velocity_m_s.x, s.velocity_m_s.y, s.velocity_m_s.z],
            "altitude_m": s.altitude_m, "speed_m_s": s.speed_m_s,
        }
    out |= {
        "mass_kg": s.mass_kg, "propellant_kg": s.propellant_kg, "sample_mass_g": s.sample_mass_g,
        # protobuf maps iterate in no promised order: sort them.
        "values": {k: s.values[k] for k in sorted(s.values)},
        "info": {k: status.info[k] for k in sorted(status.info)},
        "faults": sorted(f.kind for f in status.faults),
    }
    return out


def final_order(statuses: Mapping[str, StatusOrError]) -> list[tuple[str, StatusOrError]]:
    """The statuses in service order (then any others by name)."""
    names = [n for n in SERVICE_NAMES if n in statuses] + sorted(
        n for n in statuses if n not in SERVICE_NAMES)
    return [(name, statuses[name]) for name in names]


def final_states(statuses: Mapping[str, StatusOrError]) -> dict[str, Any]:
    """Each service's final state, in service order."""
    return {name: {"error": str(s)} if isinstance(s, TwinRpcError) else _state(s)
            for name, s in final_order(statuses)}


def returner_outcome(events: Sequence[LoggedEvent],
                     statuses: Mapping[str, StatusOrError]) -> dict[str, Any]:
    """Where and with what the returner came down: earth_landing, else reentry's state."""
    landing = next((e for e in sorted(events, key=lambda e: e.order_key)
                    if e.name == "earth_landing"), None)
    reentry = statuses.get("reentry")
    final_g = (reentry.state.sample_mass_g
               if isinstance(reentry, control_pb2.GetStatusResponse) else None)
    if landing is None:
        return {"landed": False, "utc": None, "t_s": None, "lat_deg": None, "lon_deg": None,
                "sample_mass_g": final_g}
    sample_g = final_g if final_g is not None else landing.values.get("sample_mass_g")
    return {"landed": True, "utc": iso_utc(landing.t_s), "t_s": landing.t_s,
            "lat_deg": landing.values.get("lat_deg"), "lon_deg": landing.values.get("lon_deg"),
            "sample_mass_g": sample_g}


# --- links ------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkInterval:
    vehicle: str
    path: str  # "direct" or "relay"
    station: str
    start_s: float
    end_s: float


def link_intervals(events: Iterable[LoggedEvent], end_t_s: float) -> list[LinkInterval]:
    """Link-up intervals per vehicle from link_acquired / link_lost events.

    An acquisition while a link is up switches path (closes the old one);
    links still up at the end close at `end_t_s`.
    """
    open_: dict[str, tuple[str, str, float]] = {}
    out: list[LinkInterval] = []
    for ev in sorted(events, key=lambda e: e.order_key):
        if ev.name not in ("link_acquired", "link_lost"):
            continue
        if ev.vehicle in open_:
            path, station, since = open_.pop(ev.vehicle)
            out.append(LinkInterval(ev.vehicle, path, station, since, ev.t_s))
        if ev.name == "link_acquired":
            open_[ev.vehicle] = (str(ev.values.get("path", "")),
                                 str(ev.values.get("station", "")), ev.t_s)
    for vehicle in sorted(open_):
        path, station, since = open_[vehicle]
        out.append(LinkInterval(vehicle, path, station, since, max(end_t_s, since)))
    return out


def link_statistics(events: Sequence[LoggedEvent], ground: StatusOrError | None,
                    end_t_s: float) -> dict[str, Any]:
    """Ground's link figures (its status) and each vehicle's link-up time (events)."""
    by_vehicle: dict[str, dict[str, Any]] = {}
    for iv in link_intervals(events, end_t_s):
        stats = by_vehicle.setdefault(iv.vehicle, {"acquisitions": 0, "up_s": 0.0, "paths": {}})
        stats["acquisitions"] += 1
        stats["up_s"] += iv.end_s - iv.start_s
        stats["paths"][iv.path] = stats["paths"].get(iv.path, 0.0) + iv.end_s - iv.start_s
    for stats in by_vehicle.values():
        stats["paths"] = {k: stats["paths"][k] for k in sorted(stats["paths"])}
        stats["up_ratio"] = stats["up_s"] / end_t_s if end_t_s > 0 else 0.0
    ground_out: dict[str, Any] = {}
    if isinstance(ground, control_pb2.GetStatusResponse):
        values, info = ground.state.values, ground.info
        ground_out = {
            "values": {k: values[k] for k in sorted(values) if k not in _PLAN_KEYS},
            "info": {k: info[k] for k in sorted(info) if k not in _PLAN_KEYS},
        }
    return {"ground": ground_out, "by_vehicle": {k: by_vehicle[k] for k in sorted(by_vehicle)}}


# --- comparison with the real mission -------------------------------------------


def comparison_rows(events: Sequence[LoggedEvent],
                    reference: Sequence[ReferenceEvent]) -> list[dict[str, Any]]:
    """Each key event's twin time beside the real one; diff_min = twin - real."""
    first = first_times(events)
    rows = []
    for ref in reference:
        t_twin = first.get(ref.event)
        diff_min = None if t_twin is None else (t_twin - ref.t_s) / _SECONDS_PER_MIN
        within = (None if ref.tolerance_min is None or diff_min is None
                  else abs(diff_min) <= ref.tolerance_min)
        if ref.tolerance_min is not None and diff_min is None:
            within = False
        rows.append({
            "event": ref.event, "label": ref.label,
            "real_utc": ref.utc, "precision": ref.precision, "confidence": ref.confidence,
            "twin_utc": None if t_twin is None else iso_utc(t_twin), "twin_t_s": t_twin,
            "diff_min": diff_min, "tolerance_min": ref.tolerance_min, "within": within,
        })
    return rows


# --- the report -----------------------------------------------------------------


def _clock(clock: clock_pb2.ClockState | TwinRpcError | None) -> dict[str, Any] | None:
    """The clock's deterministic fields (not its step rate or warp: wall-clock facts)."""
    if clock is None:
        return None
    if isinstance(clock, TwinRpcError):
        return {"error": str(clock)}
    return {"mode": clock.mode, "phase": clock.phase, "step": int(clock.step),
            "utc": clock.utc, "mission_time_s": clock.mission_time_s,
            "end_mission_time_s": clock.end_mission_time_s}


def _plan_name(statuses: Mapping[str, StatusOrError], fallback: str) -> str:
    ground = statuses.get("ground")
    if isinstance(ground, control_pb2.GetStatusResponse) and ground.info.get("plan"):
        return str(ground.info["plan"])
    return fallback


def build_report(
    *,
    mission_id: str,
    seed: int,
    plan: str,
    events: Sequence[LoggedEvent],
    statuses: Mapping[str, StatusOrError],
    clock: clock_pb2.ClockState | TwinRpcError | None,
    wall_s: float,
    reference: Sequence[ReferenceEvent] = (),
    outcome: str = "finished",
) -> dict[str, Any]:
    """The whole report as a plain dict in its fixed key order."""
    clock_out = _clock(clock)
    end_t_s = max([e.t_s for e in events] + [
        float(clock_out["mission_time_s"]) if clock_out and "mission_time_s" in clock_out
        else 0.0])
    final = final_states(statuses)
    final["returner"] = returner_outcome(events, statuses)
    return {
        "report_version": REPORT_VERSION,
        "mission_id": mission_id,
        "seed": seed,
        "plan": _plan_name(statuses, plan),
        "outcome": outcome,
        "wall_s": wall_s,
        "clock": clock_out,
        "events": event_rows(events),
        "final": final,
        "links": link_statistics(events, statuses.get("ground"), end_t_s),
        "comparison": comparison_rows(events, reference),
    }


def without_wall(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report minus its wall-clock values: equal for two runs of one seed."""
    return {k: v for k, v in report.items() if k not in WALL_KEYS}


def write_report(path: Path, report: Mapping[str, Any]) -> Path:
    """Write the report as JSON at `path` (parents created) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    return path


def read_report(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = orjson.loads(path.read_bytes())
    return report
