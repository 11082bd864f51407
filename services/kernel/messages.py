"""The messages vehicles exchange, typed: one frozen dataclass per body type.

On the bus a body is a JSON object whose ``type`` names its class and whose
other keys are the class's fields (``from_`` travels as ``from``; a nested
dataclass as an object; an optional field left at ``None`` is not sent).
Transfers go on ``xfer.<receiver>``; :class:`Forwarded` is Queqiao-2's
``dl.relay`` wrapper of a vehicle's frame. Telecommands (``cmd`` bodies with
an ``op``) are not here: each core's ``validate`` checks those on board.

A body is checked once, where it arrives: :func:`parse` returns the typed
message or raises :class:`~services.kernel.errors.MessageError` naming the
field and what is wrong with it, and the handlers see only typed values.
Senders build the dataclass and :meth:`Outbox.transfer
<services.kernel.outbox.Outbox.transfer>` writes :func:`encode`'s dict, key
for key the body the twin sent before these types existed.

SI units in the names, as on the wire; ``sample_mass_g`` is in grams, the
unit the mission reports its sample in.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, fields, is_dataclass
from typing import Any, ClassVar, TypeVar, cast

import numpy as np
from numpy.typing import ArrayLike

from services.kernel.envelope import Envelope
from services.kernel.errors import MessageError

__all__ = ["TRANSFERS", "Docked", "Forwarded", "Handover", "HandoverAck", "HandoverExtra",
           "RelayCmd", "RelayFrame", "SampleAck", "SampleHandover", "TargetState", "Transfer",
           "Undocked", "Vec3", "decode", "decode_as", "encode", "parse", "vec3"]

Vec3 = tuple[float, float, float]


def vec3(x: ArrayLike) -> Vec3:
    """A 3-vector (numpy array or sequence) as the tuple a message holds."""
    a, b, c = (float(v) for v in np.asarray(x, dtype=np.float64))
    return (a, b, c)


# --- the hand-overs ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class HandoverExtra:
    """What a hand-over carries besides the common state; each sender fills its own."""

    #: The pad in the Moon-fixed frame (lander -> ascender).
    fixed_r_m: Vec3 | None = None
    #: The OR stack's MCI state, known to the LA stack from its separation
    #: (lander -> ascender, for the ascent plane and phasing).
    orbiter_r_m: Vec3 | None = None
    orbiter_v_m_s: Vec3 | None = None
    orbiter_t_s: float | None = None
    #: The body the sender's frame is centred on (orbiter -> lander, reentry).
    central_body: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Handover:
    """A body changes owner: the LA stack, the ascender on the pad, the returner."""

    TYPE: ClassVar[str] = "handover"
    PROMPT: ClassVar[bool] = True
    handover_id: str
    what: str  # "la_stack", "ascender" or "returner"
    frame: str  # of r_m and v_m_s: "MCI" or "ECI"
    r_m: Vec3
    v_m_s: Vec3
    t_s: float
    mass_kg: float
    propellant_kg: float
    dry_mass_kg: float
    sample_mass_g: float
    extra: HandoverExtra


@dataclass(frozen=True, slots=True, kw_only=True)
class HandoverAck:
    TYPE: ClassVar[str] = "handover_ack"
    PROMPT: ClassVar[bool] = True
    handover_id: str
    accepted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SampleHandover:
    """The sealed container changes owner (lander -> ascender -> returner)."""

    TYPE: ClassVar[str] = "sample_handover"
    PROMPT: ClassVar[bool] = True
    handover_id: str
    from_: str
    to: str
    container_id: str
    sample_mass_g: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SampleAck:
    TYPE: ClassVar[str] = "sample_ack"
    PROMPT: ClassVar[bool] = True
    handover_id: str
    sample_mass_g: float


# --- rendezvous and docking ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _StackState:
    """The OR stack's state as the ascender takes it over (docked) or leaves it."""

    t_s: float
    frame: str = "MCI"
    r_m: Vec3
    v_m_s: Vec3
    mass_kg: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Docked(_StackState):
    TYPE: ClassVar[str] = "docked"
    PROMPT: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Undocked(_StackState):
    """``r_m``, ``v_m_s``: the ascender's own state after the separation push."""

    TYPE: ClassVar[str] = "undocked"
    PROMPT: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetState:
    """The ascender's MCI state, every step of the orbiter's closing approach."""

    TYPE: ClassVar[str] = "target_state"
    PROMPT: ClassVar[bool] = False  # sent every step: it must not shorten them
    r_m: Vec3
    v_m_s: Vec3
    t_s: float
    mass_kg: float


# --- through Queqiao-2 --------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayFrame:
    """A vehicle's telemetry frame, for Queqiao-2 to forward or store."""

    TYPE: ClassVar[str] = "relay_frame"
    PROMPT: ClassVar[bool] = False
    frame: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayCmd:
    """Ground's telecommand for a far-side vehicle, for Queqiao-2 to pass on."""

    TYPE: ClassVar[str] = "relay_cmd"
    PROMPT: ClassVar[bool] = True
    to: str
    command: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Forwarded:
    """A frame Queqiao-2 forwards to ground on ``dl.relay`` (a downlink, not a transfer)."""

    TYPE: ClassVar[str] = "forwarded"
    PROMPT: ClassVar[bool] = False
    origin: str
    frame: dict[str, Any]


