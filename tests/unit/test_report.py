"""The mission report built from canned events and statuses (pure), its reference
times against the reference timeline, telemetry downsampling, and the plots."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.cli.grpc_client import ServiceUnreachable
from services.cli.mission_log import (
    Downsampler,
    read_telemetry,
    telemetry_frames,
    telemetry_path,
    write_telemetry,
)
from services.cli.plots import PLOTS, render_all
from services.cli.report import (
    LoggedEvent,
    ReferenceEvent,
    build_report,
    comparison_rows,
    event_rows,
    link_intervals,
    load_reference,
    read_report,
    without_wall,
    write_report,
)
from services.kernel.dynamics.constants import SAMPLE_MASS_G
from services.kernel.dynamics.timescale import mission_s_from_utc
from services.kernel.envelope import Envelope, decode, encode
from services.kernel.runtime import TM_FIELDS, telemetry_frame
from services.kernel.twin_pb import clock_pb2, common_pb2, control_pb2
from services.kernel.vehicle import Summary

REPO = Path(__file__).resolve().parents[2]
TIMELINE_CSV = Path("/work/shared/reference/change6-timeline.csv")
TOUCHDOWN_S = mission_s_from_utc("2024-06-01T22:23:16Z")
DOCKING_S = mission_s_from_utc("2024-06-06T06:48:00Z")
MINUTE_S = 60.0


def _ev(name: str, vehicle: str, t_s: float, seq: int, **values: Any) -> LoggedEvent:
    return LoggedEvent(name, vehicle, t_s, step=int(t_s) // 60, seq=seq, values=values)


def _events() -> list[LoggedEvent]:
    # Deliberately out of order, with a tie in time broken by vehicle then seq.
    return [
        _ev("docking", "orbiter", DOCKING_S + 3 * 3600.0, 40, mass_kg=2300.0),
        _ev("lunar_touchdown", "lander", TOUCHDOWN_S + 5 * MINUTE_S, 12,
            lat_deg=-41.64, lon_deg=-153.98, alt_m=-5256.0, speed_m_s=0.4, mass_kg=1500.0),
        _ev("link_acquired", "lander", 100.0, 3, path="direct", station="Kashgar"),
        _ev("link_acquired", "lander", 400.0, 5, path="relay", station="Queqiao-2"),
        _ev("link_lost", "lander", 700.0, 6, path="relay", station="Queqiao-2"),
        _ev("link_acquired", "orbiter", 100.0, 2, path="direct", station="Jiamusi"),
        _ev("plan_item_issued", "ground", 100.0, 1, id="separation", op="probe_separation",
            target="orbiter"),
    ]


def _status(name: str, phase: str, *, sample_g: float = 0.0,
            values: dict[str, float] | None = None, info: dict[str, str] | None = None,
            body: str = "moon") -> control_pb2.GetStatusResponse:
    state = common_pb2.StateSummary(
        vehicle=name, frame="MCI" if body == "moon" else "ECI", central_body=body,
        position_m=common_pb2.Vector3(x=1.0, y=2.0, z=3.0),
        velocity_m_s=common_pb2.Vector3(x=4.0, y=5.0, z=6.0), altitude_m=1.5, speed_m_s=2.5,
        mass_kg=10.0, propellant_kg=1.0, sample_mass_g=sample_g, values=values or {})
    return control_pb2.GetStatusResponse(service=name, mission_id="m", phase=phase,
                                         mission_time_s=1000.0, utc="u", step=7, state=state,
                                         info=info or {})


def _statuses() -> dict[str, control_pb2.GetStatusResponse | ServiceUnreachable]:
    return {
        "relay": _status("relay", "relay_orbit"),
        "ground": _status("ground", "complete", body="",
                          values={"plan_items_total": 3.0, "frames_lost": 0.0,
                                  "frames_received": 120.0},
                          info={"plan": "nominal", "gaps_orbiter": "0"}),
        "reentry": _status("reentry", "recovered", sample_g=SAMPLE_MASS_G, body="earth",
                           values={"z_last": 1.0, "a_first": 2.0}),
        "lander": ServiceUnreachable("lander", "127.0.0.1:1", "connection refused"),
    }


def _report(wall_s: float = 1.0, events: list[LoggedEvent] | None = None) -> dict[str, Any]:
    clock = clock_pb2.ClockState(mode="finished", phase="complete", step=9,
                                 mission_time_s=DOCKING_S + 86400.0, steps_per_second=123.0)
    return build_report(mission_id="m", seed=6, plan="fallback",
                        events=_events() if events is None else events,
                        statuses=_statuses(), clock=clock, wall_s=wall_s,
                        reference=load_reference())


def test_events_sorted_by_time_vehicle_sequence_with_utc_and_values() -> None:
    rows = event_rows(_events())
    keys = [(r["t_s"], r["vehicle"], r["seq"]) for r in rows]
    assert keys == sorted(keys)
    assert [r["vehicle"] for r in rows[:3]] == ["ground", "lander", "orbiter"]  # tie at t=100
    touchdown = next(r for r in rows if r["name"] == "lunar_touchdown")
    assert list(touchdown)[:6] == ["name", "vehicle", "utc", "t_s", "step", "seq"]
    assert touchdown["utc"] == "2024-06-01T22:28:16.000Z"
    assert touchdown["lat_deg"] == -41.64 and touchdown["mass_kg"] == 1500.0
    assert list(touchdown)[6:] == sorted(list(touchdown)[6:])


def test_comparison_gives_minutes_and_checks_the_acceptance_windows() -> None:
    rows = {r["event"]: r for r in comparison_rows(_events(), load_reference())}
    touchdown = rows["lunar_touchdown"]
    assert touchdown["diff_min"] == pytest.approx(5.0, abs=1e-9)
    assert touchdown["tolerance_min"] == 10.0 and touchdown["within"] is True
    assert rows["docking"]["diff_min"] == pytest.approx(180.0, abs=1e-9)
    assert rows["docking"]["within"] is False  # 3 h late against +-2 h
    landing = rows["earth_landing"]
    assert landing["twin_utc"] is None and landing["diff_min"] is None
    assert landing["within"] is False  # a required event that never came fails
    assert rows["probe_separation"]["within"] is None  # no window: nothing to judge


def test_report_holds_final_states_returner_links_and_is_deterministic() -> None:
    report = _report(wall_s=1.0)
    assert list(report)[:5] == ["report_version", "mission_id", "seed", "plan", "outcome"]
    assert report["plan"] == "nominal"  # ground's own name beats the file stem
    assert list(report["final"])[:4] == ["ground", "lander", "reentry", "relay"]
    assert report["final"]["lander"] == {"error": str(_statuses()["lander"])}
    reentry = report["final"]["reentry"]
    assert list(reentry["values"]) == ["a_first", "z_last"]
    assert reentry["r_m"] == [1.0, 2.0, 3.0] and reentry["central_body"] == "earth"
    returner = report["final"]["returner"]
    assert returner["landed"] is False and returner["sample_mass_g"] == SAMPLE_MASS_G
    assert report["links"]["ground"]["values"] == {"frames_lost": 0.0, "frames_received": 120.0}
    assert report["links"]["ground"]["info"] == {"gaps_orbiter": "0"}
    assert "steps_per_second" not in report["clock"]  # a wall-clock fact
    again = _report(wall_s=99.0)
    assert again != report
    assert orjson.dumps(without_wall(again)) == orjson.dumps(without_wall(report))


def test_returner_position_comes_from_earth_landing() -> None:
    landing = _ev("earth_landing", "reentry", mission_s_from_utc("2024-06-25T06:10:00Z"), 90,
                  lat_deg=41.9, lon_deg=111.5, sample_mass_g=SAMPLE_MASS_G)
    returner = _report(events=[*_events(), landing])["final"]["returner"]
    assert returner["landed"] is True
    assert (returner["lat_deg"], returner["lon_deg"]) == (41.9, 111.5)
    assert returner["utc"] == "2024-06-25T06:10:00.000Z"
    assert returner["sample_mass_g"] == SAMPLE_MASS_G


def test_link_intervals_switch_paths_and_close_at_the_end() -> None:
    intervals = link_intervals(_events(), end_t_s=1000.0)
    spans = [(iv.vehicle, iv.path, iv.start_s, iv.end_s) for iv in intervals]
    assert spans == [("lander", "direct", 100.0, 400.0), ("lander", "relay", 400.0, 700.0),
                     ("orbiter", "direct", 100.0, 1000.0)]
    lander = _report()["links"]["by_vehicle"]["lander"]
    assert lander["acquisitions"] == 2 and lander["up_s"] == 600.0
    assert lander["paths"] == {"direct": 300.0, "relay": 300.0}


def test_reference_times_match_the_reference_timeline() -> None:
    if not TIMELINE_CSV.is_file():
        pytest.skip(f"{TIMELINE_CSV} not present")
    rows = {r["id"]: r for r in csv.DictReader(TIMELINE_CSV.open())}
    for ref in load_reference():
        row = rows[ref.timeline_id]
        assert ref.confidence == row["confidence"], ref.event
        real = row["utc"].rstrip("?")
        if ref.precision in ("second", "minute"):
            # The CSV writes minutes without seconds: compare at its precision.
            assert ref.utc.startswith(real.rstrip("Z")), (ref.event, real)
        else:
            assert ref.utc[:10] == real[:10], (ref.event, real)


def test_every_reference_event_is_a_required_event_name() -> None:
    mission_doc = (REPO / "docs" / "mission.md").read_text()
    for ref in load_reference():
        assert f"`{ref.event}`" in mission_doc, ref.event


def test_acceptance_windows_of_the_issue() -> None:
    windows = {r.event: r.tolerance_min for r in load_reference() if r.tolerance_min}
    assert windows == {"lunar_touchdown": 10.0, "docking": 120.0, "earth_landing": 30.0}
    assert isinstance(load_reference()[0], ReferenceEvent)


def _tm(phase: str, alt_m: float, thrust_n: float = 0.0, body: str = "moon") -> dict[str, Any]:
    return {"phase": phase, "body": body, "alt_m": alt_m, "values": {"thrust_n": thrust_n}}


def test_downsampler_keeps_grid_phase_changes_and_fast_flight() -> None:
    d = Downsampler(grid_s=60.0)
    kept = [
        d.keep("orbiter", 0.0, _tm("coast", 200e3)),  # first: new phase
        d.keep("orbiter", 30.0, _tm("coast", 200e3)),  # same bucket: dropped
        d.keep("orbiter", 61.0, _tm("coast", 200e3)),  # next bucket
        d.keep("orbiter", 62.0, _tm("burn", 200e3, thrust_n=3000.0)),  # phase change
        d.keep("orbiter", 63.0, _tm("burn", 200e3, thrust_n=3000.0)),  # thrust: every frame
        d.keep("lander", 64.0, _tm("descent", 10e3)),  # low over the Moon: every frame
        d.keep("lander", 65.0, _tm("descent", 10e3)),
        d.keep("lander", 66.0, {"phase": "descent", "body": ""}),  # no state: dropped
    ]
    assert kept == [True, False, True, True, True, True, True, False]


def test_tm_frames_are_positional_on_the_wire_and_named_when_read() -> None:
    s = Summary(phase="coast", frame="MCI", central_body="moon", r_m=(1.0, 2.0, 3.0),
                altitude_m=200e3, values={"power_w": 1500.0})
    good = [telemetry_frame(s, 7, 4200.0), telemetry_frame(s, 8, 4800.0)]
    odd = [[1, 2], "frame", [*good[0][:1], None, *good[0][2:]]]  # short, no list, no t
    body = {"fields": orjson.Fragment(orjson.dumps(TM_FIELDS)), "frames": [*good, *odd]}
    env = decode(encode(Envelope("m", "orbiter", 1, 4800.0, 8, "telemetry", body)),
                 mission="m")
    frames = telemetry_frames(env)
    assert [f["step"] for f in frames] == [7, 8]
    assert frames[0] == {"step": 7, "t": 4200.0, "phase": "coast", "frame": "MCI",
                         "body": "moon", "r_m": [1.0, 2.0, 3.0], "v_m_s": [0.0, 0.0, 0.0],
                         "alt_m": 200e3, "speed_m_s": 0.0, "mass_kg": 0.0, "propellant_kg": 0.0,
                         "sample_mass_g": 0.0, "values": {"power_w": 1500.0}}
    nameless = env._replace(body={"frames": env.body["frames"]})
    assert telemetry_frames(nameless) == []


def test_telemetry_round_trip_in_time_order(tmp_path: Path) -> None:
    records = [{"t_s": 2.0, "vehicle": "b", "step": 2}, {"t_s": 1.0, "vehicle": "a", "step": 1}]
    path = write_telemetry(telemetry_path(tmp_path / "r.json"), records)
    assert path.name == "r.telemetry.jsonl"
    assert [r["t_s"] for r in read_telemetry(path)] == [1.0, 2.0]


def test_report_round_trips_and_every_plot_renders(tmp_path: Path) -> None:
    path = write_report(tmp_path / "run" / "report.json", _report())
    assert read_report(path) == orjson.loads(orjson.dumps(_report()))
    t0 = TOUCHDOWN_S - 900.0
    tm = [{"t_s": t0 + 60.0 * i, "vehicle": "lander", "step": i, "phase": "powered_descent",
           "body": "moon", "r_m": [1.74e6 + 1e3 * i, 1e4 * i, -1.1e6], "v_m_s": [1.0, 2.0, 3.0],
           "alt_m": 15e3 - 1e3 * i, "speed_m_s": 1700.0 - 110 * i, "values": {"thrust_n": 7500.0}}
          for i in range(16)]
    write_telemetry(telemetry_path(path), tm)
    written = render_all(path)
    assert [p.name for p in written] == [f"report.{name}.png" for name in PLOTS]
    for png in written:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
