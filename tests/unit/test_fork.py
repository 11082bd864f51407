"""What-if forks, the pure parts: the branch point, the commit, the fork's plan,
its seed, a snapshot re-homed, the CLI's parsing, the fork's permissions.

The real thing (parent and forks as real processes on a real nats-server) is
tests/integration/test_fork.py.
"""

from __future__ import annotations

import copy
import math
import random
import zlib
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from services.cli.fork_cli import BadForkArgument, parse_at, parse_delay, parse_item
from services.dynamics.timescale import mission_s_from_utc
from services.ground.fork import (
    Branch,
    Change,
    ForkRefused,
    as_change,
    check_child,
    choose_commit,
    fork_plan,
    fork_seed,
    make_spec,
    resolve_branch,
)
from services.ground.plan import NOMINAL_PLAN, parse_plan
from services.kernel.clock import StepTimes
from services.kernel.config import ServiceConfig
from services.kernel.errors import ConfigError, FlightPlanError
from services.kernel.natsauth import permissions
from services.kernel.runtime import ServiceRuntime
from services.kernel.snapstore import rehome
from services.relay.vehicle import RelayCore

NOMINAL: dict[str, Any] = orjson.loads(NOMINAL_PLAN.read_bytes())
HOUR_S = 3600.0


def _steps(ends: list[float], first: int = 1) -> StepTimes:
    st = StepTimes()
    for i, t in enumerate(ends):
        st.record(first + i, t)
    return st


# --- StepTimes ---------------------------------------------------------------------------
def test_step_times_know_each_step_end_and_the_step_of_an_instant() -> None:
    st = _steps([1.0, 2.5, 10.0, 60.0])
    assert st.end_of(3) == 10.0
    assert st.end_of(5) is None and st.end_of(0) is None
    assert st.step_at(10.0) == 3  # a step that ends exactly then
    assert st.step_at(9.999) == 2
    assert st.step_at(0.5) is None  # before the history


def test_step_times_forget_what_a_rollback_runs_again() -> None:
    st = _steps([1.0, 2.0, 3.0, 4.0])
    st.record(3, 3.5)  # step 3 run again after a rollback to step 2
    assert st.end_of(3) == 3.5 and st.end_of(4) is None
    st.record(10, 50.0)  # a restore further on: a new history
    assert st.first == 10 and st.end_of(3) is None and st.end_of(10) == 50.0


# --- the branch point ------------------------------------------------------------------
def test_branch_points_of_each_kind() -> None:
    st = _steps([100.0, 200.0, 300.0])
    seen = {"docking": 250.0}
    kw: dict[str, Any] = {"now_step": 3, "now_t_s": 300.0, "steps": st, "seen": seen}
    assert resolve_branch("now", "", **kw) == Branch(300.0, 3, "now")
    assert resolve_branch("step", "2", **kw) == Branch(200.0, 2, "step:2")
    assert resolve_branch("event", "docking", **kw) == Branch(250.0, 2, "event:docking")
    t = mission_s_from_utc("2024-05-03T08:15:50Z")
    utc = resolve_branch("utc", "2024-05-03T08:15:50Z", now_step=3,
                         now_t_s=max(300.0, t), steps=st, seen=seen)
    assert utc.t_s == t and utc.at == "utc:2024-05-03T08:15:50Z"


@pytest.mark.parametrize(("kind", "value", "code", "says"), [
    ("step", "4", "invalid", "after the mission's current step 3"),
    ("step", "x", "invalid", "not a whole number"),
    ("step", "0", "precondition", "give the branch point as --at utc"),
    ("event", "earth_landing", "precondition", "has not happened"),
    ("utc", "2024-07-01T00:00:00Z", "invalid", "after the mission's current time"),
    ("utc", "yesterday", "invalid", "bad UTC instant"),
    ("soon", "", "invalid", "unknown branch kind"),
])
def test_a_branch_point_that_cannot_be_says_why(kind: str, value: str, code: str,
                                                 says: str) -> None:
    with pytest.raises(ForkRefused) as err:
        resolve_branch(kind, value, now_step=3, now_t_s=300.0, steps=_steps([100.0, 200.0,
                                                                             300.0]),
                       seen={})
    assert err.value.code == code and says in err.value.reason


# --- the commit ------------------------------------------------------------------------------
def _commit(step: int, t: float, run: str = "r1", epoch: int = 0) -> dict[str, Any]:
    return {"step": step, "t_s": t, "run": run, "epoch": epoch, "parts": {}, "max_dt_s": 1.0}


