"""The CCSDS dictionary matches the code it describes, and its generated files match it.

The vehicles' sources are read with ``ast``: every phase a core assigns and
every ``values`` key its summary() reports must be in the dictionary (and the
dictionary may list nothing the code no longer has), every event of the
catalogue has a code, every command is one its core takes. A name computed at
run time where the code sets a phase is listed in ``COMPUTED_PHASES``; a new
such site fails until it is.
"""

from __future__ import annotations

import ast
import importlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.gateway import dictionary as d
from services.kernel.events import KNOWN_EVENTS
from services.kernel.vehicle import VehicleCore
from services.lander.vehicle import OPERATIONS
from services.orbiter.vehicle import BURN_FRAMES

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"
GEN_MDB = ROOT / "scripts" / "gen_mdb.py"
#: (file, function) -> the phases set there from a computed name.
COMPUTED_PHASES: dict[tuple[str, str], frozenset[str]] = {
    # set_mode: the mode becomes the phase (any name; SET_MODE offers MODES)
    ("services/kernel/vehicle.py", "_set_mode"): frozenset(d.MODES),
}
#: The XTCE NameType: no '/', '.', ':', '[', ']' or spaces (Yamcs paths use them).
XTCE_NAME = re.compile(r"[^./:\[\] ]+")


# --- Reading the sources -------------------------------------------------------------------
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _functions(tree: ast.Module) -> Iterator[ast.FunctionDef]:
    yield from (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))


def _literals(node: ast.AST | None) -> set[str]:
    """The strings a dict's values or a tuple's elements are."""
    if isinstance(node, ast.Dict):
        return {v.value for v in node.values if isinstance(v, ast.Constant)
                and isinstance(v.value, str)}
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return {e.value for e in node.elts if isinstance(e, ast.Constant)
                and isinstance(e.value, str)}
    return set()


def _module_constants(tree: ast.Module) -> dict[str, ast.AST]:
    found: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            found[node.targets[0].id] = node.value
        elif (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
              and node.value is not None):
            found[node.target.id] = node.value
    return found


def _is_self_phase(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "phase"
            and isinstance(node.value, ast.Name) and node.value.id == "self")


def _phase_values(value: ast.AST, consts: dict[str, ast.AST]) -> set[str] | None:
    """The names ``self.phase = value`` can set; None when not written in the code."""
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return {value.value}
    if isinstance(value, ast.Name) and value.id in consts:
        return _literals(consts[value.id])
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr == "get" and isinstance(value.func.value, ast.Name)
            and value.func.value.id in consts):  # a table's .get(key, self.phase)
        return _literals(consts[value.func.value.id])
    return None


def phases_set_in(path: Path) -> tuple[set[str], list[tuple[str, str, int]]]:
    """(phases set in the file, the sites that set a computed one: file, function, line)."""
    tree = _tree(path)
    consts = _module_constants(tree)
    rel = str(path.relative_to(ROOT))
    found: set[str] = set()
    computed: list[tuple[str, str, int]] = []
    for func in _functions(tree):
        for node in ast.walk(func):
            if not isinstance(node, ast.Assign):
                continue
            for target in node.targets:
                pairs: list[tuple[ast.AST, ast.AST]] = [(target, node.value)]
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    pairs = list(zip(target.elts, node.value.elts, strict=True))
                for t, v in pairs:
                    if not _is_self_phase(t):
                        continue
                    names = _phase_values(v, consts)
                    if names is None:
                        computed.append((rel, func.name, node.lineno))
                    else:
                        found |= names
    return found, computed


def vehicle_phases() -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    kernel, kernel_computed = phases_set_in(SERVICES / "kernel" / "vehicle.py")
    phases: dict[str, set[str]] = {}
    computed = list(kernel_computed)
    for vehicle in d.VEHICLES:
        own: set[str] = set(kernel)  # VehicleCore's own, before the core sets its first
        for path in sorted((SERVICES / vehicle).glob("*.py")):
            found, sites = phases_set_in(path)
            own |= found
            computed += sites
        phases[vehicle] = own
    return phases, computed


