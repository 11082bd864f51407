"""PNG plots of a campaign: where the lander touched down, where the returner
landed, and how the margins spread.

Each plot is a function from arrays (already reduced by
`services.campaign.summary`) to one PNG. Figures are built on matplotlib's
Agg canvas without pyplot, so nothing global is touched and no display is
needed; sizes, resolution, bins and limits follow from the data alone, so the
same table gives the same bytes. A plot whose data is missing still renders,
saying what is missing, so the set of files is always the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import NDArray

from services.campaign.stats import Ellipse, Spread, ellipse_outline, lat_lon_deg
from services.dynamics.constants import LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG

__all__ = ["REFERENCE_PLACES", "Margin", "Place", "plot_landing", "plot_margins",
           "plot_touchdown"]

Vec = NDArray[np.float64]
_DPI = 110
_KM = 1000.0
TOUCHDOWN_SIZE_IN = (8.0, 8.0)
LANDING_SIZE_IN = (9.0, 8.5)
MARGINS_SIZE_IN = (15.0, 11.0)
#: The touchdown map's half-width: at least 150 m (a hazard-avoiding lander
#: spreads over tens of metres: the map fits the points, not a fixed scale),
#: at most 20 km (a case that landed farther is counted, not drawn, so one
#: outlier cannot shrink everyone else to a dot).
TOUCHDOWN_MIN_HALF_M = 150.0
TOUCHDOWN_MAX_HALF_M = 20_000.0
#: The circle drawn on the lunar map about the LROC site: 1 km, or 100 m on a
#: map too small to hold it.
TOUCHDOWN_RING_M = 1_000.0
TOUCHDOWN_SMALL_RING_M = 100.0
#: The Earth map reaches at most this far from the aim point (a skip-out that
#: lands a thousand kilometres away is counted, not drawn).
LANDING_MAX_HALF_DEG = 3.0
_MAP_MARGIN = 0.08  # of the map's span, around what it must show
_POINT_COLOUR = "tab:blue"
_ELLIPSE_COLOUR = "tab:red"


@dataclass(frozen=True)
class Place:
    """A reference place on the Earth map, with where its coordinates come from."""

    name: str
    lat_deg: float
    lon_deg: float
    source: str


#: Places around the Siziwang landing zone, published coordinates.
REFERENCE_PLACES = (
    Place("Ulanhua (banner seat)", 41.53306, 111.70667,
          "Wikipedia, 'Dorbod Banner': 41°31'59\" N, 111°42'24\" E"),
    Place("Hohhot", 40.8, 111.0 + 41.0 / 60.0,
          "Inner Mongolia Normal University, 'A brief introduction of Hohhot': "
          "downtown at 40°48' N, 111°41' E"),
)


@dataclass(frozen=True)
class Margin:
    """One histogram: a quantity's finite values over ok cases and their spread."""

    label: str
    unit: str
    values: Vec
    spread: Spread


# --- helpers -----------------------------------------------------------------------


def _new_figure(size_in: tuple[float, float], rows: int = 1, cols: int = 1,
                ) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=size_in, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _missing(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no data: {what}", ha="center", va="center", transform=ax.transAxes,
            color="grey")


def _finite_pairs(a: Vec, b: Vec) -> tuple[Vec, Vec]:
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


# --- the lunar touchdown map ----------------------------------------------------------


def _lat_lon_text() -> str:
    lat, lon = LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG
    return f"{abs(lat):.4f} {'N' if lat >= 0 else 'S'} {abs(lon):.4f} {'E' if lon >= 0 else 'W'}"


