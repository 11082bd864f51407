"""The mission report built from canned events and statuses (pure), its reference
times against the reference timeline, telemetry downsampling, and the plots."""

from __future__ import annotations

import csv
import io
import logging
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console

from services.cli.grpc_client import ServiceUnreachable
from services.cli.key_events import (
    UNCONFIRMED_NOTE,
    comparison_table,
    difference,
    real_time,
    tolerance,
)
from services.cli.mission_log import (
    Downsampler,
    read_telemetry,
    telemetry_frames,
    telemetry_path,
    write_telemetry,
)
from services.cli.output import say, show
from services.cli.plots import PLOTS, render_all
from services.cli.progress import clock_line, state_cells, status_table, vehicle_table
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
from services.dynamics.constants import SAMPLE_MASS_G
from services.dynamics.timescale import mission_s_from_utc
from services.kernel.envelope import Envelope, decode, encode
from services.kernel.telemetry import TM_FIELDS, telemetry_frame
from services.kernel.twin_pb import clock_pb2, common_pb2, control_pb2
from services.kernel.vehicle import Summary

REPO = Path(__file__).resolve().parents[2]
#: The real mission's timeline, kept in the repository (docs/reference/README.md).
TIMELINE_CSV = REPO / "docs" / "reference" / "change6-timeline.csv"
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


# --- the key-events table and the tables' plain form (what `twin run` prints) -------


def _comparison(event: str, real_utc: str, precision: str, twin_utc: str | None,
                tolerance_min: float | None = None, confidence: str = "C") -> dict[str, Any]:
    """A report `comparison` row as comparison_rows writes it."""
    diff_min = None if twin_utc is None else (
        mission_s_from_utc(twin_utc) - mission_s_from_utc(real_utc)) / MINUTE_S
    within = None if tolerance_min is None else (
        diff_min is not None and abs(diff_min) <= tolerance_min)
    return {"event": event, "label": event, "real_utc": real_utc, "precision": precision,
            "confidence": confidence, "twin_utc": twin_utc, "diff_min": diff_min,
            "tolerance_min": tolerance_min, "within": within}


@pytest.mark.parametrize(
    ("real_utc", "precision", "twin_utc", "shown_real", "shown_diff"),
    [
        # Known only to the day (written at noon): the day, not "-240.0 min" from noon.
        ("2024-05-08T12:00:00Z", "day", "2024-05-08T08:00:00.000Z", "05-08", "same day"),
        ("2024-05-30T12:00:00Z", "day", "2024-06-01T23:00:00.000Z", "05-30", "+2 days"),
        ("2024-05-30T12:00:00Z", "day", "2024-05-29T13:00:00.000Z", "05-30", "-1 day"),
        # Known to the minute: whole minutes; one second early is no minute off.
        ("2024-05-08T02:12:00Z", "minute", "2024-05-08T02:27:12.000Z", "05-08 02:12", "+15 min"),
        ("2024-06-25T06:07:00Z", "minute", "2024-06-25T06:06:59.000Z", "06-25 06:07", "+0 min"),
        ("2024-06-06T06:48:00Z", "minute", "2024-06-06T06:28:23.000Z", "06-06 06:48", "-20 min"),
        # Known as 05:2x: from the middle of those ten minutes, give or take five.
        ("2024-06-25T05:25:00Z", "ten_minutes", "2024-06-25T05:21:00.000Z", "06-25 05:2x",
         "-4 min ±5"),
        # Known to the second: seconds under a minute, else tenths of a minute.
        ("2024-06-01T22:23:16Z", "second", "2024-06-01T22:23:19.000Z", "06-01 22:23:16", "+3 s"),
        ("2024-06-01T22:23:16Z", "second", "2024-06-01T22:28:16.000Z", "06-01 22:23:16",
         "+5.0 min"),
        ("2024-06-01T22:23:16Z", "second", "2024-06-02T09:23:16.000Z", "06-01 22:23:16",
         "+11.0 h"),
        ("2024-06-01T22:23:16Z", "second", None, "06-01 22:23:16", "-"),
    ],
)
def test_key_events_compare_at_the_precision_the_real_time_is_known(
    real_utc: str, precision: str, twin_utc: str | None, shown_real: str, shown_diff: str
) -> None:
    row = _comparison("e", real_utc, precision, twin_utc)
    assert real_time(real_utc, precision) == shown_real
    assert difference(row) == shown_diff