def _dict_keys(node: ast.Dict) -> tuple[set[str], list[ast.expr]]:
    """(literal keys, the ``**spread`` values) of a dict display."""
    keys = {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    spread = [v for k, v in zip(node.keys, node.values, strict=True) if k is None]
    return keys, spread


def _returned_dict_keys(path: Path, name: str) -> set[str]:
    keys: set[str] = set()
    for func in _functions(_tree(path)):
        if func.name == name:
            for node in ast.walk(func):
                if isinstance(node, ast.Return) and isinstance(node.value, ast.Dict):
                    keys |= _dict_keys(node.value)[0]
    return keys


def link_keys_in_code() -> set[str]:
    return _returned_dict_keys(SERVICES / "kernel" / "recorder.py", "downlink_values")


def _call_name(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        func = node.func
        return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return ""


def summary_values_in_code(vehicle: str) -> set[str]:
    """The ``values`` keys a vehicle core's summary() reports, read from its source."""
    package = sorted((SERVICES / vehicle).glob("*.py"))
    keys: set[str] = set()
    for path in package:
        for func in _functions(_tree(path)):
            if func.name == "summary":
                keys |= _values_in_summary(func, package)
    return keys


def _names_values(node: ast.AST) -> bool:
    """``values = {...}``, or ``values={...}`` passed to Summary."""
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == "values" for t in node.targets)
    return isinstance(node, ast.keyword) and node.arg == "values"


def _values_in_summary(func: ast.FunctionDef, package: list[Path]) -> set[str]:
    keys: set[str] = set()
    dicts: list[ast.Dict] = []
    for node in ast.walk(func):
        if _names_values(node) and isinstance(node, ast.Assign | ast.keyword) and isinstance(
                node.value, ast.Dict):
            dicts.append(node.value)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "update" and isinstance(node.func.value, ast.Name)
              and node.func.value.id == "values"):
            keys |= {k.arg for k in node.keywords if k.arg}
            if any(_call_name(a) == "values" for a in node.args):  # a part's own values()
                keys |= set().union(*(_returned_dict_keys(p, "values") for p in package))
    for node in dicts:
        literal, spread = _dict_keys(node)
        keys |= literal
        if any(_call_name(s) == "downlink_values" for s in spread):
            keys |= link_keys_in_code()
    return keys


def _core(vehicle: str) -> VehicleCore:
    module = importlib.import_module(f"services.{vehicle}.vehicle")
    core: VehicleCore = getattr(module, vehicle.capitalize() + "Core")(6)
    return core


# --- Phases and events ------------------------------------------------------------------
def test_the_phase_scan_sees_every_way_a_core_sets_its_phase() -> None:
    _, computed = vehicle_phases()
    listed = {(f, fn) for f, fn, _ in computed}
    assert listed == set(COMPUTED_PHASES), f"new computed phase sites: {sorted(computed)}"
    phases, _ = vehicle_phases()
    assert {"powered_descent", "surface"} <= phases["lander"], "the scan found too little"
    assert {"entry", "landed", "recovered"} <= phases["reentry"]  # via _EVENT_PHASE.get


@pytest.mark.parametrize("vehicle", d.VEHICLES)
def test_every_phase_a_core_can_take_has_a_code(vehicle: str) -> None:
    in_code, _ = vehicle_phases()
    listed = set(d.VEHICLE_PHASES[vehicle])
    assert in_code[vehicle] - listed == set(), "phases the dictionary lacks"
    assert listed - in_code[vehicle] == set(), "phases no code sets any more"
    labels = {label for _, label in d.phase_enum(vehicle)}
    computed = set().union(*COMPUTED_PHASES.values())
    assert in_code[vehicle] | computed | {d.UNKNOWN_LABEL} == labels
    assert (d.UNKNOWN, d.UNKNOWN_LABEL) in d.phase_enum(vehicle)


