"""The bus envelope: round trip and rejection of malformed or foreign messages."""

from __future__ import annotations

import orjson
import pytest

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
        (orjson.dumps({**GOOD, "mission": "other"}), "foreign_mission"),
        (orjson.dumps({**GOOD, "src": "mallory"}), "unknown_source"),
        (orjson.dumps({**GOOD, "seq": -1}), "bad_seq"),
        (orjson.dumps({**GOOD, "seq": True}), "bad_seq"),
        (orjson.dumps({**GOOD, "t": "noon"}), "bad_time"),
        (orjson.dumps({**GOOD, "step": 1.5}), "bad_step"),
        (orjson.dumps({**GOOD, "kind": ""}), "bad_kind"),
        (orjson.dumps({**GOOD, "body": [1]}), "bad_body"),
        (b'{"v": 1, "mission": "ce6", "src": "orbiter", "seq": 1, "t": 1e999}', "not_json"),
    ],
)
def test_malformed_messages_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        decode(data, mission="ce6")
    assert info.value.reason == reason
