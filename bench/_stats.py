"""Small helpers shared by the kernel bench and its child processes.

The children are run as scripts (``python bench/_x.py``), so this module is
imported by its bare name: the script's own directory is first on sys.path.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

LOOPS = ("asyncio", "uvloop")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def summarize_s(values: Sequence[float]) -> dict[str, float]:
    """p50, p99, mean and max of wall durations in seconds."""
    mean = sum(values) / len(values) if values else math.nan
    return {"p50_s": percentile(values, 50.0), "p99_s": percentile(values, 99.0),
            "mean_s": mean, "max_s": max(values, default=math.nan)}


def run_on(loop: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main`` on plain asyncio or on uvloop, as the kernel's services do."""
    if loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
