"""The generated mission databases read the gateway's packets as they were built.

Frames and events come from the nominal mission flown in the NATS-free loop
(services/local/simloop.py, ~5 s): one frame per vehicle and phase as its
radio sent it (relayed frames as Queqiao-2 forwarded them), and the first of
every event each service published. Their packets (services/gateway/packets.py)
are decoded with space-packet-parser from the XTCE (deploy/yamcs/mdb/change6.xml)
to exactly the values put in, and with OpenC3 COSMOS's own PacketConfig from
deploy/cosmos/ to the same values, field by field, floats exactly. COSMOS
commands built from the definitions decode with packets.decode_tc; Yamcs'
own loader (from the fprime-yamcs-bundle jars) loads the XTCE when Java is
there. Nothing here uses the network.
"""

from __future__ import annotations

import importlib
import math
import os
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from openc3.packets.commands import Commands  # type: ignore[import-untyped]
from openc3.packets.packet_config import PacketConfig  # type: ignore[import-untyped]
from openc3.packets.telemetry import Telemetry  # type: ignore[import-untyped]
from space_packet_parser import load_xtce, validate_xtce  # type: ignore[import-untyped]

from services.gateway import dictionary as d
from services.gateway.packets import (
    SequenceCounts,
    ack_packet,
    decode_tc,
    event_packet,
    hk_packet,
    links_packet,
)
from services.ground.plan import load_plan
from services.ground.vehicle import GroundCore
from services.kernel.config import VEHICLES
from services.kernel.vehicle import VehicleCore
from services.local.simloop import SimLoop

pytestmark = pytest.mark.slow  # flies the whole nominal mission once (module fixture)

ROOT = Path(__file__).resolve().parents[2]
XTCE = ROOT / "deploy" / "yamcs" / "mdb" / "change6.xml"
COSMOS_TARGETS = ROOT / "deploy" / "cosmos" / "targets"
LAUNCH_UNIX_S = 1_714_728_449  # 2024-05-03T09:27:29Z


# --- The nominal mission's frames and events --------------------------------------------
@dataclass
class Flown:
    frames: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    events: dict[tuple[str, str], tuple[dict[str, Any], float]] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def flown() -> Flown:
    cores: dict[str, VehicleCore] = {}
    for name in VEHICLES:
        module = importlib.import_module(f"services.{name}.vehicle")
        cores[name] = getattr(module, name.capitalize() + "Core")(6)
    loop = SimLoop(GroundCore(6, load_plan(None)), cores, record=True)
    got = Flown()

    def keep(sim: SimLoop) -> None:
        assert sim.published is not None
        for subject, env in sim.published:
            if ".dl." in subject:  # what ground hears: direct, or forwarded by Queqiao-2
                frame = env.body.get("frame") if "frame_seq" not in env.body else env.body
                if isinstance(frame, dict):
                    got.frames.setdefault((frame["origin"], frame["phase"]), frame)
                    got.paths[frame["origin"]] = frame["path"]
        sim.published.clear()

    loop.run(on_step=keep)
    for env in loop.events:
        body = dict(env.body)
        got.events.setdefault((env.src, str(body.pop("name"))), (body, env.t))
    assert {v for v, _ in got.frames} == set(d.VEHICLES)
    return got


@pytest.fixture(scope="module")
def xtce() -> Any:
    return load_xtce(XTCE)


@pytest.fixture(scope="module")
def cosmos() -> PacketConfig:
    config = PacketConfig()
    for target in sorted(COSMOS_TARGETS.iterdir()):
        for path in sorted((target / "cmd_tlm").glob("*.txt")):
            config.process_file(str(path), target.name)
    assert config.warnings == []
    return config


