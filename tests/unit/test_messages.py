"""The typed messages between vehicles: every one sent is handled, every one
handled is sent, each survives the wire, and a bad one is named precisely.

Who sends what to whom is read from services/ with ``ast``: a send is
``out.transfer(target, t, SomeMessage(...))`` (or, where a module still
writes the body itself, ``out.send("xfer", target, t, {"type": ..., ...})``);
a handler is a ``case SomeMessage(...)`` in a core's ``receive``. A target is
a literal service name, a parameter every caller gives a literal for, or
``msg.src`` inside a handler: a reply, which goes to whoever sends that
handler's type to this service.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.kernel.envelope import Envelope
from services.kernel.errors import MessageError
from services.kernel.messages import (
    TRANSFERS,
    Docked,
    Forwarded,
    Handover,
    HandoverAck,
    HandoverExtra,
    RelayCmd,
    RelayFrame,
    SampleAck,
    SampleHandover,
    TargetState,
    Transfer,
    Undocked,
    decode,
    decode_as,
    encode,
    parse,
)
from services.kernel.outbox import PROMPT_TYPES, Outbox
from services.lander.vehicle import LanderCore

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"
_CLASS_OF_TYPE = {cls.TYPE: cls.__name__ for cls in TRANSFERS}

# --- reading the exchange from the sources -------------------------------------------


@dataclass(frozen=True)
class Send:
    sender: str  # package: orbiter, ..., or kernel (any service, through the shared core)
    target: str  # a package, or "reply:<handler class>" until resolved
    message: str  # class name


def _package(path: str) -> str:
    return path.split("/")[1]


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef]:
    yield from (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))


def _calls(node: ast.AST) -> Iterator[tuple[ast.Call, str]]:
    """Every call under ``node`` with the name it calls (``x.f(...)`` -> f)."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            f = sub.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(
                f, ast.Name) else ""
            yield sub, name


def _sent_message(call: ast.Call, callee: str) -> tuple[ast.expr, str] | None:
    """(target, message class) of a transfer, None for any other call."""
    if callee == "transfer" and len(call.args) == 3:
        body = call.args[2]
        if isinstance(body, ast.Call) and isinstance(body.func, ast.Name):
            return call.args[0], body.func.id
        raise AssertionError(f"line {call.lineno}: build the message in the transfer call")
    if (callee == "send" and len(call.args) == 4 and isinstance(call.args[0], ast.Constant)
            and call.args[0].value == "xfer"):
        body = call.args[3]
        if isinstance(body, ast.Dict):
            for key, value in zip(body.keys, body.values, strict=True):
                if (isinstance(key, ast.Constant) and key.value == "type"
                        and isinstance(value, ast.Constant)):
                    return call.args[1], _CLASS_OF_TYPE.get(str(value.value), str(value.value))
        raise AssertionError(f"line {call.lineno}: an xfer body without a literal 'type'")
    return None


def _literal_args(tree: ast.AST, function: str, param: str, position: int) -> set[str]:
    """The literal values every call of ``function`` in the module gives ``param``."""
    values = set()
    for call, callee in _calls(tree):
        if callee != function:
            continue
        arg = next((k.value for k in call.keywords if k.arg == param), None)
        if arg is None and len(call.args) > position:
            arg = call.args[position]
        if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
            raise AssertionError(f"{function}({param}=...) at line {call.lineno} is not a literal")
        values.add(arg.value)
    return values


def _handler_cases(tree: ast.AST) -> Iterator[tuple[str, ast.match_case]]:
    """(class name, case) of every ``case Message(...)`` in a ``receive`` method."""
    for fn in _functions(tree):
        if fn.name != "receive":
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Match):
                for case in node.cases:
                    pattern = case.pattern
                    assert isinstance(pattern, ast.MatchClass) and isinstance(
                        pattern.cls, ast.Name), f"line {case.pattern.lineno}: match on a class"
                    yield pattern.cls.id, case


