"""Subject scheme, the deterministic inbox, and the step rule's message order."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from services.kernel.bus import subject_matches
from services.kernel.envelope import Envelope
from services.kernel.inbox import Inbox
from services.kernel.steprule import in_order
from services.kernel.subjects import Subjects


def test_subjects_carry_the_mission_id() -> None:
    s = Subjects("ce6-b")
    assert s.tick == "twin.ce6-b.clock.tick"
    assert s.ack("orbiter") == "twin.ce6-b.clock.ack.orbiter"
    assert s.telemetry("lander") == "twin.ce6-b.tm.lander"
    assert s.event("reentry") == "twin.ce6-b.evt.reentry"
    assert s.all_of("evt") == "twin.ce6-b.evt.*"
    assert s.stream_name == "TWIN_CE6_B"
    assert s.kind_of("twin.ce6-b.clock.ack.relay") == "clock.ack"
    assert s.kind_of("twin.ce6-b.tm.relay") == "tm"


@pytest.mark.parametrize(("pattern", "subject", "match"), [
    ("twin.m.evt.*", "twin.m.evt.lander", True),
    ("twin.m.evt.*", "twin.m.evt.lander.x", False),
    ("twin.m.>", "twin.m.evt.lander.x", True),
    ("twin.m.cmd.orbiter", "twin.m.cmd.lander", False),
    ("twin.m.cmd.orbiter", "twin.m.cmd.orbiter", True),
])
def test_wildcards(pattern: str, subject: str, match: bool) -> None:
    assert subject_matches(pattern, subject) is match


def _e(src: str, seq: int, t: float, step: int) -> Envelope:
    return Envelope("m", src, seq, t, step, "transfer", {})


async def test_inbox_orders_by_time_source_sequence_and_keeps_later_steps() -> None:
    box = Inbox()
    for env in [_e("relay", 2, 5.0, 1), _e("lander", 4, 5.0, 1), _e("lander", 3, 4.0, 1),
                _e("orbiter", 1, 1.0, 2)]:
        box.add(env, "twin.m.xfer.x")
    taken = in_order(box.take(1))
    assert [(e.src, e.seq) for e in taken] == [("lander", 3), ("lander", 4), ("relay", 2)]
    assert len(box) == 1


async def test_inbox_orders_same_time_same_source_by_sequence_whatever_the_arrival() -> None:
    # Two commands from ground at one mission time (e.g. a plan item and a
    # time-tagged command due together): only seq says which ground sent first.
    sent = [_e("ground", seq, 5.0, 1) for seq in (7, 8, 9)]
    for arrival in itertools.permutations(sent):
        box = Inbox()
        for env in arrival:
            box.add(env, "twin.m.cmd.lander")
        assert [e.seq for e in in_order(box.take(1))] == [7, 8, 9], arrival


async def test_inbox_waits_for_messages_still_on_their_way() -> None:
    box = Inbox()

    async def late() -> None:
        await asyncio.sleep(0.05)
        box.add(_e("relay", 1, 1.0, 3), "twin.m.xfer.x")

    task = asyncio.create_task(late())
    missing = await box.wait_for(3, {"twin.m.xfer.x": 1}, timeout_s=5.0)
    await task
    assert missing == {}
    assert await box.wait_for(3, {"twin.m.xfer.x": 2}, timeout_s=0.05) == {"twin.m.xfer.x": 1}


def test_every_clock_subject_is_under_the_clock_root() -> None:
    s = Subjects("ce6")
    assert s.clock_root == "twin.ce6.clock"
    for subject in (s.tick, s.roll, s.ack("orbiter"), s.hello("relay")):
        assert subject.startswith(s.clock_root + ".")


async def test_after_a_rollback_stale_and_duplicate_messages_are_dropped() -> None:
    box = Inbox()
    restored = [_e("relay", 4, 10.0, 7)]  # held in the snapshot of step 7
    box.reset(restored, floor=7)
    assert not box.add(_e("lander", 9, 9.0, 7), "twin.m.xfer.x")  # step 7: stale
    assert not box.add(_e("relay", 4, 10.0, 7), "twin.m.xfer.x")  # stale too
    assert box.add(_e("lander", 10, 11.0, 8), "twin.m.xfer.x")  # run again: new
    assert not box.add(_e("lander", 10, 11.0, 8), "twin.m.xfer.x")  # the old run's copy
    assert box.missing(8, {"twin.m.xfer.x": 1}) == {}  # counted once
    assert [(e.src, e.seq) for e in in_order(box.take(8))] == [("relay", 4), ("lander", 10)]
    assert not box.add(_e("lander", 10, 11.0, 8), "twin.m.xfer.x")  # taken: stale now
    assert len(box) == 0


async def test_a_closed_inbox_ends_a_wait_at_once_saying_what_is_missing() -> None:
    box = Inbox()
    waiting = asyncio.ensure_future(box.wait_for(3, {"twin.m.xfer.x": 2}, timeout_s=60.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    box.close()  # the service is stopping
    assert await asyncio.wait_for(waiting, 1.0) == {"twin.m.xfer.x": 2}


def test_missing_counts_what_has_not_arrived_of_each_subject() -> None:
    box = Inbox()
    assert box.missing(4, {"a": 1, "b": 3}) == {"a": 1, "b": 3}  # nothing yet
    box.add(_e("relay", 1, 1.0, 4), "b")
    assert box.missing(4, {"a": 1, "b": 3}) == {"a": 1, "b": 2}
    box.add(_e("lander", 1, 1.0, 4), "a")
    assert box.missing(4, {"a": 1, "b": 1}) == {}
    assert box.missing(5, {"b": 1}) == {"b": 1}  # counted per step


def test_a_taken_step_forgets_its_counts() -> None:
    # Counts of taken steps are dropped (one map per step would grow all mission).
    box = Inbox()
    box.add(_e("relay", 1, 1.0, 4), "b")
    box.add(_e("relay", 2, 2.0, 5), "b")
    assert box.missing(4, {"b": 1}) == {}
    box.take(4)
    assert box.missing(4, {"b": 1}) == {"b": 1}
    assert box.missing(5, {"b": 1}) == {}  # a later step's count is kept


async def test_a_short_wait_still_waits_for_its_message() -> None:
    box = Inbox()

    async def late() -> None:
        await asyncio.sleep(0.05)
        box.add(_e("relay", 1, 1.0, 3), "x")

    task = asyncio.create_task(late())
    assert await box.wait_for(3, {"x": 1}, timeout_s=0.9) == {}
    await task


def test_a_local_message_is_held_once_and_a_copy_of_it_dropped() -> None:
    # A command given to a vehicle over gRPC is held in-process (not published):
    # it is held like any message, so a copy with its source and sequence is a
    # duplicate, and it has no subject whose count it could complete.
    box = Inbox()
    local = _e("ground", 7, 3.0, 2)
    box.add_local(local)
    assert box.held == [local]
    assert not box.add(_e("ground", 7, 3.0, 2), "twin.m.cmd.lander")
    assert box.missing(2, {"twin.m.cmd.lander": 1}) == {"twin.m.cmd.lander": 1}  # not counted
    assert box.take(2) == [local]
