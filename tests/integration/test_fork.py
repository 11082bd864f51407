"""What-if forks with real processes: a parent `twin up` on its own nats-server,
forks made by `twin fork` (the parent's ground over mTLS gRPC, then six more
service processes on the same NATS under the fork's mission id), flown while
the parent flies on.

The parent is paused at undocking (lunar orbit, before the return) and forked
three ways:

* ``ce6-same``: no change, at now. Its report must be the parent's.
* ``ce6-day``: at the undocking event, a plan whose return comes a day later
  (entry interface, TEI, TCM-3 and separation each a day later). It must land
  about a day later, and agree with the parent until the branch point.
* ``ce6-cmd``: at a step, a command issued at the branch point. It must be
  issued exactly there, and the mission agree with the parent until then.

Then the parent resumes; all four fly at once. A plain `twin run` of the same
seed and plan flies afterwards: the parent's report must equal it (its forks
changed nothing of it).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from services.ground.plan import NOMINAL_PLAN
from services.kernel.natsd import NatsServer
from services.kernel.security import OPERATOR, Security, provision
from services.kernel.subjects import Subjects
from tests.integration.twin_helpers import wait_text

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TWIN = [sys.executable, "-m", "services.cli.app"]
# Wall-clock allowances on a 2-core machine: they bound a hang, not a speed.
START_DEADLINE_S = 90.0
FLIGHT_DEADLINE_S = 300.0
CALL_DEADLINE_S = 60.0
#: The branch step of ce6-cmd: after the last commit before undocking (commits
#: come every 1,000 steps or 2 wall s) and before undocking itself (step ~3,579).
CMD_STEP = 3500
DAY_S = 86_400.0
#: The day-later return lands within this of a day after the parent (the
#: entry is targeted a day later; the skip and the parachute vary by minutes).
DAY_LATER_TOLERANCE_S = 1_800.0
EXIT_IDENTICAL, EXIT_DIFFER, EXIT_BAD = 0, 1, 2
#: The sample the returner brings home (the real mission's 1,935.3 g).
SAMPLE_G = 1935.3


def _env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


def _twin(*args: str, timeout_s: float = CALL_DEADLINE_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TWIN, *args], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=timeout_s, check=False)


def _shift(utc: str, days: float) -> str:
    t = datetime.fromisoformat(utc.replace("Z", "+00:00")) + timedelta(days=days)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def day_later_plan() -> dict[str, Any]:
    """The nominal plan with the whole return a day later."""
    plan: dict[str, Any] = copy.deepcopy(orjson.loads(NOMINAL_PLAN.read_bytes()))
    plan["name"] = "return-a-day-later"
    plan["facts"]["ei_utc"] = _shift(plan["facts"]["ei_utc"], 1)
    for item in plan["items"]:
        if item["id"] in ("tei", "tcm3", "ret_sep"):
            item["at"] = _shift(item["at"], 1)
    plan["end"]["latest"] = _shift(plan["end"]["latest"], 1)
    return plan


@dataclass
class Flown:
    where: Path
    reports: dict[str, dict[str, Any]]  # p (parent), same, day, cmd, base
    outputs: dict[str, str]
    codes: dict[str, int]
    refusals: dict[str, subprocess.CompletedProcess[str]]
    records: dict[str, Any]  # read back from the logs after the flight
    held: subprocess.CompletedProcess[str]  # `twin clock time` of the held fork
    status: subprocess.CompletedProcess[str]  # `twin status` of it


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    return subprocess.Popen([*TWIN, *args], cwd=REPO, env=_env(), stdout=out,
                            stderr=subprocess.STDOUT)




async def _subject_records(nc: Client, stream: str, subject: str) -> list[Any]:
    js = nc.jetstream()
    out: list[Any] = []
    seq = 1
    while True:
        try:
            msg = await js.get_msg(stream, seq=seq, subject=subject, next=True)
        except NotFoundError:
            return out
        out.append(orjson.loads(msg.data or b"null"))
        assert msg.seq is not None
        seq = msg.seq + 1


async def _read_records(state_dir: Path) -> dict[str, Any]:
    """The fork records on the parent's log and the forks' own, from the
    parent's JetStream store, through a nats-server started on it again."""
    made = provision(state_dir, "ce6")
    security = Security(pki_dir=made.layout.pki_dir)
    out: dict[str, Any] = {}
    async with NatsServer(state_dir / "nats", config=made.server_config) as server:
        nc = await nats.connect(server.url, **security.nats_options("ce6", OPERATOR))
        try:
            s = Subjects("ce6")
            for child in ("ce6-same", "ce6-day", "ce6-cmd"):
                out[f"record:{child}"] = await _subject_records(nc, s.stream_name,
                                                                s.fork(child))
        finally:
            await nc.close()
        for child in ("ce6-same", "ce6-day", "ce6-cmd"):
            provision(state_dir, child, parent="ce6")
            nc = await nats.connect(server.url, **security.nats_options(child, OPERATOR))
            try:
                c = Subjects(child)
                ops = await _subject_records(nc, c.stream_name, c.ops("ground"))
                out[f"forked:{child}"] = [e[7] for e in ops if e[7].get("name") == "forked"]
            finally:
                await nc.close()
    return out


