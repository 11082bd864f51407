"""The lock-step mission clock, authority side (run by ground).

Step ``k`` goes: tick ``(k, t_from, t_to, expect)`` -> every live service
takes the step by the step rule (services/kernel/steprule.py) and acknowledges
with the largest next step it accepts -> when every ack is in, ground takes the
step by the same rule, last, issuing what the flight plan makes due -> step
``k + 1``. The next ``t_to`` is the smallest of: the acks' largest steps, the
next scheduled flight-plan instant, a run-until target and the end of the
mission, so the clock stops exactly on scheduled events.

A service that stops acknowledging is reported (metric, log, ClockState) and
the tick is sent again; the clock waits for it instead of running on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.kernel.envelope import Envelope
from services.kernel.runtime import ServiceRuntime
from services.kernel.snapstore import SnapshotError, Stored
from services.kernel.steprule import FIRST_STEP_S, next_max_dt, next_t_to, take_step

log = logging.getLogger("twin.clock")

# Wall seconds between roll calls while waiting for services. A roll call goes
# out on this period only: a hello wakes the clock to see who is there but calls
# no new roll, since every present service answers each roll (a roll per hello
# fed itself, hundreds a second).
ROLL_CALL_PERIOD_S = 0.2
#: Wall seconds of each steps/s window (ClockState.steps_per_second, step_rate).
RATE_WINDOW_S = 1.0


class PlanCore(Protocol):
    """What the clock needs from ground's state (the flight plan)."""

    finished: bool

    @property
    def end_t_s(self) -> float: ...

    def next_stop_after(self, t_s: float) -> float: ...
    def has_seen(self, event: str) -> bool: ...
    def item_ids(self) -> frozenset[str]: ...


@dataclass
class ClockStatus:
    mode: str = "starting"  # starting, running, paused, waiting, recovering, finished
    warp: float = 0.0  # 0 = as fast as possible
    waiting_for: list[str] = field(default_factory=list)
    steps_per_second: float = 0.0
    run_until_t_s: float = -1.0
    run_until_event: str = ""


class StepTimes:
    """When each step ended, in mission time, from the first step this ground
    ran or restored: what a fork ``--at step N`` needs (services/ground/fork.py).
    8 bytes a step: ~42 kB for the ~5,200 steps of the nominal mission. Not
    snapshotted: a restarted ground knows the steps since its restore only."""

    def __init__(self) -> None:
        self.first = 0  # the step of ends[0]
        self.ends = array("d")

    def record(self, step: int, t_s: float) -> None:
        """Step ``step`` ended at ``t_s``; a step at or before the last known one
        (run again after a rollback) forgets what came after it first."""
        nxt = self.first + len(self.ends)
        if self.ends and self.first <= step < nxt:
            del self.ends[step - self.first:]
        elif step != nxt:  # no history yet, or a gap (restored further on)
            self.first, self.ends = step, array("d")
        self.ends.append(t_s)

    def end_of(self, step: int) -> float | None:
        """When ``step`` ended, or None if it is not known here."""
        i = step - self.first
        return self.ends[i] if 0 <= i < len(self.ends) else None

    def step_at(self, t_s: float) -> int | None:
        """The last step that ended at or before ``t_s`` (None: before the history)."""
        i = bisect_right(self.ends, t_s)
        return self.first + i - 1 if i else None


def _is_pub(pub: Any) -> bool:
    """An ack's ``pub``: messages published per subject, {str: int >= 0}."""
    return type(pub) is dict and all(type(s) is str and type(n) is int and n >= 0
                                     for s, n in pub.items())


