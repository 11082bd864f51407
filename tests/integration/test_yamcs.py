"""A real Yamcs 5.12 as the twin's mission control: deploy/yamcs with the
generated mission database, on free ports, loopback only.

Telemetry goes in as the gateway sends it (packets.py's bytes over UDP) and is
read back with yamcs-client; telecommands issued with yamcs-client come out at
a UDP socket of the test and are read with packets.decode_tc. The time checks
are exact to the millisecond Yamcs keeps: they hold the preprocessor settings
of deploy/yamcs/etc/yamcs.change6.yaml to the contract (CUC 4+2 octets since
the Unix epoch) and catch a Yamcs upgrade that changes the CUC decoder.
"""

from __future__ import annotations

import math
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from yamcs.client import YamcsClient, YamcsError  # type: ignore[import-untyped]

from services.dynamics.constants import MISSION_EPOCH_UTC
from services.gateway import dictionary as d
from services.gateway import packets
from services.kernel.yamcsd import (
    DEFAULT_CONFIG_DIR,
    DEFAULT_MDB,
    INSTANCE,
    TC_LINK,
    TM_LINK,
    YamcsConfigError,
    YamcsNotFound,
    YamcsServer,
    YamcsSettings,
    YamcsStartFailed,
    find_java,
    find_yamcs_lib,
    render_etc,
)

SPACE_SYSTEM = "/change6"
#: How long Yamcs may take to archive a packet or send a command (it takes
#: milliseconds; the margin is for a loaded 2-core CI machine).
_ARRIVAL_S = 20.0
#: Chang'e-6's touchdown, 2024-06-01T22:23:00Z, as mission seconds.
TOUCHDOWN_T_S = (datetime(2024, 6, 1, 22, 23, 0, tzinfo=UTC) - MISSION_EPOCH_UTC).total_seconds()

T = TypeVar("T")

#: A JVM per module (like test_observability's Prometheus): out of the mutation runs.
pytestmark = pytest.mark.slow


@dataclass
class Mcc:
    """The running mission control of the module's tests."""

    server: YamcsServer
    client: YamcsClient
    tc: socket.socket  # where Yamcs sends telecommands (the gateway's place)

    def send_tm(self, *datagrams: bytes) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for datagram in datagrams:
                sock.sendto(datagram, ("127.0.0.1", self.server.tm_port))

    @property
    def processor(self) -> Any:
        return self.client.get_processor(INSTANCE, "realtime")

    def archived(self, name: str) -> list[Any]:
        """Every archived packet of container `name`, oldest first."""
        archive = self.client.get_archive(INSTANCE)
        return list(archive.list_packets(name=f"{SPACE_SYSTEM}/{name}"))

    def drain_tc(self) -> None:
        self.tc.setblocking(False)
        try:
            while True:
                self.tc.recv(65536)
        except BlockingIOError:
            pass
        finally:
            self.tc.setblocking(True)

    def receive_tc(self, timeout_s: float = _ARRIVAL_S) -> bytes:
        self.tc.settimeout(timeout_s)
        return self.tc.recv(65536)


def _tools_installed() -> None:
    """A missing tool fails the test, saying how to get it: never a silent skip."""
    try:
        find_java()
        find_yamcs_lib()
    except YamcsNotFound as exc:
        pytest.fail(f"{exc} (`./task yamcs` installs both)")
    if not DEFAULT_MDB.is_file():
        pytest.fail(f"{DEFAULT_MDB} is missing: run `.venv/bin/python scripts/gen_mdb.py`")


@pytest.fixture(scope="module")
def mcc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mcc]:
    _tools_installed()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tc:
        tc.bind(("127.0.0.1", 0))
        server = YamcsServer(tmp_path_factory.mktemp("yamcs"), http_port=0, tm_port=0,
                             tc_port=tc.getsockname()[1])
        with server:
            client = YamcsClient(server.url.removeprefix("http://"))
            try:
                yield Mcc(server, client, tc)
            finally:
                client.close()


def _eventually(probe: Callable[[], T | None], what: str) -> T:
    """Poll `probe` until it returns something (Yamcs archives asynchronously)."""
    deadline = time.monotonic() + _ARRIVAL_S
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: nothing after {_ARRIVAL_S:.0f} s")
        time.sleep(0.1)


