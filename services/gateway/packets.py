"""CCSDS Space Packets of the twin, built and read by the one dictionary. Pure.

Telemetry (CCSDS 133.0-B, big-endian): the 6-octet primary header
(spacepackets' :class:`SpacePacketHeader`), a 7-octet secondary header (CUC
time 4+2 octets since the Unix epoch, P-field implicit, then the packet id)
and the packet's fields (:mod:`services.gateway.dictionary`). The time is the
*mission time* of what the packet reports, as UTC, never the wall clock.

Telecommands: the primary header (type 1, no secondary header), then
``command_id`` (uint32), ``opcode`` (uint8) and the command's arguments.
:func:`decode_tc` refuses anything malformed or unknown with a
:class:`PacketError` saying what is wrong; :func:`tc_packet` is its inverse.

Encoders never refuse a frame for a name they do not know (a phase, body or
path): it goes as 255 "unknown", so telemetry keeps flowing. They do refuse
what only a programming error makes (a frame with no origin, an APID or
sequence count out of range, a stage that is not one).
"""

from __future__ import annotations

import functools
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from spacepackets.ccsds.spacepacket import (  # type: ignore[import-untyped]
    PacketType,
    SequenceFlags,
    SpacePacketHeader,
)

from services.dynamics.constants import MISSION_EPOCH_UTC
from services.gateway import dictionary as d
from services.kernel.errors import TwinError

__all__ = ["APIDS", "PacketError", "SequenceCounts", "Telecommand", "ack_packet", "cuc_time",
           "decode_tc", "event_packet", "hk_packet", "links_packet", "tc_packet", "unix_time"]

