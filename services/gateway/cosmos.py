"""The dictionary as OpenC3 COSMOS command and telemetry definitions (deploy/cosmos/).

One COSMOS target per service (GROUND, ORBITER, ... RELAY), since a target is
what an APID is: its packets are its HK and EVENT (ground: EVENT, CMD_ACK,
LINKS), identified by the APID and packet id ID items, and its commands, by
the APID and opcode. Items are named by the twin's keys, upper-cased
(ORBITER HK ALT_M). The files are what a COSMOS plugin installs
(``plugin.txt`` maps every target to one UDP interface to the gateway).

Differences from the XTCE, where COSMOS works otherwise: limits take all four
bounds (a missing side is +-1e300), and COSMOS has no context alarms (the
critical-phase link alarm is Yamcs' only). CUC_FINE reads in microseconds,
the unit COSMOS' UnixTimeConversion takes, so PACKET_TIME (the packet's
time in COSMOS) is the mission time of what it reports to 1 us.
Pure: :func:`render` returns path -> text; scripts/gen_mdb.py writes them.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.gateway import dictionary as d

#: Chosen: the open side of a one-sided limit (COSMOS wants all four).
_OPEN = 1.0e300
_HEADER = ("# Generated from services/gateway/dictionary.py by scripts/gen_mdb.py; "
           "do not edit.\n")
#: COSMOS' conversion from seconds and microseconds items to a time.
_UNIX_TIME = "openc3/conversions/unix_time_conversion.py"
#: Microseconds per CUC fine count (exact: 10**6 / 2**16).
_US_PER_FINE = 1_000_000 / d.CUC_FINE_PER_S
#: The TC header fields every command fixes (None: the target's APID).
_TC_FIXED: tuple[tuple[str, int, int | None, str], ...] = (
    ("CCSDS_VERSION", 3, 0, "packet version number"),
    ("CCSDS_TYPE", 1, 1, "1: telecommand"),
    ("CCSDS_SEC_HDR_FLAG", 1, 0, "0: no secondary header"),
    ("CCSDS_APID", 11, None, "application process id of the target"),
    ("CCSDS_SEQ_FLAGS", 2, 3, "3: unsegmented"),
)


def target(service: str) -> str:
    return service.upper()


def render() -> dict[str, str]:
    """Every file of the COSMOS plugin, by path under deploy/cosmos/."""
    files = {"plugin.txt": _plugin()}
    for service in d.SERVICES:
        files[f"targets/{target(service)}/cmd_tlm/tlm.txt"] = _HEADER + "".join(
            _telemetry(p) for p in d.PACKETS if p.service == service)
        commands = [c for c in d.COMMANDS if c.target == service]
        if commands:
            files[f"targets/{target(service)}/cmd_tlm/cmd.txt"] = _HEADER + "".join(
                _command(c) for c in commands)
    return files


def _plugin() -> str:
    lines = [_HEADER.rstrip("\n"),
             "# The gateway sends telemetry to tm_port and reads telecommands on tc_port.",
             "VARIABLE gateway_host 127.0.0.1",
             "VARIABLE tc_port 10025",
             "VARIABLE tm_port 10015", ""]
    lines += [f"TARGET {target(s)} {target(s)}" for s in d.SERVICES]
    lines += ["", "INTERFACE CHANGE6_INT openc3/interfaces/udp_interface.py "
              "<%= gateway_host %> <%= tc_port %> <%= tm_port %>"]
    lines += [f"  MAP_TARGET {target(s)}" for s in d.SERVICES]
    return "\n".join(lines) + "\n"


# --- Telemetry ------------------------------------------------------------------------
def _telemetry(pkt: d.Packet) -> str:
    out = [f'\nTELEMETRY {target(pkt.service)} {pkt.kind} BIG_ENDIAN "{pkt.description}"']
    ids = {"ccsds_apid": pkt.apid, "packet_id": pkt.packet_id}
    for f in (*d.PRIMARY_HEADER, *d.TM_SECONDARY_HEADER):
        out += _item(f, ids.get(f.name))
    out += ['  ITEM PACKET_TIME 0 0 DERIVED "the CUC time: when what the packet reports was"',
            f"    READ_CONVERSION {_UNIX_TIME} CUC_COARSE CUC_FINE RAW CONVERTED"]
    for f in pkt.fields:
        out += _item(f, None)
    return "\n".join(out) + "\n"


def _item(f: d.Field, id_value: int | None) -> list[str]:
    name = f.key.upper()
    kind = {"uint": "UINT", "enum": "UINT", "float": "FLOAT", "string": "STRING"}[f.kind]
    if id_value is None:
        lines = [f'  APPEND_ITEM {name} {f.bits} {kind} "{f.description}"']
    else:
        lines = [f'  APPEND_ID_ITEM {name} {f.bits} {kind} {id_value} "{f.description}"']
    unit = f.unit
    if f.calibration:
        assert f.name == "cuc_fine", "only the CUC fine time is calibrated"
        lines.append(f"    POLY_READ_CONVERSION 0 {_US_PER_FINE!r}")
        unit = "us"
    if unit:
        lines.append(f"    UNITS {unit} {unit}")
    lines += _states(f.enum)
    if f.limits is not None:
        lines.append(_limits(f.limits))
    return lines


def _states(enum: Iterable[tuple[int, str]]) -> list[str]:
    return [f"    STATE {label} {code}" for code, label in enum]


def _limits(limits: d.Limits) -> str:
    def bound(value: float | None, default: float) -> str:
        return repr(float(default if value is None else value))

    red_low = bound(limits.critical_low, -_OPEN)
    yellow_low = bound(limits.warning_low, -_OPEN)
    yellow_high = bound(limits.warning_high, _OPEN)
    red_high = bound(limits.critical_high, _OPEN)
    return f"    LIMITS DEFAULT 1 ENABLED {red_low} {yellow_low} {yellow_high} {red_high}"


# --- Commands -------------------------------------------------------------------------
def _command(command: d.Command) -> str:
    out = [f'\nCOMMAND {target(command.target)} {command.name} BIG_ENDIAN '
           f'"{command.description}"']
    for name, bits, value, what in _TC_FIXED:
        fixed = command.apid if value is None else value
        keyword = "APPEND_ID_PARAMETER" if name == "CCSDS_APID" else "APPEND_PARAMETER"
        out.append(f'  {keyword} {name} {bits} UINT {fixed} {fixed} {fixed} "{what}"')
    out.append('  APPEND_PARAMETER CCSDS_SEQ_COUNT 14 UINT 0 16383 0 '
               '"per-APID count (the gateway takes any)"')
    # Every command has a fixed size, so its length field is a constant.
    length = _tc_octets(command) - d.PRIMARY_HEADER_OCTETS - 1
    out.append(f'  APPEND_PARAMETER CCSDS_LENGTH 16 UINT {length} {length} {length} '
               '"octets after the primary header, minus 1"')
    head_id, head_opcode = d.TC_HEAD
    out.append(f'  APPEND_PARAMETER COMMAND_ID 32 UINT 0 {int(head_id.maximum or 0)} 0 '
               f'"{head_id.description}"')
    out.append(f'  APPEND_ID_PARAMETER OPCODE 8 UINT {command.opcode} {command.opcode} '
               f'{command.opcode} "{head_opcode.description}"')
    for arg in command.arguments:
        out += _parameter(arg)
    return "\n".join(out) + "\n"


def _tc_octets(command: d.Command) -> int:
    args = sum(a.bits for a in command.arguments) // 8
    return d.PRIMARY_HEADER_OCTETS + 5 + args


def _parameter(arg: d.Argument) -> list[str]:
    name = arg.name.upper()
    if arg.kind == "enum":
        codes = [c for c, _ in arg.enum]
        lines = [f'  APPEND_PARAMETER {name} {arg.bits} UINT {min(codes)} {max(codes)} '
                 f'{codes[0]} "{arg.description}"', *_states(arg.enum)]
    elif arg.kind == "float":
        low, high = float(arg.minimum or 0.0), float(arg.maximum or 0.0)
        lines = [f'  APPEND_PARAMETER {name} {arg.bits} FLOAT {low!r} {high!r} '
                 f'{min(max(0.0, low), high)!r} "{arg.description}"']
    else:
        low_i, high_i = int(arg.minimum or 0), int(arg.maximum or 0)
        lines = [f'  APPEND_PARAMETER {name} {arg.bits} UINT {low_i} {high_i} {low_i} '
                 f'"{arg.description}"']
    if arg.unit:
        lines.append(f"    UNITS {arg.unit} {arg.unit}")
    return lines