def _reply_class(tree: ast.AST, fn: ast.FunctionDef, call: ast.Call) -> str:
    """The handled class a reply answers: the case that contains the send or
    calls the function that does."""
    for name, case in _handler_cases(tree):
        in_case = any(sub is call for stmt in case.body for sub in ast.walk(stmt))
        if in_case or any(c == fn.name for stmt in case.body for _, c in _calls(stmt)):
            return name
    raise AssertionError(f"{fn.name}: a reply to msg.src outside a handler of receive")


def _targets(tree: ast.AST, fn: ast.FunctionDef, call: ast.Call, target: ast.expr) -> set[str]:
    if isinstance(target, ast.Constant) and isinstance(target.value, str):
        return {target.value}
    if isinstance(target, ast.Attribute) and target.attr == "src":
        return {f"reply:{_reply_class(tree, fn, call)}"}
    params = [a.arg for a in fn.args.args]
    if isinstance(target, ast.Name) and target.id in params:
        offset = 1 if params[:1] == ["self"] else 0
        return _literal_args(tree, fn.name, target.id, params.index(target.id) - offset)
    raise AssertionError(f"{fn.name} line {call.lineno}: cannot tell where it sends")


def exchange(sources: Mapping[str, str]) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """({(receiver, class) sent}, {(receiver, class) handled}) over ``sources``
    (path relative to the repository -> text)."""
    sends: set[Send] = set()
    handled: set[tuple[str, str]] = set()
    for path, text in sources.items():
        tree = ast.parse(text, path)
        handled |= {(_package(path), name) for name, _ in _handler_cases(tree)}
        for fn in _functions(tree):
            for call, callee in _calls(fn):
                found = _sent_message(call, callee)
                if found is not None:
                    sends |= {Send(_package(path), t, found[1])
                              for t in _targets(tree, fn, call, found[0])}
    return _resolve_replies(sends), handled


def _resolve_replies(sends: set[Send]) -> set[tuple[str, str]]:
    """A reply from P to a handled ``C`` goes to every package that sends C to P."""
    direct = {(s.target, s.message, s.sender) for s in sends if not s.target.startswith("reply:")}
    resolved = {(target, message) for target, message, _ in direct}
    for s in sends:
        if s.target.startswith("reply:"):
            answered = s.target.removeprefix("reply:")
            askers = {sender for target, message, sender in direct
                      if target == s.sender and message == answered}
            assert askers, f"{s.sender} replies to {answered}, which nobody sends it"
            resolved |= {(asker, s.message) for asker in askers}
    return resolved


def _service_sources() -> dict[str, str]:
    return {p.relative_to(ROOT).as_posix(): p.read_text()
            for p in sorted(SERVICES.rglob("*.py")) if "twin_pb" not in p.parts}


# --- the exchange in the tree -----------------------------------------------------------


@pytest.mark.static  # reads the sources
def test_every_message_sent_is_handled_by_its_receiver_and_nothing_else_is_handled() -> None:
    sent, handled = exchange(_service_sources())
    assert sorted(sent - handled) == [], "sent, but the receiver has no case for it"
    assert sorted(handled - sent) == [], "handled, but nobody sends it there"


@pytest.mark.static  # reads the sources
def test_every_message_type_is_exchanged() -> None:
    sent, _ = exchange(_service_sources())
    assert {message for _, message in sent} == {cls.__name__ for cls in TRANSFERS}


@pytest.mark.static  # reads the sources
def test_the_exchange_is_the_mission_s() -> None:
    """Spelled out once, so a change to who talks to whom is a visible change."""
    sent, _ = exchange(_service_sources())
    assert sent == {
        ("lander", "Handover"), ("reentry", "Handover"), ("ascender", "Handover"),
        ("orbiter", "HandoverAck"), ("lander", "HandoverAck"),
        ("ascender", "SampleHandover"), ("orbiter", "SampleHandover"),
        ("lander", "SampleAck"), ("ascender", "SampleAck"),
        ("ascender", "Docked"), ("ascender", "Undocked"), ("orbiter", "TargetState"),
        ("relay", "RelayFrame"), ("relay", "RelayCmd"),
    }


