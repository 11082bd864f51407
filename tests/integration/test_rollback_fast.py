"""Rollback to the last commit, on a short stretch of the nominal plan.

The same contract as the crash test in test_rollback.py (docs/recovery.md): a
service that loses its state, a service that lost messages, ground's own
restart or reconnect, and a whole twin stopped and started again all roll
every service back to the last commit, and the mission ends as the one flown
without any of it (mission log and every core's final state). Here the flight
is launch to just before TCM-2 (~80 steps, under a second), with a commit
every ten steps, and the clock is held at a chosen step by ``request_steps``
so that each rollback goes back to a known commit. What the platform says it
did is checked too: the ops records in the mission log, the metrics, the
epochs, the documented log lines.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import nats
import pytest
from prometheus_client import CollectorRegistry

from services.kernel.config import VEHICLES, ServiceConfig
from services.kernel.envelope import Envelope, decode, encode_fields
from services.kernel.runtime import ServiceRuntime
from services.kernel.snapstore import SnapshotError, SnapStore
from services.kernel.subjects import Subjects
from services.local.inproc import LocalTwin
from services.relay.vehicle import RelayCore
from tests.integration.test_rollback import _crash, _finals, _fresh, _mission_log
from tests.integration.twin_helpers import create_mission_streams, nominal_until

#: Launch, separation, TCM-1 with its burn (step 21), link passes: 78 steps.
PLAN_END = "2024-05-06T12:00:00Z"
#: A commit every this many steps (and never by wall time: SNAP_EVERY_S).
EVERY_STEPS = 10
SNAP_EVERY_S = 3600.0
#: The clock is held here; links are lost and acquired in steps 12-14, after
#: the commit at step 10, so the rollback runs steps again that published events.
HOLD_AT = 16
#: docs/recovery.md: the snapshot of step k is taken with tick k + 1 and
#: committed when every ack of k + 1 is in, every EVERY_STEPS steps.
COMMITTED = (HOLD_AT - 1) // EVERY_STEPS * EVERY_STEPS
ACK_TIMEOUT_S = 1.0
#: A bound on a hang, not a limit on the run time.
HANG_S = 60.0
POLL_S = 0.01

Flight = tuple[list[tuple[Any, ...]], dict[str, Any]]
_REFERENCE: dict[str, Flight] = {}


def _twin(nats_url: str, mission: str, **overrides: Any) -> LocalTwin:
    options: dict[str, Any] = {"start_paused": True, "ack_timeout_s": ACK_TIMEOUT_S,
                               "snapshot_every_steps": EVERY_STEPS,
                               "snapshot_every_s": SNAP_EVERY_S}
    options.update(overrides)
    return LocalTwin(nats_url, mission, nominal_until(PLAN_END, "rollback-fast"), **options)


async def _until(twin: LocalTwin, predicate: Callable[[], bool]) -> None:
    """Until ``predicate`` holds; at once an error if a service failed meanwhile."""
    async with asyncio.timeout(HANG_S):
        while not predicate():
            for rt in twin.all.values():
                assert rt.failure is None, f"{rt.name} failed: {rt.failure!r}"
            await asyncio.sleep(POLL_S)


async def _run_to(twin: LocalTwin, step: int) -> None:
    """Let the clock take steps until ground has completed ``step``, then hold."""
    clock = twin.ground.clock
    clock.request_steps(step - twin.ground.step)
    await _until(twin, lambda: clock.paused and twin.ground.step == step)


async def _step_in_flight(twin: LocalTwin, silent: tuple[str, ...]) -> None:
    """Let the held clock start the next step and return once every service but
    ``silent`` has taken it: ground waits for the silent ones' acks, so a
    rollback is asked for with a step in flight, as when a service crashes
    mid-step. (One step only, so the clock holds again after the rollback.)"""
    step = twin.ground.step + 1
    twin.ground.clock.request_steps(1)
    others = [rt for name, rt in twin.vehicles.items() if name not in silent]
    await _until(twin, lambda: all(rt.step == step for rt in others))
    assert twin.ground.step == step - 1


async def _held_after_rollback(twin: LocalTwin, epoch: int) -> None:
    """Until the rollback into ``epoch`` is over and the clock holds again."""
    clock = twin.ground.clock
    await _until(twin, lambda: clock.epoch == epoch and clock.status.mode == "paused")


def _stall(twin: LocalTwin, name: str) -> None:
    """A service that stops acknowledging (a ``stall_clock`` fault): a rollback
    restores it without the fault, which no commit held."""
    twin.vehicles[name].core.inject_fault("hold-the-step", "stall_clock")


async def _finish(twin: LocalTwin) -> None:
    twin.ground.clock.resume()
    await _until(twin, twin.ground.clock.finished.is_set)
    assert twin.ground.core.finished


async def _reference(nats_url: str, mission: str) -> Flight:
    """The mission flown without a crash (once per nats-server)."""
    if nats_url not in _REFERENCE:
        twin = _twin(nats_url, f"{mission}-ref", start_paused=False)
        await twin.start()
        try:
            await _until(twin, twin.ground.clock.finished.is_set)
            finals = _finals(twin)
        finally:
            await twin.stop()
        _REFERENCE[nats_url] = (await _mission_log(nats_url, f"{mission}-ref"), finals)
    return _REFERENCE[nats_url]


async def _ops_records(nats_url: str, mission: str) -> list[Envelope]:
    """The platform's records in the mission log (``ops.<service>``), in order."""
    subjects = Subjects(mission)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(subjects.stream_name, subjects_filter=subjects.all_of("ops"))
        count = sum((info.state.subjects or {}).values())
        if not count:
            return []
        sub = await js.subscribe(subjects.all_of("ops"), ordered_consumer=True)
        return [decode((await sub.next_msg(timeout=5.0)).data, mission=mission)
                for _ in range(count)]
    finally:
        await nc.close()


