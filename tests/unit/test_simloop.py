"""The NATS-free loop (services/local/simloop.py): its step rule, message order,
envelopes and result, driven with small probe cores and a short flight plan.

The plan ends at 09:40:00 UTC on launch day, 751 mission seconds; the probes
ask for fixed steps, so every step boundary below is known in advance.
"""

from __future__ import annotations

from typing import Any

from services.ground.plan import parse_plan
from services.ground.vehicle import GroundCore
from services.kernel.envelope import Envelope
from services.kernel.vehicle import Outbox, VehicleCore
from services.local.simloop import SimLoop, event_rows

END_UTC = "2024-05-03T09:40:00Z"  # mission second 751
#: What a probe sends during one step: (outbox kind, target, t, body).
Send = tuple[str, str, float, dict[str, Any]]


class Probe(VehicleCore):
    """A core that asks for a fixed step, announces every step it makes, sends
    what its script says, and records every message applied to it."""

    downlink_enabled = False  # no telemetry traffic: the counts below stay exact

    def __init__(self, name: str, dt_s: float,
                 script: dict[int, list[Send]] | None = None) -> None:
        self.name = name
        super().__init__(6)
        self.dt_s = dt_s
        self.script = script or {}
        self.steps_made = 0
        self.got: list[tuple[float, str, int, int]] = []  # (t, src, seq, step published)

    def apply(self, msg: Envelope, out: Outbox) -> None:
        self.got.append((msg.t, msg.src, msg.seq, msg.step))
        super().apply(msg, out)

    def advance(self, t_from: float, t_to: float, out: Outbox) -> float:
        self.t_s = t_to
        self.steps_made += 1
        out.event(self.name, "stepped", t_to)
        for kind, target, t, body in self.script.get(self.steps_made, []):
            out.send(kind, target, t, body)
        return self.dt_s


def _loop(*cores: Probe, items: list[dict[str, Any]] | None = None) -> SimLoop:
    plan = parse_plan({"name": "t", "end": {"at": END_UTC}, "items": items or []})
    return SimLoop(GroundCore(6, plan), {c.name: c for c in cores})


def _step_ends(loop: SimLoop, **run: Any) -> list[float]:
    ends: list[float] = []

    def record(sim: SimLoop) -> None:
        assert sim is loop
        ends.append(sim.t_s)

    loop.run(on_step=record, **run)
    return ends


def test_result_counts_steps_end_time_and_messages() -> None:
    loop = _loop(Probe("lander", 100.0), Probe("relay", 250.0))
    ends = _step_ends(loop)
    # a first short step, then the smallest step asked, cut at the plan's end
    assert ends == [1.0, 101.0, 201.0, 301.0, 401.0, 501.0, 601.0, 701.0, 751.0]
    result = loop.run()  # the mission is over: nothing more happens
    assert (result.steps, result.t_s, result.messages) == (9, 751.0, 19)
    assert result.events is loop.events
    # 9 "stepped" from each probe, and ground's mission_end
    assert len(result.events) == 19
    assert loop.event_names()[-1] == "mission_end"


def test_each_source_numbers_its_messages_from_one_and_stamps_its_step() -> None:
    loop = _loop(Probe("lander", 100.0), Probe("relay", 250.0))
    loop.run()
    by_source: dict[str, list[tuple[int, int, str]]] = {}
    for e in loop.events:
        assert e.mission == "sim"
        assert e.kind == "event"
        by_source.setdefault(e.src, []).append((e.seq, e.step, e.body["name"]))
    assert by_source["lander"] == [(n, n, "stepped") for n in range(1, 10)]
    assert by_source["relay"] == [(n, n, "stepped") for n in range(1, 10)]
    assert by_source["ground"] == [(1, 9, "mission_end")]


def test_messages_are_applied_next_step_in_time_source_sequence_order() -> None:
    """Published in core order (ascender before relay), applied by mission
    time, then source, then sequence, one step later."""
    to_orbiter: list[Send] = [("xfer", "orbiter", 20.0, {"n": "a20"}),
                              ("xfer", "orbiter", 5.0, {"n": "a5"})]
    from_relay: list[Send] = [("xfer", "orbiter", 5.0, {"n": "r5"}),
                              ("xfer", "orbiter", 5.0, {"n": "r5b"})]
    orbiter = Probe("orbiter", 100.0)
    loop = _loop(Probe("ascender", 100.0, {2: to_orbiter}), orbiter,
                 Probe("relay", 100.0, {2: from_relay}))
    loop.run(until_s=201.0)
    # ascender's seq 1, 2 are its two "stepped" events; the transfers follow
    assert orbiter.got == [(5.0, "ascender", 4, 2), (5.0, "relay", 3, 2),
                           (5.0, "relay", 4, 2), (20.0, "ascender", 3, 2)]