# --- the check itself sees what it is for ------------------------------------------------

_SENDER = '''
def launch(out, t):
    out.transfer("lander", t, Handover(handover_id="h"))
    out.transfer("lander", t, Brand_New(x=1))
'''
_RECEIVER = '''
class LanderCore:
    def receive(self, message, msg, out):
        match message:
            case Handover(what="la_stack"):
                self._take(message, msg, out)
            case Forgotten():
                pass

    def _take(self, h, msg, out):
        out.transfer(msg.src, msg.t, HandoverAck(handover_id=h.handover_id))
'''


@pytest.mark.static  # reads the sources
def test_a_new_type_sent_and_one_handled_but_never_sent_are_both_seen() -> None:
    sent, handled = exchange({"services/orbiter/vehicle.py": _SENDER,
                              "services/lander/vehicle.py": _RECEIVER})
    assert sent - handled == {("lander", "Brand_New"), ("orbiter", "HandoverAck")}
    assert handled - sent == {("lander", "Forgotten")}


@pytest.mark.static  # reads the sources
def test_a_send_whose_target_cannot_be_read_fails_the_check() -> None:
    source = "def f(out, t, who):\n    out.transfer(pick(who), t, Docked(t_s=t))\n"
    with pytest.raises(AssertionError, match="cannot tell where it sends"):
        exchange({"services/orbiter/vehicle.py": source})


# --- the wire -----------------------------------------------------------------------------

_EXTRA_PAD = HandoverExtra(fixed_r_m=(1.0, 2.0, 3.0), orbiter_r_m=(4.0, 5.0, 6.0),
                           orbiter_v_m_s=(0.1, 0.2, 0.3), orbiter_t_s=2_320_351.0)