def plot_touchdown(east_m: Vec, north_m: Vec, ellipse: Ellipse | None, path: Path) -> None:
    """Touchdown points in east/north metres about the LROC site, the site, a
    1 km (or, on a small map, 100 m) circle and the ellipse."""
    fig, (ax,) = _new_figure(TOUCHDOWN_SIZE_IN)
    e, n = _finite_pairs(east_m, north_m)
    outline = ellipse_outline(ellipse) if ellipse is not None else None
    reach = [TOUCHDOWN_MIN_HALF_M / 1.1, float(np.max(np.hypot(e, n), initial=0.0))]
    if outline is not None:
        reach.append(float(np.max(np.hypot(*outline))))
    half = min(1.1 * max(reach), TOUCHDOWN_MAX_HALF_M)
    inside = (np.abs(e) <= half) & (np.abs(n) <= half)
    ax.scatter(e[inside], n[inside], s=9, color=_POINT_COLOUR, alpha=0.6, linewidths=0,
               label=f"touchdowns ({int(inside.sum())})")
    ring = np.linspace(0.0, 2.0 * np.pi, 361)
    radius = TOUCHDOWN_RING_M if half > TOUCHDOWN_RING_M else TOUCHDOWN_SMALL_RING_M
    ax.plot(radius * np.sin(ring), radius * np.cos(ring), color="grey", ls="--", lw=1.0,
            label=f"{radius:g} m from the site")
    if ellipse is not None and outline is not None:
        ax.plot(*outline, color=_ELLIPSE_COLOUR, lw=1.6,
                label=f"{ellipse.k:g}-sigma ellipse ({100 * ellipse.containment:.1f} %)")
        ax.plot(ellipse.centre_east, ellipse.centre_north, "+", color=_ELLIPSE_COLOUR, ms=12,
                mew=2, label="mean touchdown")
    ax.plot(0.0, 0.0, "*", color="black", ms=16, label=f"LROC site {_lat_lon_text()}")
    if not e.size:
        _missing(ax, "no case touched down")
    outside = int(e.size - inside.sum())
    title = "Lunar touchdown dispersion about the CE-6 site (local east/north)"
    if outside:
        title += f"\n{outside} touchdown(s) beyond {half / _KM:.0f} km not drawn"
    ax.set_title(title)
    ax.set_xlim(-half, half)
    ax.set_ylim(-half, half)
    ax.set_aspect("equal")
    ax.set_xlabel("east of the site [m]")
    ax.set_ylabel("north of the site [m]")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.savefig(path)


# --- the Earth landing map --------------------------------------------------------------


def _landing_limits(aim: tuple[float, float], shown_lat: Vec, shown_lon: Vec,
                    ) -> tuple[tuple[float, float], tuple[float, float]]:
    """Lat/lon limits around what must show, within LANDING_MAX_HALF_DEG of the aim,
    with the same ground distance per unit on both axes at the aim's latitude."""
    lat0, lon0 = aim
    squash = math.cos(math.radians(lat0))  # a degree of longitude, in degrees of latitude
    lat_lo, lat_hi = float(shown_lat.min()), float(shown_lat.max())
    lon_lo, lon_hi = float(shown_lon.min()), float(shown_lon.max())
    half = max(lat_hi - lat0, lat0 - lat_lo, (lon_hi - lon0) * squash, (lon0 - lon_lo) * squash)
    half = min(half * (1.0 + 2 * _MAP_MARGIN), LANDING_MAX_HALF_DEG)
    return (lat0 - half, lat0 + half), (lon0 - half / squash, lon0 + half / squash)


