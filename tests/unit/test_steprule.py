"""The step rule's choice of the next step, at its edges (services/kernel/steprule.py).

Expected values follow from the rule as the module states it: the next step is
the smallest positive limit, at most the prompt step after a prompt message,
never below the minimum; it ends on the next plan instant, the mission's end or
a run-until target still ahead; a time-tagged command or fault end still ahead
limits the step, one due now does not.
"""

from __future__ import annotations

import math

import pytest

from services.kernel.steprule import MIN_STEP_S, PROMPT_STEP_S, advance, next_max_dt, next_t_to
from services.kernel.vehicle import Outbox, VehicleCore


class Stepper(VehicleCore):
    """A core that accepts ``max_dt_s`` and holds ``timed`` commands it never runs."""

    name = "orbiter"

    def __init__(self, max_dt_s: float) -> None:
        super().__init__(1)
        self.max_dt_s = max_dt_s

    def advance(self, t_from: float, t_to: float, out: Outbox) -> float:
        self.t_s = t_to
        return self.max_dt_s

    def run_timed(self, t: float, out: Outbox) -> None:
        """Keep the tags: the test reads how they limit the step, not their effect."""


def _tagged(at_s: float, max_dt_s: float = 60.0) -> Stepper:
    core = Stepper(max_dt_s)
    core.timed = [{"op": "set_mode", "mode": "x", "execute_at_s": at_s}]
    return core


def test_equal_limits_give_that_limit() -> None:
    assert next_max_dt([30.0, 30.0], prompt=False) == 30.0
    assert next_max_dt([math.inf, 30.0, 45.0], prompt=False) == 30.0


def test_a_prompt_step_is_exactly_the_prompt_step_whatever_the_limits() -> None:
    assert next_max_dt([PROMPT_STEP_S], prompt=True) == PROMPT_STEP_S
    assert next_max_dt([60.0], prompt=True) == PROMPT_STEP_S
    assert next_max_dt([0.25], prompt=True) == 0.25


def test_no_positive_limit_means_no_limit_but_never_below_the_minimum() -> None:
    assert next_max_dt([0.0, -5.0, math.nan], prompt=False) == math.inf
    assert next_max_dt([MIN_STEP_S / 10], prompt=False) == MIN_STEP_S


def test_a_run_until_target_reached_no_longer_limits_the_step() -> None:
    # At the target itself, the step is the accepted one, not a minimum step.
    assert next_t_to(100.0, 10.0, 1e9, 1e9, until_s=100.0) == 110.0
    assert next_t_to(100.0, 10.0, 1e9, 1e9, until_s=50.0) == 110.0
    assert next_t_to(100.0, 10.0, 1e9, 1e9, until_s=104.0) == 104.0


def test_the_step_ends_on_the_plan_instant_or_the_end_whichever_first() -> None:
    assert next_t_to(100.0, 10.0, 103.0, 1e9) == 103.0
    assert next_t_to(100.0, 10.0, 1e9, 102.0) == 102.0
    assert next_t_to(100.0, 10.0, 100.0, 1e9) == pytest.approx(100.0 + MIN_STEP_S, abs=1e-12)


def test_a_tag_still_ahead_shortens_the_step_to_it() -> None:
    core = _tagged(at_s=130.0)
    assert advance(core, 100.0, 120.0, Outbox()) == pytest.approx(10.0, abs=1e-9)


def test_a_tag_due_at_the_end_of_the_step_leaves_the_accepted_step() -> None:
    # A tag at t_to is due now (run_timed's business), not a limit of zero.
    core = _tagged(at_s=120.0)
    assert advance(core, 100.0, 120.0, Outbox()) == 60.0
    core = _tagged(at_s=90.0)
    assert advance(core, 100.0, 120.0, Outbox()) == 60.0


def test_a_tag_beyond_the_accepted_step_does_not_lengthen_it() -> None:
    core = _tagged(at_s=1_000.0, max_dt_s=30.0)
    assert advance(core, 100.0, 120.0, Outbox()) == 30.0