#: One of each, beside the body the twin sent before the types existed: the
#: bytes must not change.
EXAMPLES: list[tuple[Transfer | Forwarded, dict[str, Any]]] = [
    (Handover(handover_id="la_stack-2320351", what="la_stack", frame="MCI",
              r_m=(1.9e6, -1.0, 2.5), v_m_s=(0.0, 1_600.5, -3.25), t_s=2_320_351.0,
              mass_kg=3_240.0, propellant_kg=1_740.0, dry_mass_kg=1_500.0, sample_mass_g=0.0,
              extra=HandoverExtra(central_body="moon")),
     {"type": "handover", "handover_id": "la_stack-2320351", "what": "la_stack",
      "frame": "MCI", "r_m": [1.9e6, -1.0, 2.5], "v_m_s": [0.0, 1_600.5, -3.25],
      "t_s": 2_320_351.0, "mass_kg": 3_240.0, "propellant_kg": 1_740.0,
      "dry_mass_kg": 1_500.0, "sample_mass_g": 0.0, "extra": {"central_body": "moon"}}),
    (Handover(handover_id="ascender-1.000", what="ascender", frame="MCI", r_m=(1.0, 2.0, 3.0),
              v_m_s=(4.0, 5.0, 6.0), t_s=1.0, mass_kg=750.0, propellant_kg=420.0,
              dry_mass_kg=330.0, sample_mass_g=0.0, extra=_EXTRA_PAD),
     {"type": "handover", "handover_id": "ascender-1.000", "what": "ascender", "frame": "MCI",
      "r_m": [1.0, 2.0, 3.0], "v_m_s": [4.0, 5.0, 6.0], "t_s": 1.0, "mass_kg": 750.0,
      "propellant_kg": 420.0, "dry_mass_kg": 330.0, "sample_mass_g": 0.0,
      "extra": {"fixed_r_m": [1.0, 2.0, 3.0], "orbiter_r_m": [4.0, 5.0, 6.0],
                "orbiter_v_m_s": [0.1, 0.2, 0.3], "orbiter_t_s": 2_320_351.0}}),
    (HandoverAck(handover_id="h-1", accepted=True),
     {"type": "handover_ack", "handover_id": "h-1", "accepted": True}),
    (SampleHandover(handover_id="sample-1", from_="lander", to="ascender",
                    container_id="CE6-SC", sample_mass_g=1_935.3),
     {"type": "sample_handover", "handover_id": "sample-1", "from": "lander",
      "to": "ascender", "container_id": "CE6-SC", "sample_mass_g": 1_935.3}),
    (SampleAck(handover_id="sample-1", sample_mass_g=1_935.3),
     {"type": "sample_ack", "handover_id": "sample-1", "sample_mass_g": 1_935.3}),
    (Docked(t_s=5.0, frame="MCI", r_m=(1.0, 2.0, 3.0), v_m_s=(4.0, 5.0, 6.0), mass_kg=2_000.0),
     {"type": "docked", "t_s": 5.0, "frame": "MCI", "r_m": [1.0, 2.0, 3.0],
      "v_m_s": [4.0, 5.0, 6.0], "mass_kg": 2_000.0}),
    (Undocked(t_s=6.0, frame="MCI", r_m=(1.0, 2.0, 3.0), v_m_s=(4.0, 5.0, 5.5), mass_kg=450.0),
     {"type": "undocked", "t_s": 6.0, "frame": "MCI", "r_m": [1.0, 2.0, 3.0],
      "v_m_s": [4.0, 5.0, 5.5], "mass_kg": 450.0}),
    (TargetState(r_m=(1.0, 2.0, 3.0), v_m_s=(4.0, 5.0, 6.0), t_s=7.0, mass_kg=450.0),
     {"type": "target_state", "r_m": [1.0, 2.0, 3.0], "v_m_s": [4.0, 5.0, 6.0], "t_s": 7.0,
      "mass_kg": 450.0}),
    (RelayFrame(frame={"origin": "lander", "frame_seq": 3, "path": "relay"}),
     {"type": "relay_frame", "frame": {"origin": "lander", "frame_seq": 3, "path": "relay"}}),
    (RelayCmd(to="lander", command={"op": "operation", "name": "drill", "plan_id": "drill"}),
     {"type": "relay_cmd", "to": "lander",
      "command": {"op": "operation", "name": "drill", "plan_id": "drill"}}),
    (Forwarded(origin="lander", frame={"origin": "lander", "frame_seq": 3}),
     {"type": "forwarded", "origin": "lander", "frame": {"origin": "lander", "frame_seq": 3}}),
]


def test_there_is_an_example_of_every_message() -> None:
    assert {type(m) for m, _ in EXAMPLES} == set(TRANSFERS) | {Forwarded}


@pytest.mark.parametrize(("message", "legacy"), EXAMPLES, ids=lambda x: getattr(x, "TYPE", ""))
def test_encoding_is_byte_for_byte_the_legacy_body(message: Transfer | Forwarded,
                                                    legacy: dict[str, Any]) -> None:
    assert orjson.dumps(encode(message)) == orjson.dumps(legacy)


@pytest.mark.parametrize(("message", "legacy"), EXAMPLES, ids=lambda x: getattr(x, "TYPE", ""))
def test_decoding_the_wire_gives_back_the_message(message: Transfer | Forwarded,
                                                  legacy: dict[str, Any]) -> None:
    wire = orjson.loads(orjson.dumps(encode(message)))
    back = decode_as(Forwarded, wire) if isinstance(message, Forwarded) else decode(wire)
    assert back == message
    assert encode(back) == legacy


def test_parse_reads_a_transfer_envelope_and_refuses_another_kind() -> None:
    body = encode(SampleAck(handover_id="s", sample_mass_g=1.5))
    assert parse(Envelope("m", "orbiter", 1, 2.0, 1, "transfer", body)) == SampleAck(
        handover_id="s", sample_mass_g=1.5)
    with pytest.raises(MessageError) as caught:
        parse(Envelope("m", "orbiter", 1, 2.0, 1, "event", body))
    assert str(caught.value) == "event message: 'kind' is 'event', not a transfer"