Transfer = (Handover | HandoverAck | SampleHandover | SampleAck | Docked | Undocked
            | TargetState | RelayFrame | RelayCmd)
TRANSFERS: tuple[type[Transfer], ...] = (Handover, HandoverAck, SampleHandover, SampleAck,
                                         Docked, Undocked, TargetState, RelayFrame, RelayCmd)
_BY_TYPE: dict[str, type[Transfer]] = {cls.TYPE: cls for cls in TRANSFERS}


# --- the boundary -------------------------------------------------------------------


def parse(env: Envelope) -> Transfer:
    """The typed transfer in ``env``, or :class:`MessageError`."""
    if env.kind != "transfer":
        raise MessageError(env.kind, "kind", f"is {env.kind!r}, not a transfer")
    return decode(env.body)


def decode(body: dict[str, Any]) -> Transfer:
    """A transfer body as its typed message (the class its ``type`` names)."""
    name = body.get("type")
    cls = _BY_TYPE.get(name) if isinstance(name, str) else None
    if cls is None:
        raise MessageError("transfer", "type", f"is {name!r}, not one of "
                                               f"{', '.join(sorted(_BY_TYPE))}")
    return decode_as(cls, body)


M = TypeVar("M")


def decode_as(cls: type[M], body: dict[str, Any]) -> M:
    """``body`` as a ``cls`` (its ``type`` key, if any, is not checked here)."""
    return _decode(cls, body, getattr(cls, "TYPE", cls.__name__), "")


def encode(message: Transfer | Forwarded) -> dict[str, Any]:
    """The wire body of a message: ``type`` first, then its fields in order."""
    return {"type": message.TYPE, **_fields_of(message)}


def _fields_of(value: Any) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for f in fields(value):
        item = getattr(value, f.name)
        if item is None:
            continue
        if is_dataclass(item):
            item = _fields_of(item)
        elif isinstance(item, tuple):
            item = list(item)
        body[f.name.rstrip("_")] = item
    return body


# --- checking one field -------------------------------------------------------------


class _Bad(Exception):
    """A field's problem, worded for :class:`MessageError`."""


def _number(raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise _Bad(f"must be a finite number, got {raw!r}")
    return float(raw)


def _text(raw: Any) -> str:
    if not isinstance(raw, str):
        raise _Bad(f"must be a string, got {raw!r}")
    return raw


def _flag(raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise _Bad(f"must be true or false, got {raw!r}")
    return raw


def _vector(raw: Any) -> Vec3:
    if not isinstance(raw, list | tuple) or len(raw) != 3:
        raise _Bad(f"must be a list of 3 finite numbers, got {raw!r}")
    try:
        return (_number(raw[0]), _number(raw[1]), _number(raw[2]))
    except _Bad:
        raise _Bad(f"must be a list of 3 finite numbers, got {raw!r}") from None


def _object(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _Bad(f"must be an object, got {raw!r}")
    return raw


_CHECKS: dict[Any, Callable[[Any], Any]] = {
    float: _number, str: _text, bool: _flag, Vec3: _vector, dict[str, Any]: _object}


def _decode(cls: type[M], body: dict[str, Any], type_name: str, prefix: str) -> M:
    values: dict[str, Any] = {}
    for name, key, hint, optional, required in _spec(cls):
        raw = body.get(key)
        if raw is None:
            if key in body and not optional:
                raise MessageError(type_name, prefix + key, "must not be null")
            if key not in body and required:
                raise MessageError(type_name, prefix + key, "is missing")
            continue
        if isinstance(hint, type) and is_dataclass(hint):
            if not isinstance(raw, dict):
                raise MessageError(type_name, prefix + key, f"must be an object, got {raw!r}")
            values[name] = _decode(cast(type[Any], hint), raw, type_name, f"{prefix}{key}.")
            continue
        try:
            values[name] = _CHECKS[hint](raw)
        except _Bad as exc:
            raise MessageError(type_name, prefix + key, str(exc)) from None
    return cls(**values)


_Spec = tuple[tuple[str, str, Any, bool, bool], ...]
_SPECS: dict[type[Any], _Spec] = {}


def _spec(cls: type[Any]) -> _Spec:
    """Per field: (name, wire key, type, None allowed, required). Resolved once
    per class: Queqiao-2 parses a frame every few steps."""
    spec = _SPECS.get(cls)
    if spec is None:
        hints = typing.get_type_hints(cls)
        spec = tuple((f.name, f.name.rstrip("_"), *_unwrap(hints[f.name]), not _has_default(f))
                     for f in fields(cls))
        _SPECS[cls] = spec
    return spec


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of ``X | None`` or ``X``."""
    if isinstance(hint, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def _has_default(f: Field[Any]) -> bool:
    return f.default is not MISSING or f.default_factory is not MISSING
