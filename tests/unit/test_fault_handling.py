"""Fault handling and time tags on board (kernel, pure): how a fault is made,
injected from a flight-plan item, announced, ended by itself or cleared, and
when a time-tagged command runs.

Authorities: the InjectFault contract (README, VehicleControl table:
``duration_s`` 0 = until cleared, otherwise it ends by itself; ``stall_clock``
with a duration is refused) and its proto defaults (``magnitude`` 0,
``target`` ""); docs/mission.md "flight plan" (a plan item's ``fault`` reaches
the vehicle as ``inject_fault``, the item's id becomes the fault id, an
unknown kind is answered with ``command_rejected``); the step rule
(services/kernel/steprule.py: faults are announced at the start of a step,
time-tagged commands due by the end of a step run in it). Times on board are
compared with a tolerance of one microsecond (``TAG_TOL_S``): a tag that close
to an instant is that instant.
"""

from __future__ import annotations

from typing import Any

import pytest

from services.kernel.envelope import Envelope
from services.kernel.errors import InvalidCommand
from services.kernel.faults import make_fault
from services.kernel.vehicle import COAST_STEP_S, Outbox, Outgoing, VehicleCore

#: Two instants closer than this are one instant on board (mission seconds).
TAG_TOL_S = 1e-6
#: Half a second: far more than the tolerance, less than any step or tag
#: rounding could explain.
HALF_S = 0.5
KINDS = frozenset({"stall_clock", "drop_telemetry", "thrust_loss"})


class Probe(VehicleCore):
    """A vehicle with one fault kind of its own and only the kernel's behaviour."""

    name = "probe"
    fault_kinds = frozenset({"thrust_loss"})

    def advance(self, t_from: float, t_to: float, out: Outbox) -> float:
        self.t_s = t_to
        return COAST_STEP_S


def _probe(t_s: float = 1_000.0) -> Probe:
    probe = Probe(6)
    probe.t_s = t_s
    return probe


def _from_ground(body: dict[str, Any], t_s: float) -> Envelope:
    return Envelope("sim", "ground", 1, t_s, 1, "command", body)


def _events(out: Outbox) -> list[Outgoing]:
    return [item for item in out.drain() if item.kind == "evt"]


def _named(items: list[Outgoing], name: str) -> list[Outgoing]:
    return [item for item in items if item.body["name"] == name]


# --- making a fault ------------------------------------------------------------------


def test_a_fault_made_with_only_its_kind_is_zero_magnitude_and_lasts_until_cleared() -> None:
    fault = make_fault("f1", "drop_telemetry", KINDS, since_s=5.0)
    assert fault == {"fault_id": "f1", "kind": "drop_telemetry", "target": "",
                     "magnitude": 0.0, "since": 5.0, "duration_s": 0.0}


def test_a_stall_with_any_duration_is_refused_even_under_a_second() -> None:
    with pytest.raises(InvalidCommand, match="duration_s can never run out"):
        make_fault("f1", "stall_clock", KINDS, since_s=0.0, duration_s=HALF_S)
    assert make_fault("f2", "stall_clock", KINDS, since_s=0.0)["duration_s"] == 0.0


def test_inject_fault_defaults_as_the_inject_fault_request_does() -> None:
    probe = _probe(42.0)
    fault = probe.inject_fault("probe-thrust_loss-1", "thrust_loss")
    assert fault == {"fault_id": "probe-thrust_loss-1", "kind": "thrust_loss", "target": "",
                     "magnitude": 0.0, "since": 42.0, "duration_s": 0.0}
    assert probe.faults == {"thrust_loss": fault}
    assert probe.next_timed_s() is None  # until cleared: nothing to stop the clock on


# --- a flight plan's fault item (inject_fault from ground) -------------------------------


def test_a_plan_fault_item_becomes_the_fault_it_describes() -> None:
    probe, out = _probe(), Outbox()
    probe.apply(_from_ground({"op": "inject_fault", "plan_id": "weak", "kind": "thrust_loss",
                              "magnitude": 0.3, "duration_s": 120.0,
                              "subsystem": "main_engine"}, probe.t_s), out)
    assert probe.faults == {"thrust_loss": {
        "fault_id": "weak", "kind": "thrust_loss", "target": "main_engine", "magnitude": 0.3,
        "since": 1_000.0, "duration_s": 120.0}}
    assert _events(out) == []  # announced at the start of the next step, not now


def test_a_plan_fault_item_without_its_optional_fields_takes_the_inject_fault_defaults(
        ) -> None:
    """Missing fields mean what the InjectFault request's unset fields mean."""
    probe, out = _probe(), Outbox()
    probe.apply(_from_ground({"op": "inject_fault", "kind": "thrust_loss"}, probe.t_s), out)
    assert probe.faults == {"thrust_loss": {
        "fault_id": "", "kind": "thrust_loss", "target": "", "magnitude": 0.0,
        "since": 1_000.0, "duration_s": 0.0}}
    assert _events(out) == []


def test_a_plan_fault_item_without_a_kind_is_rejected_naming_the_empty_kind() -> None:
    probe, out = _probe(), Outbox()
    probe.apply(_from_ground({"op": "inject_fault", "plan_id": "nameless"}, probe.t_s), out)
    [rejected] = _events(out)
    assert (rejected.target, rejected.t) == ("probe", 1_000.0)
    assert rejected.body["name"] == "command_rejected"
    assert rejected.body["op"] == "inject_fault" and rejected.body["plan_id"] == "nameless"
    assert rejected.body["reason"].startswith("unknown fault kind ''; known: ")
    assert probe.faults == {}


