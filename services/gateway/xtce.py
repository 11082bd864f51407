"""The dictionary as an XTCE 1.2 mission database (deploy/yamcs/mdb/change6.xml).

One SpaceSystem ``change6``, flat, so every tool finds its sets at the root
(space-packet-parser reads only the root's). Telemetry: an abstract
``CCSDSPacket`` (the primary header), an abstract ``CCSDS_TM`` under it (the
secondary header, for packets of type 0 with the flag set), and one container
per (APID, packet id) restricted on both. Parameters carry units, the CUC
fine time a calibration to seconds, limits a DefaultAlarm, the link of a
vehicle in a critical phase a ContextAlarm. Commands: an abstract
``CCSDS_TC`` lays out the primary header, ``command_id`` and ``opcode``; each
command assigns its APID and opcode and appends its arguments, whose
ValidRange Yamcs enforces before sending.

Only what Yamcs 5 reads is used (its XTCE loader's compatibility list:
no BooleanExpression, no RestrictionCriteria/NextContainer, one range per
ValidRangeSet); the result also validates against the XTCE 1.2 schema.
Pure: :func:`render` returns the text, scripts/gen_mdb.py writes it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from services.gateway import dictionary as d

XTCE_NS = "http://www.omg.org/spec/XTCE/20180204"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
SCHEMA_LOCATION = f"{XTCE_NS} https://www.omg.org/spec/XTCE/20180204/SpaceSystem.xsd"
SPACE_SYSTEM = "change6"
#: The root container (space-packet-parser's default name; Yamcs' rootContainer
#: is /change6/CCSDSPacket).
ROOT_CONTAINER = "CCSDSPacket"
TM_CONTAINER = "CCSDS_TM"
TC_BASE = "CCSDS_TC"
_LEVELS = ("warning", "critical")


def render() -> str:
    """The whole mission database as XML text."""
    ET.register_namespace("", XTCE_NS)
    ET.register_namespace("xsi", XSI_NS)
    root = _el("SpaceSystem", name=SPACE_SYSTEM)
    root.set(f"{{{XSI_NS}}}schemaLocation", SCHEMA_LOCATION)
    _sub(root, "LongDescription").text = (
        "Chang'e-6 digital twin: CCSDS packets of the gateway (services/gateway/). Generated "
        "from services/gateway/dictionary.py by scripts/gen_mdb.py; do not edit.")
    _sub(root, "Header", version="1.0", date="2024-05-03",
         classification="NotClassified", validationStatus="Working")
    _telemetry(_sub(root, "TelemetryMetaData"))
    _commands(_sub(root, "CommandMetaData"))
    tree = ET.ElementTree(root)
    ET.indent(tree, space="  ")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            + ET.tostring(root, encoding="unicode") + "\n")


# --- Telemetry ------------------------------------------------------------------------
def _all_fields() -> list[d.Field]:
    fields = [*d.PRIMARY_HEADER, *d.TM_SECONDARY_HEADER]
    for pkt in d.PACKETS:
        fields += pkt.fields
    return fields


def _telemetry(tm: ET.Element) -> None:
    fields = _all_fields()
    types = _sub(tm, "ParameterTypeSet")
    for f in fields:
        _parameter_type(types, f)
    params = _sub(tm, "ParameterSet")
    for f in fields:
        _sub(params, "Parameter", name=f.name, parameterTypeRef=_type_name(f),
             shortDescription=f.description)
    containers = _sub(tm, "ContainerSet")
    _container(containers, ROOT_CONTAINER, d.PRIMARY_HEADER, None, (),
               "CCSDS 133.0-B primary header")
    _container(containers, TM_CONTAINER, d.TM_SECONDARY_HEADER, ROOT_CONTAINER,
               (("ccsds_type", 0), ("ccsds_sec_hdr_flag", 1)),
               "telemetry: CUC time of what the packet reports, then the packet id")
    for pkt in d.PACKETS:
        _container(containers, pkt.name, pkt.fields, TM_CONTAINER,
                   (("ccsds_apid", pkt.apid), ("packet_id", pkt.packet_id)), pkt.description,
                   abstract=False)


def _type_name(f: d.Field) -> str:
    return f"{f.name}_type"


def _parameter_type(parent: ET.Element, f: d.Field) -> None:
    if f.kind == "enum":
        t = _sub(parent, "EnumeratedParameterType", name=_type_name(f))
        _units(t, f.unit)
        _sub(t, "IntegerDataEncoding", sizeInBits=str(f.bits), encoding="unsigned")
        values = _sub(t, "EnumerationList")
        for code, label in f.enum:
            _sub(values, "Enumeration", value=str(code), label=label)
        _context_alarms(t, f.context_alarms)
    elif f.kind == "string":
        t = _sub(parent, "StringParameterType", name=_type_name(f))
        _units(t, f.unit)
        size = _sub(_sub(t, "StringDataEncoding", encoding="UTF-8"), "SizeInBits")
        _sub(_sub(size, "Fixed"), "FixedValue").text = str(f.bits)
        _sub(size, "TerminationChar").text = "00"
    elif f.kind == "float" or f.calibration:
        t = _sub(parent, "FloatParameterType", name=_type_name(f), sizeInBits="64")
        _units(t, f.unit)
        if f.kind == "float":
            _sub(t, "FloatDataEncoding", sizeInBits=str(f.bits), encoding="IEEE754_1985")
        else:
            enc = _sub(t, "IntegerDataEncoding", sizeInBits=str(f.bits), encoding="unsigned")
            _calibrator(enc, f.calibration)
        _default_alarm(t, f.limits)
    else:
        t = _sub(parent, "IntegerParameterType", name=_type_name(f), signed="false")
        _units(t, f.unit)
        _sub(t, "IntegerDataEncoding", sizeInBits=str(f.bits), encoding="unsigned")
        _default_alarm(t, f.limits)


def _units(t: ET.Element, unit: str) -> None:
    units = _sub(t, "UnitSet")
    if unit:
        _sub(units, "Unit").text = unit


def _calibrator(encoding: ET.Element, coefficients: tuple[float, ...]) -> None:
    poly = _sub(_sub(encoding, "DefaultCalibrator"), "PolynomialCalibrator")
    for exponent, c in enumerate(coefficients):
        _sub(poly, "Term", coefficient=repr(c), exponent=str(exponent))


def _default_alarm(t: ET.Element, limits: d.Limits | None) -> None:
    """XTCE ranges are the in-limits span: below min or above max is out."""
    if limits is None:
        return
    ranges = _sub(_sub(t, "DefaultAlarm"), "StaticAlarmRanges")
    for level in _LEVELS:
        low = getattr(limits, f"{level}_low")
        high = getattr(limits, f"{level}_high")
        if low is None and high is None:
            continue
        bounds = {}
        if low is not None:
            bounds["minInclusive"] = repr(float(low))
        if high is not None:
            bounds["maxInclusive"] = repr(float(high))
        _sub(ranges, f"{level.capitalize()}Range", **bounds)


def _context_alarms(t: ET.Element, alarms: tuple[d.ContextAlarm, ...]) -> None:
    if not alarms:
        return
    contexts = _sub(t, "ContextAlarmList")
    for a in alarms:
        context = _sub(contexts, "ContextAlarm")
        listed = _sub(context, "EnumerationAlarmList")
        _sub(listed, "EnumerationAlarm", alarmLevel=a.level, enumerationLabel=a.label)
        _sub(_sub(context, "ContextMatch"), "Comparison", parameterRef=a.context,
             value=a.context_label)


def _container(parent: ET.Element, name: str, fields: tuple[d.Field, ...], base: str | None,
               where: tuple[tuple[str, int], ...], what: str, abstract: bool = True) -> None:
    c = _sub(parent, "SequenceContainer", name=name, shortDescription=what)
    if abstract:
        c.set("abstract", "true")
    entries = _sub(c, "EntryList")
    for f in fields:
        _sub(entries, "ParameterRefEntry", parameterRef=f.name)
    if base is None:
        return
    criteria = _sub(_sub(c, "BaseContainer", containerRef=base), "RestrictionCriteria")
    comparisons = _sub(criteria, "ComparisonList")
    for param, value in where:
        _sub(comparisons, "Comparison", parameterRef=param, value=str(value))


# --- Telecommands ---------------------------------------------------------------------
def _header_arg(name: str, bits: int, what: str) -> d.Argument:
    return d.Argument(name, "uint", bits, "", what, 0, (1 << bits) - 1)


#: The primary header's fields a TC sets, as arguments of the base command
#: that every command assigns (None: the command's own APID). Arguments rather
#: than FixedValueEntry for the fields under a byte, as Yamcs' own examples do.
_HEADER_ARGS: tuple[tuple[d.Argument, int | None], ...] = (
    (_header_arg("ccsds_version", 3, "packet version number"), 0),
    (_header_arg("ccsds_type", 1, "1: telecommand"), 1),
    (_header_arg("ccsds_sec_hdr_flag", 1, "0: no secondary header"), 0),
    (_header_arg("ccsds_apid", 11, "application process id of the target"), None),
    (_header_arg("ccsds_seq_flags", 2, "3: unsegmented"), 3),
)


def _commands(cmd: ET.Element) -> None:
    types = _sub(cmd, "ArgumentTypeSet")
    base_args = [*(a for a, _ in _HEADER_ARGS), *d.TC_HEAD]
    for arg in base_args:
        _argument_type(types, arg, f"{arg.name}_type")
    seen = {f"{a.name}_type" for a in base_args}
    for command in d.COMMANDS:
        for arg in command.arguments:
            name = _arg_type_name(command, arg)
            if name not in seen:
                seen.add(name)
                _argument_type(types, arg, name)
    commands = _sub(cmd, "MetaCommandSet")
    _tc_base(commands)
    for command in d.COMMANDS:
        _meta_command(commands, command)


def _arg_type_name(command: d.Command, arg: d.Argument) -> str:
    """One type per argument; SET_MODE's mode is the same type for every vehicle."""
    if command.name == "SET_MODE":
        return f"{arg.name}_type"
    return f"{command.full_name.lower()}_{arg.name}_type"


