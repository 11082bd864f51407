"""Crash-consistency, end to end: kill -9 a vehicle, ground or nats-server in the
middle of `twin run`, and the run still finishes with the report of a run
that was never touched.

Real processes: the CLI, nats-server and the six services, on the nominal plan
cut after the ascent (powered descent and ascent inside, a few thousand
steps). Each fault lands at a seeded mission time read from ground's clock.
The full matrix (every service at descent, ascent and entry of the whole
mission, nats-server killed and stalled) is scripts/chaos.py.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.chaos_script import chaos

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SEED = 6
#: After the ascender reaches orbit with the sample: descent and ascent inside.
PLAN_END_UTC = "2024-06-04T00:00:00Z"




@pytest.fixture(scope="module")
def cut_plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path: Path = chaos.nominal_cut(PLAN_END_UTC, tmp_path_factory.mktemp("plan") / "cut.json")
    return path


@pytest.fixture(scope="module")
def baseline(cut_plan: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The report of the same seed and plan with no fault."""
    result = asyncio.run(chaos.run_twin(tmp_path_factory.mktemp("baseline"), cut_plan, SEED))
    assert result.exit_code == 0 and result.report is not None, result.output_tail()
    report: dict[str, Any] = result.report
    return report


def test_two_clean_runs_differ_only_in_wall_time(
        baseline: dict[str, Any], cut_plan: Path, tmp_path: Path) -> None:
    again = asyncio.run(chaos.run_twin(tmp_path, cut_plan, SEED))
    assert again.exit_code == 0, again.output_tail()
    assert chaos.differences(again.report, baseline) == []
    assert again.report["wall_s"] != baseline["wall_s"]  # the one field left out


@pytest.mark.parametrize(("target", "window"), [
    ("lander", "DESCENT"), ("ground", "ASCENT"), ("nats-server", "DESCENT")])
def test_a_killed_child_is_restarted_and_the_report_is_unchanged(
        baseline: dict[str, Any], cut_plan: Path, tmp_path: Path, target: str,
        window: str) -> None:
    cell = chaos.Cell(chaos.Fault("kill", target), getattr(chaos, window))
    result = asyncio.run(chaos.run_twin(tmp_path, cut_plan, SEED, cell))
    verdict = chaos.judge(cell, result, baseline, expect_sample=True)
    assert result.recovery is not None, "the fault never landed: " + verdict.detail
    assert verdict.recovered and verdict.identical, verdict.detail
    assert result.restarts == {target: 1}
    if target != "nats-server":  # live, over core NATS: the CLI's own connection is back
        # only after ground's, so a NATS restart's rollback is in the mission log alone
        assert "event rollback (" in result.output_tail(100_000)  # the CLI says it rolled back
    assert chaos.sample_held_g(result.report) == pytest.approx(
        chaos.SAMPLE_MASS_G, abs=chaos.SAMPLE_TOLERANCE_G)


async def _stop_at(state_dir: Path, cut_plan: Path, point_s: float, sig: int) -> int:
    """`twin run` until ground's clock passes `point_s`, then `sig` to the CLI:
    SIGTERM stops everything in order, SIGKILL takes every child with it
    (they die with their parent). The CLI's exit code."""
    proc = await chaos._start_twin(state_dir, state_dir / "first.json", cut_plan, SEED, None)
    try:
        endpoint = await chaos._ground_endpoint(state_dir, proc)
        async with chaos.ground_channels(state_dir, endpoint) as channels:
            assert await chaos._until_mission_time(channels, point_s) is not None
        proc.send_signal(sig)
        async with asyncio.timeout(chaos.RUN_DEADLINE_S):
            code: int = await proc.wait()
            return code
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _resume(state_dir: Path, report: Path) -> int:
    argv = [sys.executable, "-P", "-m", "services.cli.app", "run", "--resume",
            "--report", str(report), "--state-dir", str(state_dir)]
    with (state_dir / "resumed.out").open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=REPO, env=chaos._run_env(None), stdin=asyncio.subprocess.DEVNULL,
            stdout=out, stderr=asyncio.subprocess.STDOUT)
        async with asyncio.timeout(chaos.RUN_DEADLINE_S):
            return await proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_stopped_mission_resumes_to_the_same_report(
        baseline: dict[str, Any], cut_plan: Path, tmp_path: Path, sig: int) -> None:
    """Stopped during powered descent, by a signal to the CLI or with everything
    killed at once, `twin run --resume` goes on from the last commit in the
    state dir's JetStream store and writes the unstopped run's report."""
    point_s = chaos.DESCENT.point_s(random.Random(SEED))
    code = asyncio.run(_stop_at(tmp_path, cut_plan, point_s, sig))
    assert code != 0  # stopped, not finished
    report = tmp_path / "resumed.json"
    code = asyncio.run(_resume(tmp_path, report))
    output = (tmp_path / "resumed.out").read_text(errors="replace")
    assert code == 0, output[-3000:]
    assert "resuming run" in output
    # From the commit, not from launch (which, deduplicated, would read the same).
    assert "resuming from the last commit" in (tmp_path / "logs" / "ground.log").read_text()
    resumed = orjson.loads(report.read_bytes())
    assert chaos.differences(resumed, baseline) == []
    assert chaos.sample_held_g(resumed) == pytest.approx(chaos.SAMPLE_MASS_G,
                                                          abs=chaos.SAMPLE_TOLERANCE_G)


def test_resume_says_what_is_missing(tmp_path: Path) -> None:
    code = asyncio.run(_resume(tmp_path, tmp_path / "r.json"))
    output = (tmp_path / "resumed.out").read_text(errors="replace")
    assert code == 1
    assert f"nothing to resume in {tmp_path}" in " ".join(output.split())
