"""The snapshot codec (services/kernel/state.py): each supported type comes back
as the same type and value through orjson, and what it cannot write back is
refused at the snapshot, naming the attribute."""

from __future__ import annotations

import enum
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pytest
from numpy.typing import NDArray

from services.kernel.state import restore_state, snapshot_state


class Mode(enum.StrEnum):
    COAST = "coast"
    BURN = "burn"


@dataclass(frozen=True)
class Leg:
    t_s: float
    label: str
    _cache: dict[str, float] = field(default_factory=dict)  # private: not state


class Kept:
    """A class that writes itself (as the downlink does)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def snapshot(self) -> dict[str, Any]:
        return {"n": self.n}

    @classmethod
    def from_snapshot(cls, raw: dict[str, Any]) -> Kept:
        return cls(int(raw["n"]))


class Core:
    t_s: float
    tgo_s: float
    count: int
    armed: bool
    next_s: float | None
    dv: tuple[float, float, float]
    names: tuple[str, ...]
    store: deque[dict[str, Any]]
    totals: dict[str, float]
    r_m: NDArray[np.float64]
    rng: random.Random
    mode: Mode
    legs: list[Leg]
    kept: Kept
    body: dict[str, Any]

    def __init__(self) -> None:
        self.t_s, self.tgo_s, self.count, self.armed = 0.0, 0.0, 0, False
        self.next_s, self.dv, self.names = None, (0.0, 0.0, 0.0), ()
        self.store, self.totals = deque(), {}
        self.r_m, self.rng, self.mode = np.zeros(3), random.Random(1), Mode.COAST
        self.legs, self.kept, self.body = [], Kept(0), {}
        self.cache = "derived"  # not annotated in the class: not state


def _filled() -> Core:
    c = Core()
    c.t_s, c.tgo_s, c.count, c.armed = 12.5, math.inf, 3, True
    c.next_s, c.dv, c.names = 99.0, (1.0, -2.0, 0.5), ("a", "b")
    c.store, c.totals = deque([{"seq": 1}, {"seq": 2}]), {"x": 1.5}
    c.r_m, c.mode = np.array([1.0, 2.0, 3.0]), Mode.BURN
    c.rng.random()
    c.legs, c.kept = [Leg(5.0, "one", {"hot": 1.0})], Kept(7)
    c.body = {"pair": (1, 2), "n": np.float64(2.5)}
    c.cache = "changed"
    return c


def _round_trip(core: Core) -> tuple[Core, bytes]:
    data = orjson.dumps(snapshot_state(core))
    back = Core()
    restore_state(back, orjson.loads(data))
    return back, data


def test_every_supported_type_comes_back_as_itself() -> None:
    c = _filled()
    back, data = _round_trip(c)
    assert orjson.dumps(snapshot_state(back)) == data
    assert (back.t_s, back.tgo_s, back.count, back.armed) == (12.5, math.inf, 3, True)
    assert (back.next_s, back.dv, back.names) == (99.0, (1.0, -2.0, 0.5), ("a", "b"))
    assert isinstance(back.store, deque) and list(back.store) == [{"seq": 1}, {"seq": 2}]
    assert back.totals == {"x": 1.5}
    assert back.r_m.dtype == np.float64 and back.r_m.tolist() == [1.0, 2.0, 3.0]
    assert back.mode is Mode.BURN
    assert back.rng.random() == c.rng.random()
    assert back.legs == [Leg(5.0, "one")] and back.legs[0]._cache == {}
    assert back.kept.n == 7
    assert back.cache == "derived"


def test_any_state_is_kept_as_the_bus_carries_it() -> None:
    back, _ = _round_trip(_filled())
    assert back.body == {"pair": [1, 2], "n": 2.5}


def test_a_nan_survives_the_json() -> None:
    c = _filled()
    c.tgo_s = math.nan
    back, _ = _round_trip(c)
    assert math.isnan(back.tgo_s)


def test_a_value_of_the_wrong_type_is_refused_naming_the_attribute() -> None:
    c = _filled()
    c.count = "3"  # type: ignore[assignment]
    with pytest.raises(TypeError, match=r"Core\.count: expected int"):
        snapshot_state(c)


class Tagged:
    tags: set[str]

    def __init__(self) -> None:
        self.tags = set()


class Either:
    value: int | str

    def __init__(self) -> None:
        self.value = 0


def test_a_type_it_cannot_write_back_is_refused_naming_the_attribute() -> None:
    with pytest.raises(TypeError, match=r"Tagged\.tags: no snapshot codec"):
        snapshot_state(Tagged())
    # the JSON would not say which arm a value was
    with pytest.raises(TypeError, match=r"Either\.value: .* only 'X \| None' unions"):
        snapshot_state(Either())


def test_a_snapshot_of_another_class_is_refused_and_leaves_the_core_alone() -> None:
    core = _filled()
    snap = snapshot_state(core)
    del snap["count"]
    snap["extra"] = 1
    fresh = Core()
    with pytest.raises(ValueError, match=r"lacks \['count'\] and has no place for \['extra'\]"):
        restore_state(fresh, snap)
    assert fresh.t_s == 0.0
