"""A vehicle core's state as JSON-able values and back, driven by its type hints.

A core's *state* is what its class body annotates (``flight: Flight | None``),
over the whole class hierarchy, ``ClassVar`` excepted; attributes only
assigned in ``__init__`` are derived (caches, constants, bound methods) and
are not snapshotted. Each value is encoded by its declared type, so the
snapshot is plain JSON (orjson) and decoding rebuilds the same objects:

* ``bool``, ``int``, ``str``; ``float`` (non-finite ones as ``"inf"``,
  ``"-inf"``, ``"nan"``: orjson would write them as ``null``);
* ``X | None``, ``list[X]``, ``deque[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``,
  ``dict[str, X]``; enums by value;
* numpy float arrays (``NDArray[np.float64]``) as nested lists;
* :class:`random.Random` by its generator state;
* a class with its own ``snapshot()`` / ``from_snapshot()`` (the downlink,
  an integrator that keeps its step size) through those;
* dataclasses field by field, leaving out ``_private`` fields, which must be
  caches with defaults;
* ``Any``: data as the bus carries it (orjson's own normalisation: tuples
  become lists, numpy scalars numbers, non-finite floats ``null``), because
  such state is made of message bodies and commands.

A type outside this list raises :class:`TypeError` at the first snapshot,
naming the attribute, rather than writing something restore cannot read.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random
import types
import typing
from collections import deque
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import orjson

__all__ = ["JSON", "Codec", "codec_for", "restore_state", "snapshot_state", "state_hints"]

#: A value orjson writes as is: None, bool, int, float, str, lists and str-keyed dicts.
JSON = Any
Encode = Callable[[Any], JSON]
Decode = Callable[[JSON], Any]


@dataclasses.dataclass(frozen=True)
class Codec:
    """How one declared type goes to JSON (``encode``) and back (``decode``)."""

    encode: Encode
    decode: Decode


# --- the state of a core ------------------------------------------------------------


_HINTS: dict[type, dict[str, Any]] = {}


def state_hints(cls: type) -> dict[str, Any]:
    """The annotated attributes of ``cls`` and its bases, resolved, ClassVars left out."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = {
            name: hint for name, hint in typing.get_type_hints(cls).items()
            if typing.get_origin(hint) is not typing.ClassVar and hint is not typing.ClassVar}
    return hints


def snapshot_state(obj: object) -> dict[str, JSON]:
    """Every state attribute of ``obj``, encoded by its declared type."""
    snap: dict[str, JSON] = {}
    for name, hint in state_hints(type(obj)).items():
        try:
            snap[name] = codec_for(hint).encode(getattr(obj, name))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{type(obj).__name__}.{name}: {exc}") from exc
    return snap


def restore_state(obj: object, snap: dict[str, JSON]) -> None:
    """Set every state attribute of ``obj`` from a :func:`snapshot_state` of its class
    (ValueError if the snapshot holds other attributes; ``obj`` is then untouched)."""
    hints = state_hints(type(obj))
    if snap.keys() != hints.keys():
        raise ValueError(f"not a snapshot of a {type(obj).__name__}: it lacks "
                         f"{sorted(hints.keys() - snap.keys())} and has no place for "
                         f"{sorted(snap.keys() - hints.keys())}")
    values = {name: codec_for(hint).decode(snap[name]) for name, hint in hints.items()}
    for name, value in values.items():
        setattr(obj, name, value)


# --- codecs by type -------------------------------------------------------------------