def test_the_prompt_types_are_those_a_receiver_acts_on_at_once() -> None:
    prompt = {"handover", "handover_ack", "sample_handover", "sample_ack", "docked",
              "undocked", "relay_cmd"}
    assert prompt == PROMPT_TYPES


def test_optional_fields_default_when_absent() -> None:
    """The ascender takes a stack state without mass (only where it is)."""
    docked = decode({"type": "docked", "t_s": 1.0, "r_m": [1, 2, 3], "v_m_s": [4, 5, 6]})
    assert docked == Docked(t_s=1.0, frame="MCI", r_m=(1.0, 2.0, 3.0), v_m_s=(4.0, 5.0, 6.0))


# --- malformed bodies ---------------------------------------------------------------------


def _legacy(message_type: str) -> dict[str, Any]:
    return dict(next(body for _, body in EXAMPLES if body["type"] == message_type))


@pytest.mark.parametrize(("body", "error"), [
    ({k: v for k, v in _legacy("handover").items() if k != "mass_kg"},
     "handover message: 'mass_kg' is missing"),
    ({**_legacy("sample_ack"), "sample_mass_g": "1935.3"},
     "sample_ack message: 'sample_mass_g' must be a finite number, got '1935.3'"),
    ({**_legacy("sample_ack"), "sample_mass_g": float("nan")},
     "sample_ack message: 'sample_mass_g' must be a finite number, got nan"),
    ({**_legacy("handover_ack"), "accepted": 1},
     "handover_ack message: 'accepted' must be true or false, got 1"),
    ({**_legacy("target_state"), "r_m": [1.0, 2.0]},
     "target_state message: 'r_m' must be a list of 3 finite numbers, got [1.0, 2.0]"),
    ({**_legacy("target_state"), "t_s": True},
     "target_state message: 't_s' must be a finite number, got True"),
    ({**_legacy("handover"), "extra": {"fixed_r_m": [1.0, "x", 3.0]}},
     "handover message: 'extra.fixed_r_m' must be a list of 3 finite numbers, "
     "got [1.0, 'x', 3.0]"),
    ({**_legacy("handover"), "extra": []}, "handover message: 'extra' must be an object, got []"),
    ({**_legacy("relay_cmd"), "to": None}, "relay_cmd message: 'to' must not be null"),
    ({**_legacy("relay_cmd"), "command": "drill"},
     "relay_cmd message: 'command' must be an object, got 'drill'"),
    ({"type": "state_request", "from": "ascender"},
     "transfer message: 'type' is 'state_request', not one of docked, handover, handover_ack, "
     "relay_cmd, relay_frame, sample_ack, sample_handover, target_state, undocked"),
    ({"handover_id": "h"}, "transfer message: 'type' is None, not one of docked, handover, "
                           "handover_ack, relay_cmd, relay_frame, sample_ack, sample_handover, "
                           "target_state, undocked"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_a_malformed_body_is_refused_naming_the_field(body: dict[str, Any], error: str) -> None:
    with pytest.raises(MessageError) as caught:
        decode(body)
    assert str(caught.value) == error


def test_a_core_reports_a_malformed_transfer_and_carries_on() -> None:
    """Counted as an event, never fatal: the lander keeps taking messages after it."""
    core, out = LanderCore(6), Outbox()
    bad = {k: v for k, v in _legacy("handover").items() if k != "r_m"}
    core.apply(Envelope("m", "orbiter", 1, 10.0, 1, "transfer", bad), out)
    (item,) = out.drain()
    assert (item.kind, item.body) == ("evt", {
        "name": "message_rejected", "message_type": "handover", "src": "orbiter",
        "field": "r_m", "reason": "is missing"})
    core.apply(Envelope("m", "orbiter", 2, 10.0, 1, "transfer",
                        encode(HandoverAck(handover_id="h", accepted=True))), out)
    assert [i.body["name"] for i in out.drain()] == ["handover_acknowledged"]