def _cuc_time(datagram: bytes) -> datetime:
    """The CUC time a TM packet carries (octets 6..11: 4 of Unix seconds, 2 of
    1/65536 s), cut to the whole milliseconds Yamcs keeps."""
    coarse, fine = struct.unpack_from(">IH", datagram, 6)
    return datetime.fromtimestamp(coarse, UTC) + timedelta(milliseconds=fine * 1000 // 65536)


def _orbiter_frame(frame_seq: int, t_s: float, **over: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "origin": "orbiter", "frame_seq": frame_seq, "t_s": t_s, "phase": "lunar_orbit",
        "body": "moon", "path": "direct", "playback": False, "alt_m": 200_123.5,
        "speed_m_s": 1_602.25, "mass_kg": 2_345.0, "propellant_kg": 1_000.0,
        "sample_mass_g": 0.0,
        # battery and thrust only: every other values key goes as NaN.
        "values": {"battery_soc_ratio": 0.875, "thrust_n": 0.0},
    }
    return frame | over


def _archived_packet(mcc: Mcc, container: str, binary: bytes) -> Any:
    return _eventually(
        lambda: next((p for p in mcc.archived(container) if p.binary == binary), None),
        f"{container} packet in the archive")


# --- telemetry ------------------------------------------------------------------
def test_hk_packet_archived_at_its_mission_time(mcc: Mcc) -> None:
    """A June 2024 HK packet is filed at the instant it reports, not at 1970
    (no time preprocessing) nor at the wall clock (reception time)."""
    datagram = packets.hk_packet(_orbiter_frame(101, TOUCHDOWN_T_S), seq=1)
    mcc.send_tm(datagram)
    archived = _archived_packet(mcc, "ORBITER_HK", datagram)
    assert archived.generation_time == datetime(2024, 6, 1, 22, 23, 0, tzinfo=UTC)


@pytest.mark.parametrize("fraction_s", [0.0, 0.5, 0.25, 0.123456, 0.999])
def test_generation_time_is_the_cuc_time_to_the_millisecond(
        mcc: Mcc, fraction_s: float) -> None:
    """Every fraction of a second, including none: Yamcs 5.12's CUC decoder
    adds 1 ms, which the configured epoch cancels (yamcs.change6.yaml)."""
    t_s = TOUCHDOWN_T_S + 3_600.0 + fraction_s
    datagram = packets.hk_packet(_orbiter_frame(200, t_s), seq=2 + int(fraction_s * 1000))
    mcc.send_tm(datagram)
    archived = _archived_packet(mcc, "ORBITER_HK", datagram)
    assert archived.generation_time == _cuc_time(datagram)


def test_hk_parameters_decoded_from_the_mission_database(mcc: Mcc) -> None:
    """Yamcs decodes the HK packet by change6.xml into what the frame said:
    enumerations as their labels, NaN for values the frame lacks."""
    datagram = packets.hk_packet(_orbiter_frame(7_777, TOUCHDOWN_T_S + 7_200.0), seq=3000)
    mcc.send_tm(datagram)

    def value(name: str) -> Any:
        return mcc.processor.get_parameter_value(f"{SPACE_SYSTEM}/orbiter_{name}")

    def this_frame() -> bool | None:
        seq = value("frame_seq")
        return True if seq is not None and seq.eng_value == 7_777 else None

    _eventually(this_frame, "orbiter_frame_seq = 7777")
    assert value("phase").eng_value == "lunar_orbit"
    assert value("central_body").eng_value == "moon"
    assert value("path").eng_value == "direct"
    assert value("alt_m").eng_value == 200_123.5
    assert value("speed_m_s").eng_value == 1_602.25
    assert value("battery_soc_ratio").eng_value == 0.875
    assert math.isnan(value("sunlit_ratio").eng_value)
    assert value("alt_m").generation_time == _cuc_time(datagram)


def test_propellant_below_reserve_is_a_critical_alarm(mcc: Mcc) -> None:
    """The dictionary's limits reach Yamcs as alarms on the live value."""
    frame = _orbiter_frame(8_888, TOUCHDOWN_T_S + 7_300.0, propellant_kg=50.0)
    mcc.send_tm(packets.hk_packet(frame, seq=3001))

    def propellant() -> Any:
        value = mcc.processor.get_parameter_value(f"{SPACE_SYSTEM}/orbiter_propellant_kg")
        return value if value is not None and value.eng_value == 50.0 else None

    assert _eventually(propellant, "orbiter_propellant_kg = 50").monitoring_result == "CRITICAL"


def _hand_tm(apid: int, seq: int, coarse: int, packet_id: int, user: bytes) -> bytes:
    """A TM packet from CCSDS 133.0-B by hand (not packets.py): version 0,
    type 0, secondary header flag 1, unsegmented; CUC fine 0."""
    data = struct.pack(">IHB", coarse, 0, packet_id) + user
    return struct.pack(">HHH", 0x0800 | apid, 0xC000 | seq, len(data) - 1) + data


def test_same_instant_same_count_of_two_vehicles_both_archived(mcc: Mcc) -> None:
    """Packets Yamcs files under one container (here the generic CCSDS_TM: an
    unknown packet id) with equal time, count and length, from two APIDs:
    both kept, because the archive key's number includes the APID."""
    coarse = int(datetime(2024, 6, 2, 0, 0, 0, tzinfo=UTC).timestamp())
    first = _hand_tm(101, 42, coarse, 99, b"\x01" * 8)
    second = _hand_tm(102, 42, coarse, 99, b"\x02" * 8)
    mcc.send_tm(first, second)
    for datagram in (first, second):
        archived = _archived_packet(mcc, "CCSDS_TM", datagram)
        assert archived.generation_time == datetime.fromtimestamp(coarse, UTC)


# --- telecommands ---------------------------------------------------------------
def test_out_of_range_argument_refused_by_yamcs(mcc: Mcc) -> None:
    """Yamcs enforces the XTCE ValidRange: nothing goes out to the gateway."""
    mcc.drain_tc()
    burn = {"command_id": 1, "frame": "RTN", "dv_x_m_s": d.MAX_BURN_DV_M_S + 5.0,
            "dv_y_m_s": 0.0, "dv_z_m_s": 0.0}
    with pytest.raises(YamcsError, match="dv_x_m_s"):
        mcc.processor.issue_command(f"{SPACE_SYSTEM}/ORBITER_BURN", args=burn)
    with pytest.raises(YamcsError, match="stage"):
        mcc.processor.issue_command(f"{SPACE_SYSTEM}/ORBITER_ORBIT_ADJUST", args={
            "command_id": 2, "stage": 5, "pdi_utc": 1_717_200_000})
    with pytest.raises(YamcsError, match="mode"):
        mcc.processor.issue_command(f"{SPACE_SYSTEM}/LANDER_SET_MODE", args={
            "command_id": 3, "mode": "warp_drive"})
    with pytest.raises(TimeoutError):
        mcc.receive_tc(timeout_s=1.0)


def test_command_arrives_as_a_ccsds_tc_packet(mcc: Mcc) -> None:
    """ORBITER_BURN from yamcs-client reaches the gateway's socket as the TC
    the contract describes, and decode_tc reads the twin command back."""
    mcc.drain_tc()
    mcc.processor.issue_command(f"{SPACE_SYSTEM}/ORBITER_BURN", args={
        "command_id": 4_242, "frame": "MCI", "dv_x_m_s": 1.5, "dv_y_m_s": -2.25,
        "dv_z_m_s": 19.0})
    data = mcc.receive_tc()

    word0, word1, length = struct.unpack_from(">HHH", data)
    assert word0 >> 13 == 0  # version
    assert (word0 >> 12) & 1 == 1  # telecommand
    assert (word0 >> 11) & 1 == 0  # no secondary header
    assert word0 & 0x7FF == d.APIDS["orbiter"]
    assert word1 >> 14 == 0b11  # unsegmented
    assert length == len(data) - 7  # filled by Yamcs' postprocessor
    command_id, opcode = struct.unpack_from(">IB", data, 6)
    assert (command_id, opcode) == (4_242, 3)

    tc = packets.decode_tc(data)
    assert (tc.target, tc.op, tc.command_id) == ("orbiter", "burn", 4_242)
    assert tc.args == {"frame": "MCI", "delta_v_m_s": {"x": 1.5, "y": -2.25, "z": 19.0}}


def test_sequence_count_filled_per_apid(mcc: Mcc) -> None:
    """Yamcs numbers the TCs of each APID 1, 2, ... (14 bits) itself."""
    mcc.drain_tc()
    counts: dict[str, list[int]] = {"orbiter": [], "lander": []}
    for target in ("orbiter", "lander", "orbiter"):
        mcc.processor.issue_command(f"{SPACE_SYSTEM}/{target.upper()}_SET_MODE",
                                    args={"command_id": 9, "mode": "safe"})
        data = mcc.receive_tc()
        tc = packets.decode_tc(data)
        assert tc.twin_command() == {"op": "set_mode", "mode": "safe"}
        counts[tc.target].append(struct.unpack_from(">H", data, 2)[0] & 0x3FFF)
    orbiter, lander = counts["orbiter"], counts["lander"]
    assert orbiter[1] == orbiter[0] + 1
    assert len(lander) == 1 and lander[0] >= 1


# --- the server's life ----------------------------------------------------------
def _process_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def test_async_start_and_stop_leave_no_process(tmp_path: Path) -> None:
    """`async with` for the lead's `twin up --yamcs`: the archive and the log in
    the state dir, and after the block no JVM and a free HTTP port."""
    _tools_installed()
    async with YamcsServer(tmp_path, http_port=0, tm_port=0, tc_port=9) as yamcs:
        pid = yamcs.pid
        assert pid is not None and yamcs.running
        assert (tmp_path / "etc" / f"yamcs.{INSTANCE}.yaml").is_file()
        http_port = yamcs.http_port
    assert _process_gone(pid)
    assert (tmp_path / "data").is_dir()
    assert "Yamcs started" in (tmp_path / "yamcs.log").read_text()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: the probes' closed connections may linger in TIME_WAIT;
        # only a socket still listening makes this bind fail.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", http_port))


def test_taken_tm_port_fails_the_start_naming_it(tmp_path: Path) -> None:
    _tools_installed()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("0.0.0.0", 0))
        server = YamcsServer(tmp_path, http_port=0, tm_port=taken.getsockname()[1], tc_port=9)
        with pytest.raises(YamcsStartFailed, match="Address already in use"):
            server.start()
    assert server.pid is not None and _process_gone(server.pid)