def test_a_plan_fault_item_with_a_magnitude_that_is_no_number_is_rejected() -> None:
    probe, out = _probe(), Outbox()
    probe.apply(_from_ground({"op": "inject_fault", "plan_id": "bad", "kind": "thrust_loss",
                              "magnitude": "lots"}, probe.t_s), out)
    [rejected] = _events(out)
    assert (rejected.target, rejected.body["name"]) == ("probe", "command_rejected")
    assert "'lots'" in rejected.body["reason"]  # the value at fault, as Python's float() says
    assert probe.faults == {}


# --- announcing, ending, clearing -----------------------------------------------------------


def test_a_fault_cleared_before_any_step_is_announced_injected_then_cleared() -> None:
    """A stalled service runs no step while the fault lasts: both events come at once."""
    probe, out = _probe(), Outbox()
    probe.inject_fault("f1", "thrust_loss", magnitude=0.25)
    assert probe.clear_fault("f1") and probe.faults == {}
    probe.note_faults(1_060.0, out)
    items = _events(out)
    assert [(i.target, i.t, i.body) for i in items] == [
        ("probe", 1_060.0, {"name": "fault_injected", "kind": "thrust_loss", "fault_id": "f1",
                            "magnitude": 0.25}),
        ("probe", 1_060.0, {"name": "fault_cleared", "kind": "thrust_loss", "fault_id": "f1",
                            "reason": "cleared"})]
    probe.note_faults(1_120.0, out)
    assert _events(out) == []  # each announced once


def test_a_fault_of_half_a_second_ends_by_itself() -> None:
    probe, out = _probe(), Outbox()
    probe.inject_fault("short", "drop_telemetry", duration_s=HALF_S)
    assert probe.next_timed_s() == pytest.approx(1_000.0 + HALF_S, abs=TAG_TOL_S)
    probe.note_faults(1_000.0 + HALF_S, out)
    assert probe.faults == {}
    cleared = _named(_events(out), "fault_cleared")
    assert [(c.target, c.body["fault_id"], c.body["kind"], c.body["reason"]) for c in cleared] \
        == [("probe", "short", "drop_telemetry", "expired")]


def test_a_fault_ends_at_a_step_start_within_the_tolerance_of_its_end_not_earlier() -> None:
    t = 2_000.0
    probe, out = _probe(0.0), Outbox()
    # Ends exactly one tolerance after the step start: that is the step start.
    probe.inject_fault("edge", "drop_telemetry", duration_s=t + TAG_TOL_S)
    # Ends half a second after the step start: still on during this step.
    probe.inject_fault("later", "thrust_loss", duration_s=t + HALF_S)
    probe.note_faults(t, out)
    assert set(probe.faults) == {"thrust_loss"}
    assert [c.body["fault_id"] for c in _named(_events(out), "fault_cleared")] == ["edge"]


# --- time-tagged commands ---------------------------------------------------------------------


def _set_mode(mode: str, **tag: float) -> dict[str, Any]:
    return {"op": "set_mode", "mode": mode, **tag}


def test_a_rejected_command_is_reported_by_the_vehicle_at_its_time() -> None:
    probe, out = _probe(), Outbox()
    probe.receive_command({"op": "warp_drive", "plan_id": "w"}, out)
    [rejected] = _events(out)
    assert (rejected.target, rejected.t, rejected.body["name"]) == (
        "probe", 1_000.0, "command_rejected")
    assert rejected.body["plan_id"] == "w" and rejected.body["op"] == "warp_drive"


@pytest.mark.parametrize(("ahead_s", "held"), [
    (0.0, False),  # tagged now: runs now
    (TAG_TOL_S, False),  # within the tolerance of now: now
    (HALF_S, True),  # half a second ahead: kept for its time
])
def test_a_command_tagged_within_the_tolerance_of_now_runs_now(ahead_s: float,
                                                                held: bool) -> None:
    probe, out = _probe(), Outbox()
    probe.receive_command(_set_mode("tagged", execute_at_s=probe.t_s + ahead_s), out)
    assert bool(probe.timed) is held
    assert probe.phase == ("prelaunch" if held else "tagged")


def test_time_tagged_commands_are_kept_soonest_first_and_run_in_that_order() -> None:
    probe, out = _probe(0.0), Outbox()
    for mode, tag in (("second", 200.0), ("third", 300.0), ("first", 100.0)):
        probe.receive_command(_set_mode(mode, execute_at_s=tag), out)
    assert [c["mode"] for c in probe.timed] == ["first", "second", "third"]
    assert probe.next_timed_s() == 100.0
    probe.run_timed(250.0, out)
    assert [e.body["mode"] for e in _named(_events(out), "mode_changed")] == ["first", "second"]
    assert probe.next_timed_s() == 300.0


def test_a_command_runs_in_the_step_that_ends_within_the_tolerance_of_its_tag() -> None:
    t = 500.0
    probe, out = _probe(0.0), Outbox()
    probe.receive_command(_set_mode("edge", execute_at_s=t + TAG_TOL_S), out)
    probe.receive_command(_set_mode("later", execute_at_s=t + HALF_S), out)
    probe.run_timed(t, out)
    assert [e.body["mode"] for e in _named(_events(out), "mode_changed")] == ["edge"]
    assert [c["mode"] for c in probe.timed] == ["later"]
