"""Generate the twin's Grafana dashboards (deploy/grafana/dashboards/*.json).

    python scripts/gen_dashboards.py          # write the JSON files
    python scripts/gen_dashboards.py --check  # exit 1 if a file would change

The dashboards are described here as small frozen dataclasses and rendered
to Grafana's JSON model (schemaVersion 39). The JSON is checked in so Grafana
can provision it without running Python; `task observe:dashboards-check`
fails when it drifts from this file. Every query filters on the `$mission`
template variable; metric names are the catalog of docs/observability.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "deploy" / "grafana" / "dashboards"
DATASOURCE: dict[str, str] = {"type": "prometheus", "uid": "prometheus"}
SCHEMA_VERSION = 39
GRID_WIDTH = 24
VEHICLES: tuple[str, ...] = ("orbiter", "lander", "ascender", "reentry", "relay")
TAG = "twin"

JSON = dict[str, Any]


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str
    kind: str = "timeseries"  # timeseries, stat, state-timeline, bargauge
    width: int = 12
    height: int = 8
    min_value: float | None = None
    max_value: float | None = None
    mappings: tuple[JSON, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    """A full-width header that starts a new line of panels."""

    title: str


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel | Row, ...]
    annotations: tuple[JSON, ...] = ()


# --- PromQL helpers ----------------------------------------------------------


def sel(metric: str, **labels: str) -> str:
    """`metric{mission="$mission", ...}`; a value starting with ~ is a regex."""
    matchers = ['mission="$mission"']
    for name, value in labels.items():
        op, value = ("=~", value[1:]) if value.startswith("~") else ("=", value)
        matchers.append(f'{name}{op}"{value}"')
    return f"{metric}{{{', '.join(matchers)}}}"


def rate(metric: str, **labels: str) -> str:
    return f"rate({sel(metric, **labels)}[$__rate_interval])"


def quantile(q: float, histogram: str, by: str, **labels: str) -> str:
    grouping = f"{by}, le" if by else "le"
    inner = rate(f"{histogram}_bucket", **labels)
    return f"histogram_quantile({q}, sum by ({grouping}) ({inner}))"


def or_zero(expr: str, always: str) -> str:
    """`expr`, or 0 for every series of `always` while `expr` has none yet.

    Labelled counters appear only at their first increment; a healthy run
    should read 0, not "no data".
    """
    return f"{expr} or {always} * 0"


def added(counter: str, by: str, **labels: str) -> str:
    """What `counter` added in each `$__interval`, summed by `by`.

    The recovery counters are born at their first increment, which is often
    their only one (a rollback, a batch of missing messages): `rate()` and
    `increase()` need two samples of a series and would show nothing, so a
    series born within the interval counts from 0. A counter reset (its
    process restarted) reads 0 rather than a negative count. The intervals
    tile the graph's range, so a panel's "sum" of them is the range's total.
    """
    now = sel(counter, **labels)
    before = f"{now} offset $__interval"
    return f"sum by ({by}) (clamp_min({now} - {before}, 0) or ({now} unless {before}))"


def or_none(expr: str, label: str, always: str) -> str:
    """`expr`, or one series `label="none"` at 0 for as long as `always` exists
    while `expr` has none: a count by reason reads 0 before its first reason."""
    return f'{expr} or on () label_replace({always} * 0, "{label}", "none", "", "")'


def events_annotation(name: str, **labels: str) -> JSON:
    """Mission events as annotations: a counter that appeared or increased.

    A one-off event's series is born at 1 and never changes again, so
    `changes()` alone would miss it; `unless ... offset` catches the birth.
    """
    now = sel("twin_mission_events_total", **labels)
    before = f"{now} offset $__interval"
    expr = f"sum by (event) ((({now} - {before}) > 0) or ({now} unless {before}))"
    return {
        "name": name,
        "datasource": DATASOURCE,
        "enable": True,
        "hide": False,
        "iconColor": "orange",
        "expr": expr,
        "step": "$__interval",
        "titleFormat": "{{event}}",
        "textFormat": "",
        "tagKeys": "event",
        "useValueForTime": False,
    }


BOOL_MAPPINGS: tuple[JSON, ...] = (
    {
        "type": "value",
        "options": {
            "0": {"text": "down", "color": "red", "index": 0},
            "1": {"text": "up", "color": "green", "index": 1},
        },
    },
)


# --- the dashboards -----------------------------------------------------------


def overview() -> Dashboard:
    phase = "max by (service, phase) (" + sel("twin_mission_phase") + ") == 1"
    panels = (
        Panel("Mission time", "Mission time since launch (2024-05-03T09:27:29Z).",
              (Query(f"max({sel('twin_mission_time_seconds')})", "mission time"),),
              "dtdhms", kind="stat", width=6, height=4),
        Panel("Clock warp", "Warp factor of the lock-step clock; 0 means as fast as possible.",
              (Query(f"max({sel('twin_clock_warp_ratio')})", "warp"),),
              "none", kind="stat", width=6, height=4,
              mappings=({"type": "value",
                         "options": {"0": {"text": "max", "index": 0}}},)),
        Panel("Steps per second", "Lock-step steps completed per wall second.",
              (Query(f"max({sel('twin_clock_step_rate_per_second')})", "steps/s"),),
              "ops", kind="stat", width=6, height=4),
        Panel("Firing alerts", "Alerts of this mission firing now (rules: deploy/prometheus).",
              (Query(f'count({sel("ALERTS", alertstate="firing")}) or vector(0)', "firing"),),
              "none", kind="stat", width=6, height=4,
              options={"colorMode": "background"}),
        Panel("Current phase", "The phase each service is in now.",
              (Query(phase, "{{service}}: {{phase}}"),),
              "none", kind="stat", width=24, height=4,
              options={"textMode": "name", "colorMode": "none", "graphMode": "none"}),
        Panel("Phase timeline", "When each service was in each phase.",
              (Query(phase, "{{service}} {{phase}}"),),
              "none", kind="state-timeline", width=24, height=10,
              mappings=({"type": "value",
                         "options": {"1": {"text": "active", "color": "blue", "index": 0}}},)),
        Panel("Sample custody", "Lunar sample mass each vehicle holds: drill and scoop on the "
              "lander, transfer to the ascender, docking hand-over to the orbiter, the returner.",
              (Query(f"max by (vehicle) ({sel('twin_vehicle_sample_mass_grams')})",
                     "{{vehicle}}"),),
              "massg", width=12),
        Panel("Sample on board now", "Where the sample is now.",
              (Query(f"max by (vehicle) ({sel('twin_vehicle_sample_mass_grams')})",
                     "{{vehicle}}"),),
              "massg", kind="bargauge", width=12),
        Panel("Mission events", "Mission events published, by event name.",
              (Query(f"sum by (event) ({sel('twin_mission_events_total')})", "{{event}}"),),
              "short", kind="bargauge", width=24, height=10),
    )
    return Dashboard(
        "twin-overview", "Twin / Mission overview",
        "Chang'e-6 twin: mission time, phases, events and where the sample is.",
        panels, (events_annotation("Mission events"),),
    )


#: Quantities a vehicle's model does not have (so its dashboard has no empty
#: panel for them): the ascender and the returner run on batteries sized for
#: their short flights and carry no thermal model; Queqiao-2 has no reserve
#: floor and no thermal model; the returner has no propellant.
NOT_MODELLED: dict[str, frozenset[str]] = {
    "ascender": frozenset({"power", "battery", "temperature"}),
    "reentry": frozenset({"reserve", "power", "battery", "temperature"}),
    "relay": frozenset({"reserve", "temperature"}),
}


def vehicle(name: str) -> Dashboard:
    v = {"vehicle": name}
    missing = NOT_MODELLED.get(name, frozenset())

    def gauge(metric: str) -> str:
        return f"max({sel(metric, **v)})"

    panels = (
        Panel("Phase", f"The phase {name} is in now.",
              (Query(f"max by (phase) ({sel('twin_mission_phase', service=name)}) == 1",
                     "{{phase}}"),),
              "none", kind="stat", width=8, height=4,
              options={"textMode": "name", "colorMode": "none", "graphMode": "none"}),
        Panel("Mass", "Total mass.", (Query(gauge("twin_vehicle_mass_grams"), "mass"),),
              "massg", kind="stat", width=8, height=4),
        Panel("Sample on board", "Lunar sample mass this vehicle holds.",
              (Query(gauge("twin_vehicle_sample_mass_grams"), "sample"),),
              "massg", kind="stat", width=8, height=4),
        Panel("Distance from body centre", "Distance from the centre of the Earth and the Moon.",
              (Query(f"max by (body) ({sel('twin_vehicle_distance_meters', **v)})",
                     "{{body}}"),),
              "lengthm"),
        Panel("Altitude", "Height above the body's reference radius.",
              (Query(f"max by (body) ({sel('twin_vehicle_altitude_meters', **v)})",
                     "{{body}}"),),
              "lengthm"),
        Panel("Speed", "Speed relative to the central body.",
              (Query(gauge("twin_vehicle_speed_meters_per_second"), "speed"),),
              "velocityms"),
        Panel("Propellant and reserve", "Propellant left and the reserve floor it must not "
              "cross (alert TwinPropellantBelowReserve).",
              (Query(gauge("twin_vehicle_propellant_grams"), "propellant"),
               *(() if "reserve" in missing else
                 (Query(gauge("twin_vehicle_propellant_reserve_grams"), "reserve"),))),
              "massg", min_value=0),
        Panel("Thrust", "Engine thrust now.",
              (Query(gauge("twin_vehicle_thrust_newtons"), "thrust"),), "forceN", min_value=0),
        Panel("Sensed acceleration", "Non-gravitational acceleration; the entry limit is "
              "12 g = 117.68 m/s^2 (alert TwinEntryDecelerationAboveLimit).",
              (Query(gauge("twin_vehicle_acceleration_meters_per_second_squared"),
                     "acceleration"),),
              "accMS2", min_value=0),
        *(() if "power" in missing else (
            Panel("Solar power", "Power the arrays generate.",
                  (Query(gauge("twin_vehicle_power_watts"), "power"),), "watt", min_value=0),)),
        *(() if "battery" in missing else (
            Panel("Battery", "Battery state of charge.",
                  (Query(gauge("twin_vehicle_battery_ratio"), "charge"),),
                  "percentunit", min_value=0, max_value=1),)),
        *(() if "temperature" in missing else (
            Panel("Temperature", "Modelled temperature.",
                  (Query(gauge("twin_vehicle_temperature_celsius"), "temperature"),),
                  "celsius"),)),
        Panel("Stagnation heat flux", "Stagnation-point heat flux (entry only).",
              (Query(gauge("twin_vehicle_heat_flux_watts_per_square_meter"), "heat flux"),),
              "suffix:W/m²", min_value=0),
        Panel("Telemetry frames", "Frames per wall second: sent live, played back from the "
              "recorder, received by ground.",
              (Query(f"sum({rate('twin_frames_sent_total', **v)})", "sent live"),
               Query(f"sum({rate('twin_frames_played_back_total', **v)})", "played back"),
               Query(f"sum({rate('twin_frames_received_total', **v)})", "received")),
              "cps", min_value=0),
        Panel("Recorder backlog", "Frames waiting on board for a link.",
              (Query(gauge("twin_recorder_backlog_frames"), "backlog"),), "short", min_value=0),
    )
    return Dashboard(
        f"twin-vehicle-{name}", f"Twin / Vehicle / {name}",
        f"The {name}'s state as its service reports it.",
        panels, (events_annotation(f"{name} events", service=name),),
    )


def comms() -> Dashboard:
    sent = f"sum by (vehicle) ({rate('twin_frames_sent_total')})"
    panels = (
        Panel("Links", "1 while the link path exists (line of sight, range, station).",
              (Query(f"max by (link) ({sel('twin_link_up')})", "{{link}}"),),
              "none", kind="state-timeline", width=24, height=8, mappings=BOOL_MAPPINGS),
        Panel("Link availability (10 m)", "Share of the last 10 minutes each link was up.",
              (Query(sel("mission_link:twin_link_up:avg_over_time10m"), "{{link}}"),),
              "percentunit", kind="bargauge", min_value=0, max_value=1),
        Panel("One-way light time", "Light time along each link.",
              (Query(f"max by (link) ({sel('twin_link_light_time_seconds')})", "{{link}}"),),
              "s"),
        Panel("Recorder backlog", "Frames waiting on board, by vehicle.",
              (Query(f"max by (vehicle) ({sel('twin_recorder_backlog_frames')})",
                     "{{vehicle}}"),),
              "short", min_value=0),
        Panel("Frames received by ground", "Frames per wall second reaching ground.",
              (Query(f"sum by (vehicle) ({rate('twin_frames_received_total')})",
                     "{{vehicle}}"),),
              "cps", min_value=0),
        Panel("Frames sent live", "Frames per wall second sent over a live link.",
              (Query(sent, "{{vehicle}}"),), "cps", min_value=0),
        Panel("Frames played back", "Frames per wall second sent from the recorder.",
              (Query(or_zero(f"sum by (vehicle) ({rate('twin_frames_played_back_total')})",
                             sent), "{{vehicle}}"),),
              "cps", min_value=0),
        Panel("Frames lost", "Frames never delivered, total.",
              (Query(or_zero(f"sum by (vehicle) ({sel('twin_frames_lost_total')})",
                             f"sum by (vehicle) ({sel('twin_frames_sent_total')})"),
                     "{{vehicle}}"),),
              "short", min_value=0),
        Panel("Frame loss ratio (5 m)", "Frames lost per frame produced.",
              (Query(sel("mission_vehicle:twin_frames_lost:ratio_rate5m"), "{{vehicle}}"),),
              "percentunit", min_value=0),
    )
    return Dashboard(
        "twin-comms", "Twin / Comms",
        "Links, light time, recorder backlogs and telemetry flow.",
        panels, (events_annotation("Mission events"),),
    )


def platform() -> Dashboard:
    bus_in = f"sum by (service) ({rate('twin_bus_messages_in_total')})"
    grpc_all = f"sum by (method, code) ({rate('twin_grpc_requests_total')})"
    panels = (
        Panel("Step rate", "Lock-step steps per wall second.",
              (Query(f"max({rate('twin_clock_steps_total')})", "steps/s"),
               Query(f"max({sel('twin_clock_step_rate_per_second')})", "last 1 s (gauge)")),
              "ops", min_value=0),
        Panel("Step latency", "Wall time from tick to the last acknowledgement; "
              "objective p99 < 5 ms (alert TwinStepLatencyAboveObjective).",
              (Query(quantile(0.5, "twin_clock_step_duration_seconds", ""), "p50"),
               Query(quantile(0.99, "twin_clock_step_duration_seconds", ""), "p99")),
              "s", min_value=0),
        Panel("Ack latency p99 by peer", "Wall time from tick to each peer's acknowledgement.",
              (Query(quantile(0.99, "twin_clock_ack_latency_seconds", "peer"), "{{peer}}"),),
              "s", min_value=0),
        Panel("Acks overdue", "1 while a peer's acknowledgement is overdue "
              "(alert TwinClockAckOverdue).",
              (Query(f"max by (peer) ({sel('twin_clock_ack_overdue')})", "{{peer}}"),),
              "none", kind="state-timeline",
              mappings=({"type": "value", "options": {
                  "0": {"text": "ok", "color": "green", "index": 0},
                  "1": {"text": "overdue", "color": "red", "index": 1}}},)),
        Panel("Bus messages in", "Envelopes received per wall second, by kind.",
              (Query(f"sum by (kind) ({rate('twin_bus_messages_in_total')})", "{{kind}}"),),
              "mps", min_value=0),
        Panel("Bus messages out", "Envelopes published per wall second, by kind.",
              (Query(f"sum by (kind) ({rate('twin_bus_messages_out_total')})", "{{kind}}"),),
              "mps", min_value=0),
        Panel("Bus decode errors", "Malformed or foreign messages dropped per wall second.",
              (Query(or_zero(f"sum by (service) ({rate('twin_bus_decode_errors_total')})",
                             bus_in), "{{service}}"),),
              "mps", min_value=0),
        Panel("NATS reconnects", "Reconnects to NATS since each service started.",
              (Query(f"sum by (service) ({sel('twin_bus_reconnects_total')})", "{{service}}"),),
              "short", min_value=0),
        Panel("gRPC requests", "gRPC calls per wall second by method and status code.",
              (Query(grpc_all, "{{method}} {{code}}"),), "reqps", min_value=0),
        Panel("gRPC latency p99", "gRPC handling time by method.",
              (Query(quantile(0.99, "twin_grpc_request_duration_seconds", "method"),
                     "{{method}}"),),
              "s", min_value=0),
        Panel("Process CPU", "CPU seconds per wall second of each service process.",
              (Query(f"sum by (service) ({rate('process_cpu_seconds_total')})",
                     "{{service}}"),),
              "percentunit", min_value=0),
        Panel("Process memory", "Resident memory of each service process.",
              (Query(f"max by (service) ({sel('process_resident_memory_bytes')})",
                     "{{service}}"),),
              "bytes", min_value=0),
        Panel("Scrape targets", "Whether Prometheus reaches each service's /metrics.",
              (Query(f'max by (service) ({sel("up", job="twin")})', "{{service}}"),),
              "none", kind="state-timeline", width=24, mappings=BOOL_MAPPINGS),
        *recovery(),
    )
    return Dashboard(
        "twin-platform", "Twin / Platform",
        "The lock-step clock, the NATS bus, gRPC, the service processes, and "
        "recovery: snapshots, commits, rollbacks.",
        panels, (),
    )


#: A bar gauge of counts per interval (`added`) shows their total over the range.
RANGE_TOTAL: Mapping[str, Any] = {
    "reduceOptions": {"calcs": ["sum"], "fields": "", "values": False},
}


def recovery() -> tuple[Panel | Row, ...]:
    """Coordinated snapshots and rollback (docs/recovery.md)."""
    ground = f"max({sel('twin_mission_time_seconds', service='ground')})"
    each = f"max by (service) ({sel('twin_mission_time_seconds')})"
    rollbacks = Query(or_none(added("twin_rollbacks_total", "reason"), "reason", ground),
                      "{{reason}}")
    restores = Query(or_zero(added("twin_restores_total", "service"), each), "{{service}}")
    return (
        Row("Recovery"),
        Panel("Rollbacks in range", "Rollbacks to the last committed snapshot over the time "
              "range, by reason: a service restarted, messages went missing, ground resumed "
              "after its own restart (alert TwinRepeatedRollbacks).",
              (rollbacks,), "short", kind="bargauge", width=6, min_value=0,
              options=RANGE_TOTAL),
        Panel("Rollbacks", "Rollbacks in each interval of the graph, by reason.",
              (rollbacks,), "short", min_value=0),
        Panel("Restores in range", "Committed snapshots each service restored over the time "
              "range: every vehicle service once per rollback (ground restores its own part "
              "uncounted).",
              (restores,), "short", kind="bargauge", width=6, min_value=0, options=RANGE_TOTAL),
        Panel("Snapshot commits per minute", "Snapshot sets ground committed, per wall minute: "
              "one every TWIN_SNAPSHOT_EVERY_STEPS steps or TWIN_SNAPSHOT_EVERY_S wall seconds "
              "while the clock runs (alert TwinSnapshotsNotCommitted).",
              (Query(f"60 * max({rate('twin_snapshot_commits_total')})", "commits"),),
              "cpm", width=8, min_value=0),
        Panel("Snapshot size", "Bytes of the last snapshot each service stored "
              "(orjson, zlib level 1).",
              (Query(f"max by (service) ({sel('twin_snapshot_bytes')})", "{{service}}"),),
              "bytes", width=8, min_value=0),
        Panel("Snapshot duration p99", "Wall time to encode and store one snapshot.",
              (Query(quantile(0.99, "twin_snapshot_duration_seconds", "service"),
                     "{{service}}"),),
              "s", width=8, min_value=0),
        Panel("Messages missing", "Messages a tick counted that never reached a service "
              "within the delivery timeout, in each interval, by the service that waited; "
              "ground then rolls back (reason missing).",
              (Query(or_zero(added("twin_bus_messages_missing_total", "service"), each),
                     "{{service}}"),),
              "short", min_value=0),
        Panel("Messages dropped", "Messages dropped in each interval, by reason: stale (of "
              "a step the receiver has taken, sent again after a rollback) or duplicate "
              "(held already).",
              (Query(or_none(added("twin_bus_messages_dropped_total", "reason"), "reason",
                             ground), "{{reason}}"),),
              "short", min_value=0),
    )


def all_dashboards() -> list[Dashboard]:
    return [overview(), *(vehicle(name) for name in VEHICLES), comms(), platform()]


# --- rendering -------------------------------------------------------------------


ROW_HEIGHT = 1


def layout(panels: Sequence[Panel | Row]) -> Iterator[tuple[Panel | Row, JSON]]:
    """Place panels left to right, wrapping at the grid width; a row header
    takes a line of its own."""
    x = y = row_height = 0
    for panel in panels:
        if isinstance(panel, Row):
            y += row_height
            yield panel, {"h": ROW_HEIGHT, "w": GRID_WIDTH, "x": 0, "y": y}
            x, y, row_height = 0, y + ROW_HEIGHT, 0
            continue
        if x + panel.width > GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        yield panel, {"h": panel.height, "w": panel.width, "x": x, "y": y}
        x += panel.width
        row_height = max(row_height, panel.height)


def render_row(row: Row, panel_id: int, grid: JSON) -> JSON:
    """An expanded row: its panels follow it in the dashboard's own list."""
    return {"id": panel_id, "type": "row", "title": row.title, "collapsed": False,
            "gridPos": grid, "panels": []}