# --- without Java: configuration and clear errors --------------------------------
def test_render_sets_the_runs_ports_and_paths(tmp_path: Path) -> None:
    import yaml

    mdb = tmp_path / "x.xml"
    settings = YamcsSettings(http_host="127.0.0.1", http_port=18090, tm_port=18015,
                             tc_host="127.0.0.2", tc_port=18025, mdb=mdb, secret_key="k")
    render_etc(DEFAULT_CONFIG_DIR, tmp_path / "etc", settings)
    server = yaml.safe_load((tmp_path / "etc" / "yamcs.yaml").read_text())
    assert server["services"][0]["args"] == {"address": "127.0.0.1", "port": 18090}
    assert server["secretKey"] == "k"
    instance = yaml.safe_load((tmp_path / "etc" / f"yamcs.{INSTANCE}.yaml").read_text())
    links = {link["name"]: link for link in instance["dataLinks"]}
    assert links[TM_LINK]["port"] == 18015
    assert (links[TC_LINK]["host"], links[TC_LINK]["port"]) == ("127.0.0.2", 18025)
    assert instance["mdb"][0]["args"]["file"] == str(mdb)
    # The contract's time and count settings survive the rendering.
    args = links[TM_LINK]["packetPreprocessorArgs"]
    assert (args["timestampOffset"], args["seqCountOffset"]) == (6, 0)
    assert (tmp_path / "etc" / "processor.yaml").is_file()


