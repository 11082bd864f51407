"""The gateway's CCSDS packets, read bit by bit as CCSDS 133.0-B lays them out.

The header is parsed here from the standard (Space Packet Protocol, CCSDS
133.0-B-2, 4.1.3: version 3 bits, type 1, secondary header flag 1, APID 11,
sequence flags 2, sequence count 14, data length 16 = octets after the primary
header minus 1), not with spacepackets, which packets.py uses to build it.
The CUC time is checked against calendar arithmetic of known mission instants.
"""

from __future__ import annotations

import calendar
import json
import math
import random
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from services.gateway import dictionary as d
from services.gateway.packets import (
    APIDS,
    PacketError,
    SequenceCounts,
    Telecommand,
    ack_packet,
    cuc_time,
    decode_tc,
    event_packet,
    hk_packet,
    links_packet,
    tc_packet,
    unix_time,
)

#: 2024-05-03T09:27:29Z, the launch: mission time 0.
LAUNCH_UNIX_S = calendar.timegm((2024, 5, 3, 9, 27, 29))


@dataclass(frozen=True)
class Primary:
    version: int
    type: int
    sec_hdr: int
    apid: int
    seq_flags: int
    seq_count: int
    data_length: int


def primary(data: bytes) -> Primary:
    """The primary header, by the bit positions of CCSDS 133.0-B 4.1.3."""
    word0, word1, length = struct.unpack(">HHH", data[:6])
    return Primary(version=word0 >> 13, type=(word0 >> 12) & 0x1, sec_hdr=(word0 >> 11) & 0x1,
                   apid=word0 & 0x7FF, seq_flags=word1 >> 14, seq_count=word1 & 0x3FFF,
                   data_length=length)


def secondary(data: bytes) -> tuple[int, int, int]:
    """(CUC coarse, CUC fine, packet id): 4 + 2 + 1 octets after the primary header."""
    coarse, fine, packet_id = struct.unpack(">IHB", data[6:13])
    return coarse, fine, packet_id


def mission_s(iso: str) -> float:
    return (datetime.fromisoformat(iso) - datetime(2024, 5, 3, 9, 27, 29, tzinfo=UTC)
            ).total_seconds()


def lander_frame(**change: Any) -> dict[str, Any]:
    """A lander frame as the recorder and radio stamp it (values from a nominal run)."""
    frame: dict[str, Any] = {
        "phase": "surface", "frame": "MCI", "body": "moon", "r_m": [1.0, 2.0, 3.0],
        "v_m_s": [0.0, 0.0, 0.0], "alt_m": -5255.999999999767, "speed_m_s": 0.0,
        "mass_kg": 1585.5830374620425, "propellant_kg": 85.58303746204251,
        "sample_mass_g": 1935.3, "origin": "lander", "frame_seq": 999,
        "t_s": mission_s("2024-06-01T22:23:17+00:00"), "path": "relay", "station": "kashgar",
        "sent_at_s": 2552148.0, "deliver_at_s": 2552148.0027, "playback": False,
        "values": {"thrust_n": 0.0, "propellant_reserve_kg": 85.58303746204251, "power_w": 0.0,
                   "load_w": 180.0, "battery_soc_ratio": 0.5, "temperature_c": 20.0,
                   "nils_temperature_c": 20.0, "sun_elevation_deg": 0.0, "drill_depth_m": 0,
                   "drill_sample_g": 0.0, "scoop_sample_g": 0.0},
    }
    frame.update(change)
    return frame


def hk_fields(data: bytes, vehicle: str) -> dict[str, Any]:
    """The HK user data by the contract's order: frame_seq uint32, four uint8, float64s."""
    keys = [*d.FRAME_FLOATS, *d.hk_values(vehicle)]
    head = struct.unpack_from(">IBBBB", data, 13)
    floats = struct.unpack_from(f">{len(keys)}d", data, 13 + 8)
    assert 13 + 8 + 8 * len(keys) == len(data), "the packet is exactly its fields"
    return {"frame_seq": head[0], "phase": head[1], "body": head[2], "path": head[3],
            "playback": head[4], **dict(zip(keys, floats, strict=True))}


