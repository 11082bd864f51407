"""The nominal powered descent, flown once per session and shared.

Four test files check the same flight (the mission's seed from the nominal
ignition at 22:09 UTC, 1 s steps): its result, its profile, its events, and the
hover from which each hazard map's avoidance is flown. Flying it once per file
cost a mutation run (scripts/mutate.py) four flights per descent mutant; the
session fixtures here fly it twice in all, once through ``simulate_descent``
(what the result tests judge) and once step by step (the track the profile and
hazard tests read). scripts/mutate.py runs every test that reads them against a
mutant of what they call (``_fixture_sharing``).
"""

from __future__ import annotations

import pytest

from services.dynamics.guidance import MoonRotation
from services.dynamics.guidance import descent as d
from services.dynamics.timescale import mission_s_from_utc
from tests.unit.guidance.nominal_descent import Track

#: Powered descent start (reference timeline row 13: 2024-06-01 22:09 UTC).
T_PDI_S = mission_s_from_utc("2024-06-01T22:09:00Z")
#: The mission's hazard-map seed.
MISSION_SEED = 6
#: The step of the lock-step clock the nominal mission flies the descent with.
STEP_S = 1.0


@pytest.fixture(scope="session")
def nominal_start() -> tuple[d.DescentState, d.DescentConfig]:
    state = d.nominal_ignition_state(T_PDI_S)
    return state, d.DescentConfig(rotation=MoonRotation.at(state.t_s), seed=MISSION_SEED)


@pytest.fixture(scope="session")
def nominal_result(nominal_start: tuple[d.DescentState, d.DescentConfig]) -> d.DescentResult:
    return d.simulate_descent(*nominal_start)  # its default step: STEP_S, the clock's


@pytest.fixture(scope="session")
def nominal_track(nominal_start: tuple[d.DescentState, d.DescentConfig]) -> Track:
    state, cfg = nominal_start
    states, outputs = [state], []
    while state.phase != "landed" and state.t_s - state.ignition_s < 1_800.0:
        state, out = d.step(state, STEP_S, cfg)
        states.append(state)
        outputs.append(out)
    return Track(cfg, tuple(states), tuple(outputs))
