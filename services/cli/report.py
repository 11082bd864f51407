"""The mission report written by `twin run --report PATH`.

For now it holds the final status of every service, the final clock state
and the wall time of the run, as JSON. `write_report` is the one hook the
full mission report (events, timeline comparison, plots) will grow from.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from google.protobuf.json_format import MessageToDict

from services.cli.grpc_client import TwinRpcError
from services.kernel.twin_pb import clock_pb2, control_pb2

__all__ = ["REPORT_VERSION", "build_report", "write_report"]

REPORT_VERSION = 1


def _message(msg: Any) -> dict[str, Any]:
    # Field names as in the proto (mission_time_s, not missionTimeS), so the
    # units stay in the names; 64-bit integers as numbers where protobuf can.
    options: dict[str, Any] = {
        "preserving_proto_field_name": True,
        "always_print_fields_with_no_presence": True,
    }
    try:
        out: dict[str, Any] = MessageToDict(msg, unquote_int64_if_possible=True, **options)
    except TypeError:  # protobuf older than the option
        out = MessageToDict(msg, **options)
    return out


def build_report(
    *,
    mission_id: str,
    statuses: Mapping[str, control_pb2.GetStatusResponse | TwinRpcError],
    clock: clock_pb2.ClockState | TwinRpcError | None,
    wall_time_s: float,
    healthy_after_s: float | None = None,
    outcome: str = "finished",
) -> dict[str, Any]:
    services: dict[str, Any] = {}
    for name, status in statuses.items():
        services[name] = (
            {"error": str(status)} if isinstance(status, TwinRpcError) else _message(status)
        )
    clock_out: dict[str, Any] | None
    if isinstance(clock, TwinRpcError):
        clock_out = {"error": str(clock)}
    else:
        clock_out = None if clock is None else _message(clock)
    return {
        "report_version": REPORT_VERSION,
        "mission_id": mission_id,
        "outcome": outcome,
        "wall_time_s": round(wall_time_s, 3),
        "healthy_after_s": None if healthy_after_s is None else round(healthy_after_s, 3),
        "clock": clock_out,
        "services": services,
    }


def write_report(
    path: Path,
    *,
    mission_id: str,
    statuses: Mapping[str, control_pb2.GetStatusResponse | TwinRpcError],
    clock: clock_pb2.ClockState | TwinRpcError | None,
    wall_time_s: float,
    healthy_after_s: float | None = None,
    outcome: str = "finished",
) -> Path:
    """Write the report as JSON at `path` (parents created) and return it."""
    report = build_report(
        mission_id=mission_id,
        statuses=statuses,
        clock=clock,
        wall_time_s=wall_time_s,
        healthy_after_s=healthy_after_s,
        outcome=outcome,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    return path