def test_phase_codes_are_one_table_across_vehicles() -> None:
    codes = list(d.PHASE_CODES.values())
    assert len(set(codes)) == len(codes) and d.UNKNOWN not in codes
    assert all(0 <= c < 256 for c in codes)
    for vehicle in d.VEHICLES:
        for code, label in d.phase_enum(vehicle):
            assert code == d.PHASE_CODES.get(label, d.UNKNOWN)


def test_every_event_of_the_catalogue_has_a_code() -> None:
    assert KNOWN_EVENTS - set(d.EVENT_CODES) == set()
    codes = list(d.EVENT_CODES.values())
    assert len(set(codes)) == len(codes)
    assert min(codes) == 1 and max(codes) < 1 << 16  # 0 is "unknown", uint16
    assert dict(d.event_enum())[0] == d.UNKNOWN_LABEL


# --- Housekeeping values -------------------------------------------------------------------
def test_the_link_keys_are_the_recorders() -> None:
    assert set(d.LINK_KEYS) == link_keys_in_code()


@pytest.mark.parametrize("vehicle", d.VEHICLES)
def test_every_summary_value_has_a_parameter_with_a_unit(vehicle: str) -> None:
    in_code = summary_values_in_code(vehicle)
    assert in_code, "the scan found no values"
    hk = {f.key: f for f in d.packet(vehicle, "HK").fields}
    assert in_code - set(hk) == set(), "values the HK packet lacks"
    assert set(d.OWN_VALUES[vehicle]) - in_code == set(), "values no core reports any more"
    for key in (*d.FRAME_FLOATS, *d.hk_values(vehicle)):
        assert hk[key].kind == "float" and hk[key].bits == 64
        assert hk[key].unit and hk[key].description, key


#: A name's unit suffix -> its unit (the project writes units in names).
SUFFIX_UNITS = (("_m_s2", "m/s2"), ("_w_m2", "W/m2"), ("_m_s", "m/s"), ("_wh", "Wh"),
                ("_kg", "kg"), ("_deg", "deg"), ("_ratio", "ratio"), ("_frames", "frames"),
                ("_m", "m"), ("_g", "g"), ("_w", "W"), ("_c", "degC"), ("_n", "N"), ("_s", "s"))


def test_units_agree_with_the_names() -> None:
    fields = [f for p in d.PACKETS for f in p.fields if f.kind == "float"]
    checked = 0
    for f in fields:
        unit = next((u for suffix, u in SUFFIX_UNITS if f.key.endswith(suffix)), None)
        if unit is not None:
            assert f.unit == unit, f.name
            checked += 1
    assert checked > len(fields) // 2, "the suffix table matched too few names to mean anything"


def test_the_limits_operators_expect_are_there() -> None:
    limits = {(p.service, f.key): f.limits for p in d.PACKETS for f in p.fields if f.limits}
    assert limits[("orbiter", "propellant_kg")].critical_low == 70.0  # the design reserve
    assert limits[("reentry", "sensed_accel_m_s2")].critical_high == pytest.approx(117.68,
                                                                                   abs=0.01)
    assert all(limits[(v, "battery_soc_ratio")].warning_low for v in ("orbiter", "lander",
                                                                       "relay"))
    links = {f.key: f for f in d.packet("ground", "LINKS").fields}
    assert [(a.context, a.context_label, a.label) for a in links["lander_link"].context_alarms
            ] == [("lander_phase", "powered_descent", "none")]


# --- Names -----------------------------------------------------------------------------------
def test_names_are_unique_and_valid_xtce_names() -> None:
    fields = [*d.PRIMARY_HEADER, *d.TM_SECONDARY_HEADER,
              *(f for p in d.PACKETS for f in p.fields)]
    names = [f.name for f in fields]
    assert len(set(names)) == len(names)
    assert all(XTCE_NAME.fullmatch(n) for n in names)
    for pkt in d.PACKETS:
        keys = [f.key for f in pkt.fields]
        assert len(set(keys)) == len(keys), pkt.name  # COSMOS items of one packet
    assert len(d.PACKET_BY_ID) == len(d.PACKETS)
    assert len({p.name for p in d.PACKETS}) == len(d.PACKETS)
    assert len(d.COMMAND_BY_ID) == len(d.COMMANDS)
    assert len({c.full_name for c in d.COMMANDS}) == len(d.COMMANDS)
    for enum in [f.enum for f in fields if f.enum] + [a.enum for c in d.COMMANDS
                                                      for a in c.arguments if a.enum]:
        codes, labels = [c for c, _ in enum], [n for _, n in enum]
        assert len(set(codes)) == len(codes) and len(set(labels)) == len(labels)