def plot_landing(lat_deg: Vec, lon_deg: Vec, ellipse: Ellipse | None,
                 aim: tuple[float, float], zone_radius_m: float, radius_m: float,
                 path: Path) -> None:
    """Earth landing points on a lat/lon map of Siziwang Banner: the landing
    zone, the aim point, the reference places and the ellipse (``ellipse`` in
    east/north metres about ``aim`` on a sphere of ``radius_m``)."""
    fig, (ax,) = _new_figure(LANDING_SIZE_IN)
    lat, lon = _finite_pairs(lat_deg, lon_deg)
    ring = np.linspace(0.0, 2.0 * np.pi, 361)
    zone_lat, zone_lon = lat_lon_deg(zone_radius_m * np.sin(ring), zone_radius_m * np.cos(ring),
                                     aim[0], aim[1], radius_m)
    shown = [(zone_lat, zone_lon), (np.array([p.lat_deg for p in REFERENCE_PLACES]),
                                    np.array([p.lon_deg for p in REFERENCE_PLACES]))]
    ell = None
    if ellipse is not None:
        ell = lat_lon_deg(*ellipse_outline(ellipse), aim[0], aim[1], radius_m)
        shown.append(ell)
    if lat.size:
        shown.append((lat, lon))
    (lat_lo, lat_hi), (lon_lo, lon_hi) = _landing_limits(
        aim, np.concatenate([s[0] for s in shown]), np.concatenate([s[1] for s in shown]))
    inside = (lat >= lat_lo) & (lat <= lat_hi) & (lon >= lon_lo) & (lon <= lon_hi)
    ax.fill(zone_lon, zone_lat, color="tab:green", alpha=0.15,
            label=f"landing zone ({zone_radius_m / _KM:.0f} km from the aim point)")
    ax.scatter(lon[inside], lat[inside], s=9, color=_POINT_COLOUR, alpha=0.6, linewidths=0,
               label=f"landings ({int(inside.sum())})")
    if ellipse is not None and ell is not None:
        ax.plot(ell[1], ell[0], color=_ELLIPSE_COLOUR, lw=1.6,
                label=f"{ellipse.k:g}-sigma ellipse ({100 * ellipse.containment:.1f} %)")
    ax.plot(aim[1], aim[0], "*", color="black", ms=16,
            label=f"aim point {aim[0]:.2f} N {aim[1]:.2f} E")
    for place in REFERENCE_PLACES:
        ax.plot(place.lon_deg, place.lat_deg, "s", color="dimgrey", ms=6)
        ax.annotate(place.name, (place.lon_deg, place.lat_deg), xytext=(6, -4),
                    textcoords="offset points", fontsize=9, color="dimgrey")
    if not lat.size:
        _missing(ax, "no case landed on Earth")
    outside = int(lat.size - inside.sum())
    title = "Earth landing dispersion, Siziwang Banner (Inner Mongolia)"
    if outside:
        title += f"\n{outside} landing(s) beyond the map not drawn"
    ax.set_title(title)
    ax.set_xlim(lon_lo, lon_hi)
    ax.set_ylim(lat_lo, lat_hi)
    ax.set_aspect(1.0 / math.cos(math.radians(aim[0])))
    ax.set_xlabel("longitude [deg E]")
    ax.set_ylabel("geodetic latitude [deg N]")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.savefig(path)


# --- the margins ------------------------------------------------------------------------


def _bins(count: int) -> int:
    """sqrt(n) bins, 5 to 40: enough to see a tail in thousands of cases without
    a comb of empty bins in a few dozen."""
    return int(min(40, max(5, round(math.sqrt(count)))))


def plot_margins(margins: Sequence[Margin], path: Path, cols: int = 3) -> None:
    """One histogram per margin with its P50/P90/P99 marked."""
    rows = max(1, math.ceil(len(margins) / cols))
    fig, axes = _new_figure(MARGINS_SIZE_IN, rows, cols)
    styles = {50.0: ":", 90.0: "--", 99.0: "-"}
    for ax, margin in zip(axes, margins, strict=False):
        ax.set_title(margin.label, fontsize=10)
        ax.set_xlabel(margin.unit)
        ax.grid(alpha=0.3)
        if not margin.values.size:
            _missing(ax, "no ok case has it")
            continue
        ax.hist(margin.values, bins=_bins(margin.values.size), color=_POINT_COLOUR, alpha=0.75)
        for q, value in margin.spread.percentiles:
            ax.axvline(value, color=_ELLIPSE_COLOUR, ls=styles.get(q, "-."), lw=1.2,
                       label=f"P{q:g}")
        ax.legend(fontsize=7, loc="upper right")
    for ax in axes[len(margins):]:
        ax.set_axis_off()
    fig.suptitle("Margins and outcomes over ok cases (numpy 'linear' percentiles)")
    fig.savefig(path)