class _Counter:
    """Counts the messages on one subject (a core NATS subscription of its own)."""

    def __init__(self, nc: Any) -> None:
        self.nc, self.count = nc, 0

    async def on(self, _msg: Any) -> None:
        self.count += 1

    async def close(self) -> None:
        await self.nc.close()


async def _counting(nats_url: str, subject: str) -> _Counter:
    counter = _Counter(await nats.connect(nats_url))
    await counter.nc.subscribe(subject, cb=counter.on)
    await counter.nc.flush()
    return counter


async def _last_commit(rt: ServiceRuntime) -> dict[str, Any]:
    """The newest commit record, read back from the snapshot stream."""
    assert rt.bus.js is not None
    commit = await SnapStore(rt.bus.js, rt.subjects).last_commit()
    assert commit is not None
    return commit


def _count(rt: ServiceRuntime, metric: str, **labels: str) -> float:
    value = rt.registry.get_sample_value(
        metric, {"mission": rt.config.mission_id, "service": rt.name, **labels})
    return value or 0.0


def _rollbacks(rt: ServiceRuntime) -> dict[str, float]:
    return {reason: _count(rt, "twin_rollbacks_total", reason=reason)
            for reason in ("restart", "missing", "reconnect", "resume")}


def _logged(caplog: pytest.LogCaptureFixture, message: str,
            *fields: str) -> list[tuple[Any, ...]]:
    """The ``extra`` fields of each record logged with ``message``."""
    return [tuple(getattr(r, f, None) for f in fields) for r in caplog.records
            if r.getMessage() == message]


async def _assert_identical(twin: LocalTwin, nats_url: str, mission: str,
                            reference: Flight) -> None:
    log, finals = reference
    assert _finals(twin) == finals
    assert await _mission_log(nats_url, mission) == log  # each event once, none missing


def _assert_rollback(ops: list[Envelope], *, reason: str, epoch: int, at: tuple[int, float],
                     commit: dict[str, Any]) -> None:
    """One rollback as the mission log tells it: ground's ``rollback`` (where the
    mission was, where it goes back to), every service's ``restored`` at the
    commit, ground's ``rolled_back``."""
    to = (commit["step"], commit["t_s"])
    first, *restored, last = ops
    assert first.src == "ground" and first.body == {
        "name": "rollback", "reason": reason, "epoch": epoch, "to_step": to[0], "to_t_s": to[1]}
    assert (first.step, first.t) == at
    assert sorted(e.src for e in restored) == sorted(VEHICLES)
    for env in restored:
        assert env.body == {"name": "restored", "epoch": epoch}
        assert (env.step, env.t) == to
    assert last.src == "ground"
    assert last.body == {"name": "rolled_back", "reason": reason, "epoch": epoch}
    assert (last.step, last.t) == to


