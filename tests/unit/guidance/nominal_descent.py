"""The nominal descent's track type (flown once per session in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass

from services.dynamics.guidance import PoweredOutput
from services.dynamics.guidance import descent as d


@dataclass(frozen=True)
class Track:
    """The nominal descent flown step by step: ``states[0]`` is the ignition
    state, ``states[i]`` the state after step ``i`` with its output ``outputs[i-1]``."""

    cfg: d.DescentConfig
    states: tuple[d.DescentState, ...]
    outputs: tuple[PoweredOutput, ...]

    def first_in(self, phase: str) -> d.DescentState:
        return next(s for s in self.states if s.phase == phase)