# --- Decoding, and what was put in -----------------------------------------------------------
def spp_decode(xtce: Any, data: bytes) -> dict[str, Any]:
    """Every parameter space-packet-parser reads; a packet it does not read whole fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Number of bits parsed ... did not match"
        packet = xtce.parse_bytes(data)
    return dict(packet)


def cuc(t_s: float) -> tuple[int, int]:
    whole = math.floor(t_s)
    return LAUNCH_UNIX_S + whole, math.floor((t_s - whole) * 65536)


def header(pkt: d.Packet, seq: int, t_s: float, data: bytes) -> dict[str, Any]:
    coarse, fine = cuc(t_s)
    return {"ccsds_version": 0, "ccsds_type": 0, "ccsds_sec_hdr_flag": 1,
            "ccsds_apid": pkt.apid, "ccsds_seq_flags": 3, "ccsds_seq_count": seq,
            "ccsds_length": len(data) - 7, "cuc_coarse": coarse, "cuc_fine": fine / 65536,
            "packet_id": pkt.packet_id}


def hk_expected(frame: dict[str, Any]) -> dict[str, Any]:
    """The HK parameters of a frame, from the frame itself and the contract."""
    v = frame["origin"]
    labels = {label for _, label in d.phase_enum(v)}
    out: dict[str, Any] = {
        f"{v}_frame_seq": frame["frame_seq"],
        f"{v}_phase": frame["phase"] if frame["phase"] in labels else "unknown",
        f"{v}_central_body": frame["body"] or "none",
        f"{v}_path": frame["path"],
        f"{v}_playback": "playback" if frame["playback"] or frame.get("relay_playback")
        else "live",
    }
    for key in d.FRAME_FLOATS:
        out[f"{v}_{key}"] = float(frame[key])
    for key in d.hk_values(v):
        out[f"{v}_{key}"] = float(frame["values"].get(key, math.nan))
    return out


def same(a: Any, b: Any) -> bool:
    """Equal, floats exactly; NaN is the same as NaN (an absent value)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b) and type(a) is type(b)


def assert_decodes(xtce: Any, data: bytes, expected: dict[str, Any]) -> dict[str, Any]:
    got = spp_decode(xtce, data)
    assert list(got) == list(expected), "the parameters, in the packet's order"
    wrong = {k: (got[k], expected[k]) for k in expected if not same(_plain(got[k]), expected[k])}
    assert wrong == {}
    return got


def _plain(value: Any) -> Any:
    """A space-packet-parser value as the Python type it derives from."""
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


def packets_built(flown: Flown) -> Iterator[tuple[d.Packet, bytes, dict[str, Any]]]:
    """(packet, bytes, expected parameters) of every HK, EVENT, CMD_ACK and LINKS case."""
    counts = SequenceCounts()
    for (vehicle, _), frame in sorted(flown.frames.items()):
        pkt = d.packet(vehicle, "HK")
        seq = counts.next(pkt.apid)
        data = hk_packet(frame, seq)
        yield pkt, data, {**header(pkt, seq, frame["t_s"], data), **hk_expected(frame)}
    for (source, name), (body, t_s) in sorted(flown.events.items()):
        pkt = d.packet(source, "EVENT")
        seq = counts.next(pkt.apid)
        data = event_packet(source, name, body, t_s, seq)
        text = data[15:].split(b"\0")[0].decode()
        yield pkt, data, {**header(pkt, seq, t_s, data), f"{source}_event": name,
                          f"{source}_event_text": text}
    for stage, reason in (("accepted", ""), ("failed", "lander is in the autonomous phase "
                                             "'powered_descent'; ground cannot intervene")):
        pkt = d.packet("ground", "CMD_ACK")
        seq = counts.next(pkt.apid)
        data = ack_packet(4_000_000_001, stage, reason, 2_552_148.25, seq)
        yield pkt, data, {**header(pkt, seq, 2_552_148.25, data),
                          "ack_command_id": 4_000_000_001, "ack_stage": stage,
                          "ack_reason": reason}
    pkt = d.packet("ground", "LINKS")
    for paths in (flown.paths, {"lander": "relay"}):
        seq = counts.next(pkt.apid)
        data = links_packet(paths, 100.5, seq)
        yield pkt, data, {**header(pkt, seq, 100.5, data),
                          **{f"{v}_link": paths.get(v, "none") for v in d.VEHICLES}}