APIDS = d.APIDS
#: Sequence counts are 14 bits (CCSDS 133.0-B 4.1.3.4.2).
SEQ_COUNT_MODULO = 1 << 14
_MAX_APID = (1 << 11) - 1
_PACKED = {8: "B", 16: "H", 32: "I"}
# The mission epoch as whole Unix seconds and the rest (zero for 09:27:29Z):
# CUC time is computed from them, not from a float of ~1.7e9 s, so the fine
# time keeps the full 2^-16 s of a mission time.
_EPOCH_UNIX_S = int(MISSION_EPOCH_UTC.timestamp() // 1)
_EPOCH_FRACTION_S = MISSION_EPOCH_UTC.timestamp() - _EPOCH_UNIX_S


class PacketError(TwinError):
    """A packet that cannot be built or read: ``reason`` says what to fix."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Telecommand:
    """A decoded TC: the twin command for ``target`` is ``{"op": op, **args}``."""

    target: str
    op: str
    args: dict[str, Any]
    command_id: int
    opcode: int

    def twin_command(self) -> dict[str, Any]:
        return {"op": self.op, **self.args}


class SequenceCounts:
    """Per-APID 14-bit sequence counts: 0, 1, ..., 16383, 0, ..."""

    def __init__(self) -> None:
        self._next: dict[int, int] = {}

    def next(self, apid: int) -> int:
        _check_apid(apid)
        count = self._next.get(apid, 0)
        self._next[apid] = (count + 1) % SEQ_COUNT_MODULO
        return count


# --- Time ----------------------------------------------------------------------------
def unix_time(t_s: float) -> float:
    """Mission seconds -> Unix seconds (UTC; no leap second falls in 2024)."""
    return MISSION_EPOCH_UTC.timestamp() + t_s


def cuc_time(t_s: float) -> tuple[int, int]:
    """The CUC (coarse, fine) of mission time ``t_s``: whole Unix seconds, and the
    fraction in 1/65536 s, rounded down."""
    if not math.isfinite(t_s):
        raise PacketError(f"mission time must be finite, got {t_s!r}")
    whole = math.floor(t_s)
    fraction = (t_s - whole) + _EPOCH_FRACTION_S
    carry = math.floor(fraction)
    coarse = _EPOCH_UNIX_S + whole + carry
    fine = math.floor((fraction - carry) * d.CUC_FINE_PER_S)
    if not 0 <= coarse <= 0xFFFF_FFFF:
        raise PacketError(f"mission time {t_s} s is outside the CUC range (1970..2106)")
    return coarse, min(fine, d.CUC_FINE_PER_S - 1)


# --- Telemetry --------------------------------------------------------------------------
def hk_packet(frame: Mapping[str, Any], seq: int) -> bytes:
    """One downlink frame ground has archived, as its origin's HK packet; the
    time is the frame's recorded time ``t_s`` (when the vehicle measured it)."""
    origin = frame.get("origin")
    if origin not in d.VEHICLES:
        raise PacketError(f"a frame's origin must be one of {', '.join(d.VEHICLES)}, "
                          f"got {origin!r}")
    pkt = d.packet(str(origin), "HK")
    values = frame.get("values") or {}
    if not isinstance(values, Mapping):
        raise PacketError(f"{origin} frame {frame.get('frame_seq')}: 'values' must be a mapping")
    row: list[Any] = [
        _count(frame, "frame_seq"),
        _code(d.phase_enum(str(origin)), frame.get("phase")),
        _code(d.CENTRAL_BODIES, frame.get("body") or "none"),
        _code(d.PATHS, frame.get("path") or "none"),
        # Chosen: a frame Queqiao-2 stored and sent on later is not live either.
        1 if frame.get("playback") or frame.get("relay_playback") else 0,
    ]
    row += [_number(frame, frame.get(k), k) for k in d.FRAME_FLOATS]
    row += [_number(frame, values.get(k, math.nan), k) for k in d.hk_values(str(origin))]
    return _tm(pkt, seq, _number(frame, frame.get("t_s"), "t_s"), row)


def event_packet(source: str, name: str, body: Mapping[str, Any], t_s: float,
                 seq: int) -> bytes:
    """A mission event on its publisher's APID; unknown names go as code 0."""
    if source not in d.APIDS:
        raise PacketError(f"event source must be one of {', '.join(d.SERVICES)}, "
                          f"got {source!r}")
    code = d.EVENT_CODES.get(name, 0)
    return _tm(d.packet(source, "EVENT"), seq, t_s, [code, _text(_event_json(name, body))])


def ack_packet(command_id: int, stage: str, reason: str, t_s: float, seq: int) -> bytes:
    """How far a telecommand got (on ground's APID)."""
    stages = dict((label, code) for code, label in d.ACK_STAGES)
    if stage not in stages:
        raise PacketError(f"ack stage must be one of {', '.join(stages)}, got {stage!r}")
    if not isinstance(command_id, int) or not 0 <= command_id <= 0xFFFF_FFFF:
        raise PacketError(f"command_id must be an integer in 0..4294967295, got {command_id!r}")
    return _tm(d.packet("ground", "CMD_ACK"), seq, t_s,
               [command_id, stages[stage], _text(reason)])


def links_packet(paths: Mapping[str, str], t_s: float, seq: int) -> bytes:
    """The path ground last heard each vehicle on; a vehicle not given: none."""
    codes = [_code(d.PATHS, paths.get(v, "none")) for v in d.VEHICLES]
    return _tm(d.packet("ground", "LINKS"), seq, t_s, codes)


@functools.cache
def _layout(pkt: d.Packet) -> struct.Struct:
    """A packet's user data as one compiled struct (built once per packet:
    every HK packet of a mission reuses its vehicle's)."""
    return struct.Struct(">" + "".join(_format(f) for f in pkt.fields))


def _tm(pkt: d.Packet, seq: int, t_s: float, row: Sequence[Any]) -> bytes:
    user = _layout(pkt).pack(*row)
    coarse, fine = cuc_time(t_s)
    secondary = struct.pack(">IHB", coarse, fine, pkt.packet_id)
    return _primary(PacketType.TM, pkt.apid, seq, len(secondary) + len(user)) + secondary + user


def _primary(kind: PacketType, apid: int, seq: int, data_octets: int) -> bytes:
    _check_apid(apid)
    if not isinstance(seq, int) or not 0 <= seq < SEQ_COUNT_MODULO:
        raise PacketError(f"sequence count must be in 0..16383 (SequenceCounts.next), got {seq!r}")
    header = SpacePacketHeader(packet_type=kind, apid=apid, seq_count=seq,
                               data_len=data_octets - 1, sec_header_flag=kind == PacketType.TM,
                               seq_flags=SequenceFlags.UNSEGMENTED)
    return bytes(header.pack())


def _format(field: d.Field) -> str:
    if field.kind == "float":
        return "d"
    if field.kind == "string":
        return f"{field.bits // 8}s"
    return _PACKED[field.bits]


def _check_apid(apid: int) -> None:
    if not isinstance(apid, int) or not 0 <= apid <= _MAX_APID:
        raise PacketError(f"APID must be an integer in 0..2047, got {apid!r}")


def _code(enum: d.Enum, label: Any) -> int:
    return _codes(enum).get(label, d.UNKNOWN) if isinstance(label, str) else d.UNKNOWN


@functools.cache
def _codes(enum: d.Enum) -> dict[str, int]:
    """label -> code of an enumeration (the first code of a label given twice)."""
    out: dict[str, int] = {}
    for code, name in enum:
        out.setdefault(name, code)
    return out


def _count(frame: Mapping[str, Any], key: str) -> int:
    raw = frame.get(key)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= 0xFFFF_FFFF:
        raise PacketError(f"{frame.get('origin')} frame: {key!r} must be an integer in "
                          f"0..4294967295, got {raw!r}")
    return raw


def _number(frame: Mapping[str, Any], raw: Any, key: str) -> float:
    if isinstance(raw, bool):
        return float(raw)  # link_up and the like may come as booleans
    if not isinstance(raw, int | float):
        raise PacketError(f"{frame.get('origin')} frame {frame.get('frame_seq')}: {key!r} "
                          f"must be a number, got {raw!r}")
    return float(raw)


def _text(text: str) -> bytes:
    """UTF-8, cut on a character boundary to leave at least one NUL (struct pads)."""
    raw = text.encode()[: d.TEXT_OCTETS - 1]
    return raw.decode(errors="ignore").encode()


def _event_json(name: str, body: Mapping[str, Any]) -> str:
    """The event's scalar fields as compact JSON. Chosen: floats to 9 significant
    digits, non-finite ones as null, so the text is short and valid JSON."""
    scalars: dict[str, Any] = {}
    for key, value in body.items():
        if key == "name" or not (value is None or isinstance(value, str | int | float)):
            continue
        if isinstance(value, float) and not isinstance(value, bool):
            value = float(f"{value:.9g}") if math.isfinite(value) else None
        scalars[str(key)] = value
    return json.dumps(scalars, separators=(",", ":"), ensure_ascii=False)


# --- Telecommands ------------------------------------------------------------------------
_TC_HEAD = struct.Struct(">IB")


def decode_tc(data: bytes) -> Telecommand:
    """A CCSDS TC packet -> the twin command it carries; :class:`PacketError` with
    the reason for anything malformed or unknown."""
    head = d.PRIMARY_HEADER_OCTETS + _TC_HEAD.size
    if len(data) < head:
        raise PacketError(f"short packet: {len(data)} octets, a telecommand has at least "
                          f"{head} (6 primary header, 4 command_id, 1 opcode)")
    header = SpacePacketHeader.unpack(bytes(data[: d.PRIMARY_HEADER_OCTETS]))
    _check_tc_header(header, len(data))
    command_id, opcode = _TC_HEAD.unpack_from(data, d.PRIMARY_HEADER_OCTETS)
    command = d.COMMAND_BY_ID.get((header.apid, opcode))
    target = d.SERVICE_OF_APID[header.apid]
    if command is None:
        known = ", ".join(f"{c.opcode} {c.name}" for c in d.COMMANDS if c.target == target)
        raise PacketError(f"unknown opcode {opcode} for {target} (APID {header.apid}); "
                          f"known: {known}")
    args = _decode_args(command, bytes(data[head:]))
    return Telecommand(target, command.op, args, command_id, opcode)


def _check_tc_header(header: SpacePacketHeader, octets: int) -> None:
    if header.ccsds_version != 0:
        raise PacketError(f"packet version {header.ccsds_version}: only version 0 (CCSDS 133.0-B)")
    if header.packet_type != PacketType.TC:
        raise PacketError("packet type 0 is telemetry: a telecommand has type 1")
    if header.sec_header_flag:
        raise PacketError("secondary header flag set: the twin's telecommands have none")
    if header.seq_flags != SequenceFlags.UNSEGMENTED:
        raise PacketError(f"sequence flags {int(header.seq_flags):#04b}: only unsegmented "
                          "packets (0b11)")
    if header.packet_len != octets:
        raise PacketError(f"length field says {header.packet_len} octets in all, the packet has "
                          f"{octets}")
    service = d.SERVICE_OF_APID.get(header.apid)
    if service not in d.VEHICLES:
        targets = ", ".join(f"{v} {d.APIDS[v]}" for v in d.VEHICLES)
        raise PacketError(f"unknown APID {header.apid} for a telecommand; targets: {targets}")


def _decode_args(command: d.Command, raw: bytes) -> dict[str, Any]:
    layout = _arg_struct(command)
    if len(raw) != layout.size:
        raise PacketError(f"{command.full_name} takes {layout.size} octets of arguments, "
                          f"got {len(raw)}")
    args: dict[str, Any] = {}
    for arg, value in zip(command.arguments, layout.unpack(raw), strict=True):
        _put(args, arg.twin_path, _arg_value(command, arg, value))
    return args


def _arg_value(command: d.Command, arg: d.Argument, raw: int | float) -> Any:
    where = f"{command.full_name} {arg.name}"
    if arg.kind == "enum":
        label = dict(arg.enum).get(int(raw))
        if label is None:
            known = ", ".join(f"{c} {n}" for c, n in arg.enum)
            raise PacketError(f"{where}: unknown code {raw}; known: {known}")
        return label
    if not (arg.minimum is not None and arg.maximum is not None
            and arg.minimum <= raw <= arg.maximum):  # NaN fails too
        raise PacketError(f"{where} = {raw} is out of range {_g(arg.minimum)}..{_g(arg.maximum)}"
                          f"{' ' + arg.unit if arg.unit else ''}")
    if arg.kind == "utc":
        return datetime.fromtimestamp(int(raw), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return raw


def tc_packet(target: str, command: Mapping[str, Any], command_id: int, seq: int = 0) -> bytes:
    """The TC that carries twin command ``command`` ({"op": ..., args}) to
    ``target``: what a control system sends, and what :func:`decode_tc` reads back."""
    spec = next((c for c in d.COMMANDS if c.target == target and c.op == command.get("op")),
                None)
    if spec is None:
        ops = ", ".join(c.op for c in d.COMMANDS if c.target == target) or "none"
        raise PacketError(f"no telecommand for {target} op {command.get('op')!r}; known: {ops}")
    if not isinstance(command_id, int) or not 0 <= command_id <= 0xFFFF_FFFF:
        raise PacketError(f"command_id must be an integer in 0..4294967295, got {command_id!r}")
    raw = [_encode_arg(spec, a, _get(command, a.twin_path)) for a in spec.arguments]
    user = _TC_HEAD.pack(command_id, spec.opcode) + _arg_struct(spec).pack(*raw)
    return _primary(PacketType.TC, spec.apid, seq, len(user)) + user


def _encode_arg(command: d.Command, arg: d.Argument, value: Any) -> int | float:
    where = f"{command.full_name} {arg.name}"
    if arg.kind == "enum":
        codes = {label: code for code, label in arg.enum}
        if value not in codes:
            raise PacketError(f"{where} must be one of {', '.join(codes)}, got {value!r}")
        return codes[value]
    if arg.kind == "utc":
        try:
            value = int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp())
        except ValueError as exc:
            raise PacketError(f"{where} must be an ISO UTC instant, got {value!r}") from exc
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PacketError(f"{where} must be a number, got {value!r}")
    if arg.kind != "float" and not isinstance(value, int):
        raise PacketError(f"{where} must be an integer, got {value!r}")
    assert arg.minimum is not None and arg.maximum is not None
    if not arg.minimum <= value <= arg.maximum:
        raise PacketError(f"{where} = {value} is out of range {_g(arg.minimum)}.."
                          f"{_g(arg.maximum)}")
    return value


def _arg_struct(command: d.Command) -> struct.Struct:
    return struct.Struct(">" + "".join("d" if a.kind == "float" else _PACKED[a.bits]
                                       for a in command.arguments))


def _put(args: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        args = args.setdefault(key, {})
    args[path[-1]] = value


def _get(command: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = command
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _g(x: float | None) -> str:
    """A bound as written: 20 for 20.0, every digit of 1714728449."""
    value = float(x if x is not None else math.nan)
    return str(int(value)) if value.is_integer() else repr(value)