# --- Primary header ---------------------------------------------------------------
def test_a_telemetry_header_is_the_standards_bit_for_bit() -> None:
    data = hk_packet(lander_frame(), seq=5)
    # 000 0 1 00001100110 | 11 00000000000101: version 0, TM, secondary header, APID 102;
    # unsegmented, count 5.
    assert data[:4] == bytes([0b0000_1000, 0b0110_0110, 0b1100_0000, 0b0000_0101])
    assert primary(data) == Primary(version=0, type=0, sec_hdr=1, apid=102, seq_flags=0b11,
                                    seq_count=5, data_length=len(data) - 6 - 1)


def test_a_telecommand_header_has_type_1_and_no_secondary_header() -> None:
    data = tc_packet("orbiter", {"op": "set_mode", "mode": "safe"}, command_id=7, seq=16383)
    assert data[:4] == bytes([0b0001_0000, 0b0110_0101, 0b1111_1111, 0b1111_1111])
    assert primary(data) == Primary(version=0, type=1, sec_hdr=0, apid=101, seq_flags=0b11,
                                    seq_count=16383, data_length=len(data) - 7)
    # command_id uint32, opcode uint8 (SET_MODE 1), mode uint8 (safe, as the phase code 30)
    assert data[6:] == struct.pack(">IBB", 7, 1, 30)


def test_each_service_has_its_apid() -> None:
    assert dict(APIDS) == {"ground": 100, "orbiter": 101, "lander": 102, "ascender": 103,
                           "reentry": 104, "relay": 105}
    for source, apid in APIDS.items():
        assert primary(event_packet(source, "mode_changed", {}, 0.0, 0)).apid == apid
    assert primary(ack_packet(1, "accepted", "", 0.0, 0)).apid == 100
    assert primary(links_packet({}, 0.0, 0)).apid == 100


# --- Sequence counts -----------------------------------------------------------------
def test_sequence_counts_wrap_at_16384_per_apid() -> None:
    counts = SequenceCounts()
    seen = [counts.next(101) for _ in range(16384)]
    assert seen == list(range(16384))
    assert counts.next(101) == 0  # wrapped
    assert counts.next(102) == 0  # another APID counts on its own
    assert counts.next(101) == 1


def test_a_count_or_apid_out_of_range_is_refused() -> None:
    with pytest.raises(PacketError, match=r"sequence count must be in 0\.\.16383"):
        hk_packet(lander_frame(), seq=16384)
    with pytest.raises(PacketError, match=r"APID must be an integer in 0\.\.2047"):
        SequenceCounts().next(2048)


# --- Time ------------------------------------------------------------------------------
def test_the_launch_is_unix_1714728449() -> None:
    assert LAUNCH_UNIX_S == 1_714_728_449
    assert unix_time(0.0) == 1_714_728_449.0
    assert cuc_time(0.0) == (1_714_728_449, 0)


@pytest.mark.parametrize(("t_s", "coarse", "fine"), [
    (0.5, LAUNCH_UNIX_S, 32768),
    (1.25, LAUNCH_UNIX_S + 1, 16384),
    (-0.25, LAUNCH_UNIX_S - 1, 49152),  # before launch: the second before, 3/4 on
    (1.0 - 2.0 ** -17, LAUNCH_UNIX_S, 65535),  # the fraction is floored, never rounded up
    # touchdown, 2024-06-01T22:23:00Z, a whole second of mission time
    (mission_s("2024-06-01T22:23:00+00:00"), calendar.timegm((2024, 6, 1, 22, 23, 0)), 0),
])
def test_cuc_time_counts_utc_seconds_and_65536ths(t_s: float, coarse: int, fine: int) -> None:
    assert cuc_time(t_s) == (coarse, fine)
    data = event_packet("ground", "mission_end", {}, t_s, 0)
    assert secondary(data) == (coarse, fine, d.EVENT)