def test_the_commit_is_the_last_of_the_run_at_or_before_the_branch() -> None:
    commits = [_commit(0, 0.0), _commit(1000, 10.0), _commit(2000, 20.0, run="other"),
               _commit(2000, 20.0), _commit(2000, 20.0, epoch=1), _commit(3000, 30.0)]
    got = choose_commit(commits, "r1", Branch(25.0, 2500, "now"))
    assert (got["step"], got["epoch"], got["run"]) == (2000, 1, "r1")
    assert choose_commit(commits, "r1", Branch(20.0, 2000, "now"))["step"] == 2000
    # an instant inside a step: the step number does not hold it back
    assert choose_commit(commits, "r1", Branch(20.0, -1, "utc:x"))["step"] == 2000


def test_no_commit_before_the_branch_names_the_oldest_kept() -> None:
    with pytest.raises(ForkRefused, match="oldest commit kept is step 1000") as err:
        choose_commit([_commit(1000, 10.0)], "r1", Branch(5.0, 500, "now"))
    assert err.value.code == "precondition"
    with pytest.raises(ForkRefused, match="committed nothing yet"):
        choose_commit([_commit(1000, 10.0, run="other")], "r1", Branch(50.0, 5000, "now"))


# --- the fork's plan --------------------------------------------------------------------------
UNDOCKING_T = mission_s_from_utc("2024-06-06T08:00:00Z")
ISSUED_BY_UNDOCKING = {"la_sep": mission_s_from_utc("2024-05-30T06:00:00Z"),
                       "undock": mission_s_from_utc("2024-06-06T07:58:23Z")}


def _items(raw: dict[str, Any]) -> dict[str, Any]:
    return {it.id: it for it in parse_plan(raw).items}


def test_a_delay_moves_an_absolute_item_exactly_and_leaves_the_rest() -> None:
    branch = Branch(UNDOCKING_T, 3578, "event:undocking")
    raw = fork_plan(NOMINAL, Change(delays_s={"tei": 2 * HOUR_S}), branch, ISSUED_BY_UNDOCKING)
    old, new = _items(NOMINAL), _items(raw)
    assert new["tei"].at_s == old["tei"].at_s + 7200.0  # exact: at_s, no UTC rounding
    assert {k for k in old if old[k] != new[k]} == {"tei"}
    assert orjson.loads(NOMINAL_PLAN.read_bytes()) == NOMINAL  # the parent's is untouched


def test_a_delay_of_an_after_item_adds_to_its_offset() -> None:
    branch = Branch(mission_s_from_utc("2024-05-31T00:00:00Z"), 100, "now")
    raw = fork_plan(NOMINAL, Change(delays_s={"drill": 600.0}), branch,
                    {"la_sep": ISSUED_BY_UNDOCKING["la_sep"]})
    assert _items(raw)["drill"].offset_s == _items(NOMINAL)["drill"].offset_s + 600.0


def test_items_at_the_branch_point_get_ids_of_their_own_and_its_exact_time() -> None:
    branch = Branch(1234.5678901234, 12, "step:12")
    change = Change(items=({"target": "ground", "command": {"op": "set_mode", "mode": "x"}},
                           {"target": "lander", "fault": {"kind": "thrust_loss",
                                                          "magnitude": 0.1}}))
    items = _items(fork_plan(NOMINAL, change, branch, {}))
    assert items["fork-1"].at_s == 1234.5678901234 and items["fork-1"].target == "ground"
    assert items["fork-2"].command["op"] == "inject_fault"
    assert items["fork-2"].command["magnitude"] == 0.1


@pytest.mark.parametrize(("change", "says"), [
    (Change(delays_s={"la_sep": HOUR_S}), "'la_sep' was issued at 2024-05-30T06:00:00.000Z"),
    (Change(delays_s={"tei": -20 * 86400.0}), "would be due at"),
    (Change(delays_s={"nope": 1.0}), "no plan item 'nope' to delay"),
    (Change(delays_s={"tei": math.inf}), "finite"),
    (Change(items=({"target": "mars", "command": {"op": "x"}},)), "unknown target 'mars'"),
    (Change(items=({"target": "orbiter", "command": {"op": "x"}, "at": "now"},)),
     "a change item is an object"),
    (Change(plan={"items": []}), "needs 'end'"),
])
def test_a_change_to_the_past_or_a_bad_one_is_refused(change: Change, says: str) -> None:
    branch = Branch(UNDOCKING_T, 3578, "event:undocking")
    with pytest.raises(ForkRefused) as err:
        fork_plan(NOMINAL, change, branch, ISSUED_BY_UNDOCKING)
    assert err.value.code == "invalid" and says in err.value.reason