# --- (a) the XTCE is valid -----------------------------------------------------------------
def test_the_xtce_validates_against_the_schema_offline() -> None:
    result = validate_xtce(XTCE, level="schema", allow_schema_download=False,
                           print_results=False, raise_on_error=False)
    assert result.valid, [str(e) for e in result.errors]
    assert result.schema_version is not None


def test_the_xtce_structure_holds_but_for_command_containers() -> None:
    """space-packet-parser's structural check knows only sequence containers, so it
    flags a command container's BaseContainer; every other reference resolves
    and every type and parameter is used."""
    result = validate_xtce(XTCE, level="structure", print_results=False,
                           raise_on_error=False)
    other = [str(e) for e in result.errors
             if not (e.error_code == "MISSING_CONTAINER_REFERENCE" and "'CCSDS_TC'" in e.message)]
    assert other == []
    assert len(result.errors) == len(d.COMMANDS)


# --- (b) space-packet-parser reads exactly what was put in --------------------------------
def test_every_packet_decodes_with_the_xtce_to_the_values_put_in(flown: Flown,
                                                                 xtce: Any) -> None:
    cases = list(packets_built(flown))
    kinds = {(p.service, p.kind) for p, _, _ in cases}
    assert {(v, "HK") for v in d.VEHICLES} <= kinds
    assert {("ground", "CMD_ACK"), ("ground", "LINKS"), ("ground", "EVENT"),
            ("lander", "EVENT")} <= kinds
    for _, data, expected in cases:
        assert_decodes(xtce, data, expected)


def test_absent_values_decode_as_nan(flown: Flown, xtce: Any) -> None:
    frame = flown.frames[("ascender", "on_pad")]  # the ascender reports two values only
    assert "link_fraction" not in frame["values"]
    got = spp_decode(xtce, hk_packet(frame, 0))
    assert math.isnan(got["ascender_link_fraction"])
    assert math.isnan(got["ascender_backlog_frames"])
    assert got["ascender_thrust_n"] == frame["values"]["thrust_n"]


def test_a_phase_the_dictionary_does_not_name_decodes_as_unknown(flown: Flown,
                                                                  xtce: Any) -> None:
    frame = {**flown.frames[("relay", "relay_ops")], "phase": "sulking"}
    assert spp_decode(xtce, hk_packet(frame, 0))["relay_phase"] == "unknown"


# --- (c) COSMOS reads the same ----------------------------------------------------------------
def test_cosmos_decodes_every_packet_as_the_xtce_does(flown: Flown, xtce: Any,
                                                      cosmos: PacketConfig) -> None:
    telemetry = Telemetry(cosmos, None)
    for pkt, data, _ in packets_built(flown):
        by_xtce = spp_decode(xtce, data)
        got = telemetry.identify_and_set_buffer(data, None)
        assert (got.target_name, got.packet_name) == (pkt.service.upper(), pkt.kind)
        for f in (*d.PRIMARY_HEADER, *d.TM_SECONDARY_HEADER, *pkt.fields):
            assert _cosmos_matches(f, got.read(f.key.upper()), _plain(by_xtce[f.name])), (
                pkt.name, f.name, got.read(f.key.upper()), by_xtce[f.name])
        coarse, fine = by_xtce["cuc_coarse"], by_xtce["cuc_fine"].raw_value
        when = datetime.fromtimestamp(coarse, UTC) + timedelta(seconds=fine / 65536)
        assert abs(got.read("PACKET_TIME") - when) <= timedelta(microseconds=1)


def _cosmos_matches(f: d.Field, by_cosmos: Any, by_xtce: Any) -> bool:
    if f.kind == "enum":  # COSMOS states are upper case
        return bool(by_cosmos == by_xtce.upper())
    if f.calibration:  # CUC fine time: COSMOS in microseconds, the XTCE in seconds
        return same(by_cosmos, by_xtce * 1e6)
    return same(by_cosmos, by_xtce)


def test_cosmos_limits_are_the_dictionarys(cosmos: PacketConfig) -> None:
    item = cosmos.telemetry["ORBITER"]["HK"].items["PROPELLANT_KG"]
    red_low, yellow_low, yellow_high, red_high = item.limits.values["DEFAULT"][:4]
    assert (red_low, yellow_low) == (70.0, 140.0) and yellow_high >= 1e300 <= red_high