def _assert_logged(caplog: pytest.LogCaptureFixture, *, reason: str, epoch: int,
                   commit: dict[str, Any]) -> None:
    """The log lines docs/recovery.md names, with where the mission went back to."""
    to = (commit["step"], commit["t_s"], epoch)
    assert _logged(caplog, "rolling back to the last commit", "reason", "step", "epoch") == [
        (reason, commit["step"], epoch)]
    assert _logged(caplog, "restored a committed snapshot", "step", "t_s", "epoch") == [
        to] * len(VEHICLES)
    assert _logged(caplog, "rolled back; the mission runs on", "step", "t_s", "epoch") == [to]


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="twin")
    return caplog


@pytest.mark.parametrize("victim", ["lander", "ground"])
async def test_a_crashed_service_rolls_the_mission_back_to_the_last_commit(
        nats_url: str, mission_id: str, victim: str,
        records: pytest.LogCaptureFixture) -> None:
    reference = await _reference(nats_url, mission_id)
    twin = _twin(nats_url, mission_id)
    await twin.start()
    try:
        await _run_to(twin, HOLD_AT)
        at = (twin.ground.step, twin.ground.t_s)
        commit = await _last_commit(twin.ground)
        assert (commit["step"], commit["epoch"]) == (COMMITTED, 0)
        assert sorted(commit["parts"]) == sorted(twin.all)
        crashed = twin.all[victim]
        await _crash(crashed)
        again = _fresh(crashed)
        if victim == "ground":
            # A restarted ground finds its run's last commit and rolls back to it.
            twin.ground = again  # type: ignore[assignment]
            await again.start()
            reason, at = "resume", (0, 0.0)  # where the fresh ground stands
        else:
            # The crashed lander never acknowledges the next step; its new
            # process says hello while ground waits for that ack.
            twin.vehicles[victim] = again
            await _step_in_flight(twin, silent=(victim,))
            await again.start()
            reason = "restart"
        await _finish(twin)

        await _assert_identical(twin, nats_url, mission_id, reference)
        assert _rollbacks(twin.ground) == {r: float(r == reason) for r in _rollbacks(twin.ground)}
        for rt in twin.vehicles.values():
            assert _count(rt, "twin_restores_total") == 1.0
        # Every service joined the rollback's epoch; commits go on in it.
        assert twin.ground.clock.epoch == 1
        assert {name: rt.epoch for name, rt in twin.all.items()} == dict.fromkeys(twin.all, 1)
        last = await _last_commit(twin.ground)
        assert last["epoch"] == 1
        assert last["step"] == (twin.ground.step - 1) // EVERY_STEPS * EVERY_STEPS > COMMITTED
        ops = await _ops_records(nats_url, mission_id)
        _assert_rollback(ops, reason=reason, epoch=1, at=at, commit=commit)
        _assert_logged(records, reason=reason, epoch=1, commit=commit)
    finally:
        await twin.stop()


async def test_a_rollback_waits_for_a_service_that_comes_back_late_and_is_asked_once(
        nats_url: str, mission_id: str) -> None:
    """Two services crash; one comes back only after ground has asked the others
    again. The clock reads "recovering" meanwhile, and a service restored
    already is not restored twice."""
    ack_timeout_s = 0.5
    reference = await _reference(nats_url, mission_id)
    twin = _twin(nats_url, mission_id, ack_timeout_s=ack_timeout_s)
    await twin.start()
    try:
        clock = twin.ground.clock
        await _run_to(twin, HOLD_AT)
        commit = await _last_commit(twin.ground)
        at = (twin.ground.step, twin.ground.t_s)
        lander, orbiter = twin.vehicles["lander"], twin.vehicles["orbiter"]
        restores = await _counting(nats_url, Subjects(mission_id).restore)
        await _crash(lander)
        await _crash(orbiter)
        await _step_in_flight(twin, silent=("lander", "orbiter"))
        twin.vehicles["lander"] = lander = _fresh(lander)
        await lander.start()
        back = [rt for name, rt in twin.vehicles.items() if name != "orbiter"]
        await _until(twin, lambda: all(rt.epoch == 1 for rt in back))
        await asyncio.sleep(3 * ack_timeout_s)  # ground asks the services again meanwhile
        assert clock.mode == "recovering"
        # Asked again once an ack timeout, not once per hello of every restored
        # service (each answers a restore with a hello: thousands a second).
        assert 2 <= restores.count <= 3 + 2
        await restores.close()
        assert twin.ground.step == COMMITTED  # ground restored its own part at once
        assert not clock.finished.is_set()
        twin.vehicles["orbiter"] = orbiter = _fresh(orbiter)
        await orbiter.start()
        await _finish(twin)

        await _assert_identical(twin, nats_url, mission_id, reference)
        assert _rollbacks(twin.ground) == {"restart": 1.0, "missing": 0.0, "reconnect": 0.0,
                                           "resume": 0.0}
        for rt in twin.vehicles.values():
            assert _count(rt, "twin_restores_total") == 1.0
        ops = await _ops_records(nats_url, mission_id)
        _assert_rollback(ops, reason="restart", epoch=1, at=at, commit=commit)
    finally:
        await twin.stop()


