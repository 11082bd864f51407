"""The bus envelope: every NATS message of the twin is one, encoded with orjson.

Wire format v2, a JSON array in a fixed order::

    [2, mission, src, seq, t, step, kind, {body}]

``v`` first (2), the mission id, the source service, ``seq`` counting per
source, ``t`` mission time in seconds since launch, ``step`` the clock step
during which the message was published, ``kind``, then the body object.

Positional rather than named: the envelope's eight fields are fixed and
every message has all of them, so their names on the wire would be repeated
bytes that both ends encode and parse a dozen times a clock step. Encoding
an array costs a third of the same object with named fields, and decoding it
half (``bench/bench_instr.py``: 14 % fewer instructions for the whole
lock-step). The body keeps its named fields: those vary by kind and are
what readers of the bus look at.

Version 1 was the same fields as an object (``{"v": 1, "mission": ...}``); a
v1 message is rejected as ``bad_version``, so a service left on the old
release is named in the drop log instead of failing in other ways.
"""

from __future__ import annotations

from math import isfinite
from typing import Any, NamedTuple

import orjson

from services.kernel.config import SERVICE_NAMES
from services.kernel.errors import EnvelopeError

SCHEMA_VERSION = 2
#: Sources other than the six services that may publish (operators' tools).
EXTRA_SOURCES = ("cli",)
_SOURCES = frozenset(SERVICE_NAMES + EXTRA_SOURCES)
#: Every kind of message the twin sends: clock control, truth telemetry, and
#: mission data (docs/contract.md). Any other kind is dropped as ``bad_kind``.
KINDS = frozenset({"tick", "ack", "hello", "roll", "restore", "ops", "telemetry",
                   "event", "command", "transfer", "downlink"})


class Envelope(NamedTuple):
    """One bus message. A named tuple: immutable, and several times cheaper to
    build than a frozen dataclass, which matters at a dozen per clock step."""

    mission: str
    src: str
    seq: int
    t: float
    step: int
    kind: str
    body: dict[str, Any]
    v: int = SCHEMA_VERSION

    @property
    def order_key(self) -> tuple[float, str, int]:
        """The deterministic order in which receivers apply messages."""
        return (self.t, self.src, self.seq)


_loads = orjson.loads
#: Field names in wire order, for error messages and readers of raw bytes.
WIRE_FIELDS = ("v", "mission", "src", "seq", "t", "step", "kind", "body")
#: ``Envelope._make`` without its Python frame and length check (the tuple built
#: below always has every field).
_new = tuple.__new__


def encode(env: Envelope) -> bytes:
    return encode_fields(env.mission, env.src, env.seq, env.t, env.step, env.kind, env.body,
                         env.v)


def encode_fields(mission: str, src: str, seq: int, t: float, step: int, kind: str,
                  body: dict[str, Any], v: int = SCHEMA_VERSION) -> bytes:
    """:func:`encode` without building the :class:`Envelope` first (the hot path)."""
    return orjson.dumps([v, mission, src, seq, t, step, kind, body],
                        option=orjson.OPT_SERIALIZE_NUMPY)


def decode(data: bytes, *, mission: str) -> Envelope:
    """Parse and validate one message; raise :class:`EnvelopeError` naming the
    first problem found, in wire order."""
    try:
        raw = _loads(data)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError("not_json", str(exc)) from exc
    if type(raw) is not list:
        if type(raw) is dict:  # a version 1 envelope, or some other object
            raise EnvelopeError("bad_version", f"an object (v={raw.get('v')!r}), not a "
                                               f"v{SCHEMA_VERSION} array envelope")
        raise EnvelopeError("not_array", type(raw).__name__)
    if len(raw) != len(WIRE_FIELDS):
        raise EnvelopeError("bad_length", f"{len(raw)} fields, not {len(WIRE_FIELDS)}")
    v, m, src, seq, t, step, kind, body = raw
    # orjson gives exact types, so ``type(x) is int`` keeps bools out; the type
    # is checked before membership so an unhashable src or kind cannot raise.
    if type(v) is not int or v != SCHEMA_VERSION:
        raise EnvelopeError("bad_version", repr(v))
    if m != mission:
        raise EnvelopeError("foreign_mission", repr(m))
    if type(src) is not str or src not in _SOURCES:
        raise EnvelopeError("unknown_source", repr(src))
    if type(seq) is not int or seq < 0:
        raise EnvelopeError("bad_seq", repr(seq))
    if not (type(t) is int or (type(t) is float and isfinite(t))):
        raise EnvelopeError("bad_time", repr(t))
    if type(step) is not int or step < 0:
        raise EnvelopeError("bad_step", repr(step))
    if type(kind) is not str or kind not in KINDS:
        raise EnvelopeError("bad_kind", repr(kind))
    if type(body) is not dict:
        raise EnvelopeError("bad_body", type(body).__name__)
    return _new(Envelope, (mission, src, seq, float(t), step, kind, body, v))


class Sequencer:
    """Per-source sequence numbers, starting at 1 (0 is never sent)."""

    def __init__(self, start: int = 0) -> None:
        self.last = start

    def next(self) -> int:
        self.last += 1
        return self.last