@cache
def codec_for(hint: Any) -> Codec:
    """The codec of a declared type (cached: types are fixed per class)."""
    origin = typing.get_origin(hint)
    if origin is None:
        return _plain_codec(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _optional(hint, args)
    if origin is np.ndarray:
        return Codec(_array_out, _array_in)
    if origin in (list, deque):
        return _sequence(codec_for(args[0]), list if origin is list else deque)
    if origin is tuple:
        return _tuple(args)
    if origin is dict:
        if args[0] is not str:
            raise TypeError(f"{hint}: JSON objects need str keys")
        return _mapping(codec_for(args[1]))
    raise TypeError(f"no snapshot codec for {hint}")


def _plain_codec(hint: Any) -> Codec:
    if hint is Any:
        return Codec(_bus_data, _bus_data)
    simple = _SIMPLE.get(hint)
    if simple is not None:
        return simple
    if not isinstance(hint, type):
        raise TypeError(f"no snapshot codec for {hint!r}")
    if issubclass(hint, enum.Enum):
        return Codec(lambda v: v.value, hint)
    if hint is random.Random:
        return Codec(_rng_out, _rng_in)
    if hasattr(hint, "from_snapshot") and hasattr(hint, "snapshot"):
        return Codec(lambda v: _bus_data(v.snapshot()), hint.from_snapshot)
    if dataclasses.is_dataclass(hint):
        return _dataclass(hint)
    raise TypeError(f"no snapshot codec for {hint.__qualname__}")


def _bus_data(value: Any) -> JSON:
    """A deep copy as orjson writes it: what a message body becomes on the bus."""
    return orjson.loads(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY))


def _float_out(value: float) -> JSON:
    x = float(value)
    return x if math.isfinite(x) else str(x)  # "inf", "-inf", "nan": float() reads them


def _check(kind: type) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise TypeError(f"expected {kind.__name__}, got {value!r}")
        return value
    return convert


_SIMPLE: dict[Any, Codec] = {
    float: Codec(_float_out, float),
    int: Codec(_check(int), int),
    bool: Codec(_check(bool), bool),
    str: Codec(_check(str), str),
    type(None): Codec(lambda v: None, lambda raw: None),
}


def _optional(hint: Any, args: tuple[Any, ...]) -> Codec:
    present = [a for a in args if a is not type(None)]
    if len(present) != 1:
        raise TypeError(f"{hint}: only 'X | None' unions can be snapshotted")
    inner = codec_for(present[0])
    return Codec(lambda v: None if v is None else inner.encode(v),
                 lambda raw: None if raw is None else inner.decode(raw))


def _array_out(value: Any) -> JSON:
    a = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError("a state array holds a non-finite value")
    return a.tolist()


def _array_in(raw: JSON) -> Any:
    return np.array(raw, dtype=np.float64)


def _sequence(item: Codec, kind: Callable[[Any], Any]) -> Codec:
    return Codec(lambda v: [item.encode(x) for x in v],
                 lambda raw: kind(item.decode(x) for x in raw))


def _tuple(args: tuple[Any, ...]) -> Codec:
    if len(args) == 2 and args[1] is Ellipsis:
        item = codec_for(args[0])
        return Codec(lambda v: [item.encode(x) for x in v],
                     lambda raw: tuple(item.decode(x) for x in raw))
    parts = [codec_for(a) for a in args]

    def encode(v: Any) -> JSON:
        if len(v) != len(parts):
            raise ValueError(f"expected a tuple of {len(parts)}, got {v!r}")
        return [c.encode(x) for c, x in zip(parts, v, strict=True)]

    return Codec(encode, lambda raw: tuple(c.decode(x) for c, x in zip(parts, raw, strict=True)))


def _mapping(value: Codec) -> Codec:
    def encode(v: Any) -> JSON:
        if not all(isinstance(k, str) for k in v):
            raise TypeError(f"state dict keys must be str, got {sorted(map(repr, v))}")
        return {k: value.encode(x) for k, x in v.items()}

    return Codec(encode, lambda raw: {str(k): value.decode(x) for k, x in raw.items()})


def _dataclass(cls: type) -> Codec:
    hints = typing.get_type_hints(cls)
    fields: list[tuple[str, Codec]] = []
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):  # a cache: rebuilt from the rest
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise TypeError(f"{cls.__qualname__}.{f.name} is private without a default")
            continue
        if not f.init:
            raise TypeError(f"{cls.__qualname__}.{f.name} is not an __init__ field: "
                            "give the class snapshot() and from_snapshot()")
        fields.append((f.name, codec_for(hints[f.name])))

    def encode(v: Any) -> JSON:
        return {name: c.encode(getattr(v, name)) for name, c in fields}

    def decode(raw: JSON) -> Any:
        return cls(**{name: c.decode(raw[name]) for name, c in fields})

    return Codec(encode, decode)


def _rng_out(rng: random.Random) -> JSON:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_in(raw: JSON) -> random.Random:
    rng = random.Random()
    rng.setstate((raw[0], tuple(raw[1]), raw[2]))
    return rng