def test_a_frame_is_stamped_with_when_it_was_recorded_not_sent() -> None:
    frame = lander_frame(t_s=mission_s("2024-06-01T22:23:17+00:00") + 0.75,
                         sent_at_s=9e6, deliver_at_s=9e6)
    coarse, fine, packet_id = secondary(hk_packet(frame, 0))
    assert (coarse, fine, packet_id) == (calendar.timegm((2024, 6, 1, 22, 23, 17)), 49152, d.HK)


# --- HK ------------------------------------------------------------------------------------
def test_hk_carries_the_frame_in_the_contracts_order() -> None:
    frame = lander_frame()
    got = hk_fields(hk_packet(frame, 3), "lander")
    assert got["frame_seq"] == 999
    assert (got["phase"], got["body"], got["path"], got["playback"]) == (
        d.PHASE_CODES["surface"], 2, 2, 0)
    for key in d.FRAME_FLOATS:
        assert got[key] == frame[key]
    for key, value in frame["values"].items():
        assert got[key] == float(value)


def test_values_a_frame_lacks_are_nan() -> None:
    got = hk_fields(hk_packet(lander_frame(values={"thrust_n": 12.5}), 0), "lander")
    assert got["thrust_n"] == 12.5
    absent = [k for k in d.hk_values("lander") if k != "thrust_n"]
    assert absent and all(math.isnan(got[k]) for k in absent)


def test_unknown_names_go_as_255_and_playback_of_either_kind_as_1() -> None:
    got = hk_fields(hk_packet(lander_frame(phase="sulking", body="mars", path="laser"), 0),
                    "lander")
    assert (got["phase"], got["body"], got["path"]) == (255, 255, 255)
    assert hk_fields(hk_packet(lander_frame(playback=True), 0), "lander")["playback"] == 1
    relayed = lander_frame(playback=False, relay_playback=True)
    assert hk_fields(hk_packet(relayed, 0), "lander")["playback"] == 1


def test_a_mode_set_by_set_mode_is_a_phase_with_a_code() -> None:
    got = hk_fields(hk_packet(lander_frame(phase="checkout"), 0), "lander")
    assert got["phase"] == d.PHASE_CODES["checkout"] == 33


