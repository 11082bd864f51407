"""The bus envelope: every NATS message of the twin is one, encoded with orjson.

``{"v": 1, "mission": str, "src": str, "seq": int, "t": float, "step": int,
"kind": str, "body": {...}}`` -- ``seq`` counts per source, ``t`` is mission
time in seconds since launch, ``step`` is the clock step during which the
message was published.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import orjson

from services.kernel.config import SERVICE_NAMES
from services.kernel.errors import EnvelopeError

SCHEMA_VERSION = 1
#: Sources other than the six services that may publish (operators' tools).
EXTRA_SOURCES = ("cli",)
_SOURCES = frozenset(SERVICE_NAMES + EXTRA_SOURCES)


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


def encode(env: Envelope) -> bytes:
    return orjson.dumps(
        {"v": env.v, "mission": env.mission, "src": env.src, "seq": env.seq,
         "t": env.t, "step": env.step, "kind": env.kind, "body": env.body},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def decode(data: bytes, *, mission: str) -> Envelope:
    """Parse and validate one message; raise :class:`EnvelopeError` with a reason."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError("not_json", str(exc)) from exc
    if not isinstance(raw, dict):
        raise EnvelopeError("not_object", type(raw).__name__)
    if raw.get("v") != SCHEMA_VERSION:
        raise EnvelopeError("bad_version", repr(raw.get("v")))
    if raw.get("mission") != mission:
        raise EnvelopeError("foreign_mission", repr(raw.get("mission")))
    src, seq, t, step = raw.get("src"), raw.get("seq"), raw.get("t"), raw.get("step")
    kind, body = raw.get("kind"), raw.get("body")
    if src not in _SOURCES:
        raise EnvelopeError("unknown_source", repr(src))
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise EnvelopeError("bad_seq", repr(seq))
    if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t):
        raise EnvelopeError("bad_time", repr(t))
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise EnvelopeError("bad_step", repr(step))
    if not isinstance(kind, str) or not kind:
        raise EnvelopeError("bad_kind", repr(kind))
    if not isinstance(body, dict):
        raise EnvelopeError("bad_body", type(body).__name__)
    return Envelope(mission=mission, src=src, seq=seq, t=float(t), step=step, kind=kind,
                    body=body)


class Sequencer:
    """Per-source sequence numbers, starting at 1 (0 is never sent)."""

    def __init__(self, start: int = 0) -> None:
        self.last = start

    def next(self) -> int:
        self.last += 1
        return self.last