def test_key_events_say_the_tolerance_in_words() -> None:
    kept = _comparison("lunar_touchdown", "2024-06-01T22:23:16Z", "second",
                       "2024-06-01T22:28:16.000Z", tolerance_min=10.0)
    missed = _comparison("docking", "2024-06-06T06:48:00Z", "minute",
                         "2024-06-06T09:48:00.000Z", tolerance_min=120.0)
    never = _comparison("earth_landing", "2024-06-25T06:07:00Z", "minute", None,
                        tolerance_min=30.0)
    free = _comparison("probe_separation", "2024-05-03T10:04:00Z", "minute",
                       "2024-05-03T10:04:00.000Z")
    assert [tolerance(r) for r in (kept, missed, never, free)] == [
        "yes (±10 min)", "NO (±120 min)", "NO (±30 min)", "no limit set"]
    assert comparison_table([kept]).columns[-1].header == "within tolerance"


def test_key_events_table_as_plain_lines_keeps_whole_names_and_rows() -> None:
    report = _report(events=[*_events(), _ev("lunar_orbit_insertion", "orbiter",
                                             mission_s_from_utc("2024-05-08T02:27:12Z"), 5)])
    grid = comparison_table(report["comparison"])
    lines = grid.lines()
    assert lines[0] == grid.title
    assert lines[1].split() == ["event", "real", "UTC", "twin", "UTC", "twin", "-", "real",
                                "within", "tolerance"]
    rows = {line.split()[0]: re.split(r" {2,}", line) for line in lines[2:]}
    assert list(rows) == [r.event for r in load_reference()]
    assert rows["lunar_orbit_insertion"] == [
        "lunar_orbit_insertion", "05-08 02:12", "05-08 02:27:12", "+15 min", "no limit set"]
    assert rows["earth_landing"] == ["earth_landing", "06-25 06:07", "never", "-",
                                     "NO (±30 min)"]
    assert rows["tei_burn_1"][1] == "06-20?"  # unconfirmed, and the note says what ? means
    assert grid.notes == (UNCONFIRMED_NOTE,)


def test_plain_output_is_never_wrapped_or_cut_at_the_console_width() -> None:
    grid = comparison_table(_report()["comparison"])
    out = io.StringIO()
    narrow = Console(file=out, width=40)  # a pipe: not a terminal, 40 columns
    assert not narrow.is_terminal
    show(narrow, grid)
    say(narrow, "report written to /a/very/long/path/" + "x" * 60 + " (telemetry: t.jsonl)")
    written = out.getvalue().splitlines()
    assert written[:-1] == [*grid.lines(), UNCONFIRMED_NOTE]
    assert max(len(line) for line in written) > 40  # longer than the width, yet one line
    assert written[-1].endswith("(telemetry: t.jsonl)")
    assert "…" not in out.getvalue()


def test_a_terminal_too_narrow_for_the_table_gets_plain_lines_too() -> None:
    grid = comparison_table(_report()["comparison"])
    wide, narrow = io.StringIO(), io.StringIO()
    show(Console(file=wide, width=200, force_terminal=True, color_system=None), grid)
    show(Console(file=narrow, width=60, force_terminal=True, color_system=None), grid)
    assert "┃ event" in wide.getvalue()  # the rich table where it fits
    assert narrow.getvalue().splitlines()[1:len(grid.rows) + 2] == grid.lines()[1:]
    assert "…" not in wide.getvalue() + narrow.getvalue()