@pytest.fixture(scope="module")
def flown(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flown]:
    where = tmp_path_factory.mktemp("fork")
    state = where / "p"
    plan = where / "day.json"
    plan.write_bytes(orjson.dumps(day_later_plan()))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {name: where / f"{name}.out" for name in ("p", "same", "day", "cmd")}
    try:
        procs["p"] = _start(["up", "--paused", "--free-ports", "--state-dir", str(state),
                             "--report", str(where / "p.json"), "--log-level", "WARNING"],
                            logs["p"])
        wait_text(logs["p"], "healthy", START_DEADLINE_S)
        until = _twin("clock", "until", "undocking", "--wait", "--state-dir", str(state),
                      timeout_s=FLIGHT_DEADLINE_S)
        assert until.returncode == 0, until.stdout + until.stderr
        refusals = _refusals(state, plan)
        common = ["--state-dir", str(state), "--no-live"]
        procs["same"] = _start(["fork", "ce6", "--as", "ce6-same", "--at", "now", *common,
                                "--report", str(where / "same.json")], logs["same"])
        procs["day"] = _start(["fork", "ce6", "--as", "ce6-day", "--at", "undocking",
                               "--plan", str(plan), *common,
                               "--report", str(where / "day.json")], logs["day"])
        procs["cmd"] = _start(["fork", "ce6", "--as", "ce6-cmd", "--at", f"step:{CMD_STEP}",
                               "--command", "ground set_mode mode=what_if", "--paused",
                               *common, "--report", str(where / "cmd.json")], logs["cmd"])
        for name in ("same", "day", "cmd"):  # recorded while the parent is paused
            wait_text(logs[name], "recorded in", CALL_DEADLINE_S)
        resumed = _twin("clock", "resume", "--state-dir", str(state))
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        # ce6-cmd holds at its branch commit: a fork's state dir drives it like any
        wait_text(logs["cmd"], "healthy in", START_DEADLINE_S)
        fork_dir = str(state / "forks" / "ce6-cmd")
        held = _twin("clock", "time", "--state-dir", fork_dir)
        status = _twin("status", "--state-dir", fork_dir, "--mission", "ce6-cmd")
        go = _twin("clock", "resume", "--state-dir", fork_dir)
        assert go.returncode == 0, go.stdout + go.stderr
        codes = {name: proc.wait(timeout=FLIGHT_DEADLINE_S) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    base = _twin("run", "--state-dir", str(where / "base"), "--report",
                 str(where / "base.json"), timeout_s=FLIGHT_DEADLINE_S)
    assert base.returncode == 0, base.stdout + base.stderr
    reports = {name: orjson.loads((where / f"{name}.json").read_bytes())
               for name in ("p", "same", "day", "cmd", "base") if (where / f"{name}.json").exists()}
    outputs = {name: path.read_text(errors="replace") for name, path in logs.items()}
    records = asyncio.run(_read_records(state))
    yield Flown(where, reports, outputs, codes, refusals, records, held, status)


def _refusals(state: Path, plan: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """Forks ground must refuse, each asked while the parent is paused."""
    common = ["--state-dir", str(state), "--request-only"]
    changed_past = orjson.loads(plan.read_bytes())
    for item in changed_past["items"]:
        if item["id"] == "la_sep":  # issued on 2024-05-30, before the branch
            item["at"] = "2024-05-30T07:00:00Z"
    past = plan.with_name("past.json")
    past.write_bytes(orjson.dumps(changed_past))
    out = {
        "unseen": _twin("fork", "ce6", "--as", "x1", "--at", "earth_landing", *common),
        "past": _twin("fork", "ce6", "--as", "x2", "--at", "undocking", "--plan", str(past),
                      *common),
        "future": _twin("fork", "ce6", "--as", "x3", "--at", "2024-06-20T00:00:00Z", *common),
        "own_id": _twin("fork", "ce6", "--as", "ce6", *common),
        "first": _twin("fork", "ce6", "--as", "x4", "--at", "now", *common),
    }
    out["again"] = _twin("fork", "ce6", "--as", "x4", "--at", "now", *common)
    return out


def _digest(rows: list[dict[str, Any]]) -> str:
    return hashlib.sha256(orjson.dumps(rows, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _before(report: dict[str, Any], t_s: float) -> list[dict[str, Any]]:
    return [e for e in report["events"] if e["t_s"] < t_s]


def _event(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in report["events"] if e["name"] == name)


# --- the tests ----------------------------------------------------------------------------
def test_every_mission_finished(flown: Flown) -> None:
    assert flown.codes == {"p": 0, "same": 0, "day": 0, "cmd": 0}, flown.outputs
    for name in ("p", "same", "day", "cmd", "base"):
        assert flown.reports[name]["outcome"] == "finished", name


def test_a_fork_with_no_change_gives_the_parents_report(flown: Flown) -> None:
    p, same = flown.reports["p"], flown.reports["same"]
    assert same["events"] == p["events"]
    assert same["final"] == p["final"]
    assert same["fork"]["parent"] == "ce6" and same["fork"]["change"]["items"] == []
    done = _twin("diff", str(flown.where / "p.json"), str(flown.where / "same.json"))
    assert done.returncode == EXIT_IDENTICAL, done.stdout + done.stderr


def test_the_parents_report_is_unchanged_by_its_forks(flown: Flown) -> None:
    p, base = flown.reports["p"], flown.reports["base"]
    assert p["events"] == base["events"] and p["final"] == base["final"]
    done = _twin("diff", str(flown.where / "base.json"), str(flown.where / "p.json"))
    assert done.returncode == EXIT_IDENTICAL, done.stdout + done.stderr


def test_a_day_later_return_agrees_until_the_branch_and_lands_a_day_later(flown: Flown) -> None:
    p, day = flown.reports["p"], flown.reports["day"]
    branch = day["fork"]["branch"]
    assert branch["at"] == "event:undocking"
    assert branch["t_s"] == _event(p, "undocking")["t_s"]
    assert day["fork"]["commit_step"] <= branch["step"]
    assert _digest(_before(day, branch["t_s"])) == _digest(_before(p, branch["t_s"]))
    assert len(_before(p, branch["t_s"])) > len(p["events"]) / 2  # deep into the mission
    later = _event(day, "earth_landing")["t_s"] - _event(p, "earth_landing")["t_s"]
    assert abs(later - DAY_S) < DAY_LATER_TOLERANCE_S
    returner = day["final"]["returner"]
    assert returner["landed"] is True and returner["sample_mass_g"] == SAMPLE_G
    assert day["plan"] == "return-a-day-later"
    done = _twin("diff", str(flown.where / "p.json"), str(flown.where / "day.json"))
    assert done.returncode == EXIT_DIFFER
    [zone] = [line for line in done.stdout.splitlines() if "Earth landing in the zone" in line]
    assert zone.split()[-2:] == ["yes", "yes"], zone
    assert "earth_landing" in done.stdout and "moved" in done.stdout
    assert "first divergence: 2024-06-15" in done.stdout  # return_prep, the first change


def test_a_command_at_a_step_is_issued_exactly_there(flown: Flown) -> None:
    p, cmd = flown.reports["p"], flown.reports["cmd"]
    branch = cmd["fork"]["branch"]
    assert (branch["at"], branch["step"]) == (f"step:{CMD_STEP}", CMD_STEP)
    step_end = max(e["t_s"] for e in p["events"] if e["step"] <= CMD_STEP)
    assert branch["t_s"] >= step_end
    issued = [e for e in cmd["events"] if e["name"] == "plan_item_issued"
              and e.get("id") == "fork-1"]
    assert len(issued) == 1 and issued[0]["t_s"] == branch["t_s"]
    changed = [e for e in cmd["events"] if e["name"] == "mode_changed"
               and e.get("mode") == "what_if"]
    assert len(changed) == 1 and changed[0]["t_s"] == branch["t_s"]
    assert _digest(_before(cmd, branch["t_s"])) == _digest(_before(p, branch["t_s"]))


def test_the_logs_record_parent_branch_and_change(flown: Flown) -> None:
    for child in ("ce6-same", "ce6-day", "ce6-cmd"):
        [record] = flown.records[f"record:{child}"]
        [forked] = flown.records[f"forked:{child}"]
        assert record["parent"] == forked["parent"] == "ce6"
        assert record["branch"] == forked["branch"]
        assert record["change"] == forked["change"]
        assert forked["commit_step"] == record["commit"]["step"]
    day = flown.records["record:ce6-day"][0]
    assert day["change"]["plan"] == "return-a-day-later" and day["seed"] == 6
    cmd = flown.records["record:ce6-cmd"][0]
    assert cmd["change"]["items"] == [{"target": "ground",
                                       "command": {"op": "set_mode", "mode": "what_if"}}]


def test_forks_that_cannot_be_are_refused_with_the_reason(flown: Flown) -> None:
    r = flown.refusals
    assert r["unseen"].returncode == EXIT_FAILED_PRECONDITION
    assert "has not happened" in r["unseen"].stderr
    assert r["past"].returncode == EXIT_BAD and "'la_sep' was issued" in r["past"].stderr
    assert r["future"].returncode == EXIT_BAD and "after the mission's current time" \
        in r["future"].stderr
    assert r["own_id"].returncode == EXIT_BAD
    assert r["first"].returncode == 0, r["first"].stdout + r["first"].stderr
    assert r["again"].returncode == EXIT_BAD and "already has a fork 'x4'" in r["again"].stderr


#: FAILED_PRECONDITION is not the caller's argument: exit 1, like an unreachable ground.
EXIT_FAILED_PRECONDITION = 1


def test_a_held_fork_is_driven_through_its_own_state_dir(flown: Flown) -> None:
    assert flown.held.returncode == 0, flown.held.stdout + flown.held.stderr
    commit = flown.reports["cmd"]["fork"]["commit_step"]
    assert "paused" in flown.held.stdout and f"step {commit}" in flown.held.stdout
    assert flown.status.returncode == 0, flown.status.stdout + flown.status.stderr
    assert flown.status.stdout.count(f" {commit} ") >= 6  # six services at the commit


def test_the_views_say_who_is_whose_fork(flown: Flown) -> None:
    assert "fork of ce6 at " in flown.outputs["day"]
    assert "(event:undocking, parent step" in flown.outputs["day"]
    assert "change: plan return-a-day-later" in flown.outputs["day"]
    noted = [line for line in flown.outputs["p"].splitlines()
             if line.startswith("forks flying on this NATS: ")]
    for child in ("ce6-cmd", "ce6-day", "ce6-same"):
        assert any(child in line for line in noted), noted
