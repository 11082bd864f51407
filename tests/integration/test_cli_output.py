"""What `twin` writes when its output is not a terminal (a pipe, a file, CI).

Each command runs as a subprocess with stdout a pipe and an 80-column (or no)
$COLUMNS, as in a CI log: plain lines that are never wrapped or cut, whole
event names, whole table rows. Real nats-server, real services, free ports.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import orjson
import pytest

from services.cli.report import load_reference
from services.kernel.config import SERVICE_NAMES
from tests.authorities import LOI_UTC, SEPARATION_UTC
from tests.integration.test_cli import (
    REPO,
    RUN_DEADLINE_S,
    SHORT_PLAN,
    TWIN,
    _free_port,
    _survivors,
)

pytestmark = pytest.mark.slow

#: The nominal plan's first items, ending in lunar orbit: real events at three
#: precisions of the real time (minute: separation, LOI; day: ICUBE-Q).
TO_LUNAR_ORBIT_PLAN = {
    "name": "cli-output-test",
    "description": "The nominal plan to lunar orbit; written by test_cli_output.py.",
    "end": {"at": "2024-05-08T12:00:00Z"},
    "items": [
        {"id": "separation", "at": SEPARATION_UTC, "target": "orbiter",
         "command": {"op": "probe_separation", "loi_utc": LOI_UTC},
         "phase": "earth_moon_transfer"},
        {"id": "tcm1", "at": "2024-05-04T03:00:00Z", "target": "orbiter",
         "command": {"op": "trajectory_correction", "target": "perilune"}},
        {"id": "tcm2", "at": "2024-05-06T12:00:00Z", "target": "orbiter",
         "command": {"op": "trajectory_correction", "target": "perilune"}},
        {"id": "loi", "at": LOI_UTC, "target": "orbiter",
         "command": {"op": "lunar_orbit_insertion"}, "phase": "lunar_orbit_insertion"},
        {"id": "icubeq", "at": "2024-05-08T08:00:00Z", "target": "orbiter",
         "command": {"op": "release_icubeq"}, "phase": "lunar_orbit"},
    ],
}
KEY_EVENTS = len(load_reference())
BOX_DRAWING = re.compile("[\u2500-\u257f]")  # rich's table borders
EVENT_LINE = re.compile(r"^2024-\d\d-\d\dT\d\d:\d\d:\d\dZ  T\+\d+d \d\d:\d\d:\d\d  "
                        r"event (\w+) \((\w+)\)$")


def _piped(*args: str, columns: str | None = "80", timeout_s: float = RUN_DEADLINE_S,
           extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`twin ARGS` with stdout and stderr pipes, as CI runs it."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | (extra_env or {})
    if columns is not None:
        env["COLUMNS"] = columns
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.run([*TWIN, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def _cells(line: str) -> list[str]:
    """A plain table row's cells: columns are two or more spaces apart."""
    return re.split(r" {2,}", line.strip())


def _rows(lines: list[str], first: str, count: int) -> dict[str, list[str]]:
    """The `count` rows under the header line that starts with `first`."""
    start = max(i for i, line in enumerate(lines) if line.strip().startswith(f"{first} "))
    return {_cells(line)[0]: _cells(line) for line in lines[start + 1:start + 1 + count]}


def _assert_plain(text: str) -> None:
    assert "…" not in text, text
    assert not BOX_DRAWING.search(text), text


