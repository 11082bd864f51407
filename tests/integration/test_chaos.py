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
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SEED = 6
#: After the ascender reaches orbit with the sample: descent and ascent inside.
PLAN_END_UTC = "2024-06-04T00:00:00Z"


def _load_chaos() -> ModuleType:
    """scripts/chaos.py, which is a script and not part of a package."""
    spec = importlib.util.spec_from_file_location("chaos", REPO / "scripts" / "chaos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chaos"] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


chaos = _load_chaos()


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
    assert chaos.sample_held_g(result.report) == pytest.approx(
        chaos.SAMPLE_MASS_G, abs=chaos.SAMPLE_TOLERANCE_G)
