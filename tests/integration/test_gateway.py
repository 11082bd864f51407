"""The CCSDS gateway with real processes: `twin up --ccsds-tm --ccsds-tc` on a
real nats-server, six services and the gateway, telemetry captured on a UDP
socket of the test and decoded with space-packet-parser from the XTCE
(an independent decoder, not the gateway's code), telecommands sent to it as
CCSDS packets.

The run: launch to two days after, paused at first. A telecommand
(``SET_MODE safe`` to the orbiter) is sent while it is paused, a few steps
are taken, and it must come back as CMD_ACK accepted, uplinked, executed, in
that order, with the orbiter in ``safe``. Garbage on the TC port is counted,
not acknowledged. Then the mission runs to its end and what came out is held
against the run's own report: one HK packet per frame ground received, one
EVENT packet per mission event, sequence counts without a gap, and times that
are mission times.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from openc3.packets.packet_config import PacketConfig  # type: ignore[import-untyped]
from openc3.packets.telemetry import Telemetry  # type: ignore[import-untyped]
from space_packet_parser import load_xtce  # type: ignore[import-untyped]

from services.cli.ccsds import free_udp_port
from services.gateway import dictionary as d
from services.gateway import packets
from tests.integration.test_mdb_decode import COSMOS_TARGETS, _cosmos_matches, _plain
from tests.integration.twin_helpers import wait_text

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TWIN = [sys.executable, "-m", "services.cli.app"]
XTCE = REPO / "deploy" / "yamcs" / "mdb" / "change6.xml"
# Wall-clock allowances on a 2-core machine: they bound a hang, not a speed.
START_DEADLINE_S = 90.0
FLIGHT_DEADLINE_S = 180.0
CALL_DEADLINE_S = 60.0
SETTLE_S = 1.0  # wall seconds for UDP datagrams in flight to land
COMMAND_ID = 77
PLAN = {
    "name": "gateway-test",
    "description": "Launch, separation, two days of cruise; written by test_gateway.py.",
    "end": {"at": "2024-05-05T00:00:00Z"},
    "items": [{"id": "separation", "at": "2024-05-03T10:04:00Z", "target": "orbiter",
               "command": {"op": "probe_separation", "loi_utc": "2024-05-08T02:12:00Z"},
               "phase": "earth_moon_transfer"}],
}
#: CCSDS 133.0-B: the APID is the low 11 bits of the first two octets; the
#: sequence count the low 14 of the next two; a TM packet's id follows the
#: 6-octet primary and 6-octet CUC headers.
PACKET_ID_OCTET = 12
HK, EVENT, CMD_ACK, LINKS = 1, 2, 3, 4
GROUND_APID = 100
#: Chang'e-6's launch, 2024-05-03T09:27:29Z, in Unix seconds (mission time 0).
LAUNCH_UNIX_S = 1_714_728_449
#: One fine CUC unit (2^-16 s): a packet's time may be below its instant by less.
CUC_FINE_S = 2.0 ** -16


def _apid(p: bytes) -> int:
    return ((p[0] << 8) | p[1]) & 0x7FF


def _seq(p: bytes) -> int:
    return ((p[2] << 8) | p[3]) & 0x3FFF


def _cuc_s(p: bytes) -> float:
    coarse = int.from_bytes(p[6:10], "big")
    return coarse + int.from_bytes(p[10:12], "big") / 65536.0


class Capture:
    """Every datagram that reaches a UDP port, kept in arrival order."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.packets: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.packets.append(self.sock.recv(65_536))
            except TimeoutError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()




def _twin(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TWIN, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=CALL_DEADLINE_S, check=False,
                          env={**os.environ, "COLUMNS": "200"})




@dataclass
class Flown:
    tm: list[bytes]
    after_command: list[bytes]  # what had come when the commanded steps were taken
    report: dict[str, Any]
    status: str
    metrics: str
    code: int
    output: str
    decoded: dict[int, dict[str, Any]] = field(default_factory=dict)  # index -> parameters


