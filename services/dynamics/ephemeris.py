"""Sun, Earth and Moon positions from JPL DE421, read offline.

DE421 (Folkner et al. 2008) ships inside the ``skyfield-data`` package as
``skyfield_data/data/de421.bsp``; ``jplephem`` reads its Chebyshev records, so
nothing is downloaded at run time. Vectors are in metres and m/s, ICRF axes.

Two ways in:

* :class:`Ephemeris` evaluates DE421 directly (exact to the file, ~20 us a
  call plus Python overhead): for one-off geometry and as the reference.
* :class:`ChebyshevTable` refits any smooth vector function of mission time
  with piecewise Chebyshev polynomials so that many evaluations inside a
  propagator cost a few numpy operations. :func:`get_fast_ephemeris` is the
  table of Moon and Sun positions relative to the Earth (fit error < 1 mm).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from services.dynamics.constants import DAY_S
from services.dynamics.timescale import J2000_JD, tdb_s_past_j2000

__all__ = [
    "ChebyshevTable",
    "Ephemeris",
    "FastEphemeris",
    "de421_path",
    "get_ephemeris",
    "get_fast_ephemeris",
]

Vec = NDArray[np.float64]
_KM_M = 1_000.0
_KM_PER_DAY_M_S = 1_000.0 / DAY_S

# NAIF ids used from DE421.
_SSB, _EMB, _SUN, _MOON, _EARTH = 0, 3, 10, 301, 399


def de421_path() -> Path:
    """Location of the DE421 kernel inside the installed skyfield-data package."""
    import skyfield_data

    return Path(skyfield_data.__file__).parent / "data" / "de421.bsp"


def _shape_out(arr: Vec, scalar: bool) -> Vec:
    # jplephem returns (3,) or (3, n); callers want (3,) or (n, 3).
    return arr if scalar else np.ascontiguousarray(arr.T)


class Ephemeris:
    """Direct DE421 evaluation. Use :func:`get_ephemeris` for the shared instance."""

    def __init__(self, path: Path | None = None) -> None:
        from jplephem.spk import SPK

        self._kernel: Any = SPK.open(str(path or de421_path()))
        self._seg_moon = self._kernel[_EMB, _MOON]
        self._seg_earth = self._kernel[_EMB, _EARTH]
        self._seg_emb = self._kernel[_SSB, _EMB]
        self._seg_sun = self._kernel[_SSB, _SUN]

    @staticmethod
    def _jd(t_s: ArrayLike) -> tuple[float, Vec | float]:
        # Split the Julian date so the fraction keeps full float64 precision.
        return J2000_JD, np.asarray(tdb_s_past_j2000(np.asarray(t_s, dtype=np.float64))) / DAY_S

    def _pos_km(self, seg: Any, t_s: ArrayLike) -> Vec:
        jd1, jd2 = self._jd(t_s)
        return np.asarray(seg.compute(jd1, jd2), dtype=np.float64)

    def _state_km(self, seg: Any, t_s: ArrayLike) -> tuple[Vec, Vec]:
        jd1, jd2 = self._jd(t_s)
        pos, vel = seg.compute_and_differentiate(jd1, jd2)
        return np.asarray(pos, dtype=np.float64), np.asarray(vel, dtype=np.float64)

    def moon_eci_m(self, t_s: ArrayLike) -> Vec:
        """Moon relative to the Earth, ICRF axes, shape (3,) or (n, 3)."""
        diff = self._pos_km(self._seg_moon, t_s) - self._pos_km(self._seg_earth, t_s)
        return _shape_out(diff * _KM_M, np.ndim(t_s) == 0)

    def moon_state_eci(self, t_s: ArrayLike) -> tuple[Vec, Vec]:
        """(r_m, v_m_s) of the Moon relative to the Earth."""
        r_moon, v_moon = self._state_km(self._seg_moon, t_s)
        r_earth, v_earth = self._state_km(self._seg_earth, t_s)
        scalar = np.ndim(t_s) == 0
        return (
            _shape_out((r_moon - r_earth) * _KM_M, scalar),
            _shape_out((v_moon - v_earth) * _KM_PER_DAY_M_S, scalar),
        )

    def sun_eci_m(self, t_s: ArrayLike) -> Vec:
        """Sun relative to the Earth, ICRF axes."""
        sun_km = self._pos_km(self._seg_sun, t_s)
        earth_km = self._pos_km(self._seg_emb, t_s) + self._pos_km(self._seg_earth, t_s)
        return _shape_out((sun_km - earth_km) * _KM_M, np.ndim(t_s) == 0)

    def sun_mci_m(self, t_s: ArrayLike) -> Vec:
        """Sun relative to the Moon, ICRF axes."""
        sun_km = self._pos_km(self._seg_sun, t_s)
        moon_km = self._pos_km(self._seg_emb, t_s) + self._pos_km(self._seg_moon, t_s)
        return _shape_out((sun_km - moon_km) * _KM_M, np.ndim(t_s) == 0)


@lru_cache(maxsize=1)
def get_ephemeris() -> Ephemeris:
    """The shared DE421 reader (opened once per process)."""
    return Ephemeris()


class ChebyshevTable:
    """Piecewise Chebyshev interpolant of a vector function of mission time.

    Segments of ``segment_s`` seconds each hold a degree-``degree`` polynomial
    through the function's values at Chebyshev points of the first kind. The
    table grows on demand, so callers never need to know the span in advance.
    """

    def __init__(
        self,
        func: Callable[[Vec], Vec],
        width: int,
        segment_s: float = 2.0 * DAY_S,
        degree: int = 14,
        origin_s: float = 0.0,
    ) -> None:
        self._func = func
        self.width = width
        self.segment_s = float(segment_s)
        self.degree = degree
        self._origin_s = float(origin_s)
        self._k = np.arange(degree + 1, dtype=np.float64)
        nodes = np.cos(np.pi * (self._k + 0.5) / (degree + 1))
        self._nodes = nodes
        # Interpolation at Chebyshev nodes: c = (2/N) T(nodes)^T f, c0 halved.
        basis = np.cos(np.outer(np.arccos(nodes), self._k))
        self._fit = basis.T * (2.0 / (degree + 1))
        self._fit[0] *= 0.5
        self._first = 0
        self._coef = np.zeros((0, degree + 1, width))

    def _fit_segments(self, first: int, count: int) -> Vec:
        # One segment at a time, with fixed shapes: a batched contraction may
        # sum in another order for another batch size, and then a segment's
        # last bits would depend on which call first needed it (a gRPC status
        # query, say). The mission must not depend on that.
        coef = np.empty((count, self.degree + 1, self.width))
        for j in range(count):
            start_s = self._origin_s + (first + j) * self.segment_s
            nodes_s = start_s + 0.5 * self.segment_s * (1.0 + self._nodes)
            coef[j] = self._fit @ self._func(nodes_s).reshape(self.degree + 1, self.width)
        return coef

    def _ensure(self, lo: int, hi: int) -> None:
        """Make segments lo..hi (inclusive) available."""
        have_lo, have_hi = self._first, self._first + len(self._coef) - 1
        if len(self._coef) == 0:
            self._first, self._coef = lo, self._fit_segments(lo, hi - lo + 1)
            return
        if lo < have_lo:
            self._coef = np.concatenate([self._fit_segments(lo, have_lo - lo), self._coef])
            self._first = lo
        if hi > have_hi:
            self._coef = np.concatenate([self._coef, self._fit_segments(have_hi + 1, hi - have_hi)])

    def prepare(self, t0_s: float, t1_s: float) -> None:
        """Fit every segment touching [t0_s, t1_s] now (one DE421 batch call)."""
        lo, hi = sorted((t0_s, t1_s))
        self._ensure(self._index(lo), self._index(hi))

    def _index(self, t_s: float) -> int:
        return math.floor((t_s - self._origin_s) / self.segment_s)

    def __call__(self, t_s: ArrayLike) -> Vec:
        """Values at ``t_s``: shape (width,) for a scalar, (n, width) for an array."""
        if np.ndim(t_s) == 0:  # one segment, no gather: ~3x cheaper (integrator starts)
            t_one = float(t_s)  # type: ignore[arg-type]
            start, length, coef = self.window(t_one)
            x = min(1.0, max(-1.0, 2.0 * (t_one - start) / length - 1.0))
            one: Vec = np.cos(self._k * math.acos(x)) @ coef
            return one
        t_arr = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
        idx = np.floor((t_arr - self._origin_s) / self.segment_s).astype(np.int64)
        self._ensure(int(idx.min()), int(idx.max()))
        tau = 2.0 * (t_arr - self._origin_s - idx * self.segment_s) / self.segment_s - 1.0
        basis = np.cos(np.outer(np.arccos(np.clip(tau, -1.0, 1.0)), self._k))
        out: Vec = np.einsum("nk,nkw->nw", basis, self._coef[idx - self._first])
        return out[0] if np.ndim(t_s) == 0 else out

    def window(self, t_s: float) -> tuple[float, float, Vec]:
        """(segment start s, segment length s, coefficients (degree+1, width)) at t_s."""
        i = self._index(t_s)
        self._ensure(i, i)
        return self._origin_s + i * self.segment_s, self.segment_s, self._coef[i - self._first]


class FastEphemeris:
    """Chebyshev refit of DE421: Moon and Sun relative to the Earth (ICRF, m).

    Fit error against DE421 is below a millimetre with 2-day, degree-14
    segments (checked in tests/unit/dynamics/test_ephemeris.py).
    """

    def __init__(self, ephemeris: Ephemeris | None = None) -> None:
        eph = ephemeris or get_ephemeris()

        def both(t_s: Vec) -> Vec:
            return np.hstack([eph.moon_eci_m(t_s), eph.sun_eci_m(t_s)])

        self.table = ChebyshevTable(both, width=6)

    def moon_eci_m(self, t_s: ArrayLike) -> Vec:
        return self.table(t_s)[..., 0:3]

    def sun_eci_m(self, t_s: ArrayLike) -> Vec:
        return self.table(t_s)[..., 3:6]

    def sun_mci_m(self, t_s: ArrayLike) -> Vec:
        vals = self.table(t_s)
        return vals[..., 3:6] - vals[..., 0:3]


@lru_cache(maxsize=1)
def get_fast_ephemeris() -> FastEphemeris:
    """The shared Chebyshev refit of DE421."""
    return FastEphemeris()