def test_a_new_item_after_an_event_seen_before_the_branch_is_refused() -> None:
    """It would be due (and issued by the fork) before the branch point."""
    docking = mission_s_from_utc("2024-06-06T06:28:23Z")
    plan = copy.deepcopy(NOMINAL)
    plan["items"].append({"id": "late", "after": "docking", "offset_s": 60.0,
                          "target": "ground", "command": {"op": "set_mode", "mode": "x"}})
    branch = Branch(UNDOCKING_T, 3578, "event:undocking")
    with pytest.raises(ForkRefused, match="'late' would be due at 2024-06-06T06:29:23"):
        fork_plan(NOMINAL, Change(plan=plan), branch, ISSUED_BY_UNDOCKING,
                  {"docking": docking})
    plan["items"][-1]["offset_s"] = 2 * 3600.0  # after the branch: allowed
    assert "late" in _items(fork_plan(NOMINAL, Change(plan=plan), branch, ISSUED_BY_UNDOCKING,
                                      {"docking": docking}))


def test_a_whole_new_plan_may_drop_and_move_what_comes_after_the_branch() -> None:
    plan = copy.deepcopy(NOMINAL)
    plan["name"] = "no-tcm3"
    plan["items"] = [x for x in plan["items"] if x["id"] != "tcm3"]
    raw = fork_plan(NOMINAL, Change(plan=plan), Branch(UNDOCKING_T, 3578, "now"),
                    ISSUED_BY_UNDOCKING)
    assert "tcm3" not in _items(raw) and raw["name"] == "no-tcm3"


def test_plan_items_at_mission_seconds_are_exact_and_checked() -> None:
    item: dict[str, Any] = {"id": "a", "at_s": 12.345678901, "target": "ground",
                            "command": {"op": "set_mode", "mode": "m"}}
    raw = {"name": "x", "end": {"at": "2024-05-04T00:00:00Z"}, "items": [item]}
    assert parse_plan(raw).items[0].at_s == 12.345678901
    for bad in (-1.0, "12", math.nan, True):
        item["at_s"] = bad
        with pytest.raises(FlightPlanError, match="at_s"):
            parse_plan(raw)
    item |= {"at_s": 1.0, "at": "2024-05-03T09:00:00Z"}
    with pytest.raises(FlightPlanError, match="exactly one of"):
        parse_plan(raw)


# --- the seed and the record -------------------------------------------------------------------
def test_a_reseeded_fork_has_a_reproducible_seed_of_its_own() -> None:
    ours = fork_seed(6, "ce6-late")
    # CRC-32 of b"ce6-late" (zlib's, which the fork's id goes through)
    expected = np.random.SeedSequence([6, 1_205_130_495]).generate_state(1, np.uint32)[0]
    assert ours == int(expected) == fork_seed(6, "ce6-late")
    assert fork_seed(6, "ce6-other") != ours and fork_seed(7, "ce6-late") != ours


def test_the_record_keeps_the_parent_seed_unless_reseeded() -> None:
    branch, commit = Branch(10.0, 5, "now"), _commit(0, 0.0)
    same = make_spec(parent="ce6", parent_run="r1", child="k", seed=6, branch=branch,
                     commit=commit, change=Change(), plan=NOMINAL)
    assert same["seed"] == 6 and same["change"]["items"] == []
    new = make_spec(parent="ce6", parent_run="r1", child="k", seed=6, branch=branch,
                    commit=commit, change=Change(reseed=True), plan=NOMINAL)
    assert new["seed"] == fork_seed(6, "k") and new["parent_seed"] == 6


@pytest.mark.parametrize(("child", "says"), [("ce6", "of its own"), ("Bad_Id", "fork id"),
                                              ("x-snap", "-snap")])
def test_fork_ids_are_checked(child: str, says: str) -> None:
    with pytest.raises(ForkRefused, match=says):
        check_child("ce6", child)


def test_the_grpc_change_fields_parse_or_say_what_is_wrong() -> None:
    change = as_change(['{"target": "ground", "command": {"op": "set_mode"}}'], {"tei": 5.0},
                       "", False)
    assert change.items[0]["target"] == "ground" and change.delays_s == {"tei": 5.0}
    with pytest.raises(ForkRefused, match="change item 0 is not JSON"):
        as_change(["{"], {}, "", False)
    with pytest.raises(ForkRefused, match="not a JSON object"):
        as_change([], {}, "[1]", False)