@pytest.fixture(scope="module")
def flown(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flown]:
    where = tmp_path_factory.mktemp("gateway")
    state, plan, log = where / "state", where / "plan.json", where / "up.out"
    plan.write_bytes(orjson.dumps(PLAN))
    capture, tc_port = Capture(), free_udp_port()
    proc = subprocess.Popen(
        [*TWIN, "up", "--paused", "--free-ports", "--state-dir", str(state), "--plan", str(plan),
         "--report", str(where / "report.json"), "--log-level", "WARNING",
         "--ccsds-tm", f"127.0.0.1:{capture.port}", "--ccsds-tc", f"127.0.0.1:{tc_port}"],
        cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"})
    try:
        wait_text(log, "healthy in", START_DEADLINE_S)
        assert _twin("clock", "step", "5", "--state-dir", str(state)).returncode == 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tc:
            tc.sendto(packets.tc_packet("orbiter", {"op": "set_mode", "mode": "safe"},
                                        COMMAND_ID), ("127.0.0.1", tc_port))
            tc.sendto(b"\x18\x65\xc0\x00\x00\x01junk", ("127.0.0.1", tc_port))
        time.sleep(SETTLE_S)  # ground takes the command at its next step
        assert _twin("clock", "step", "5", "--state-dir", str(state)).returncode == 0
        time.sleep(SETTLE_S)
        after = list(capture.packets)
        status = _twin("status", "--state-dir", str(state)).stdout
        record = orjson.loads((state / "run.json").read_bytes())
        metrics_port = record["gateway"]["metrics_port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                    timeout=CALL_DEADLINE_S) as reply:
            metrics = reply.read().decode()
        assert _twin("clock", "resume", "--state-dir", str(state)).returncode == 0
        code = proc.wait(timeout=FLIGHT_DEADLINE_S)
        time.sleep(SETTLE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        capture.close()
    report = orjson.loads((where / "report.json").read_bytes())
    xtce = load_xtce(XTCE)
    decoded = {}
    for i, p in enumerate(capture.packets):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a packet not read whole fails
            decoded[i] = dict(xtce.parse_bytes(p))
    yield Flown(capture.packets, after, report, status, metrics, code,
                log.read_text(errors="replace"), decoded)


def _of(flown: Flown, packet_id: int, apid: int | None = None) -> list[int]:
    return [i for i, p in enumerate(flown.tm)
            if p[PACKET_ID_OCTET] == packet_id and (apid is None or _apid(p) == apid)]


def _acks(flown: Flown, packets_: list[bytes]) -> list[tuple[int, Any, Any]]:
    xtce = load_xtce(XTCE)
    out = []
    for p in packets_:
        if _apid(p) == GROUND_APID and p[PACKET_ID_OCTET] == CMD_ACK:
            v = {k: getattr(x, "raw_value", x) for k, x in xtce.parse_bytes(p).items()}
            ids = [k for k in v if k.lower().endswith("command_id")]
            stages = [k for k in v if k.lower().endswith("stage")]
            out.append((v[ids[0]], v[stages[0]], _cuc_s(p)))
    return out


def test_the_mission_finished(flown: Flown) -> None:
    assert flown.code == 0, flown.output
    assert flown.report["outcome"] == "finished"


def test_a_telecommand_is_accepted_uplinked_and_executed_in_that_order(flown: Flown) -> None:
    ours = [(stage, t) for cid, stage, t in _acks(flown, flown.after_command)
            if cid == COMMAND_ID]
    stages = [s for s, _t in ours]
    assert stages == [1, 2, 3], ours  # accepted, uplinked, executed (the dictionary's codes)
    times = [t for _s, t in ours]
    assert times == sorted(times)
    orbiter = next(line for line in flown.status.splitlines() if line.startswith("orbiter"))
    assert " safe " in orbiter, flown.status


def test_garbage_on_the_tc_port_is_counted_and_never_acknowledged(flown: Flown) -> None:
    malformed = [line for line in flown.metrics.splitlines()
                 if line.startswith("twin_gateway_telecommands_total")
                 and 'outcome="malformed"' in line]
    assert malformed and float(malformed[0].rsplit(" ", 1)[1]) == 1.0, malformed
    assert {cid for cid, _s, _t in _acks(flown, flown.tm)} == {COMMAND_ID}


def test_one_hk_packet_per_frame_ground_received(flown: Flown) -> None:
    values = flown.report["links"]["ground"]["values"]
    counts = Counter(_apid(flown.tm[i]) for i in _of(flown, HK))
    for vehicle, apid in packets.APIDS.items():
        if vehicle == "ground":
            continue
        received = int(values.get(f"frames_received_{vehicle}", 0))
        assert counts.get(apid, 0) == received, (vehicle, counts, received)
    assert sum(counts.values()) > 50


def test_hk_frames_are_each_sent_once_and_timed_when_measured(flown: Flown) -> None:
    seen: dict[int, list[int]] = {}
    for i in _of(flown, HK):
        v = flown.decoded[i]
        [key] = [k for k in v if k.lower().endswith("frame_seq")]
        seen.setdefault(_apid(flown.tm[i]), []).append(int(getattr(v[key], "raw_value", v[key])))
        t = _cuc_s(flown.tm[i]) - LAUNCH_UNIX_S
        assert 0.0 <= t <= 2 * 86_400.0  # within the plan's two days, not 1970
    for apid, seqs in seen.items():
        assert sorted(seqs) == list(range(1, len(seqs) + 1)), apid  # no repeat, no gap


def test_one_event_packet_per_event_at_its_mission_time(flown: Flown) -> None:
    events = flown.report["events"]
    sent = _of(flown, EVENT)
    assert len(sent) == len(events)
    first = min(events, key=lambda e: (e["t_s"], e["vehicle"], e["seq"]))
    times = sorted(_cuc_s(flown.tm[i]) for i in sent)
    assert math.isclose(times[0], LAUNCH_UNIX_S + first["t_s"], abs_tol=CUC_FINE_S)


def test_sequence_counts_run_without_a_gap_per_apid(flown: Flown) -> None:
    per: dict[int, list[int]] = {}
    for p in flown.tm:
        per.setdefault(_apid(p), []).append(_seq(p))
    for apid, seqs in per.items():
        assert seqs == [n % 16_384 for n in range(len(seqs))], apid


def test_links_say_how_ground_last_heard_each_vehicle(flown: Flown) -> None:
    links = _of(flown, LINKS, GROUND_APID)
    assert links, "no LINKS packet"
    last = flown.decoded[links[-1]]
    orbiter = [k for k in last if k.lower().startswith("orbiter_link")]
    assert orbiter and str(last[orbiter[0]]) in ("none", "direct", "relay", "recovery")


def test_every_captured_packet_decodes_alike_with_the_xtce_and_with_cosmos(
        flown: Flown) -> None:
    """The bytes that came off the UDP port, read by two independent decoders from
    the two generated databases: the same packet, field by field."""
    cosmos = PacketConfig()
    for target in sorted(COSMOS_TARGETS.iterdir()):
        for path in sorted((target / "cmd_tlm").glob("*.txt")):
            cosmos.process_file(str(path), target.name)
    telemetry = Telemetry(cosmos, None)
    by_id = {(p.apid, p.packet_id): p for p in d.PACKETS}
    for i, data in enumerate(flown.tm):
        pkt = by_id[(_apid(data), data[PACKET_ID_OCTET])]
        got = telemetry.identify_and_set_buffer(data, None)
        assert (got.target_name, got.packet_name) == (pkt.service.upper(), pkt.kind)
        by_xtce = flown.decoded[i]
        for f in (*d.PRIMARY_HEADER, *d.TM_SECONDARY_HEADER, *pkt.fields):
            assert _cosmos_matches(f, got.read(f.key.upper()), _plain(by_xtce[f.name])), (
                pkt.name, f.name, got.read(f.key.upper()), by_xtce[f.name])
