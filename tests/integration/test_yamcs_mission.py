"""A real Yamcs as the twin's mission control: the whole nominal mission flown
with the CCSDS gateway feeding Yamcs, and telecommands sent from Yamcs.

* Commands: a short run, paused. SET_MODE to the orbiter, issued with
  yamcs-client, reaches the orbiter, which goes ``safe``. Yamcs' verifiers
  (TransferredToRange, SentFromRange, Complete) follow it to the end through
  the gateway's CMD_ACK packets. An OPERATION for the lander, stowed at launch,
  is refused on board, and the Failed verifier says so.
* Telemetry: the nominal mission, read back from Yamcs' archive. The lander's
  altitude falls through the powered descent, and each value's generation
  time is the mission time of a frame the lander recorded. The orbiter holds
  the 1,935.3 g sample after the transfer. Ground's view of Queqiao-2's link
  is archived.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from yamcs.client import YamcsClient  # type: ignore[import-untyped]

from services.cli.ccsds import free_udp_port
from services.kernel.yamcsd import YamcsServer
from tests.integration.twin_helpers import wait_text

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TWIN = [sys.executable, "-m", "services.cli.app"]
INSTANCE, SPACE = "change6", "/change6"
# Wall-clock allowances on a 2-core machine: they bound a hang, not a speed.
START_DEADLINE_S = 90.0
FLIGHT_DEADLINE_S = 300.0
CALL_DEADLINE_S = 60.0
SETTLE_S = 2.0  # wall seconds for the gateway's packets to reach Yamcs' archive
#: Chang'e-6's launch, the twin's mission time 0 (2024-05-03T09:27:29Z).
LAUNCH = datetime(2024, 5, 3, 9, 27, 29, tzinfo=UTC)
#: Yamcs keeps generation times to the millisecond.
YAMCS_TIME_RESOLUTION_S = 1e-3
SAMPLE_G = 1935.3  # the real mission's sample
#: Chang'e-6's powered descent began ~15 km above the site (docs/mission.md).
DESCENT_DROP_M = 10_000.0
SHORT_PLAN = {
    "name": "yamcs-commands", "end": {"at": "2024-05-05T00:00:00Z"},
    "items": [{"id": "separation", "at": "2024-05-03T10:04:00Z", "target": "orbiter",
               "command": {"op": "probe_separation", "loi_utc": "2024-05-08T02:12:00Z"},
               "phase": "earth_moon_transfer"}],
}


def _twin(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TWIN, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=CALL_DEADLINE_S, check=False,
                          env={**os.environ, "COLUMNS": "200"})






def _t(when: datetime) -> float:
    return (when - LAUNCH).total_seconds()


@dataclass
class Flown:
    client: YamcsClient
    commands: dict[str, dict[str, Any]]  # name -> the command history attributes
    status: str
    report: dict[str, Any]
    telemetry: list[dict[str, Any]]

    def values(self, parameter: str, start: datetime, stop: datetime) -> list[Any]:
        archive = self.client.get_archive(INSTANCE)
        found = archive.list_parameter_values(f"{SPACE}/{parameter}", start=start, stop=stop)
        return sorted(found, key=lambda v: v.generation_time)


def _flight(state: Path, plan: Path | None, yamcs: YamcsServer, *extra: str
            ) -> subprocess.Popen[bytes]:
    log = state.with_suffix(".out")
    return subprocess.Popen(
        [*TWIN, "up", "--free-ports", "--state-dir", str(state), "--log-level", "WARNING",
         "--ccsds-tm", f"127.0.0.1:{yamcs.tm_port}", "--ccsds-tc", f"127.0.0.1:{yamcs.tc_port}",
         *(["--plan", str(plan)] if plan else []), *extra],
        cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"})


def _commands(yamcs: YamcsServer, client: YamcsClient, where: Path) -> tuple[dict[str, Any],
                                                                           str]:
    """The short paused run: two commands from Yamcs, followed to their end."""
    plan = where / "short.json"
    plan.write_bytes(orjson.dumps(SHORT_PLAN))
    state = where / "commands"
    proc = _flight(state, plan, yamcs, "--paused")
    try:
        wait_text(state.with_suffix(".out"), "healthy in", START_DEADLINE_S)
        assert _twin("clock", "step", "3", "--state-dir", str(state)).returncode == 0
        processor = client.get_processor(INSTANCE, "realtime")
        processor.issue_command(f"{SPACE}/ORBITER_SET_MODE",
                                args={"command_id": 501, "mode": "safe"})
        processor.issue_command(f"{SPACE}/LANDER_OPERATION",
                                args={"command_id": 502, "operation": "drill"})
        time.sleep(SETTLE_S)  # ground takes them at its next step
        assert _twin("clock", "step", "3", "--state-dir", str(state)).returncode == 0
        time.sleep(SETTLE_S)
        status = _twin("status", "--state-dir", str(state)).stdout
    finally:
        proc.terminate()
        proc.wait(timeout=CALL_DEADLINE_S)
    history = {entry.name.rsplit("/", 1)[1]: dict(entry.attributes)
               for entry in client.get_archive(INSTANCE).list_command_history()}
    return history, status


@pytest.fixture(scope="module")
def flown(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flown]:
    where = tmp_path_factory.mktemp("yamcs-mission")
    with YamcsServer(where / "yamcs", http_port=0, tm_port=0, tc_port=free_udp_port()) as yamcs:
        client = YamcsClient(yamcs.url.removeprefix("http://"))
        try:
            commands, status = _commands(yamcs, client, where)
            state = where / "nominal"
            proc = _flight(state, None, yamcs, "--report", str(where / "nominal.json"))
            assert proc.wait(timeout=FLIGHT_DEADLINE_S) == 0, \
                state.with_suffix(".out").read_text(errors="replace")
            time.sleep(SETTLE_S)
            report = orjson.loads((where / "nominal.json").read_bytes())
            telemetry = [orjson.loads(line) for line in
                         (where / "nominal.telemetry.jsonl").read_bytes().splitlines()]
            yield Flown(client, commands, status, report, telemetry)
        finally:
            client.close()


def _event_time(report: dict[str, Any], name: str) -> datetime:
    t = next(e["t_s"] for e in report["events"] if e["name"] == name)
    return LAUNCH + timedelta(seconds=t)


def test_a_command_from_yamcs_changes_its_vehicle_and_every_verifier_passes(
        flown: Flown) -> None:
    orbiter = next(line for line in flown.status.splitlines() if line.startswith("orbiter"))
    assert " safe " in orbiter, flown.status
    attrs = flown.commands["ORBITER_SET_MODE"]
    for stage in ("TransferredToRange", "SentFromRange", "Complete"):
        assert attrs.get(f"Verifier_{stage}_Status") == "OK", (stage, attrs)
    assert attrs.get("Verifier_Failed_Status") != "OK"


def test_a_command_refused_on_board_fails_its_verifier(flown: Flown) -> None:
    attrs = flown.commands["LANDER_OPERATION"]
    assert attrs.get("Verifier_TransferredToRange_Status") == "OK", attrs
    assert attrs.get("Verifier_Failed_Status") == "OK", attrs  # the failure was seen
    assert attrs.get("Verifier_Complete_Status") != "OK"


def test_the_landers_altitude_falls_through_the_descent_at_mission_times(flown: Flown) -> None:
    start = _event_time(flown.report, "powered_descent_start")
    stop = _event_time(flown.report, "lunar_touchdown")
    values = flown.values("lander_alt_m", start, stop + timedelta(seconds=1))
    assert len(values) > 20, len(values)
    alts = [float(v.eng_value) for v in values]
    # from the start of the braking burn down to the ground (altitudes are above the
    # Moon's mean radius: the site lies ~5.3 km below it)
    assert alts[0] - alts[-1] > DESCENT_DROP_M and alts[-1] == min(alts), (alts[0], alts[-1])
    measured = sorted(r["t_s"] for r in flown.telemetry if r["vehicle"] == "lander")
    for v in values:  # each generation time is the mission time of a lander frame
        t = _t(v.generation_time)
        nearest = min(measured, key=lambda m: abs(m - t))
        assert abs(nearest - t) <= YAMCS_TIME_RESOLUTION_S, (v.generation_time, nearest)


def test_the_orbiter_holds_the_sample_after_the_transfer(flown: Flown) -> None:
    after = _event_time(flown.report, "sample_transfer")
    values = flown.values("orbiter_sample_mass_g", after + timedelta(minutes=5),
                          after + timedelta(days=1))
    assert values and all(float(v.eng_value) == SAMPLE_G for v in values)


def test_ground_view_of_the_relays_link_is_archived(flown: Flown) -> None:
    values = flown.values("relay_link", LAUNCH, LAUNCH + timedelta(days=60))
    states = {str(v.eng_value) for v in values}
    assert "direct" in states, states
    assert all(LAUNCH <= v.generation_time <= LAUNCH + timedelta(days=54) for v in values)