def render_panel(panel: Panel, panel_id: int, grid: JSON) -> JSON:
    defaults: JSON = {"unit": panel.unit, "mappings": list(panel.mappings)}
    if panel.min_value is not None:
        defaults["min"] = panel.min_value
    if panel.max_value is not None:
        defaults["max"] = panel.max_value
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": grid,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {**_KIND_OPTIONS[panel.kind], **panel.options},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": q.expr,
                "legendFormat": q.legend,
                "range": True,
            }
            for i, q in enumerate(panel.queries)
        ],
    }


_REDUCE_LAST: JSON = {"calcs": ["lastNotNull"], "fields": "", "values": False}
_KIND_OPTIONS: dict[str, JSON] = {
    "timeseries": {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    },
    "stat": {
        "reduceOptions": _REDUCE_LAST,
        "colorMode": "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": "auto",
    },
    "state-timeline": {
        "mergeValues": True,
        "showValue": "auto",
        "alignValue": "left",
        "rowHeight": 0.9,
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
    },
    "bargauge": {
        "reduceOptions": _REDUCE_LAST,
        "orientation": "horizontal",
        "displayMode": "gradient",
        "showUnfilled": True,
    },
}


MISSION_VARIABLE: JSON = {
    "name": "mission",
    "label": "Mission",
    "type": "query",
    "datasource": DATASOURCE,
    "definition": "label_values(twin_mission_time_seconds, mission)",
    "query": {"query": "label_values(twin_mission_time_seconds, mission)", "refId": "mission"},
    "refresh": 2,
    "includeAll": False,
    "multi": False,
    "sort": 1,
    "current": {},
    "options": [],
    "hide": 0,
}