def _argument_type(parent: ET.Element, arg: d.Argument, name: str) -> None:
    if arg.kind == "enum":
        t = _sub(parent, "EnumeratedArgumentType", name=name, shortDescription=arg.description)
        _units(t, arg.unit)
        _sub(t, "IntegerDataEncoding", sizeInBits=str(arg.bits), encoding="unsigned")
        values = _sub(t, "EnumerationList")
        for code, label in arg.enum:
            _sub(values, "Enumeration", value=str(code), label=label)
        return
    assert arg.minimum is not None and arg.maximum is not None, f"{arg.name} has no range"
    if arg.kind == "float":
        t = _sub(parent, "FloatArgumentType", name=name, sizeInBits="64",
                 shortDescription=arg.description)
        _units(t, arg.unit)
        _sub(t, "FloatDataEncoding", sizeInBits=str(arg.bits), encoding="IEEE754_1985")
        bounds = (repr(float(arg.minimum)), repr(float(arg.maximum)))
    else:
        t = _sub(parent, "IntegerArgumentType", name=name, signed="false",
                 shortDescription=arg.description)
        _units(t, arg.unit)
        _sub(t, "IntegerDataEncoding", sizeInBits=str(arg.bits), encoding="unsigned")
        bounds = (str(int(arg.minimum)), str(int(arg.maximum)))
    _sub(_sub(t, "ValidRangeSet"), "ValidRange", minInclusive=bounds[0],
         maxInclusive=bounds[1])