def test_run_in_a_pipe_writes_whole_lines_events_and_tables(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_bytes(orjson.dumps(TO_LUNAR_ORBIT_PLAN))
    report = tmp_path / "out" / "report.json"
    state_dir = tmp_path / "state"
    done = _piped("run", "--plan", str(plan), "--state-dir", str(state_dir),
                  "--report", str(report))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    _assert_plain(out)
    lines = out.splitlines()

    # Each event as it happened, whole, on its own line, in mission-time order.
    seen = [m.groups() for m in map(EVENT_LINE.match, lines) if m]
    for event in ("probe_separation", "lunar_orbit_insertion", "icubeq_release"):
        assert (event, "orbiter") in seen, out
    times = [line[:20] for line in lines if EVENT_LINE.match(line)]
    assert times == sorted(times)

    # The periodic status: each vehicle's row whole on one line, under its header.
    vehicles = _rows(lines, "vehicle", len(SERVICE_NAMES) - 1)
    assert set(vehicles) == set(SERVICE_NAMES) - {"ground"}
    assert all(len(cells) == 8 for cells in vehicles.values()), vehicles
    assert vehicles["lander"][1:7] == ["stowed", "-", "-", "-", "-", "-"]

    final = _rows(lines, "service", len(SERVICE_NAMES))
    assert {name: cells[1] for name, cells in final.items()} == dict.fromkeys(SERVICE_NAMES, "up")
    assert final["lander"][5:7] == ["-", "-"]  # stowed: the same rendering as the run view

    # The key events: whole names, the real time's precision, the tolerance in words.
    header = next(line for line in lines if line.startswith("event "))
    assert _cells(header) == ["event", "real UTC", "twin UTC", "twin - real",
                              "within tolerance"]
    events = _rows(lines, "event", KEY_EVENTS)
    assert events["probe_separation"] == ["probe_separation", "05-03 10:04", "05-03 10:04:00",
                                          "+0 min", "no limit set"]
    loi = events["lunar_orbit_insertion"]
    assert loi[1] == "05-08 02:12" and re.fullmatch(r"[+-]\d+ min", loi[3]), loi
    assert events["icubeq_release"][1:2] + events["icubeq_release"][3:] == [
        "05-08", "same day", "no limit set"]
    assert events["lunar_touchdown"][2:] == ["never", "-", "NO (±10 min)"]

    finished = next(line for line in lines if line.startswith("finished: "))
    assert finished.endswith("warp max") and "plan ends by" not in finished, finished
    assert any(line.startswith("report written to ") and line.endswith(f"twin report {report}")
               for line in lines), out
    assert _survivors(state_dir) == []


def test_up_in_a_pipe_shows_vehicles_events_and_key_events(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_bytes(orjson.dumps(SHORT_PLAN))
    state_dir = tmp_path / "state"
    done = _piped("up", "--free-ports", "--plan", str(plan), "--warp", "max",
                  "--state-dir", str(state_dir), columns=None)
    assert done.returncode == 0, done.stdout + done.stderr
    _assert_plain(done.stdout)
    lines = done.stdout.splitlines()
    seen = [m.groups() for m in map(EVENT_LINE.match, lines) if m]
    assert ("mode_changed", "orbiter") in seen and ("mission_end", "ground") in seen, seen
    assert set(_rows(lines, "vehicle", len(SERVICE_NAMES) - 1)) == (
        set(SERVICE_NAMES) - {"ground"})
    assert "lunar_orbit_insertion" in _rows(lines, "event", KEY_EVENTS)
    assert _survivors(state_dir) == []


def test_status_with_nothing_running_marks_each_down_and_says_why_once() -> None:
    ports = {name: _free_port() for name in SERVICE_NAMES}
    # no run, so no operator certificate to present: plaintext, said so
    done = _piped("status", "--ports", ",".join(f"{n}={p}" for n, p in ports.items()),
                  "--timeout", "0.5", columns=None, timeout_s=60.0,
                  extra_env={"TWIN_INSECURE": "true"})
    assert done.returncode == 1
    _assert_plain(done.stdout)
    lines = done.stdout.splitlines()
    table = _rows(lines, "service", len(SERVICE_NAMES))
    assert table == {name: [name, "down", *["-"] * 6] for name in SERVICE_NAMES}
    assert "UNAVAILABLE" not in done.stdout  # the reasons are not cells of the table
    assert "clock unavailable: ground is down" in lines
    errors = done.stderr.splitlines()
    assert len(errors) == len(SERVICE_NAMES), done.stderr  # one line each, not twice
    for name, line in zip(SERVICE_NAMES, errors, strict=True):
        assert line.startswith(f"down: {name} (127.0.0.1:{ports[name]}): UNAVAILABLE"), line
