"""Cross product and length of one 3-vector, the hot path of every guidance law.

``np.cross`` and ``np.linalg.norm`` are general (any shape, any axis) and pay
for it on every call: about 30 us and 2 us for a single 3-vector, where the
arithmetic itself is a few hundred nanoseconds. A powered descent calls them
~10^5 times (bench/bench_guidance.py). These give the same IEEE results as
numpy's (the same products and differences in the same order; the norm is
numpy's own ``sqrt(x . x)`` for a 1-D vector), so a flight is bit-identical
either way; use numpy's for stacks of vectors.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

Vec = NDArray[np.float64]


def cross(a: Vec, b: Vec) -> Vec:
    """``a x b`` of two 3-vectors (as ``np.cross``)."""
    a0, a1, a2 = a.tolist()
    b0, b1, b2 = b.tolist()
    return np.array((a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0))


def norm(a: Vec) -> float:
    """Euclidean length of one vector (as ``np.linalg.norm``)."""
    return math.sqrt(float(a @ a))
