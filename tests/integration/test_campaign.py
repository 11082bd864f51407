"""Monte Carlo campaigns end to end: real Dask LocalClusters, real vehicles, real signals.

* a 20-case campaign on the short plan runs on a LocalCluster of two worker
  processes, and run twice gives byte-identical Parquet;
* a worker killed with SIGKILL mid-campaign is replaced and its cases flown
  again: the campaign ends with every case ok and the same Parquet;
* the CLI killed mid-campaign, `twin campaign resume` flies only the missing
  cases, to the same Parquet; a changed campaign file is refused;
* dispersions reach the vehicles (their `parameters_applied` events) and act:
  a navigation bias moves the touchdown, a thrust scale lengthens the descent;
* the NATS cross-check flies a sample again as the six services and gets the
  same digest; `twin campaign rerun` reproduces a case as a full mission.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
import pyarrow.parquet as pq
import pytest
import yaml

from services.campaign.case import CaseSpec, fly_case
from services.campaign.run import CampaignDir
from services.dynamics.constants import R_MOON_M

pytestmark = pytest.mark.slow

TWIN = [sys.executable, "-m", "services.cli.app"]
#: Wall seconds a campaign CLI may take on a loaded 2-core machine: a bound on
#: a hang, never a speed assertion.
CAMPAIGN_DEADLINE_S = 600.0
#: The LROC site (reference timeline row 14), for the touchdown's east/north.
LROC_LAT_DEG, LROC_LON_DEG = -41.6385, -153.9852

SHORT: dict[str, Any] = {
    "name": "short-ci", "plan": "short", "seed": 424242, "cases": 20,
    "dispersions": {
        "orbiter.engine.isp_scale": {"dist": "normal", "sigma": 0.5, "unit": "%"},
        "lander.engine.thrust_scale": {"dist": "uniform", "low": -2, "high": 2, "unit": "%"},
        "reentry.atmosphere.density_scale": {"dist": "normal", "sigma": 5, "unit": "%"},
    },
}


def _write(tmp_path: Path, campaign: dict[str, Any], name: str = "campaign.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(campaign))
    return path


def _twin(*args: str, timeout_s: float = CAMPAIGN_DEADLINE_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TWIN, *args], capture_output=True, text=True, timeout=timeout_s,
                          check=False, env=os.environ | {"COLUMNS": "200"})


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*TWIN, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True,
                            env=os.environ | {"COLUMNS": "200"})


def _wait_for_cases(out: Path, at_least: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + CAMPAIGN_DEADLINE_S
    while len(list((out / "cases").glob("*.json"))) < at_least:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "no cases finished"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """The short campaign run once, undisturbed: its file and its Parquet bytes."""
    tmp = tmp_path_factory.mktemp("reference")
    file = _write(tmp, SHORT)
    done = _twin("campaign", "run", str(file), "--workers", "2", "--out", str(tmp / "out"))
    assert done.returncode == 0, done.stdout + done.stderr
    return file, (tmp / "out" / "cases.parquet").read_bytes()


def test_a_campaign_runs_on_a_local_cluster_and_twice_gives_the_same_parquet(
        reference: tuple[Path, bytes], tmp_path: Path) -> None:
    file, first = reference
    done = _twin("campaign", "run", str(file), "--workers", "2", "--out", str(tmp_path / "o"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "o" / "cases.parquet").read_bytes() == first
    table = pq.read_table(tmp_path / "o" / "cases.parquet").to_pylist()
    assert [r["case"] for r in table] == list(range(20))
    assert {r["status"] for r in table} == {"ok"}
    # What the vehicles applied is what each case drew, and the draws differ.
    for r in table:
        for path in SHORT["dispersions"]:
            assert r[f"p.{path}"] == r[f"drawn.{path}"]
    assert len({r["p.lander.engine.thrust_scale"] for r in table}) == 20
    assert all(0.98 <= r["p.lander.engine.thrust_scale"] <= 1.02 for r in table)
    assert len({r["digest"] for r in table}) == 20  # each case announced its own values
    manifest = orjson.loads((tmp_path / "o" / "manifest.json").read_bytes())
    assert manifest["root_seed"] == SHORT["seed"] and manifest["cases"] == 20
    assert "20 of 20 cases ok" in done.stdout


def test_a_worker_killed_mid_campaign_is_replaced_and_the_result_is_the_same(
        reference: tuple[Path, bytes], tmp_path: Path) -> None:
    file, first = reference
    out = tmp_path / "o"
    proc = _start("campaign", "run", str(file), "--workers", "2", "--out", str(out))
    try:
        _wait_for_cases(out, 2, proc)
        pids = {orjson.loads(p.read_bytes())["cost"]["pid"] for p in (out / "cases").glob("*")}
        victim = next(iter(pids))
        assert victim in {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        os.kill(victim, signal.SIGKILL)
        output, _ = proc.communicate(timeout=CAMPAIGN_DEADLINE_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output
    assert (out / "cases.parquet").read_bytes() == first
    assert not psutil.pid_exists(victim)


def test_resume_flies_only_the_missing_cases_to_the_same_parquet(
        reference: tuple[Path, bytes], tmp_path: Path) -> None:
    # 60 cases, so that killing the CLI after its third leaves many to fly (of
    # 20, a burst of results once finished them all first). A case's draws do
    # not depend on how many cases there are: the first 20 are the reference's.
    _, first = reference
    file = tmp_path / "campaign.yaml"
    file.write_text(yaml.safe_dump(SHORT | {"cases": 60}))
    out = tmp_path / "o"
    proc = _start("campaign", "run", str(file), "--workers", "2", "--out", str(out))
    try:
        _wait_for_cases(out, 3, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its cluster, every worker
        proc.communicate()
    done_before = len(list((out / "cases").glob("*.json")))
    assert 3 <= done_before < 60 and not (out / "cases.parquet").exists()
    file.unlink()  # resumed elsewhere (another pod): the copy in the campaign dir serves
    resumed = _twin("campaign", "resume", str(out), "--workers", "2")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "is not here: resuming from the copy" in resumed.stdout
    assert f"{done_before} of 60 cases done, {60 - done_before} to fly" in resumed.stdout
    rows = pq.read_table(out / "cases.parquet").to_pylist()
    assert [r["case"] for r in rows] == list(range(60))
    assert {r["status"] for r in rows} == {"ok"}
    ref_path = tmp_path / "reference.parquet"
    ref_path.write_bytes(first)
    keys = ("case", "status", "digest", *(f"p.{p}" for p in SHORT["dispersions"]))
    assert [{k: r[k] for k in keys} for r in rows[:20]] == \
        [{k: r[k] for k in keys} for r in pq.read_table(ref_path).to_pylist()]


def test_resume_refuses_a_changed_campaign_file(reference: tuple[Path, bytes],
                                                tmp_path: Path) -> None:
    file = _write(tmp_path, SHORT | {"cases": 2})
    out = tmp_path / "o"
    assert _twin("campaign", "run", str(file), "--out", str(out)).returncode == 0
    file.write_text(yaml.safe_dump(SHORT | {"cases": 2, "seed": 1}))
    refused = _twin("campaign", "resume", str(out))
    assert refused.returncode == 2
    assert "changed since the campaign started" in refused.stdout
    again = _twin("campaign", "run", str(file), "--out", str(out))
    assert again.returncode == 2 and "already holds a campaign" in again.stdout


def test_a_bad_campaign_file_is_refused_with_what_to_fix(tmp_path: Path) -> None:
    file = _write(tmp_path, SHORT | {"dispersions": {
        "lander.engine.thrust": {"dist": "normal", "sigma": 1}}})
    done = _twin("campaign", "run", str(file), "--out", str(tmp_path / "o"))
    assert done.returncode == 2
    assert "dispersions.lander.engine.thrust: no such parameter; lander has:" in done.stdout
    assert "lander.engine.thrust_scale" in done.stdout
    assert not (tmp_path / "o").exists()


def test_a_case_past_its_budget_is_a_timeout_and_the_campaign_goes_on(tmp_path: Path) -> None:
    file = _write(tmp_path, SHORT | {"cases": 3, "case_budget_s": 1e-6})
    done = _twin("campaign", "run", str(file), "--workers", "1", "--out", str(tmp_path / "o"))
    assert done.returncode == 0, done.stdout + done.stderr
    rows = pq.read_table(tmp_path / "o" / "cases.parquet").to_pylist()
    assert [r["status"] for r in rows] == ["timeout"] * 3
    assert all(r["reason"].startswith("past its budget of 1e-06 wall s") for r in rows)
    assert not any(r["success"] for r in rows)


def test_a_case_that_raises_is_failed_with_its_reason_and_the_campaign_goes_on(
        tmp_path: Path) -> None:
    # An unbounded normal of 5 % on a thrust factor the lander allows only to
    # +-5 %: some cases draw a value the vehicle refuses, when it is built.
    file = _write(tmp_path, {**SHORT, "cases": 6, "dispersions": {
        "lander.engine.thrust_scale": {"dist": "normal", "sigma": 5, "unit": "%"}}})
    done = _twin("campaign", "run", str(file), "--workers", "2", "--out", str(tmp_path / "o"))
    assert done.returncode == 0, done.stdout + done.stderr
    rows = pq.read_table(tmp_path / "o" / "cases.parquet").to_pylist()
    failed = [r for r in rows if r["status"] == "failed"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert failed and ok, [(r["status"], r["drawn.lander.engine.thrust_scale"]) for r in rows]
    for r in failed:
        assert not 0.95 <= r["drawn.lander.engine.thrust_scale"] <= 1.05
        assert "lander.engine.thrust_scale" in r["reason"]
        assert "outside what the vehicle can have" in r["reason"]
        assert math.isnan(r["p.lander.engine.thrust_scale"])  # nothing reached the vehicle
    for r in ok:
        assert 0.95 <= r["p.lander.engine.thrust_scale"] <= 1.05


def test_a_campaign_runs_on_an_existing_dask_scheduler(reference: tuple[Path, bytes],
                                                       tmp_path: Path) -> None:
    file, first = reference
    dask = str(Path(sys.executable).parent / "dask")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--no-dashboard"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
    workers = [subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--nworkers", "1",
                                 "--no-dashboard"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
               for _ in range(2)]
    try:
        done = _twin("campaign", "run", str(file), "--scheduler", address,
                     "--out", str(tmp_path / "o"))
        family = {w.pid for w in workers} | {c.pid for w in workers for c in _children(w.pid)}
    finally:
        for proc in (*workers, scheduler):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "o" / "cases.parquet").read_bytes() == first
    pids = {r["cost"]["pid"] for r in CampaignDir(tmp_path / "o").rows().values()}
    assert pids and pids <= family  # flown by the scheduler's workers, not a local cluster


def _children(pid: int) -> list[psutil.Process]:
    try:
        found: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return found


# --- dispersions reach the vehicles and act --------------------------------------

def _east_north_m(lat_deg: float, lon_deg: float) -> tuple[float, float]:
    """Touchdown east/north of the LROC site on the sphere of the Moon's radius
    (metres; the site's 5 km depth changes them by 0.3 %)."""
    lat0, lon0 = math.radians(LROC_LAT_DEG), math.radians(LROC_LON_DEG)
    lat, lon = math.radians(lat_deg), math.radians(lon_deg)
    return R_MOON_M * math.cos(lat0) * (lon - lon0), R_MOON_M * (lat - lat0)


@pytest.fixture(scope="module")
def nominal_case() -> dict[str, Any]:
    return fly_case(CaseSpec(0, "nominal", 6, {}))


def test_a_navigation_bias_moves_the_touchdown_by_as_much_the_other_way(
        nominal_case: dict[str, Any]) -> None:
    bias_m = 40.0
    row = fly_case(CaseSpec(1, "nominal", 6, {"lander.navigation.bias_east_m": bias_m}))
    assert row["status"] == "ok", row["reason"]
    assert row["applied"] == {"lander.navigation.bias_east_m": bias_m}
    e0, n0 = _east_north_m(nominal_case["touchdown_lat_deg"], nominal_case["touchdown_lon_deg"])
    e1, n1 = _east_north_m(row["touchdown_lat_deg"], row["touchdown_lon_deg"])
    # It believes itself 40 m east of where it is: it lands 40 m west (within the
    # 0.5 m the hover hands over at, and the event's 1e-6 degree rounding).
    assert e1 - e0 == pytest.approx(-bias_m, abs=1.0)
    assert n1 - n0 == pytest.approx(0.0, abs=1.0)


def test_a_weaker_engine_lands_later_with_less_propellant(nominal_case: dict[str, Any]) -> None:
    row = fly_case(CaseSpec(2, "nominal", 6, {"lander.engine.thrust_scale": 0.96}))
    assert row["status"] == "ok", row["reason"]
    assert row["applied"] == {"lander.engine.thrust_scale": 0.96}
    assert row["touchdown_t_s"] > nominal_case["touchdown_t_s"]
    assert row["lander_propellant_kg"] < nominal_case["lander_propellant_kg"]
    assert row["success"]


def test_the_nats_cross_check_and_rerun_give_the_in_process_digest(tmp_path: Path) -> None:
    file = _write(tmp_path, SHORT | {"cases": 3, "nats_check": 1})
    out = tmp_path / "o"
    done = _twin("campaign", "run", str(file), "--workers", "2", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    check = orjson.loads((out / "nats" / "000000.json").read_bytes())
    assert check["exit"] == 0 and check["same"], check
    report = orjson.loads(Path(check["report"]).read_bytes())
    applied = {k: v for e in report["events"] if e["name"] == "parameters_applied"
               for k, v in e["parameters"].items()}
    row = CampaignDir(out).rows()[0]
    assert applied == row["parameters"]  # the services over NATS applied the case's draws
    assert "NATS cross-check: 1 case(s) flown by the six services gave the in-process digests" \
        in done.stdout
    rerun = _twin("campaign", "rerun", str(out), "2")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "matches the campaign's" in rerun.stdout
    assert (out / "rerun" / "000002" / "report.json").exists()