def _stowed(name: str) -> control_pb2.GetStatusResponse:
    """A vehicle inside the stack: a state with no body and zero mass (as services send)."""
    return control_pb2.GetStatusResponse(service=name, phase="stowed", utc="u", step=3,
                                         state=common_pb2.StateSummary(vehicle=name))


def test_stowed_vehicles_read_the_same_in_status_and_in_the_run_view() -> None:
    down = ServiceUnreachable("ascender", "127.0.0.1:1", "UNAVAILABLE: " + "x" * 200)
    statuses: dict[str, control_pb2.GetStatusResponse | ServiceUnreachable] = {
        "lander": _stowed("lander"), "relay": _status("relay", "relay_ops"), "ascender": down}
    status_rows = {line.split()[0]: re.split(r" {2,}", line)
                   for line in status_table(statuses).lines()[1:]}
    run_rows = {line.split()[0]: re.split(r" {2,}", line)
                for line in vehicle_table(statuses).lines()[1:]}
    # service state phase UTC step mass altitude faults
    assert status_rows["lander"] == ["lander", "up", "stowed", "u", "3", "-", "-", "-"]
    # vehicle phase body altitude speed mass sample link
    assert run_rows["lander"] == ["lander", "stowed", "-", "-", "-", "-", "-", "-"]
    assert status_rows["relay"][5:7] == run_rows["relay"][5:6] + run_rows["relay"][3:4]
    assert status_rows["relay"][5:7] == ["10.0", "0.0"]
    # A service that is down is marked so; its error is for a line of its own.
    assert status_rows["ascender"] == ["ascender", "down", *["-"] * 6]
    assert "x" * 20 not in "\n".join(status_table(statuses).lines())


def test_a_probe_on_its_launcher_shows_its_mass_but_no_altitude() -> None:
    on_launcher = control_pb2.GetStatusResponse(
        service="orbiter", phase="launch", state=common_pb2.StateSummary(mass_kg=8350.0))
    cells = state_cells(on_launcher)
    assert (cells.body, cells.altitude_km, cells.speed_m_s) == ("-", "-", "-")
    assert cells.mass_kg == "8,350.0"


def test_the_clock_line_shows_the_plan_bound_only_while_running() -> None:
    running = clock_pb2.ClockState(mode="running", phase="cruise", mission_time_s=3600.0,
                                   end_mission_time_s=4_631_551.0, utc="2024-05-03T10:27:29Z")
    finished = clock_pb2.ClockState(mode="finished", phase="complete",
                                    mission_time_s=4_568_970.0, end_mission_time_s=4_631_551.0,
                                    utc="2024-06-25T06:36:59Z")
    assert "T+0d 01:00:00 (plan ends by T+53d 14:32:31)" in clock_line(running)
    assert "T+52d 21:09:30  phase complete  finished" in clock_line(finished)
    assert "53d" not in clock_line(finished)


def test_the_plots_log_no_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Fixed map limits with a fixed aspect made matplotlib log "Ignoring fixed
    x/y limits" six times a report; the map's limits now carry the aspect."""
    pdi = _ev("powered_descent_start", "lander", TOUCHDOWN_S - 840.0, 10)
    path = write_report(tmp_path / "report.json", _report(events=[*_events(), pdi]))
    t0 = TOUCHDOWN_S - 900.0
    tm = [{"t_s": t0 + 60.0 * i, "vehicle": "lander", "step": i, "phase": "powered_descent",
           "body": "moon", "r_m": [1.74e6 - 2e4 * i, 4e5 + 3e4 * i, -1.1e6],
           "v_m_s": [1.0, 2.0, 3.0], "alt_m": 15e3 - 1e3 * i, "speed_m_s": 1700.0 - 110 * i,
           "values": {"thrust_n": 7500.0}} for i in range(16)]
    write_telemetry(telemetry_path(path), tm)
    with caplog.at_level(logging.WARNING):
        render_all(path)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("matplotlib")] == []