def _tc_base(parent: ET.Element) -> None:
    """The CCSDS primary header of a TC, then command_id and opcode. The count
    and length are placeholders the link's postprocessor fills (Yamcs'
    CcsdsPacketPostprocessor)."""
    m = _sub(parent, "MetaCommand", name=TC_BASE, abstract="true",
             shortDescription="a CCSDS telecommand of the twin")
    args = _sub(m, "ArgumentList")
    for arg in (*(a for a, _ in _HEADER_ARGS), *d.TC_HEAD):
        _sub(args, "Argument", name=arg.name, argumentTypeRef=f"{arg.name}_type",
             shortDescription=arg.description)
    entries = _sub(_sub(m, "CommandContainer", name=TC_BASE), "EntryList")
    for arg, _ in _HEADER_ARGS:
        _sub(entries, "ArgumentRefEntry", argumentRef=arg.name)
    _sub(entries, "FixedValueEntry", name="ccsds_seq_count", binaryValue="0000", sizeInBits="14")
    _sub(entries, "FixedValueEntry", name="ccsds_length", binaryValue="0000", sizeInBits="16")
    for arg in d.TC_HEAD:
        _sub(entries, "ArgumentRefEntry", argumentRef=arg.name)


def _meta_command(parent: ET.Element, command: d.Command) -> None:
    m = _sub(parent, "MetaCommand", name=command.full_name,
             shortDescription=command.description)
    assign = _sub(_sub(m, "BaseMetaCommand", metaCommandRef=TC_BASE), "ArgumentAssignmentList")
    for arg, value in _HEADER_ARGS:
        _sub(assign, "ArgumentAssignment", argumentName=arg.name,
             argumentValue=str(command.apid if value is None else value))
    _sub(assign, "ArgumentAssignment", argumentName="opcode", argumentValue=str(command.opcode))
    if command.arguments:
        args = _sub(m, "ArgumentList")
        for arg in command.arguments:
            _sub(args, "Argument", name=arg.name, argumentTypeRef=_arg_type_name(command, arg),
                 shortDescription=arg.description)
    container = _sub(m, "CommandContainer", name=command.full_name)
    entries = _sub(container, "EntryList")
    for arg in command.arguments:
        _sub(entries, "ArgumentRefEntry", argumentRef=arg.name)
    _sub(container, "BaseContainer", containerRef=TC_BASE)
    _verifiers(m)