@pytest.mark.parametrize(("change", "reason"), [
    ({"origin": "moonbase"}, "a frame's origin must be one of"),
    ({"frame_seq": -1}, "'frame_seq' must be an integer in 0..4294967295"),
    ({"alt_m": "high"}, "'alt_m' must be a number"),
    ({"values": {"thrust_n": "full"}}, "'thrust_n' must be a number"),
])
def test_a_frame_that_is_not_one_is_refused(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(PacketError, match=reason):
        hk_packet(lander_frame(**change), 0)


# --- EVENT, CMD_ACK, LINKS -------------------------------------------------------------------
def test_an_event_is_its_code_and_its_scalars_as_json() -> None:
    body = {"name": "lunar_touchdown", "lat_deg": -41.638512345678, "site": "Apollo",
            "burns": [1, 2], "in_zone": True, "miss_m": math.nan}
    data = event_packet("lander", "lunar_touchdown", body, 100.0, 0)
    code, text = struct.unpack_from(">H96s", data, 13)
    assert len(data) == 13 + 2 + 96
    assert code == d.EVENT_CODES["lunar_touchdown"] == 6
    assert json.loads(text.rstrip(b"\0")) == {"lat_deg": -41.6385123, "site": "Apollo",
                                              "in_zone": True, "miss_m": None}


def test_an_unknown_event_is_code_0() -> None:
    assert struct.unpack_from(">H", event_packet("relay", "no_such", {}, 0.0, 0), 13) == (0,)


def test_a_long_text_is_cut_on_a_character_and_keeps_a_nul() -> None:
    data = event_packet("ground", "plan_item_issued", {"note": "月" * 60}, 0.0, 0)
    text = data[15:]
    assert len(text) == 96 and text[-1] == 0  # room for the terminator, always
    body = text.rstrip(b"\0").decode()  # whole UTF-8 characters only
    assert body.startswith('{"note":"月') and len(body.encode()) <= 95


def test_an_ack_is_the_command_id_a_stage_and_a_reason() -> None:
    data = ack_packet(4_000_000_000, "executed", "ran at 2024-05-03", 1.0, 2)
    command_id, stage, reason = struct.unpack_from(">IB96s", data, 13)
    assert (command_id, stage) == (4_000_000_000, 3)
    assert reason.rstrip(b"\0") == b"ran at 2024-05-03"
    assert secondary(data)[2] == d.CMD_ACK
    assert [code for code, _ in d.ACK_STAGES] == [1, 2, 3, 4]


@pytest.mark.parametrize(("call", "reason"), [
    (lambda: ack_packet(1, "pondered", "", 0.0, 0), "ack stage must be one of"),
    (lambda: ack_packet(-1, "failed", "", 0.0, 0), "command_id must be an integer"),
    (lambda: event_packet("moonbase", "docking", {}, 0.0, 0), "event source must be one of"),
    (lambda: event_packet("ground", "docking", {}, math.inf, 0), "mission time must be finite"),
])
def test_a_packet_that_cannot_be_is_refused(call: Any, reason: str) -> None:
    with pytest.raises(PacketError, match=reason):
        call()


def test_links_give_each_vehicles_path_and_none_for_the_unheard() -> None:
    data = links_packet({"orbiter": "direct", "lander": "relay", "reentry": "recovery"}, 0.0, 0)
    assert secondary(data)[2] == d.LINKS
    assert struct.unpack_from(">5B", data, 13) == (1, 2, 0, 3, 0)
    assert len(data) == 13 + 5


# --- Telecommands ------------------------------------------------------------------------
#: One twin command per dictionary command, each argument at a valid value.
SAMPLES: dict[str, dict[str, Any]] = {
    "SET_MODE": {"op": "set_mode", "mode": "standby"},
    "ORBIT_ADJUST": {"op": "orbit_adjust", "stage": 4, "pdi_utc": "2024-06-01T22:23:00Z"},
    "BURN": {"op": "burn", "frame": "RTN", "delta_v_m_s": {"x": -20.0, "y": 0.125, "z": 20.0}},
    "OPERATION": {"op": "operation", "operation": "seal_sample"},
    "SURFACE_SETUP": {"op": "surface_setup"},
}


@pytest.mark.parametrize("command", d.COMMANDS, ids=lambda c: c.full_name)
def test_every_command_round_trips(command: d.Command) -> None:
    twin = SAMPLES[command.name]
    data = tc_packet(command.target, twin, command_id=0xFFFF_FFFF, seq=42)
    tc = decode_tc(data)
    assert tc == Telecommand(command.target, command.op, {k: v for k, v in twin.items()
                                                          if k != "op"},
                             0xFFFF_FFFF, command.opcode)
    assert tc.twin_command() == twin
    assert primary(data).apid == command.apid


def _tc(apid: int = 101, opcode: int = 1, args: bytes = b"\x1e", *, first: int | None = None,
        flags: int = 0b11, length_delta: int = 0) -> bytes:
    """A TC built by hand from the standard's fields, to break one at a time."""
    user = struct.pack(">IB", 9, opcode) + args
    word0 = first if first is not None else (0b000 << 13) | (1 << 12) | (0 << 11) | apid
    return struct.pack(">HHH", word0, (flags << 14) | 0, len(user) - 1 + length_delta) + user


def test_a_hand_built_tc_decodes() -> None:
    assert decode_tc(_tc()) == Telecommand("orbiter", "set_mode", {"mode": "safe"}, 9, 1)


@pytest.mark.parametrize(("data", "reason"), [
    (b"", r"short packet: 0 octets, a telecommand has at least 11"),
    (_tc()[:10], r"short packet: 10 octets"),
    (_tc(first=(0b001 << 13) | (1 << 12) | 101), r"packet version 1: only version 0"),
    (_tc(first=(0 << 12) | 101), r"packet type 0 is telemetry"),
    (_tc(first=(1 << 12) | (1 << 11) | 101), r"secondary header flag set"),
    (_tc(flags=0b01), r"sequence flags 0b01: only unsegmented"),
    (_tc(length_delta=1), r"length field says 13 octets in all, the packet has 12"),
    (_tc() + b"\0", r"length field says 12 octets in all, the packet has 13"),
    (_tc(apid=100), r"unknown APID 100 for a telecommand; targets: orbiter 101"),
    (_tc(apid=2000), r"unknown APID 2000"),
    (_tc(opcode=99), r"unknown opcode 99 for orbiter \(APID 101\); known: 1 SET_MODE, "
                     r"2 ORBIT_ADJUST, 3 BURN"),
    (_tc(opcode=4, apid=104), r"unknown opcode 4 for reentry"),
    (_tc(args=b""), r"ORBITER_SET_MODE takes 1 octets of arguments, got 0"),
    (_tc(args=b"\x1e\x00"), r"ORBITER_SET_MODE takes 1 octets of arguments, got 2"),
    (_tc(args=b"\x63"), r"ORBITER_SET_MODE mode: unknown code 99; known: 30 safe"),
    (_tc(opcode=2, args=struct.pack(">BI", 5, LAUNCH_UNIX_S)),
     r"ORBITER_ORBIT_ADJUST stage = 5 is out of range 1\.\.4"),
    (_tc(opcode=2, args=struct.pack(">BI", 1, LAUNCH_UNIX_S - 1)),
     r"ORBITER_ORBIT_ADJUST pdi_utc = 1714728448 is out of range 1714728449\.\.1719912449 s"),
    (_tc(opcode=3, args=struct.pack(">Bddd", 0, 20.5, 0.0, 0.0)),
     r"ORBITER_BURN dv_x_m_s = 20\.5 is out of range -20\.\.20 m/s"),
    (_tc(opcode=3, args=struct.pack(">Bddd", 0, 0.0, 0.0, math.nan)),
     r"ORBITER_BURN dv_z_m_s = nan is out of range"),
    (_tc(opcode=3, args=struct.pack(">Bddd", 7, 0.0, 0.0, 0.0)),
     r"ORBITER_BURN frame: unknown code 7; known: 0 RTN, 1 MCI, 2 ECI"),
    (_tc(apid=102, opcode=2, args=b"\x00"), r"LANDER_OPERATION operation: unknown code 0"),
], ids=lambda x: x[:40] if isinstance(x, str) else None)
def test_every_malformed_or_unknown_tc_is_refused_with_a_reason(data: bytes,
                                                                reason: str) -> None:
    with pytest.raises(PacketError, match=reason):
        decode_tc(data)


@pytest.mark.parametrize(("target", "command", "reason"), [
    ("orbiter", {"op": "fly"}, r"no telecommand for orbiter op 'fly'; known: set_mode, "
                               r"orbit_adjust, burn"),
    ("orbiter", {"op": "set_mode", "mode": "nap"}, r"mode must be one of safe, standby"),
    ("orbiter", {"op": "orbit_adjust", "stage": 2.5, "pdi_utc": "2024-06-01T22:23:00Z"},
     r"stage must be an integer"),
    ("orbiter", {"op": "orbit_adjust", "stage": 2, "pdi_utc": "soon"},
     r"pdi_utc must be an ISO UTC instant"),
    ("orbiter", {"op": "burn", "frame": "RTN", "delta_v_m_s": {"x": 30.0, "y": 0, "z": 0}},
     r"dv_x_m_s = 30\.0 is out of range -20\.\.20"),
])
def test_tc_packet_refuses_what_decode_tc_would(target: str, command: dict[str, Any],
                                                reason: str) -> None:
    with pytest.raises(PacketError, match=reason):
        tc_packet(target, command, command_id=1)


def test_mangled_bytes_are_refused_with_a_packet_error_or_decode() -> None:
    """Whatever arrives on the TC port, decode_tc answers or refuses; it never
    raises anything else (the gateway counts a PacketError and goes on)."""
    rng = random.Random(23)
    good = tc_packet("orbiter", SAMPLES["BURN"], command_id=3)
    for i in range(3000):
        if i % 2:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(40)))
        else:
            mangled = bytearray(good)
            for _ in range(rng.randrange(1, 4)):
                mangled[rng.randrange(len(mangled))] = rng.getrandbits(8)
            data = bytes(mangled)
        try:
            decode_tc(data)
        except PacketError as exc:
            assert exc.reason
