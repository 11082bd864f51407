"""The bus envelope: round trip and rejection of malformed or foreign messages."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.kernel.envelope import WIRE_FIELDS, Envelope, Sequencer, decode, encode
from services.kernel.errors import EnvelopeError


def _env(**kw: object) -> Envelope:
    base: dict[str, object] = dict(mission="ce6", src="orbiter", seq=7, t=12.5, step=3,
                                   kind="telemetry", body={"alt_m": 200e3})
    base.update(kw)
    return Envelope(**base)  # type: ignore[arg-type]


def test_round_trip_keeps_every_field() -> None:
    env = _env()
    assert decode(encode(env), mission="ce6") == env


def test_order_key_is_time_source_sequence() -> None:
    a, b, c = _env(t=1.0, src="relay", seq=1), _env(t=1.0, src="lander", seq=9), _env(t=0.5)
    assert sorted([a, b, c], key=lambda e: e.order_key) == [c, b, a]


def test_sequencer_counts_from_one() -> None:
    seq = Sequencer()
    assert [seq.next(), seq.next(), seq.next()] == [1, 2, 3]


GOOD: list[object] = orjson.loads(encode(_env()))


def _with(**fields: object) -> bytes:
    """GOOD on the wire with some fields replaced, by name."""
    raw = list(GOOD)
    for name, value in fields.items():
        raw[WIRE_FIELDS.index(name)] = value
    return orjson.dumps(raw)


def test_wire_format_is_a_positional_array() -> None:
    assert GOOD == [2, "ce6", "orbiter", 7, 12.5, 3, "telemetry", {"alt_m": 200e3}]
    assert len(WIRE_FIELDS) == len(GOOD)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe not json", "not_json"),
        (b'"eight ch"', "not_array"),  # a string of eight would unpack
        (b"3", "not_array"),
        (b"[2, 2]", "bad_length"),
        (orjson.dumps([*GOOD, 0]), "bad_length"),
        # the version 1 envelope: the same fields as an object
        (orjson.dumps(dict(zip(WIRE_FIELDS, [1, *GOOD[1:]], strict=True))), "bad_version"),
        (orjson.dumps({k: 0 for k in "abcdefgh"}), "bad_version"),  # unpacks into its keys
        (_with(v=1), "bad_version"),
        (_with(v=True), "bad_version"),
        (_with(v=2.0), "bad_version"),
        (_with(mission="other"), "foreign_mission"),
        (_with(src="mallory"), "unknown_source"),
        (_with(src={"a": 1}), "unknown_source"),  # unhashable
        (_with(mission=["ce6"]), "foreign_mission"),
        (_with(seq=-1), "bad_seq"),
        (_with(seq=True), "bad_seq"),
        (_with(t="noon"), "bad_time"),
        (_with(t=False), "bad_time"),
        (_with(t=None), "bad_time"),
        (_with(step=-2), "bad_step"),
        (_with(step=1.5), "bad_step"),
        (_with(kind=""), "bad_kind"),
        (_with(kind="gossip"), "bad_kind"),  # not one of KINDS
        (_with(kind=["tick"]), "bad_kind"),  # unhashable
        (_with(body=[1]), "bad_body"),
        (_with(body=None), "bad_body"),
        (_with(kind=3), "bad_kind"),
        (b'[2, "ce6", "orbiter", 1, 1e999, 0, "x", {}]', "not_json"),
    ],
)
def test_malformed_messages_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        decode(data, mission="ce6")
    assert info.value.reason == reason


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False),
                    st.sampled_from(["", "ce6", "orbiter", "cli", "x", "ack", "event"]),
                    st.just({}), st.just([1]))


def _valid(raw: list[object]) -> bool:
    """The envelope rules written out as one expression: the reference decode is held to."""
    v, mission, src, seq, t, step, kind, body = raw
    return (type(v) is int and v == 2 and mission == "ce6"
            and type(src) is str
            and src in ("ground", "orbiter", "lander", "ascender", "reentry", "relay", "cli")
            and type(seq) is int and seq >= 0
            and (type(t) is int or (type(t) is float and math.isfinite(t)))
            and type(step) is int and step >= 0
            and type(kind) is str
            and kind in ("tick", "ack", "hello", "roll", "telemetry", "event", "command",
                         "transfer", "downlink")
            and type(body) is dict)


@given(st.tuples(*(st.one_of(st.just(value), _VALUES) for value in GOOD)))
def test_decode_accepts_exactly_the_valid_envelopes(fields: tuple[object, ...]) -> None:
    raw = list(fields)
    data = orjson.dumps(raw)
    if _valid(raw):
        env = decode(data, mission="ce6")
        t = WIRE_FIELDS.index("t")
        assert orjson.loads(encode(env)) == [*raw[:t], float(raw[t]), *raw[t + 1:]]  # type: ignore[arg-type]
    else:
        with pytest.raises(EnvelopeError) as info:
            decode(data, mission="ce6")
        assert info.value.reason != "bad_body" or type(raw[-1]) is not dict


@pytest.mark.parametrize(
    ("data", "reason", "detail"),
    [
        (b"3", "not_array", "int"),
        (b'"eight ch"', "not_array", "str"),
        (b"[2, 2]", "bad_length", "2 fields, not 8"),
        (orjson.dumps(dict(zip(WIRE_FIELDS, [1, *GOOD[1:]], strict=True))), "bad_version",
         "an object (v=1), not a v2 array envelope"),
        (orjson.dumps({"x": 1}), "bad_version", "an object (v=None), not a v2 array envelope"),
        (_with(v=1), "bad_version", "1"),
        (_with(mission="other"), "foreign_mission", "'other'"),
        (_with(src="mallory"), "unknown_source", "'mallory'"),
        (_with(seq=-1), "bad_seq", "-1"),
        (_with(t="noon"), "bad_time", "'noon'"),
        (_with(step=-2), "bad_step", "-2"),
        (_with(kind="gossip"), "bad_kind", "'gossip'"),
        (_with(body=[1]), "bad_body", "list"),
    ],
)
def test_each_rejection_names_the_offending_value(data: bytes, reason: str,
                                                  detail: str) -> None:
    """The detail is what the drop log shows an operator: the bad value itself."""
    with pytest.raises(EnvelopeError) as info:
        decode(data, mission="ce6")
    assert (info.value.reason, info.value.detail) == (reason, detail)
    assert str(info.value) == f"{reason}: {detail}"


def test_not_json_carries_the_parser_message() -> None:
    with pytest.raises(EnvelopeError) as info:
        decode(b"[2, ", mission="ce6")
    assert info.value.reason == "not_json"
    assert "line 1 column" in info.value.detail


@pytest.mark.parametrize("field", ["seq", "step"])
def test_zero_counters_are_valid(field: str) -> None:
    """seq and step 0 are legal (step 0 is the first clock step; 0 is the
    lower bound, not an excluded value)."""
    env = decode(_with(**{field: 0}), mission="ce6")
    assert getattr(env, field) == 0


def test_integer_time_is_accepted_as_float_seconds() -> None:
    env = decode(_with(t=12), mission="ce6")
    assert env.t == 12.0
    assert type(env.t) is float


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        # a legal zero before the real fault must not be blamed for it
        ({"seq": 0, "step": -1}, "bad_step"),
        ({"step": 0, "kind": "gossip"}, "bad_kind"),
        ({"t": 12, "step": -1}, "bad_step"),
        ({"seq": 0, "t": 0, "step": 0, "body": None}, "bad_body"),
    ],
)
def test_first_failing_check_is_named_past_legal_edge_values(fields: dict[str, object],
                                                               reason: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        decode(_with(**fields), mission="ce6")
    assert info.value.reason == reason


def test_encode_writes_the_envelopes_own_version() -> None:
    """A v1 envelope encoded stays v1 on the wire, so a receiver rejects it."""
    data = encode(_env(v=1))
    assert orjson.loads(data)[0] == 1
    with pytest.raises(EnvelopeError) as info:
        decode(data, mission="ce6")
    assert info.value.reason == "bad_version"


def test_numpy_values_in_a_body_encode_as_json_numbers() -> None:
    """Physics code hands numpy arrays and scalars straight to the body."""
    body = {"r_m": np.array([1.0, -2.5, 3.0]), "alt_m": np.float64(100.0)}
    env = decode(encode(_env(body=body)), mission="ce6")
    assert env.body == {"r_m": [1.0, -2.5, 3.0], "alt_m": 100.0}


def test_round_trip_of_edge_values() -> None:
    env = _env(seq=0, t=-1.5e9, step=0, kind="tick", src="cli", body={})
    assert decode(encode(env), mission="ce6") == env
    big = _env(seq=2**53, t=1e300, step=2**31)
    assert decode(encode(big), mission="ce6") == big