async def test_ground_reconnecting_rolls_back_once_something_is_committed(
        nats_url: str, mission_id: str) -> None:
    """NATS may have lost messages while ground was away: roll back, every time
    (twice here), once; before the first commit nothing has run that could be
    lost. Paced at a warp, so the pacing starts again from the restored time."""
    reference = await _reference(nats_url, mission_id)
    twin = _twin(nats_url, mission_id, warp=1e6)
    await twin.start()
    try:
        ground, clock = twin.ground, twin.ground.clock
        await ground.reconnected()  # all present, no step yet: nothing to roll back to
        await _run_to(twin, HOLD_AT)
        assert _rollbacks(ground)["reconnect"] == 0.0
        first = await _last_commit(ground)
        at_first = (ground.step, ground.t_s)
        later = 3 * EVERY_STEPS + HOLD_AT % EVERY_STEPS  # 36: past the commit at 30
        _stall(twin, "relay")
        await _step_in_flight(twin, silent=("relay",))
        await ground.reconnected()
        clock.request_rollback("restart")  # asked while one is pending: still one
        await _held_after_rollback(twin, 1)
        await _run_to(twin, later)
        second = await _last_commit(ground)
        assert (second["step"], second["epoch"]) == ((later - 1) // EVERY_STEPS * EVERY_STEPS, 1)
        at_second = (ground.step, ground.t_s)
        _stall(twin, "relay")
        await _step_in_flight(twin, silent=("relay",))
        await ground.reconnected()
        await _finish(twin)

        await _assert_identical(twin, nats_url, mission_id, reference)
        assert _rollbacks(ground) == {"restart": 0.0, "missing": 0.0, "reconnect": 2.0,
                                      "resume": 0.0}
        assert {name: rt.epoch for name, rt in twin.all.items()} == dict.fromkeys(twin.all, 2)
        ops = await _ops_records(nats_url, mission_id)
        assert len(ops) == 2 * (len(VEHICLES) + 2)
        half = len(VEHICLES) + 2
        _assert_rollback(ops[:half], reason="reconnect", epoch=1, at=at_first, commit=first)
        _assert_rollback(ops[half:], reason="reconnect", epoch=2, at=at_second, commit=second)
    finally:
        await twin.stop()


async def test_a_restarted_ground_goes_past_every_epoch_a_service_has_joined(
        nats_url: str, mission_id: str) -> None:
    """The lander crashes (epoch 1), then ground crashes before the next commit:
    the commit it finds is of epoch 0, but the services have joined 1 already,
    so its rollback must be epoch 2 or they would take it for done."""
    reference = await _reference(nats_url, mission_id)
    twin = _twin(nats_url, mission_id)
    await twin.start()
    try:
        await _run_to(twin, HOLD_AT)
        commit = await _last_commit(twin.ground)
        await _crash(twin.vehicles["lander"])
        twin.vehicles["lander"] = lander = _fresh(twin.vehicles["lander"])
        await _step_in_flight(twin, silent=("lander",))
        await lander.start()
        await _held_after_rollback(twin, 1)
        await _run_to(twin, COMMITTED + EVERY_STEPS - 2)  # 18: no commit yet in epoch 1
        assert all(rt.epoch == 1 for rt in twin.all.values())
        assert await _last_commit(twin.ground) == commit
        await _crash(twin.ground)
        twin.ground = ground = _fresh(twin.ground)  # type: ignore[assignment]
        await ground.start()
        await _finish(twin)

        await _assert_resumed(twin, nats_url, mission_id, reference, commit)
    finally:
        await twin.stop()


async def _assert_resumed(twin: LocalTwin, nats_url: str, mission_id: str,
                         reference: Flight, commit: dict[str, Any]) -> None:
    """A restarted ground resumed the run: the mission as the reference flew it,
    every service in epoch 2, and the resume's rollback recorded from the commit."""
    await _assert_identical(twin, nats_url, mission_id, reference)
    assert {name: rt.epoch for name, rt in twin.all.items()} == dict.fromkeys(twin.all, 2)
    ops = await _ops_records(nats_url, mission_id)
    _assert_rollback(ops[len(VEHICLES) + 2:], reason="resume", epoch=2, at=(0, 0.0),
                     commit=commit)


async def test_a_service_that_lost_messages_has_the_mission_rolled_back(
        nats_url: str, mission_id: str) -> None:
    """A lander whose inbox never got what the tick counted acknowledges with
    ``missing`` (played here by the test, the real lander held by a
    ``stall_clock`` fault): ground gives up the step at once and rolls back;
    the restore also ends the fault, which the commit never held."""
    reference = await _reference(nats_url, mission_id)
    twin = _twin(nats_url, mission_id)
    await twin.start()
    try:
        await _run_to(twin, HOLD_AT)
        commit = await _last_commit(twin.ground)
        at = (twin.ground.step, twin.ground.t_s)
        _stall(twin, "lander")
        await _step_in_flight(twin, silent=("lander",))
        subjects = twin.ground.subjects
        ack = {"step": HOLD_AT + 1, "epoch": 0, "missing": {subjects.transfer("lander"): 1}}
        assert twin.ground.bus.nc is not None
        await twin.ground.bus.nc.publish(subjects.ack("lander"), encode_fields(
            mission_id, "lander", 10**6, at[1], HOLD_AT, "ack", ack))
        await _finish(twin)

        await _assert_identical(twin, nats_url, mission_id, reference)
        assert _rollbacks(twin.ground) == {"restart": 0.0, "missing": 1.0, "reconnect": 0.0,
                                           "resume": 0.0}
        _assert_rollback(await _ops_records(nats_url, mission_id), reason="missing", epoch=1,
                         at=at, commit=commit)
    finally:
        await twin.stop()


async def test_a_stopped_mission_resumes_from_its_last_commit(
        nats_url: str, mission_id: str) -> None:
    """Every service stopped (a twin stopped by a signal), then started again on
    the same mission: ground finds the run's last commit, of an epoch past 0
    here, rolls the fresh services back to it and runs only the steps after it."""
    reference = await _reference(nats_url, mission_id)
    first = _twin(nats_url, mission_id)
    await first.start()
    try:
        await _run_to(first, HOLD_AT)
        _stall(first, "relay")
        await _step_in_flight(first, silent=("relay",))
        await first.ground.reconnected()  # a rollback first, so commits are of epoch 1
        await _held_after_rollback(first, 1)
        await _run_to(first, 2 * EVERY_STEPS + HOLD_AT % EVERY_STEPS)  # 26: past commit 20
        commit = await _last_commit(first.ground)
        assert (commit["step"], commit["epoch"]) == (2 * EVERY_STEPS, 1)
    finally:
        await first.stop()
    again = _twin(nats_url, mission_id, start_paused=False)
    await again.start()
    try:
        await _until(again, again.ground.clock.finished.is_set)
        ground = again.ground
        assert _rollbacks(ground) == {"restart": 0.0, "missing": 0.0, "reconnect": 0.0,
                                      "resume": 1.0}
        # Only the steps after the commit were run again.
        assert _count(ground, "twin_clock_steps_total") == ground.step - commit["step"]
        await _assert_resumed(again, nats_url, mission_id, reference, commit)
    finally:
        await again.stop()


async def test_a_restore_is_answered_by_a_hello_or_fails_a_service_without_snapshots(
        nats_url: str, mission_id: str) -> None:
    """Playing ground: a restore of an epoch the relay has joined already is
    answered by a hello (ground missed it); a new one, on a relay that keeps no
    snapshots, stops the relay saying why."""
    config = ServiceConfig(service="relay", mission_id=mission_id, nats_urls=(nats_url,),
                           grpc_port=0, metrics_port=-1, snapshot_every_steps=0,
                           insecure=True)
    relay = ServiceRuntime(RelayCore(config.seed), config, CollectorRegistry())
    await create_mission_streams(nats_url, mission_id)  # ground's part: it is not here
    subjects = Subjects(mission_id)
    nc = await nats.connect(nats_url)
    hellos: asyncio.Queue[Envelope] = asyncio.Queue()

    async def on_hello(msg: Any) -> None:
        await hellos.put(decode(msg.data, mission=mission_id))

    await nc.subscribe(subjects.hello("relay"), cb=on_hello)
    await relay.start()
    try:
        assert (await asyncio.wait_for(hellos.get(), HANG_S)).body["epoch"] == 0
        commit = {"step": 0, "t_s": 0.0, "epoch": 0, "max_dt_s": 1.0,
                  "parts": {"relay": {"seq": 1, "digest": "0" * 64, "bytes": 1}}}
        for seq, epoch in enumerate((0, 1), start=1):
            await nc.publish(subjects.restore, encode_fields(
                mission_id, "ground", seq, 0.0, 0, "restore", {"epoch": epoch, "commit": commit}))
            if epoch == 0:
                answer = await asyncio.wait_for(hellos.get(), HANG_S)
                assert answer.body["epoch"] == 0 and answer.body["boot"] == relay.boot
        await asyncio.wait_for(relay.stopping.wait(), HANG_S)
        assert isinstance(relay.failure, SnapshotError)
        assert str(relay.failure).startswith("a rollback was asked but snapshots are off")
        assert relay.epoch == 0
        assert _count(relay, "twin_restores_total") == 0.0
    finally:
        await nc.close()
        await relay.stop()



async def test_a_service_restarted_while_the_clock_is_paused_is_rolled_back_at_once(
        nats_url: str, mission_id: str) -> None:
    """No step in flight: the rollback runs while paused (the clock stays paused),
    so the first step after Resume is one every service can take."""
    reference = await _reference(nats_url, mission_id)
    twin = _twin(nats_url, mission_id)
    await twin.start()
    try:
        await _run_to(twin, HOLD_AT)
        await _crash(twin.vehicles["lander"])
        twin.vehicles["lander"] = again = _fresh(twin.vehicles["lander"])
        await again.start()
        await _held_after_rollback(twin, 1)
        assert twin.ground.step == COMMITTED and twin.ground.clock.paused
        await _finish(twin)
        await _assert_identical(twin, nats_url, mission_id, reference)
    finally:
        await twin.stop()


async def test_a_step_given_up_for_a_rollback_is_not_counted(
        nats_url: str, mission_id: str) -> None:
    """Step N takes N steps: the step in flight when a rollback is asked for is
    not taken (nor counted in twin_clock_steps_total); N steps follow the commit."""
    twin = _twin(nats_url, mission_id)
    await twin.start()
    try:
        await _run_to(twin, HOLD_AT)
        _stall(twin, "relay")
        twin.ground.clock.request_steps(EVERY_STEPS)
        others = [rt for name, rt in twin.vehicles.items() if name != "relay"]
        await _until(twin, lambda: all(rt.step == HOLD_AT + 1 for rt in others))
        await twin.ground.reconnected()
        await _until(twin, lambda: twin.ground.clock.epoch == 1 and twin.ground.clock.paused)
        assert twin.ground.step == COMMITTED + EVERY_STEPS
        assert _count(twin.ground, "twin_clock_steps_total") == HOLD_AT + EVERY_STEPS
    finally:
        await twin.stop()


async def test_without_snapshots_a_restarted_service_stops_ground_saying_why(
        nats_url: str, mission_id: str) -> None:
    """docs/recovery.md: nothing committed, nothing to recover: ground fails
    loudly rather than fly on with a service that lost its state."""
    twin = _twin(nats_url, mission_id, snapshot_every_steps=0)
    await twin.start()
    try:
        await _run_to(twin, HOLD_AT)
        await _crash(twin.vehicles["lander"])
        twin.vehicles["lander"] = again = _fresh(twin.vehicles["lander"])
        await again.start()
        await asyncio.wait_for(twin.ground.stopping.wait(), HANG_S)  # a failure stops it
        assert isinstance(twin.ground.failure, SnapshotError)
        assert "a rollback is needed (restart) but nothing is committed" in str(
            twin.ground.failure)
    finally:
        await twin.stop()