def test_a_command_makes_the_next_step_short_and_reaches_ground() -> None:
    """A command is prompt: the step after it lasts PROMPT_STEP_S (1 s). Ground,
    commanded by Queqiao-2, runs it with its own outbox; ground steps after the
    vehicles, so it applies their messages in the same step, at its start."""
    cmd: list[Send] = [("cmd", "ground", 101.0, {"op": "set_mode", "mode": "relay_test"})]
    loop = _loop(Probe("relay", 100.0, {2: cmd}))
    ends = _step_ends(loop, until_s=400.0)
    assert ends == [1.0, 101.0, 102.0, 202.0, 302.0, 400.0]
    changed = [e for e in loop.events if e.body["name"] == "mode_changed"]
    assert [(e.src, e.t, e.body["mode"]) for e in changed] == [("ground", 1.0, "relay_test")]


def test_run_until_stops_exactly_there_and_resumes() -> None:
    loop = _loop(Probe("lander", 100.0))
    assert _step_ends(loop, until_s=250.0) == [1.0, 101.0, 201.0, 250.0]
    assert loop.run(until_s=250.0).steps == 4  # already there: no step
    assert _step_ends(loop) == [350.0, 450.0, 550.0, 650.0, 750.0, 751.0]


def test_a_step_ends_on_each_plan_item() -> None:
    item = {"id": "m", "at": "2024-05-03T09:30:00Z", "target": "lander",  # mission s 151
            "command": {"op": "set_mode", "mode": "x"}}
    loop = _loop(Probe("lander", 100.0), items=[item])
    ends = _step_ends(loop)
    assert ends[:4] == [1.0, 101.0, 151.0, 152.0]  # the command then takes a prompt step


def test_step_limits_zero_means_none_and_below_one_second_counts() -> None:
    """A core returning 0 s sets no limit; a core asking 0.5 s gets 0.5 s."""
    loop = _loop(Probe("lander", 0.0), Probe("relay", 100.0))
    assert _step_ends(loop, until_s=3.0) == [1.0, 3.0]
    loop = _loop(Probe("lander", 0.5), Probe("relay", 100.0))
    assert _step_ends(loop, until_s=2.5) == [1.0, 1.5, 2.0, 2.5]


def test_ground_faults_are_announced_at_the_start_of_the_step() -> None:
    loop = _loop(Probe("lander", 100.0))
    loop.ground.faults["stall_clock"] = {"fault_id": "g1", "kind": "stall_clock",
                                         "target": "", "magnitude": 1.0, "since": 0.0,
                                         "duration_s": 0.0}
    loop.run(until_s=1.0)
    injected = [e for e in loop.events if e.body["name"] == "fault_injected"]
    assert [(e.src, e.t, e.body["fault_id"]) for e in injected] == [("ground", 0.0, "g1")]


def test_event_rows_flatten_an_event_for_the_report() -> None:
    loop = _loop(Probe("lander", 100.0))
    loop.run(until_s=1.0)
    assert event_rows(loop.events) == [{"name": "stepped", "vehicle": "lander", "t": 1.0}]


def test_nothing_is_recorded_unless_asked() -> None:
    loop = _loop(Probe("orbiter", 60.0))
    loop.run()
    assert loop.published is None  # a campaign of long runs keeps no copy


def test_a_recording_holds_every_message_under_the_missions_subjects() -> None:
    plan = parse_plan({"name": "t", "end": {"at": END_UTC}, "items": []})
    probe = Probe("orbiter", 300.0, {1: [("xfer", "lander", 10.0, {"type": "x"})]})
    loop = SimLoop(GroundCore(6, plan), {"orbiter": probe}, mission="ce6-b", record=True)
    result = loop.run()
    assert loop.published is not None and len(loop.published) == result.messages
    subjects = [subject for subject, _ in loop.published]
    assert all(s.startswith("twin.ce6-b.") for s in subjects)
    assert "twin.ce6-b.xfer.lander" in subjects
    assert [env for _, env in loop.published if env.kind == "event"] == result.events
    assert {env.mission for _, env in loop.published} == {"ce6-b"}