class ClockAuthority:
    def __init__(self, rt: ServiceRuntime, plan: PlanCore, expect: tuple[str, ...],
                 warp: float, start_paused: bool, ack_timeout_s: float) -> None:
        self.rt, self.plan = rt, plan
        self.expect = expect
        self.ack_timeout_s = ack_timeout_s
        self.status = ClockStatus(warp=warp)
        self.present: dict[str, dict[str, Any]] = {}
        self._paused = start_paused
        self._step_budget: int | None = None
        self._acks: set[str] = set()  # who has acknowledged the current step
        # What the current step's acks said, gathered as they come: their largest
        # steps, what they published (for the next tick's expect), and whether
        # one must act on a message at once.
        self._ack_dts: list[float] = []
        self._ack_pub: dict[str, int] = {}
        self._ack_prompt = False
        self._ack_step = -1
        self._all_acked: asyncio.Future[None] | None = None
        self._changed = asyncio.Event()
        self._expect_next: dict[str, int] = {}
        self._max_dt = FIRST_STEP_S
        self._anchor: tuple[float, float] | None = None  # (mission t, wall t) for warp pacing
        # (wall start, steps since): opened at the first tick and again on each
        # resume, so neither start-up nor a pause is counted as slow stepping.
        self._rate_window: tuple[float, int] = (time.monotonic(), 0)
        self.finished = asyncio.Event()
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._tick_sent_at = 0.0
        self._tick_data = b""
        m = rt.metrics  # histogram series bound once: they are fed every step
        self._ack_cells = {peer: m.ack_latency.cell(peer) for peer in expect}
        self._step_cell = m.step_duration.cell()
        self._tick_subject = rt.subjects.tick
        # Coordinated snapshots and rollback: the last commit (what a rollback
        # restores), ground's own part of the set being gathered, the peers'
        # parts from their acks, and the rollback asked for, if any.
        self.epoch = 0
        self.commit: dict[str, Any] | None = None
        # The next commit is due at this step or wall time (-1: snapshots off);
        # 0 and 0.0 until the first, on the first tick.
        self._snap_next_step = 0
        self._snap_next_wall = 0.0
        self._ack_snaps: dict[str, Any] = {}
        self._rollback_reason = ""
        self._recovering = False
        self._restored: set[str] = set()
        self.step_times = StepTimes()

    # --- subscriptions -------------------------------------------------------
    async def attach(self) -> None:
        s = self.rt.subjects
        await self.rt.bus.subscribe(s.all_of("clock.ack"), self._on_ack)
        await self.rt.bus.subscribe(s.all_of("clock.hello"), self._on_hello)

    def _on_hello(self, env: Envelope, subject: str) -> None:
        if env.src not in self.expect:
            return
        body = env.body
        if not isinstance(body.get("boot"), str) or type(body.get("step")) is not int:
            # A hello without a boot id would read as another process of the
            # service (a whole-mission rollback): dropped like a malformed message.
            self.rt.metrics.child("decode_errors", "bad_hello").inc()
            log.warning("dropped malformed hello",
                        extra={"peer": env.src, "body": repr(body)[:200]})
            return
        before = self.present.get(env.src)
        self.present[env.src] = env.body
        if self._recovering:
            if env.body.get("epoch") == self.epoch:
                self._restored.add(env.src)
            self._changed.set()  # restored, or (re)started and in need of the restore
            return
        if before is None:
            self._changed.set()  # answers to later roll calls change nothing to wait on
        elif (before.get("boot") != env.body.get("boot") and self.rt.step > 0
              and not self.plan.finished):
            # Another process of a service while the mission runs: it restarted
            # and lost its state, and only a rollback brings it back in step.
            log.warning("service restarted", extra={"peer": env.src})
            self.request_rollback("restart")

    def _on_ack(self, env: Envelope, subject: str) -> None:
        src, acks, body = env.src, self._acks, env.body
        cell = self._ack_cells.get(src)
        if (body.get("step") != self._ack_step or cell is None or src in acks
                or body.get("epoch", 0) != self.epoch):
            return
        if "missing" in body:  # the peer could not take the step as it was
            log.error("messages never reached a service",
                      extra={"peer": src, "step": self._ack_step, "missing": body["missing"]})
            self.request_rollback("missing")
            return
        dt, pub = body.get("max_dt_s", FIRST_STEP_S), body.get("pub")
        if (type(dt) is not float and type(dt) is not int) or (pub and not _is_pub(pub)):
            # A well-formed envelope whose body the clock cannot use: dropped
            # like a malformed message, and the peer's real ack still counts.
            self.rt.metrics.child("decode_errors", "bad_ack").inc()
            log.warning("dropped malformed acknowledgement",
                        extra={"peer": src, "step": self._ack_step, "body": repr(body)[:200]})
            return
        acks.add(src)
        self._ack_dts.append(dt)
        if pub:
            sums = self._ack_pub
            for s, n in pub.items():
                sums[s] = sums.get(s, 0) + n
        if body.get("prompt"):
            self._ack_prompt = True
        if "snap" in body:
            self._ack_snaps[src] = body["snap"]
        self.rt.metrics.ack_latency.observe(cell, time.perf_counter() - self._tick_sent_at)
        done = self._all_acked
        if len(acks) == len(self.expect) and done is not None and not done.done():
            done.set_result(None)

    # --- control (gRPC) --------------------------------------------------------
    def pause(self) -> None:
        self._paused = True
        self._publish_state_metrics()
        self._changed.set()

    def resume(self) -> None:
        self._paused = False
        self._step_budget = None
        self._anchor = None
        self._publish_state_metrics()
        self._changed.set()

    def set_warp(self, warp: float) -> None:
        self.status.warp = warp
        self._anchor = None
        self._publish_state_metrics()
        self._changed.set()

    def request_steps(self, n: int) -> None:
        self._step_budget = n
        self._paused = False
        self._anchor = None
        self._publish_state_metrics()
        self._changed.set()

    def run_until(self, t_s: float | None, event: str | None) -> None:
        self.status.run_until_t_s = t_s if t_s is not None else -1.0
        self.status.run_until_event = event or ""
        self.resume()
        self._notify()  # a call waiting on the target it replaces learns it now

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        if predicate():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, fut))
        await fut

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def mode(self) -> str:
        """The mode as operators are answered: the one the clock is in, or will be
        in once the step in flight completes (``status.mode`` is the loop's own,
        which follows a control call only when the loop next looks). A pause
        answers "paused" at once because no further step will start; the roll
        call and the end keep their own modes."""
        loop_mode = self.status.mode
        if self.plan.finished:
            return "finished"
        if loop_mode in ("starting", "recovering"):
            return loop_mode
        if self._paused:
            return "paused"
        return "waiting" if loop_mode == "waiting" else "running"

    # --- the loop ------------------------------------------------------------
    async def run(self) -> None:
        config = self.rt.config
        if not config.snapshot_every_steps or self.rt.snapstore is None:
            self._snap_next_step = -1  # snapshots off
        await self._roll_call()
        self._open_rate_window()
        self._publish_state_metrics()
        watchdog = asyncio.create_task(self._watchdog(), name="ack-watchdog")
        try:
            await self._run_steps()
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    async def _run_steps(self) -> None:
        # Thousands of steps a wall second as fast as possible: the coroutines
        # that have nothing to do then (waiting while paused, pacing) are not called.
        while not self.plan.finished and not self.rt.stopping.is_set():
            if self._rollback_reason:
                await self._rollback()
                continue
            if self._paused:
                if not await self._wait_runnable():
                    break
                continue  # a rollback asked for while paused comes first
            self.status.mode = "running"
            t_from = self.rt.t_s
            t_to = self._next_t_to(t_from)
            if self.status.warp > 0 and not await self._pace(t_to):
                continue  # a control call came first: its pause, target or warp decide
            if await self._do_step(self.rt.step + 1, t_from, t_to):
                self._after_step()
        self.status.mode = "finished" if self.plan.finished else self.status.mode
        self._notify()
        self.finished.set()
        log.info("clock stopped", extra={"step": self.rt.step, "t_s": self.rt.t_s,
                                          "mode": self.status.mode})

    async def _roll_call(self) -> None:
        """Call the roll every ROLL_CALL_PERIOD_S until every expected service is present."""
        next_roll = time.monotonic()  # wall time paces roll calls only
        while True:
            self._changed.clear()  # before looking: a hello from now on wakes the wait
            missing = [s for s in self.expect if s not in self.present]
            if not missing or self.rt.stopping.is_set():
                break
            self.status.waiting_for = missing
            now = time.monotonic()
            if now >= next_roll:
                await self.rt.bus.send(self.rt.subjects.roll, "roll", {}, self.rt.t_s,
                                       self.rt.step)
                next_roll = now + ROLL_CALL_PERIOD_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), next_roll - now)
        if self.rt.stopping.is_set():
            return
        self.status.waiting_for = []
        self.status.mode = "paused" if self._paused else "running"
        log.info("all services present", extra={"services": ",".join(self.expect)})

    async def _wait_runnable(self) -> bool:
        """Wait while paused; False if the service is stopping. A rollback asked
        for meanwhile ends the wait (it runs at once; the clock stays paused)."""
        while self._paused and not self._rollback_reason:
            self.status.mode = "paused"
            self._publish_state_metrics()
            self._notify()
            self._changed.clear()
            stop = asyncio.create_task(self.rt.stopping.wait())
            change = asyncio.create_task(self._changed.wait())
            await asyncio.wait({stop, change}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            change.cancel()
            if self.rt.stopping.is_set():
                return False
        self._open_rate_window()
        return True

    def _next_t_to(self, t_from: float) -> float:
        plan = self.plan
        return next_t_to(t_from, self._max_dt, plan.next_stop_after(t_from), plan.end_t_s,
                         self.status.run_until_t_s)

    async def _pace(self, t_to: float) -> bool:
        """Wait until `t_to` is due at the warp; False when a change (a control
        call) came first, so the step is planned again rather than taken early
        with a `t_to` that may pass a new run-until target."""
        warp = self.status.warp
        now = time.monotonic()  # wall time paces real-time x warp runs only
        if self._anchor is None:
            self._anchor = (self.rt.t_s, now)
        t0, w0 = self._anchor
        delay = w0 + (t_to - t0) / warp - now
        if delay <= 0:
            return True
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), delay)
        except TimeoutError:
            return True
        return False

    async def _do_step(self, step: int, t_from: float, t_to: float) -> bool:
        """Tick ``step``, wait for every ack, take ground's part; False if the
        step was given up for a rollback (not taken: nothing counts it)."""
        rt = self.rt
        tick: dict[str, Any] = {"step": step, "t_from": t_from, "t_to": t_to,
                                "expect": self._expect_next}
        if self.epoch:
            tick["epoch"] = self.epoch
        # The snapshot is stored before this step's wait begins: while the store
        # is awaited, the watchdog must still see the last step (all acked), not
        # a step whose tick has not been sent (it would resend the old tick and
        # report every peer overdue).
        own_snap = await self._snapshot_if_due(tick)
        if self._rollback_reason:
            return False  # asked for while storing: the loop rolls back first
        self._acks, self._ack_step = set(), step
        self._ack_dts, self._ack_pub, self._ack_prompt = [], {}, False
        self._all_acked = asyncio.get_running_loop().create_future()
        self._tick_sent_at = time.perf_counter()  # wall time for latency metrics only
        data = await rt.bus.send(self._tick_subject, "tick", tick, t_from, step - 1)
        self._tick_data = data  # for the watchdog to send again
        if not self._all_acked.done():
            await self._all_acked
        if self._rollback_reason:
            return False  # the step is not taken: the loop rolls the mission back first
        if self.status.waiting_for:
            self._acks_complete_again(step)
        rt.metrics.step_duration.observe(self._step_cell, time.perf_counter() - self._tick_sent_at)
        if own_snap is not None:
            await self._commit(step - 1, t_from, own_snap)
        pub = self._ack_pub
        # Ground takes the step last: what the vehicles published in it too.
        held: list[Any] = []
        if pub or rt.inbox.held:  # most steps of a coast bring ground nothing
            held, missing = await rt.collect(step, rt.expected_for_me(pub) if pub else pub)
            if missing:
                self.request_rollback("missing")
                return False
        ground_dt = take_step(rt.core, held, t_from, t_to, rt.outbox)
        rt.step, rt.t_s = step, t_to
        self.step_times.record(step, t_to)
        own = await rt.flush_outbox(step, t_to)
        for subject, n in own.items():
            pub[subject] = pub.get(subject, 0) + n
        self._expect_next = pub
        self._max_dt = next_max_dt((*self._ack_dts, ground_dt),
                                   rt.last_prompt or self._ack_prompt)
        return True

    # --- coordinated snapshots and rollback ------------------------------------
    def _snapshot_due(self) -> bool:
        """A commit is due on the first tick, then every ``snapshot_every_steps``
        steps or ``snapshot_every_s`` wall seconds (checked every step: cheap)."""
        if self._snap_next_step < 0:
            return False  # snapshots off
        return (self.rt.step >= self._snap_next_step
                or time.monotonic() >= self._snap_next_wall)  # wall time paces commits only

    async def _snapshot_if_due(self, tick: dict[str, Any]) -> Any:
        """Store ground's state at the end of the last step and ask every service
        for its own (``snap`` in the tick; the parts come back in the acks)."""
        if not self._snapshot_due():
            return None
        self._ack_snaps = {}
        tick["snap"] = self.rt.step
        stored = await self.rt.store_snapshot(list(self.rt.inbox.held))
        return {"part": stored.to_json(), "max_dt_s": self._max_dt}

    async def _commit(self, step: int, t_s: float, own: dict[str, Any]) -> None:
        """Every service's part of the snapshot at ``step`` is stored: commit the set."""
        parts = dict(self._ack_snaps)
        missing = [p for p in self.expect if p not in parts]
        if missing:  # cannot happen with every ack in; never commit a partial set
            log.error("snapshot parts missing, not committed", extra={"missing": missing})
            return
        parts[self.rt.name] = own["part"]
        record = {"step": step, "t_s": t_s, "epoch": self.epoch, "max_dt_s": own["max_dt_s"],
                  "run": self.rt.config.run_id, "parts": parts}
        assert self.rt.snapstore is not None
        await self.rt.snapstore.commit(record)
        self.commit = record
        self._plan_next_snapshot()
        self.rt.metrics.child("commits").inc()

    def _plan_next_snapshot(self) -> None:
        config = self.rt.config
        if not config.snapshot_every_steps or self.rt.snapstore is None:
            self._snap_next_step = -1
            return
        self._snap_next_step = self.rt.step + config.snapshot_every_steps
        self._snap_next_wall = time.monotonic() + config.snapshot_every_s

    def request_rollback(self, reason: str) -> None:
        """Roll the mission back to the last commit before the next step (why:
        ``restart``, ``missing`` messages, ground's ``reconnect`` to NATS,
        ``resume`` of a restarted ground). Nothing to do before the first commit
        or after the end."""
        if self._recovering or self._rollback_reason or self.plan.finished:
            return
        if self.commit is None and reason == "reconnect":
            return  # nothing ran yet that a lost message could have changed
        self._rollback_reason = reason
        done = self._all_acked
        if done is not None and not done.done():
            done.set_result(None)  # the step waiting on acks gives up at once
        self._changed.set()

    async def _rollback(self) -> None:
        """Every service (ground too) restores the last commit; the mission runs on
        from there, and being deterministic, runs as it would have."""
        rt, reason = self.rt, self._rollback_reason
        commit = self.commit
        if commit is None or rt.snapstore is None:
            raise SnapshotError(f"a rollback is needed ({reason}) but nothing is committed "
                                "(snapshots off, or the mission had not started)")
        # Past every epoch any service has joined, so none takes this one for done.
        self.epoch = max([self.epoch, *(int(b.get("epoch") or 0)
                                        for b in self.present.values())]) + 1
        self._recovering, self._restored = True, set()
        self.status.mode = "recovering"
        rt.metrics.child("rollbacks", reason).inc()
        log.warning("rolling back to the last commit",
                    extra={"reason": reason, "step": commit["step"], "epoch": self.epoch})
        await rt.bus.record_ops("rollback", rt.t_s, rt.step, reason=reason, epoch=self.epoch,
                                to_step=commit["step"], to_t_s=commit["t_s"])
        own = await rt.snapstore.get(rt.name, Stored.from_json(commit["parts"][rt.name]))
        rt.restore(own, commit.get("reseed"))
        rt.epoch = self.epoch
        self.step_times.record(rt.step, rt.t_s)
        # The services hold, restored, what they had taken for the next step.
        self._expect_next, self._max_dt = {}, float(commit["max_dt_s"])
        body = {"epoch": self.epoch, "commit": commit}
        # A hello (from a restored service, or one coming back) only re-checks
        # who is restored; the restore is sent again once an ack timeout has
        # passed without all of them, never per hello (each restored service
        # answers a restore with a hello: that loop would be a storm).
        next_send = time.monotonic()  # wall time paces the re-sends only
        while not self.rt.stopping.is_set():
            self._changed.clear()
            if all(p in self._restored for p in self.expect):
                break
            now = time.monotonic()
            if now >= next_send:
                await rt.bus.send(rt.subjects.restore, "restore", body, rt.t_s, rt.step)
                next_send = now + self.ack_timeout_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.0, next_send - now))
        self._recovering, self._rollback_reason = False, ""
        self._plan_next_snapshot()
        self._anchor = None
        self.status.mode = "running"
        log.warning("rolled back; the mission runs on",
                    extra={"step": rt.step, "t_s": rt.t_s, "epoch": self.epoch})
        await rt.bus.record_ops("rolled_back", rt.t_s, rt.step, reason=reason,
                                epoch=self.epoch)

    def resume_from(self, commit: dict[str, Any]) -> None:
        """A restarted ground: roll every service back to ``commit`` once they
        answer the roll call."""
        self.commit = commit
        self.epoch = int(commit.get("epoch", 0))
        self._rollback_reason = "resume"

    def _acks_complete_again(self, step: int) -> None:
        """Every ack is in after the watchdog reported some overdue."""
        for peer in self.status.waiting_for:
            self.rt.metrics.child("ack_overdue", peer).set(0)
        log.info("acknowledgements complete again", extra={"step": step})
        self.status.waiting_for = []
        self.status.mode = "running"

    async def _watchdog(self) -> None:
        """Report acks overdue by ``ack_timeout_s`` and send the tick again."""
        m = self.rt.metrics
        period = self.ack_timeout_s / 4.0
        while not self.rt.stopping.is_set():
            await asyncio.sleep(period)
            fut = self._all_acked
            if fut is None or fut.done():
                continue
            if time.perf_counter() - self._tick_sent_at < self.ack_timeout_s:
                continue
            missing = [s for s in self.expect if s not in self._acks]
            self.status.mode = "waiting"
            self.status.waiting_for = missing
            for peer in missing:
                m.child("ack_overdue", peer).set(1)
            log.warning("waiting for acknowledgement",
                        extra={"step": self._ack_step, "waiting_for": ",".join(missing)})
            self._notify()
            await self.rt.bus.resend(self._tick_subject, self._tick_data)
            self._tick_sent_at = time.perf_counter()  # next report after another timeout

    def _after_step(self) -> None:
        m = self.rt.metrics
        m.steps.inc()
        start, count = self._rate_window
        now = time.monotonic()
        count += 1
        if now - start >= RATE_WINDOW_S:
            self.status.steps_per_second = count / (now - start)
            m.child("step_rate").set(self.status.steps_per_second)
            start, count = now, 0
        self._rate_window = (start, count)
        if self._step_budget is not None:
            self._step_budget -= 1
            if self._step_budget <= 0:
                self._step_budget = None
                self._paused = True
        st = self.status
        if st.run_until_t_s >= 0 and self.rt.t_s >= st.run_until_t_s - 1e-9:
            st.run_until_t_s = -1.0
            self._paused = True
        if st.run_until_event and self.plan.has_seen(st.run_until_event):
            st.run_until_event = ""
            self._paused = True
        self._notify()

    def steps_per_second(self) -> float:
        """The last full window's rate, or, before one has closed, the rate so
        far: a run of a few hundred steps would otherwise read 0 until its
        first second is over."""
        if self.status.steps_per_second > 0.0:
            return self.status.steps_per_second
        start, count = self._rate_window
        elapsed = time.monotonic() - start
        return count / elapsed if count and elapsed > 0.0 else 0.0

    def _open_rate_window(self) -> None:
        """Start counting steps/s now: the next tick is the first of the window."""
        self._rate_window = (time.monotonic(), 0)

    def release_waiters(self) -> None:
        """Ground is stopping: end every wait now (each caller reads why from the
        state, e.g. a waiting RunUntil answers UNAVAILABLE), not at gRPC's grace."""
        self._notify()

    def _notify(self) -> None:
        if not self._waiters:
            return
        keep = []
        for predicate, fut in self._waiters:
            if fut.done():
                continue
            if predicate() or self.plan.finished or self.rt.stopping.is_set():
                fut.set_result(None)
            else:
                keep.append((predicate, fut))
        self._waiters = keep

    def _publish_state_metrics(self) -> None:
        m = self.rt.metrics
        m.warp.labels(*m.labels()).set(self.status.warp)
        m.paused.labels(*m.labels()).set(1.0 if self._paused else 0.0)