def test_render_refuses_a_config_without_the_gateway_links(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "yamcs.yaml").write_text(
        "services: [{class: org.yamcs.http.HttpServer}]\ninstances: [change6]\n")
    (src / f"yamcs.{INSTANCE}.yaml").write_text("dataLinks: []\nmdb: []\n")
    settings = YamcsSettings(http_host="127.0.0.1", http_port=1, tm_port=2, tc_host="h",
                             tc_port=3, mdb=tmp_path / "x.xml", secret_key="k")
    with pytest.raises(YamcsConfigError, match=f"no data link named '{TM_LINK}'"):
        render_etc(src, tmp_path / "out", settings)


def test_missing_mdb_java_or_jars_named_before_any_start(tmp_path: Path) -> None:
    with pytest.raises(YamcsConfigError, match=r"gen_mdb\.py"):
        YamcsServer(tmp_path / "a", mdb=tmp_path / "none.xml").start()
    with pytest.raises(YamcsNotFound, match="openjdk-17-jre-headless"):
        YamcsServer(tmp_path / "b", java=tmp_path / "no-java").start()
    with pytest.raises(YamcsNotFound, match="fprime-yamcs-bundle"):
        YamcsServer(tmp_path / "c", lib_dir=tmp_path).start()
    with pytest.raises(YamcsConfigError, match="tc_port"):
        YamcsServer(tmp_path / "d", tc_port=0)