# --- Commands -------------------------------------------------------------------------------
@pytest.mark.parametrize("vehicle", d.VEHICLES)
def test_every_command_is_one_its_core_takes(vehicle: str) -> None:
    core = _core(vehicle)
    commands = [c for c in d.COMMANDS if c.target == vehicle]
    assert any(c.name == "SET_MODE" for c in commands)
    for command in commands:
        assert command.op in core.operations(), command.full_name
    for mode in d.MODES:  # outside an autonomous phase a core takes every mode
        core.validate({"op": "set_mode", "mode": mode})


def test_the_orbiters_and_landers_arguments_are_what_they_take() -> None:
    burn = next(c for c in d.COMMANDS if c.full_name == "ORBITER_BURN")
    assert {label for _, label in burn.arguments[0].enum} == set(BURN_FRAMES)
    operation = next(c for c in d.COMMANDS if c.full_name == "LANDER_OPERATION")
    assert {label for _, label in operation.arguments[0].enum} == set(OPERATIONS)
    for command in d.COMMANDS:
        for arg in command.arguments:
            assert arg.enum or (arg.minimum is not None and arg.maximum is not None), arg.name


# --- Generated files -----------------------------------------------------------------------
def _gen_mdb(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(GEN_MDB), *args], capture_output=True,
                          text=True, timeout=120, check=False)


def _copy_generated(to: Path) -> Path:
    shutil.copytree(ROOT / "deploy" / "cosmos", to / "deploy" / "cosmos")
    (to / "deploy" / "yamcs" / "mdb").mkdir(parents=True)
    shutil.copy2(ROOT / "deploy" / "yamcs" / "mdb" / "change6.xml",
                 to / "deploy" / "yamcs" / "mdb" / "change6.xml")
    return to


def test_the_generated_files_are_up_to_date() -> None:
    done = _gen_mdb("--check")
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout


def test_the_check_fails_on_a_touched_copy_and_names_the_file(tmp_path: Path) -> None:
    copy = _copy_generated(tmp_path)
    assert _gen_mdb("--check", "--root", str(copy)).returncode == 0
    xml = copy / "deploy" / "yamcs" / "mdb" / "change6.xml"
    xml.write_text(xml.read_text().replace('value="101"', 'value="111"', 1))
    (copy / "deploy" / "cosmos" / "targets" / "RELAY" / "cmd_tlm" / "cmd.txt").unlink()
    (copy / "deploy" / "cosmos" / "stale.txt").write_text("left over\n")
    before = sorted(p.read_bytes() for p in copy.rglob("*") if p.is_file())
    done = _gen_mdb("--check", "--root", str(copy))
    assert done.returncode == 1
    assert "deploy/yamcs/mdb/change6.xml: content differs" in done.stderr
    assert "deploy/cosmos/targets/RELAY/cmd_tlm/cmd.txt: missing from the tree" in done.stderr
    assert "deploy/cosmos/stale.txt: in the tree but no longer generated" in done.stderr
    assert sorted(p.read_bytes() for p in copy.rglob("*") if p.is_file()) == before


def test_generating_writes_what_the_check_expects(tmp_path: Path) -> None:
    copy = _copy_generated(tmp_path)
    (copy / "deploy" / "cosmos" / "stale.txt").write_text("left over\n")
    assert _gen_mdb("--root", str(copy)).returncode == 0
    assert not (copy / "deploy" / "cosmos" / "stale.txt").exists()
    assert _gen_mdb("--check", "--root", str(copy)).returncode == 0