BUILTIN_ANNOTATION: JSON = {
    "builtIn": 1,
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
    "enable": True,
    "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)",
    "name": "Annotations & Alerts",
    "type": "dashboard",
}


def render(dashboard: Dashboard) -> JSON:
    panels = [
        render_row(panel, i, grid) if isinstance(panel, Row) else render_panel(panel, i, grid)
        for i, (panel, grid) in enumerate(layout(dashboard.panels), start=1)
    ]
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": [TAG],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "5s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": [MISSION_VARIABLE]},
        "annotations": {"list": [BUILTIN_ANNOTATION, *dashboard.annotations]},
        "links": [{
            "type": "dashboards", "tags": [TAG], "asDropdown": True, "title": "Twin",
            "includeVars": True, "keepTime": True,
        }],
        "panels": panels,
    }


def rendered_files() -> dict[str, str]:
    """{file name: JSON text} of every dashboard, exactly as checked in."""
    return {
        f"{d.uid}.json": json.dumps(render(d), indent=2, ensure_ascii=False) + "\n"
        for d in all_dashboards()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if a file would change")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output directory")
    args = parser.parse_args(argv)
    files = rendered_files()
    stale = sorted(
        name for name, text in files.items()
        if not (args.out / name).is_file() or (args.out / name).read_text() != text
    )
    extra = sorted(p.name for p in args.out.glob("*.json") if p.name not in files)
    if args.check:
        for name in [*stale, *extra]:
            print(f"{args.out / name}: out of date; run `task observe:dashboards`")
        return 1 if stale or extra else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (args.out / name).write_text(files[name])
    for name in extra:
        (args.out / name).unlink()
    print(f"{len(files)} dashboards in {args.out} ({len(stale)} written, {len(extra)} removed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
