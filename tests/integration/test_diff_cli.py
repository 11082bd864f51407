"""`twin diff` end to end: reports of real `twin run`s, and missions' logs on a
real nats-server flown by the in-process twin.

The difference put in is the orbiter's dry mass, 50 kg heavier in B: the
first event to carry the stack's mass (probe_separation) must be where the
two part, by exactly those 50 kg.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from services.ground.plan import parse_plan
from services.local.inproc import LocalTwin

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TWIN = [sys.executable, "-m", "services.cli.app"]
# Wall-clock allowances on a 2-core machine: they bound a hang, not a speed.
RUN_DEADLINE_S = 180.0
DIFF_DEADLINE_S = 60.0
MISSION_DEADLINE_S = 120.0

#: The nominal plan's first item (the stack leaves the launcher at 10:04Z),
#: then an hour's coast: the separation event carries the stack's mass.
SEPARATION_PLAN = {
    "name": "diff-test",
    "description": "Separation and an hour of coast; written by test_diff_cli.py.",
    "facts": {"loi_utc": "2024-05-08T02:12:00Z"},
    "end": {"at": "2024-05-03T11:00:00Z"},
    "items": [
        {"id": "separation", "at": "2024-05-03T10:04:00Z", "target": "orbiter",
         "command": {"op": "probe_separation", "loi_utc": "${loi_utc}"},
         "phase": "earth_moon_transfer"},
    ],
}
HEAVIER_KG = 50.0
HEAVIER = {"orbiter.dry_mass_offset_kg": HEAVIER_KG}
EXIT_IDENTICAL, EXIT_DIFFER, EXIT_BAD_INPUT = 0, 1, 2


def _twin(*args: str, timeout_s: float = DIFF_DEADLINE_S,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TWIN, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout_s, check=False,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same plan flown twice by `twin run`: nominal, then with the heavier orbiter."""
    where = tmp_path_factory.mktemp("diff")
    plan = where / "plan.json"
    plan.write_bytes(orjson.dumps(SEPARATION_PLAN))
    heavier = where / "heavier.json"
    heavier.write_bytes(orjson.dumps(HEAVIER))
    out = []
    for name, extra in (("nominal", []), ("heavier", ["--parameters", str(heavier)])):
        report = where / f"{name}.json"
        done = _twin("run", "--plan", str(plan), "--state-dir", str(where / f"state-{name}"),
                     "--report", str(report), *extra, timeout_s=RUN_DEADLINE_S)
        assert done.returncode == 0, done.stdout + done.stderr
        out.append(report)
    return out[0], out[1]


def _separation_mass_kg(report: Path) -> float:
    rows = orjson.loads(report.read_bytes())["events"]
    return float(next(r for r in rows if r["name"] == "probe_separation")["mass_kg"])


def test_two_reports_that_differ_exit_1_naming_where(reports: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    nominal, heavier = reports
    done = _twin("diff", str(nominal), str(heavier), "--out", str(tmp_path / "d"))
    assert done.returncode == EXIT_DIFFER, done.stdout + done.stderr
    mass_kg = _separation_mass_kg(nominal)
    named = f"mass_kg {mass_kg!r} -> {mass_kg + HEAVIER_KG!r}"
    assert "first divergence" in done.stdout and named in done.stdout
    assert "orbiter.dry_mass_offset_kg nominal -> 50.0" in done.stdout
    body = orjson.loads((tmp_path / "d" / "diff.json").read_bytes())
    first = body["first_divergence"]
    assert (first["vehicle"], first["name"]) == ("orbiter", "probe_separation")
    assert named in first["what"]
    assert body["identical"] is False
    assert (tmp_path / "d" / "diff.png").read_bytes()[:4] == b"\x89PNG"


def test_a_report_against_itself_exits_0(reports: tuple[Path, Path]) -> None:
    done = _twin("diff", str(reports[0]), str(reports[0]))
    assert done.returncode == EXIT_IDENTICAL, done.stdout + done.stderr
    assert "identical" in done.stdout


def test_what_cannot_be_compared_exits_2_saying_what_to_fix(
    reports: tuple[Path, Path], tmp_path: Path
) -> None:
    missing = _twin("diff", str(reports[0]), str(tmp_path / "nowhere.json"))
    assert missing.returncode == EXIT_BAD_INPUT
    assert "no report file" in missing.stderr and "twin run --report" in missing.stderr
    not_report = tmp_path / "other.json"
    not_report.write_bytes(orjson.dumps({"name": "a plan, say"}))
    refused = _twin("diff", str(not_report), str(reports[0]))
    assert refused.returncode == EXIT_BAD_INPUT
    assert "not a twin report" in refused.stderr
    no_nats = _twin("diff", "ce6", str(reports[0]), "--state-dir", str(tmp_path))
    assert no_nats.returncode == EXIT_BAD_INPUT
    assert "--nats-url" in no_nats.stderr


async def _fly(nats_url: str, mission: str, parameters: dict[str, float]) -> None:
    async with LocalTwin(nats_url, mission, parse_plan(SEPARATION_PLAN),
                         parameters=parameters) as twin:
        await twin.wait_finished(timeout_s=MISSION_DEADLINE_S)


async def test_missions_on_nats_are_compared_from_their_logs(
    nats_url: str, mission_id: str, reports: tuple[Path, Path]
) -> None:
    parent, fork = f"{mission_id}-a", f"{mission_id}-b"
    await _fly(nats_url, parent, {})
    await _fly(nats_url, fork, HEAVIER)
    plaintext = {"TWIN_INSECURE": "true"}  # the session's server is plaintext

    def diff(*args: str) -> subprocess.CompletedProcess[str]:
        return _twin("diff", *args, "--nats-url", nats_url, env=plaintext)

    differ = await asyncio.to_thread(diff, parent, fork)
    assert differ.returncode == EXIT_DIFFER, differ.stdout + differ.stderr
    assert "orbiter probe_separation" in differ.stdout
    assert "finished" in differ.stdout  # each log holds its mission_end
    same = await asyncio.to_thread(diff, parent, parent)
    assert same.returncode == EXIT_IDENTICAL, same.stdout + same.stderr
    # In process or as six processes, the same plan and seed fly the same mission.
    across = await asyncio.to_thread(diff, str(reports[1]), fork)
    assert across.returncode == EXIT_IDENTICAL, across.stdout + across.stderr
    unknown = await asyncio.to_thread(diff, parent, f"{mission_id}-never")
    assert unknown.returncode == EXIT_BAD_INPUT
    assert f"no events of mission '{mission_id}-never'" in unknown.stderr
