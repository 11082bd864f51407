"""The rule of a step, written once: every driver of the mission calls it.

The twin is deterministic because each participant takes every step the same
way, whichever driver moves the clock (ground's clock authority and the
services over NATS, the in-process :class:`~services.local.simloop.SimLoop`,
the unit tests' ``Drive``). For step ``k`` from ``t_from`` to ``t_to``:

1. **apply** what was published before the step, sorted by (mission time,
   source, sequence): the vehicles take what was published during steps before
   ``k``; ground, which takes each step last, after every vehicle has
   acknowledged, also takes what the vehicles published during step ``k``
   itself (so a vehicle's event is seen by the flight plan in the step it
   happened, and the plan's answer goes out in that step's publication);
2. **advance**: announce the dispersed parameters (first step only) and the
   faults injected or ended since the last step, move
   the state to ``t_to``, run the time-tagged commands now due, run the
   on-board downlink;
3. **publish** what the step wrote, stamped with step ``k`` (the driver's I/O);
4. **acknowledge** with the largest next step the participant accepts.

The clock authority then chooses the next step (:func:`next_t_to`,
:func:`next_max_dt`). This module does no I/O and reads no clock: drivers do
the publishing and acknowledging, and pass what they hold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from services.kernel.envelope import Envelope
from services.kernel.outbox import PROMPT_STEP_S, Outbox
from services.kernel.vehicle import VehicleCore

__all__ = ["FIRST_STEP_S", "MIN_STEP_S", "PROMPT_STEP_S", "advance", "in_order",
           "next_max_dt", "next_t_to", "take_step"]

#: The shortest step the clock makes, mission seconds.
MIN_STEP_S = 1e-3
#: The first step's length, before any participant has said what it accepts.
FIRST_STEP_S = 1.0


def in_order(messages: Iterable[Envelope]) -> list[Envelope]:
    """Messages in the order every participant applies them: mission time,
    then source, then the source's sequence number (two messages of one source
    at one instant keep the order they were published in)."""
    return sorted(messages, key=lambda e: e.order_key)


def take_step(core: VehicleCore, messages: Iterable[Envelope], t_from: float, t_to: float,
              out: Outbox) -> float:
    """One participant's step: apply ``messages`` in order, then :func:`advance`.
    What the step publishes is left in ``out``; returns the largest next step
    the participant accepts (its acknowledgement's ``max_dt_s``)."""
    for msg in in_order(messages):
        core.apply(msg, out)
    return advance(core, t_from, t_to, out)


def advance(core: VehicleCore, t_from: float, t_to: float, out: Outbox) -> float:
    """Fault announcements, the state moved to ``t_to``, the time-tagged commands
    now due, the on-board downlink; the next step stops on the next tag or fault
    end.

    Nearly every step has no fault and no time-tagged command: the hooks that
    would find nothing to do are not called then (each call is about a per cent
    of the lock-step's instructions)."""
    if not core.params_announced:
        core.announce_parameters(t_from, out)
    if core.faults or core.cleared_faults:
        core.note_faults(t_from, out)
    max_dt = core.advance(t_from, t_to, out)
    if core.timed:
        core.run_timed(t_to, out)
    core.after_step(t_from, t_to, out)
    if core.faults or core.timed:
        nxt = core.next_timed_s()
        if nxt is not None and nxt > t_to:
            max_dt = min(max_dt, nxt - t_to)
    return max_dt


def next_max_dt(limits: Iterable[float], prompt: bool) -> float:
    """The largest next step every participant accepts: the smallest of their
    positive limits (one that is 0, negative or NaN sets none; inf is no limit),
    :data:`PROMPT_STEP_S` when the step published a message its receiver acts on
    at once, and never below :data:`MIN_STEP_S`."""
    dt = math.inf
    for limit in limits:
        if 0.0 < limit < dt:
            dt = limit
    if prompt and dt > PROMPT_STEP_S:
        dt = PROMPT_STEP_S
    return max(dt, MIN_STEP_S)


def next_t_to(t_from: float, max_dt: float, next_stop_s: float, end_s: float,
              until_s: float = math.inf) -> float:
    """Where the next step ends: after ``max_dt``, but on the next flight-plan
    instant, the mission's end or a run-until target if one comes first, and
    at least :data:`MIN_STEP_S` on."""
    limit = min(max_dt, next_stop_s - t_from, end_s - t_from)
    if until_s > t_from:
        limit = min(limit, until_s - t_from)
    return t_from + max(limit, MIN_STEP_S)