# --- Commands: COSMOS builds what decode_tc reads, and refuses what it would -------------------
#: COSMOS parameters per command (enums by state name, the UTC instant as Unix s)
#: -> the twin command decode_tc must give.
COSMOS_COMMANDS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "SET_MODE": ({"MODE": "SAFE"}, {"op": "set_mode", "mode": "safe"}),
    "ORBIT_ADJUST": ({"STAGE": 3, "PDI_UTC": 1_717_280_580},
                     {"op": "orbit_adjust", "stage": 3, "pdi_utc": "2024-06-01T22:23:00Z"}),
    "BURN": ({"FRAME": "ECI", "DV_X_M_S": -0.5, "DV_Y_M_S": 19.75, "DV_Z_M_S": 0.0},
             {"op": "burn", "frame": "ECI", "delta_v_m_s": {"x": -0.5, "y": 19.75, "z": 0.0}}),
    "OPERATION": ({"OPERATION": "DRILL"}, {"op": "operation", "operation": "drill"}),
    "SURFACE_SETUP": ({}, {"op": "surface_setup"}),
}


@pytest.mark.parametrize("command", d.COMMANDS, ids=lambda c: c.full_name)
def test_a_cosmos_command_decodes_to_its_twin_command(command: d.Command,
                                                      cosmos: PacketConfig) -> None:
    params, twin = COSMOS_COMMANDS[command.name]
    built = Commands(cosmos, None).build_cmd(command.target.upper(), command.name,
                                             {"COMMAND_ID": 77, "CCSDS_SEQ_COUNT": 5, **params})
    tc = decode_tc(bytes(built.buffer))
    assert (tc.target, tc.command_id, tc.opcode) == (command.target, 77, command.opcode)
    assert tc.twin_command() == twin


@pytest.mark.parametrize(("name", "params"), [
    ("ORBIT_ADJUST", {"STAGE": 5, "PDI_UTC": 1_717_280_580}),
    ("BURN", {"FRAME": "RTN", "DV_X_M_S": 20.5}),
])
def test_cosmos_refuses_an_argument_out_of_range(name: str, params: dict[str, Any],
                                                 cosmos: PacketConfig) -> None:
    with pytest.raises(ValueError, match="not in valid range"):
        Commands(cosmos, None).build_cmd("ORBITER", name, {"COMMAND_ID": 1, **params})


# --- Yamcs' own loader ---------------------------------------------------------------------
def _yamcs_lib() -> Path | None:
    try:
        bundle = importlib.import_module("fprime_yamcs_bundle")
    except ImportError:
        return None
    lib = Path(str(bundle.__file__)).parent / "lib"
    return lib if lib.is_dir() and shutil.which("java") else None


@pytest.mark.skipif(_yamcs_lib() is None, reason="needs java and the fprime-yamcs-bundle jars")
def test_yamcs_loads_the_xtce(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "yamcs.yaml").write_text(f"dataDir: {tmp_path / 'data'}\ninstances: [change6]\n")
    (etc / "yamcs.change6.yaml").write_text(
        f"mdb:\n  - type: xtce\n    args:\n      file: {XTCE}\n")
    done = subprocess.run(
        ["java", "-cp", f"{_yamcs_lib()}/*", "org.yamcs.cli.YamcsAdminCli", "--etc-dir",
         str(etc), "mdb", "verify", "change6"],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
        env={**os.environ, "HOME": str(tmp_path)})  # Yamcs writes cache/ and ~/.yamcs there
    assert done.returncode == 0, done.stdout + done.stderr
    parameters = len(d.PRIMARY_HEADER) + len(d.TM_SECONDARY_HEADER) + sum(
        len(p.fields) for p in d.PACKETS)
    assert "MDB loaded successfully" in done.stdout
    assert f"{parameters} parameters" in done.stdout
    assert f"{len(d.PACKETS) + 2} sequence containers" in done.stdout
    assert f"{len(d.COMMANDS) + 1} commands" in done.stdout