#: The verifiers every command carries, as Yamcs follows them: each waits for a
#: CMD_ACK naming this command's own command_id (Yamcs gives a verifier the
#: command's arguments as /yamcs/cmd/arg/<name>) at one stage. Wall seconds
#: each may wait after the one before: a paused or slow clock takes long to
#: bring a command to its vehicle, so the windows are wide.
#: In XTCE's order of stages: ground (the range) took it, sent it on the
#: vehicle's path, the vehicle ran it; or it failed anywhere.
VERIFIERS: tuple[tuple[str, str, int], ...] = (
    ("TransferredToRangeVerifier", "accepted", 60),
    ("SentFromRangeVerifier", "uplinked", 3600),
    ("CompleteVerifier", "executed", 3600),
    ("FailedVerifier", "failed", 7200),
)


def _verifiers(meta: ET.Element) -> None:
    verifier_set = _sub(meta, "VerifierSet")
    for tag, stage, window_s in VERIFIERS:
        v = _sub(verifier_set, tag)
        conditions = _sub(_sub(v, "BooleanExpression"), "ANDedConditions")
        same = _sub(conditions, "Condition")
        _sub(same, "ParameterInstanceRef", parameterRef="ack_command_id")
        _sub(same, "ComparisonOperator").text = "=="
        _sub(same, "ParameterInstanceRef", parameterRef="/yamcs/cmd/arg/command_id")
        at = _sub(conditions, "Condition")
        _sub(at, "ParameterInstanceRef", parameterRef="ack_stage")
        _sub(at, "ComparisonOperator").text = "=="
        _sub(at, "Value").text = stage
        _sub(v, "CheckWindow", timeToStartChecking="PT0S",
             timeToStopChecking=f"PT{window_s}S",
             timeWindowIsRelativeTo="commandRelease" if tag != "CompleteVerifier"
             else "timeLastVerifierPassed")


# --- XML ---------------------------------------------------------------------------------
def _el(tag: str, **attrs: str) -> ET.Element:
    return ET.Element(f"{{{XTCE_NS}}}{tag}", {k: v for k, v in attrs.items() if v})


def _sub(parent: ET.Element, tag: str, **attrs: str) -> ET.Element:
    return ET.SubElement(parent, f"{{{XTCE_NS}}}{tag}", {k: v for k, v in attrs.items() if v})
