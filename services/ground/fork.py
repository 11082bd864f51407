"""What-if forks: a second mission branched from a committed snapshot of this one.

An operator asks the parent's ground (gRPC ``MissionClock.Fork``) for a fork
``child`` at an instant (``now``, a step, a UTC instant, a mission event) with a
change (commands or faults at the branch point, plan items delayed, or a whole
new flight plan). The parent's ground, which alone knows its plan, what it has
issued and when each of its steps ended:

1. resolves the instant to the **branch point**: the end of a step of the
   parent (``now``, ``step N``), or an instant (``utc``, or the time the event
   was seen);
2. picks the **commit** to start from: the last of this run at or before it
   (the snapshot stream keeps a history of them, services/kernel/snapstore.py);
3. builds the fork's **flight plan**: the parent's with the change, refused if
   it would alter anything issued by the branch point or due before it;
4. writes the fork's **record** (the spec) in its own mission log, on
   ``twin.<parent>.fork.<child>``, and answers with it. The parent flies on;
   nothing else of it changes.

The child's six services then start under the child's mission id with
``TWIN_FORK_OF=<parent>``. Its ground reads the record (it may read, not write,
its parent's streams: natsauth.PARENT_GRANTS), copies the commit's snapshots
into its own stream with the mission id changed, copies the parent's events of
the steps up to the commit into its own log, commits that set under its run,
and resumes from it like a restarted ground: every service restores its part
and the fork flies on from the commit, through the branch point (identically:
the mission is deterministic, and the change waits at the branch point) and
beyond with its own plan.

**Seed.** A fork continues its parent's random streams from the snapshot, so a
fork with no change flies exactly as its parent: its seed is the parent's.
With ``reseed`` the fork draws new numbers from the branch on, seeded by
:func:`fork_seed` (parent seed and child id), so it is reproducible too.

Errors are :class:`ForkRefused`, each with the gRPC status its reason calls for.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from services.dynamics.timescale import iso_utc, mission_s_from_utc
from services.ground.plan import FlightPlan, PlanItem, parse_plan
from services.kernel.clock import StepTimes
from services.kernel.config import SERVICE_NAMES
from services.kernel.envelope import decode, encode_fields
from services.kernel.errors import EnvelopeError, FlightPlanError, TwinError
from services.kernel.natsauth import BadMission, check_mission
from services.kernel.snapstore import SnapStore, Stored, rehome
from services.kernel.subjects import Subjects

log = logging.getLogger("twin.ground.fork")

__all__ = ["AT_KINDS", "Branch", "Change", "ForkRefused", "adopt", "choose_commit",
           "fork_plan", "fork_seed", "make_spec", "read_record", "resolve_branch",
           "write_record"]

#: How a branch instant may be given.
AT_KINDS = ("now", "step", "utc", "event")
#: Wall seconds a fork's ground waits for its record in the parent's log (on
#: Kubernetes the fork's pods may start before the job that asks for the fork).
RECORD_WAIT_S = 300.0
_RECORD_POLL_S = 0.5
_FETCH_BATCH = 2000
_FETCH_TIMEOUT_S = 2.0


class ForkRefused(TwinError):
    """A fork that cannot be made as asked; ``code`` names the gRPC status."""

    def __init__(self, code: str, reason: str) -> None:
        self.code, self.reason = code, reason  # code: invalid, precondition, exists
        super().__init__(reason)


@dataclass(frozen=True)
class Branch:
    """Where a fork leaves its parent: the end of parent step ``step`` or, for a
    UTC instant or an event, the instant ``t_s`` within the step after it."""

    t_s: float
    step: int  # the parent's last step that ended at or before t_s
    at: str  # as asked: "now", "step:N", "utc:...", "event:..."

    def to_json(self) -> dict[str, Any]:
        return {"t_s": self.t_s, "utc": iso_utc(self.t_s), "step": self.step, "at": self.at}


@dataclass(frozen=True)
class Change:
    """What the fork does differently from its parent."""

    #: Plan items issued at the branch point, each ``{"target", "command"}`` or
    #: ``{"target", "fault"}`` as in a flight plan (services/ground/plan.py).
    items: tuple[Mapping[str, Any], ...] = ()
    #: Plan item id -> seconds later than the parent's plan has it.
    delays_s: Mapping[str, float] = field(default_factory=dict)
    #: A whole flight plan for the fork (raw JSON object), or None: the parent's.
    plan: Mapping[str, Any] | None = None
    reseed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"items": [dict(i) for i in self.items], "delays_s": dict(self.delays_s),
                "plan": self.plan.get("name") if self.plan is not None else None,
                "reseed": self.reseed}

    @property
    def empty(self) -> bool:
        return not (self.items or self.delays_s or self.plan is not None or self.reseed)


# --- pure: the branch point, the commit, the plan, the seed ------------------------
def resolve_branch(kind: str, value: str, *, now_step: int, now_t_s: float,
                   steps: StepTimes, seen: Mapping[str, float]) -> Branch:
    """The branch point of ``--at kind value``, which must not be after now."""
    if kind == "now":
        return Branch(now_t_s, now_step, "now")
    if kind == "step":
        try:
            n = int(value)
        except ValueError:
            raise ForkRefused("invalid", f"step {value!r} is not a whole number") from None
        if n > now_step:
            raise ForkRefused("invalid", f"step {n} is after the mission's current step "
                                         f"{now_step}: a fork branches from the past or now")
        t = steps.end_of(n)
        if t is None:
            raise ForkRefused("precondition",
                              f"ground does not know when step {n} ended (it knows steps "
                              f"{steps.first}-{now_step}, since it last started): give the "
                              "branch point as --at utc or --at event instead")
        return Branch(t, n, f"step:{n}")
    if kind == "utc":
        try:
            t = mission_s_from_utc(value)
        except ValueError as exc:
            raise ForkRefused("invalid", f"bad UTC instant {value!r}: {exc}") from None
        what = f"utc:{value}"
    elif kind == "event":
        if value not in seen:
            raise ForkRefused("precondition", f"{value!r} has not happened in this mission "
                                              f"(by {iso_utc(now_t_s)}): a fork branches "
                                              "at an event already seen")
        t, what = seen[value], f"event:{value}"
    else:
        raise ForkRefused("invalid", f"unknown branch kind {kind!r}: use one of "
                                     f"{', '.join(AT_KINDS)}")
    if not t <= now_t_s:
        raise ForkRefused("invalid", f"{iso_utc(t)} is after the mission's current time "
                                     f"{iso_utc(now_t_s)}: a fork branches from the past")
    step = steps.step_at(t)
    return Branch(t, step if step is not None else -1, what)


def choose_commit(commits: Sequence[Mapping[str, Any]], run: str,
                  branch: Branch) -> dict[str, Any]:
    """The last commit of ``run`` at or before the branch point (each is a
    consistent cut of the deterministic run: a later one of several equal is
    as good as any)."""
    ours = [c for c in commits if c.get("run", "") == run]
    fit = [c for c in ours if float(c["t_s"]) <= branch.t_s
           and (branch.step < 0 or int(c["step"]) <= branch.step)]
    if not fit:
        oldest = min(ours, key=lambda c: float(c["t_s"]), default=None)
        held = (f"the oldest commit kept is step {oldest['step']} at {iso_utc(oldest['t_s'])}"
                if oldest is not None else "this run has committed nothing yet")
        raise ForkRefused("precondition",
                          f"no committed snapshot at or before {iso_utc(branch.t_s)}: {held} "
                          "(keep more with TWIN_SNAPSHOT_KEEP, or branch later)")
    best: Mapping[str, Any] = max(fit, key=lambda c: (int(c["step"]), int(c.get("epoch", 0))))
    return dict(best)


def fork_seed(parent_seed: int, child: str) -> int:
    """The seed of a reseeded fork: drawn from the parent's seed and the child's
    id (numpy's SeedSequence), so the same fork gets the same numbers."""
    seq = np.random.SeedSequence([parent_seed, zlib.crc32(child.encode())])
    return int(seq.generate_state(1, dtype=np.uint32)[0])


def _delayed(raw_item: dict[str, Any], delay_s: float, plan: FlightPlan) -> dict[str, Any]:
    item = next(it for it in plan.items if it.id == raw_item["id"])
    out = dict(raw_item)
    if item.at_s is not None:
        out.pop("at", None)
        out["at_s"] = item.at_s + delay_s
    else:
        out["offset_s"] = item.offset_s + delay_s
        if math.isfinite(item.not_before_s):
            out.pop("not_before", None)
            out["not_before"] = iso_utc(item.not_before_s + delay_s)
    return out


def fork_plan(parent_raw: Mapping[str, Any], change: Change, branch: Branch,
              issued: Mapping[str, float],
              seen: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The fork's flight plan (raw): the parent's, or the one given, with the
    delays and the branch point's items; refused if it would change anything
    the parent issued by the branch point, or be due before it."""
    parent = parse_plan(dict(parent_raw), "the parent's plan")
    given = change.plan if change.plan is not None else parent_raw
    raw: dict[str, Any] = copy.deepcopy(dict(given))
    try:
        base = parse_plan(raw, "the fork's plan")
    except FlightPlanError as exc:
        raise ForkRefused("invalid", str(exc)) from None
    items = [dict(x) for x in raw["items"]]
    ids = {x["id"] for x in items}
    for name, delay in change.delays_s.items():
        if name not in ids:
            raise ForkRefused("invalid", f"no plan item {name!r} to delay; the plan's items "
                                         f"are {', '.join(sorted(ids))}")
        if not math.isfinite(delay):
            raise ForkRefused("invalid", f"the delay of {name!r} must be a finite number of s")
        items = [_delayed(x, delay, base) if x["id"] == name else x for x in items]
    for i, extra in enumerate(change.items, start=1):
        if not isinstance(extra, Mapping) or set(extra) - {"target", "command", "fault"}:
            raise ForkRefused("invalid", "a change item is an object with 'target' and one of "
                                         "'command' or 'fault'")
        n = i
        while f"fork-{n}" in ids:
            n += 1
        ids.add(f"fork-{n}")
        items.append({"id": f"fork-{n}", "at_s": branch.t_s, **extra})
    raw["items"] = items
    try:
        plan = parse_plan(raw, "the fork's plan")
    except FlightPlanError as exc:
        raise ForkRefused("invalid", str(exc)) from None
    _check_past(parent, plan, branch, issued, seen or {})
    return raw


def _check_past(parent: FlightPlan, plan: FlightPlan, branch: Branch,
                issued: Mapping[str, float], seen: Mapping[str, float]) -> None:
    """Nothing before the branch point may change."""
    old: dict[str, PlanItem] = {it.id: it for it in parent.items}
    new: dict[str, PlanItem] = {it.id: it for it in plan.items}
    when = iso_utc(branch.t_s)
    for name, t in issued.items():
        if t <= branch.t_s and name in old and new.get(name) != old[name]:
            raise ForkRefused("invalid", f"plan item {name!r} was issued at {iso_utc(t)}, "
                                         f"before the branch point {when}: a fork changes only "
                                         "what comes after it")
    for name, item in new.items():
        if item == old.get(name):
            continue
        due = item.at_s
        if due is None and item.after is not None and seen.get(item.after, math.inf) \
                <= branch.t_s:  # what it waits for was seen by the branch point
            due = max(seen[item.after] + item.offset_s, item.not_before_s)
        if due is not None and due < branch.t_s:
            raise ForkRefused("invalid", f"plan item {name!r} would be due at "
                                         f"{iso_utc(due)}, before the branch point {when}")


def make_spec(*, parent: str, parent_run: str, child: str, seed: int, branch: Branch,
              commit: Mapping[str, Any], change: Change, plan: Mapping[str, Any]
              ) -> dict[str, Any]:
    """The fork's record: everything its ground needs, and what the log keeps."""
    return {"child": child, "parent": parent, "parent_run": parent_run,
            "seed": fork_seed(seed, child) if change.reseed else seed,
            "parent_seed": seed, "branch": branch.to_json(),
            "commit": dict(commit), "change": change.to_json(), "plan": dict(plan)}


def check_child(parent: str, child: str) -> None:
    if child == parent:
        raise ForkRefused("invalid", "a fork needs a mission id of its own, not its parent's")
    try:
        check_mission(child)
    except BadMission as exc:
        raise ForkRefused("invalid", f"fork id {child!r}: {exc.problem}") from None


# --- the bus: the record, and the child's adoption of its branch -------------------
async def read_record(js: JetStreamContext, parent: str, child: str) -> dict[str, Any] | None:
    """The fork record of ``child`` in ``parent``'s log, or None."""
    s = Subjects(parent)
    try:
        msg = await js.get_last_msg(s.stream_name, s.fork(child))
    except NotFoundError:
        return None
    record: dict[str, Any] = orjson.loads(msg.data or b"{}")
    return record


async def write_record(js: JetStreamContext, parent: str, spec: Mapping[str, Any]) -> None:
    s = Subjects(parent)
    await js.publish(s.fork(str(spec["child"])), orjson.dumps(spec), stream=s.stream_name,
                     headers={"Nats-Msg-Id": f"fork:{parent}:{spec['child']}"})


async def wait_for_record(js: JetStreamContext, parent: str, child: str,
                          timeout_s: float = RECORD_WAIT_S) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    said = False
    while True:
        try:
            record = await read_record(js, parent, child)
        except NotFoundError:  # the parent's stream itself is missing
            record = None
        if record is not None:
            return record
        if loop.time() > deadline:
            raise ForkRefused("precondition",
                              f"no fork record for {child!r} in mission {parent!r}'s log after "
                              f"{timeout_s:.0f} s: ask for the fork first (twin fork "
                              f"{parent} --as {child} ...)")
        if not said:
            log.info("waiting for the fork record in the parent's log",
                     extra={"parent": parent, "child": child})
            said = True
        await asyncio.sleep(_RECORD_POLL_S)


async def _parent_events(js: JetStreamContext, parent: str, run: str,
                         up_to_step: int) -> list[tuple[str, bytes]]:
    """The parent run's events of the steps up to ``up_to_step``: (source, bytes)."""
    s = Subjects(parent)
    config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE,
                            inactive_threshold=30.0, mem_storage=True)
    sub = await js.pull_subscribe(s.all_of("evt"), stream=s.stream_name, config=config)
    out: list[tuple[str, bytes]] = []
    prefix = f"{run}:"
    try:
        if (await sub.consumer_info()).num_pending == 0:
            return out
        while True:
            msgs = await sub.fetch(_FETCH_BATCH, timeout=_FETCH_TIMEOUT_S)
            for msg in msgs:
                if not (msg.headers or {}).get("Nats-Msg-Id", "").startswith(prefix):
                    continue  # another run of the same mission id
                try:
                    env = decode(msg.data, mission=parent)
                except EnvelopeError:
                    continue  # counted by whoever heard it live
                if env.step <= up_to_step:
                    out.append((env.src, msg.data))
            if msgs and msgs[-1].metadata.num_pending == 0:
                return out
    finally:
        await sub.unsubscribe()


async def adopt(js: JetStreamContext, store: SnapStore, *, child: str, run: str,
                spec: Mapping[str, Any]) -> dict[str, Any]:
    """Copy the branch commit and the events before it into ``child``'s streams,
    then commit that set under ``run``: the commit the child's ground resumes
    from. Idempotent: a ground that dies half-way does it again."""
    parent = str(spec["parent"])
    commit = spec["commit"]
    parent_store = SnapStore(js, Subjects(parent))
    parts: dict[str, Any] = {}
    for service, where in commit["parts"].items():
        if service not in SERVICE_NAMES:
            raise ForkRefused("invalid", f"the branch commit names an unknown service "
                                         f"{service!r}")
        snap = await parent_store.get(service, Stored.from_json(where))
        parts[service] = (await store.put(service, rehome(snap, child))).to_json()
    s = Subjects(child)
    events = await _parent_events(js, parent, str(spec["parent_run"]), int(commit["step"]))
    for src, data in events:
        env = decode(data, mission=parent)
        again = encode_fields(child, env.src, env.seq, env.t, env.step, env.kind, env.body)
        await js.publish(s.event(src), again, stream=s.stream_name,
                         headers={"Nats-Msg-Id": f"{run}:{src}:{env.seq}"})
    step, t_s = int(commit["step"]), float(commit["t_s"])
    own: dict[str, Any] = {"step": step, "t_s": t_s, "epoch": 0,
           "max_dt_s": float(commit["max_dt_s"]), "run": run, "parts": parts,
           "fork": {"parent": parent, "branch": spec["branch"], "events_copied": len(events)}}
    if spec["change"].get("reseed"):
        own["reseed"] = int(spec["seed"])
    # The fork's own log says where it came from (beside its events, outside its
    # report, like a rollback's record); its id makes a second adoption's land once.
    forked = {"name": "forked", "parent": parent, "parent_run": spec["parent_run"],
              "branch": spec["branch"], "commit_step": own["step"], "change": spec["change"],
              "seed": spec["seed"], "plan": spec["plan"].get("name", "")}
    await js.publish(s.ops("ground"), encode_fields(child, "ground", 0, t_s, step, "ops", forked),
                     stream=s.stream_name, headers={"Nats-Msg-Id": f"{run}:forked"})
    await store.commit(own)
    log.warning("adopted the branch commit of the parent", extra={
        "parent": parent, "step": own["step"], "t_s": own["t_s"],
        "events_copied": len(events)})
    return own


def as_change(items_json: Sequence[str], delays_s: Mapping[str, float], plan_json: str,
              reseed: bool) -> Change:
    """A :class:`Change` from the gRPC request's JSON strings."""
    items: list[Mapping[str, Any]] = []
    for i, text in enumerate(items_json):
        try:
            item = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ForkRefused("invalid", f"change item {i} is not JSON: {exc}") from None
        if not isinstance(item, dict):
            raise ForkRefused("invalid", f"change item {i} is not a JSON object")
        items.append(item)
    plan: dict[str, Any] | None = None
    if plan_json:
        try:
            plan = orjson.loads(plan_json)
        except orjson.JSONDecodeError as exc:
            raise ForkRefused("invalid", f"the fork's plan is not JSON: {exc}") from None
        if not isinstance(plan, dict):
            raise ForkRefused("invalid", "the fork's plan is not a JSON object")
    return Change(tuple(items), dict(delays_s), plan, reseed)