# --- a snapshot re-homed ------------------------------------------------------------------
def test_a_rehomed_snapshot_names_the_fork_everywhere_and_keeps_the_state() -> None:
    snap: dict[str, Any] = {"service": "lander", "mission": "ce6", "step": 7, "core": {"x": [1, 2]},
            "held": [["ce6", "ground", 3, 1.5, 6, "command", {"op": "a"}, 2]]}
    out = rehome(snap, "ce6-b")
    assert out["mission"] == "ce6-b" and out["held"][0][0] == "ce6-b"
    assert out["held"][0][1:] == snap["held"][0][1:] and out["core"] == snap["core"]
    assert snap["mission"] == "ce6"  # the parent's is not changed


# --- the CLI's parsing --------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "want"), [
    ("now", ("now", "")), ("3500", ("step", "3500")), ("step:12", ("step", "12")),
    ("2024-06-10T00:00:00Z", ("utc", "2024-06-10T00:00:00Z")),
    ("undocking", ("event", "undocking")), ("event:docking", ("event", "docking")),
])
def test_at_reads_every_kind(text: str, want: tuple[str, str]) -> None:
    assert parse_at(text) == want


@pytest.mark.parametrize("text", ["step:", "Not An Event", "12:00"])
def test_a_bad_at_says_what_to_write(text: str) -> None:
    with pytest.raises(BadForkArgument, match="--at"):
        parse_at(text)


def test_commands_faults_and_delays_parse() -> None:
    assert parse_item("orbiter orbit_adjust dv_m_s=1.5 frame=RTN", "command") == {
        "target": "orbiter", "command": {"op": "orbit_adjust", "dv_m_s": 1.5, "frame": "RTN"}}
    assert parse_item("lander thrust_loss magnitude=0.1", "fault") == {
        "target": "lander", "fault": {"kind": "thrust_loss", "magnitude": 0.1}}
    assert parse_delay("tei=2h") == ("tei", 7200.0)
    assert parse_delay("tcm3=-30m") == ("tcm3", -1800.0)
    assert parse_delay("x=90") == ("x", 90.0)
    assert parse_delay("x=1.5d") == ("x", 129_600.0)
    for bad in ("tei", "tei=2 weeks", "=2h"):
        with pytest.raises(BadForkArgument, match="ITEM=DURATION"):
            parse_delay(bad)
    with pytest.raises(BadForkArgument, match="key=value"):
        parse_item("orbiter", "command")


# --- configuration and permissions -----------------------------------------------------------
def test_fork_of_must_name_another_mission() -> None:
    assert ServiceConfig("ground", mission_id="k", insecure=True, fork_of="ce6").fork_of == "ce6"
    for bad in ("k", "Bad!"):
        with pytest.raises(ConfigError, match="TWIN_FORK_OF"):
            ServiceConfig("ground", mission_id="k", insecure=True, fork_of=bad)


def test_a_forks_ground_may_read_its_parent_and_write_nothing_of_it() -> None:
    plain = set(permissions("k", "ground").publish)
    fork = set(permissions("k", "ground", parent="ce6").publish)
    extra = fork - plain
    assert "$JS.API.STREAM.MSG.GET.TWIN_CE6_SNAP" in extra
    assert "$JS.API.STREAM.MSG.GET.TWIN_CE6" in extra
    assert "twin.k.snap.*" in extra and "twin.k.evt.*" in extra
    # no subject of the parent's own, and no stream change of it
    assert not [p for p in extra if p.startswith("twin.ce6.")]
    assert not [p for p in extra if "CREATE.TWIN_CE6" in p and "CONSUMER" not in p]
    assert not [p for p in extra if "DELETE" in p or "UPDATE" in p or "PURGE" in p]
    # a vehicle of a fork gets nothing of the parent
    assert permissions("k", "lander", parent="ce6") == permissions("k", "lander")


def test_a_reseeded_commit_gives_each_service_the_stream_of_the_forks_seed() -> None:
    """Restored without a reseed, a service continues its parent's numbers;
    with one, it draws the stream every service of a mission of that seed
    starts with (VehicleCore: seed x 1,000,003 + CRC-32 of its name)."""
    rt = ServiceRuntime(RelayCore(6), ServiceConfig("relay", mission_id="k", insecure=True),
                        CollectorRegistry())
    snap = orjson.loads(orjson.dumps(rt.snapshot()))
    parents_next = random.Random(6 * 1_000_003 + zlib.crc32(b"relay")).random()
    rt.restore(snap)
    assert rt.core.rng.random() == parents_next
    rt.restore(snap, reseed=4242)
    assert rt.core.rng.random() == random.Random(4242 * 1_000_003
                                                 + zlib.crc32(b"relay")).random()
