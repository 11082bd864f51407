"""The bus envelope: round trip and rejection of malformed or foreign messages."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.kernel.envelope import Envelope, Sequencer, decode, encode
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


GOOD = orjson.loads(encode(_env()))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe not json", "not_json"),
        (b"[1, 2]", "not_object"),
        (orjson.dumps({**GOOD, "v": 2}), "bad_version"),
        (orjson.dumps({**GOOD, "v": True}), "bad_version"),
        (orjson.dumps({**GOOD, "v": 1.0}), "bad_version"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "v"}), "bad_version"),
        (orjson.dumps({**GOOD, "mission": "other"}), "foreign_mission"),
        (orjson.dumps({**GOOD, "src": "mallory"}), "unknown_source"),
        (orjson.dumps({**GOOD, "src": {"a": 1}}), "unknown_source"),  # unhashable
        (orjson.dumps({**GOOD, "mission": ["ce6"]}), "foreign_mission"),
        (orjson.dumps({**GOOD, "seq": -1}), "bad_seq"),
        (orjson.dumps({**GOOD, "seq": True}), "bad_seq"),
        (orjson.dumps({**GOOD, "t": "noon"}), "bad_time"),
        (orjson.dumps({**GOOD, "t": False}), "bad_time"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "t"}), "bad_time"),
        (orjson.dumps({**GOOD, "step": -2}), "bad_step"),
        (orjson.dumps({**GOOD, "step": 1.5}), "bad_step"),
        (orjson.dumps({**GOOD, "kind": ""}), "bad_kind"),
        (orjson.dumps({**GOOD, "body": [1]}), "bad_body"),
        (orjson.dumps({**GOOD, "body": None}), "bad_body"),
        (orjson.dumps({**GOOD, "kind": 3}), "bad_kind"),
        (b'{"v": 1, "mission": "ce6", "src": "orbiter", "seq": 1, "t": 1e999}', "not_json"),
    ],
)
def test_malformed_messages_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        decode(data, mission="ce6")
    assert info.value.reason == reason


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False),
                    st.sampled_from(["", "ce6", "orbiter", "cli", "x"]),
                    st.just({}), st.just([1]))


def _valid(raw: dict[str, object]) -> bool:
    """The envelope rules written out plainly: the reference for decode's fast path."""
    v, seq, t, step, kind = raw["v"], raw["seq"], raw["t"], raw["step"], raw["kind"]
    return (type(v) is int and v == 1 and raw["mission"] == "ce6"
            and raw["src"] in ("ground", "orbiter", "lander", "ascender", "reentry", "relay",
                               "cli")
            and type(seq) is int and seq >= 0
            and (type(t) is int or (type(t) is float and math.isfinite(t)))
            and type(step) is int and step >= 0
            and type(kind) is str and kind != "" and type(raw["body"]) is dict)


@given(st.fixed_dictionaries({k: st.one_of(st.just(GOOD[k]), _VALUES) for k in GOOD}))
def test_decode_accepts_exactly_the_valid_envelopes(raw: dict[str, object]) -> None:
    data = orjson.dumps(raw)
    if _valid(raw):
        env = decode(data, mission="ce6")
        assert orjson.loads(encode(env)) == {**raw, "t": float(raw["t"])}  # type: ignore[arg-type]
    else:
        with pytest.raises(EnvelopeError) as info:
            decode(data, mission="ce6")
        assert info.value.reason != "bad_body" or type(raw["body"]) is not dict
