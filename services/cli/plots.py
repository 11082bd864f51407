"""PNG plots of a finished run, from its report and its recorded telemetry.

`twin report PATH` calls :func:`render_all`; each plot is a function from the
report (events) and the telemetry records to one PNG next to the report
(``<stem>.<plot>.png``). Figures are built on matplotlib's Agg canvas without
pyplot, so nothing global is touched and no display is needed. A plot whose
data is missing (e.g. a run that ended before landing) still renders, saying
what is missing, so the set of files is always the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import NDArray

from services.cli.mission_log import read_telemetry, telemetry_path
from services.cli.report import LoggedEvent, link_intervals, read_report
from services.dynamics.constants import (
    G0_M_S2,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
    R_EARTH_EQ_M,
    R_MOON_M,
)
from services.dynamics.ephemeris import get_ephemeris
from services.dynamics.frames import moon_fixed_from_mci
from services.dynamics.timescale import iso_utc

__all__ = ["PLOTS", "Track", "render_all", "tracks_by_vehicle"]

Vec = NDArray[np.float64]
_KM = 1000.0
_DPI = 110
_VEHICLE_COLOURS = {"orbiter": "tab:blue", "lander": "tab:orange", "ascender": "tab:green",
                    "reentry": "tab:red", "relay": "tab:purple"}
_PATH_COLOURS = {"direct": "tab:green", "relay": "tab:blue"}


@dataclass(frozen=True)
class Track:
    """One vehicle's kept telemetry as arrays, in one central body's frame."""

    vehicle: str
    t_s: Vec
    r_m: Vec  # (n, 3)
    v_m_s: Vec  # (n, 3)
    alt_m: Vec
    speed_m_s: Vec
    body: list[str]
    phase: list[str]
    values: list[Mapping[str, float]]

    def where(self, mask: NDArray[np.bool_]) -> Track:
        idx = np.flatnonzero(mask)
        return Track(self.vehicle, self.t_s[idx], self.r_m[idx], self.v_m_s[idx],
                     self.alt_m[idx], self.speed_m_s[idx], [self.body[i] for i in idx],
                     [self.phase[i] for i in idx], [self.values[i] for i in idx])

    def on(self, body: str) -> Track:
        return self.where(np.array([b == body for b in self.body], dtype=bool))

    def between(self, t0_s: float, t1_s: float) -> Track:
        return self.where((self.t_s >= t0_s) & (self.t_s <= t1_s))

    def value(self, key: str) -> Vec:
        return np.array([float(v.get(key, np.nan)) for v in self.values])

    def __len__(self) -> int:
        return len(self.t_s)


def tracks_by_vehicle(records: Sequence[Mapping[str, Any]]) -> dict[str, Track]:
    """Group telemetry records (with a state) by vehicle, in time order."""
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for rec in records:
        if rec.get("body") and rec.get("r_m") is not None:
            grouped.setdefault(str(rec["vehicle"]), []).append(rec)
    tracks = {}
    for vehicle in sorted(grouped):
        rows = sorted(grouped[vehicle], key=lambda r: float(r["t_s"]))
        tracks[vehicle] = Track(
            vehicle=vehicle,
            t_s=np.array([float(r["t_s"]) for r in rows]),
            r_m=np.array([r["r_m"] for r in rows], dtype=np.float64).reshape(-1, 3),
            v_m_s=np.array([r["v_m_s"] for r in rows], dtype=np.float64).reshape(-1, 3),
            alt_m=np.array([float(r.get("alt_m") or 0.0) for r in rows]),
            speed_m_s=np.array([float(r.get("speed_m_s") or 0.0) for r in rows]),
            body=[str(r["body"]) for r in rows], phase=[str(r.get("phase", "")) for r in rows],
            values=[r.get("values") or {} for r in rows],
        )
    return tracks


@dataclass(frozen=True)
class RunData:
    report: Mapping[str, Any]
    tracks: dict[str, Track]
    events: list[LoggedEvent]

    def first(self, name: str) -> float | None:
        return next((e.t_s for e in self.events if e.name == name), None)

    def event(self, name: str) -> LoggedEvent | None:
        return next((e for e in self.events if e.name == name), None)

    def track(self, vehicle: str) -> Track | None:
        track = self.tracks.get(vehicle)
        return track if track is not None and len(track) else None


def _events(report: Mapping[str, Any]) -> list[LoggedEvent]:
    head = {"name", "vehicle", "utc", "t_s", "step", "seq"}
    return [LoggedEvent(str(r["name"]), str(r["vehicle"]), float(r["t_s"]), int(r["step"]),
                        int(r["seq"]), {k: v for k, v in r.items() if k not in head})
            for r in report.get("events", [])]


# --- helpers -----------------------------------------------------------------------


def _new_figure(rows: int = 1, cols: int = 1, size: tuple[float, float] = (10.0, 6.0),
                ) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=size, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _missing(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no data: {what}", ha="center", va="center", transform=ax.transAxes,
            color="grey")


def _circle(ax: Axes, radius: float, colour: str, label: str | None = None) -> None:
    angle = np.linspace(0.0, 2.0 * np.pi, 200)
    ax.fill(radius * np.cos(angle), radius * np.sin(angle), color=colour, alpha=0.35,
            label=label)


def _utc_label(t0_s: float, what: str) -> str:
    return f"{what} after {iso_utc(t0_s)[:19]}Z"


# --- the plots --------------------------------------------------------------------


def plot_trajectory(data: RunData, fig_path: Path) -> None:
    """Earth-Moon transfer and return in ECI (equator plane), with the Moon's path."""
    fig, (ax,) = _new_figure(size=(10.0, 8.0))
    t_end = float(data.report.get("clock", {}).get("mission_time_s") or 0.0)
    eph = get_ephemeris()
    t_moon = np.linspace(0.0, max(t_end, 1.0), 800)
    moon_m = np.asarray(eph.moon_eci_m(t_moon))
    ax.plot(moon_m[:, 0] / _KM / 1e3, moon_m[:, 1] / _KM / 1e3, color="grey", lw=1,
            ls="--", label="Moon's path")
    _circle(ax, R_EARTH_EQ_M / _KM / 1e3 * 3, "tab:blue", "Earth (x3 size)")
    for name, marker in (("lunar_orbit_insertion", "o"), ("tei_burn_1", "s")):
        t = data.first(name)
        if t is not None:
            at_m = np.asarray(eph.moon_eci_m(np.array([t]))).reshape(3)
            ax.plot(at_m[0] / 1e6, at_m[1] / 1e6, marker, color="dimgrey", ms=9,
                    label=f"Moon at {name}")
    plotted = False
    for vehicle in ("orbiter", "reentry"):
        track = data.track(vehicle)
        if track is None:
            continue
        r_eci = _eci(track)
        ax.plot(r_eci[:, 0] / 1e6, r_eci[:, 1] / 1e6, color=_VEHICLE_COLOURS[vehicle], lw=1,
                label=f"{vehicle} (ECI)")
        plotted = True
    if not plotted:
        _missing(ax, "orbiter / returner telemetry")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x ECI [1000 km]")
    ax.set_ylabel("y ECI [1000 km]")
    ax.set_title("Earth-Moon trajectory (ICRF axes, projected on x-y)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.savefig(fig_path)


def _eci(track: Track) -> Vec:
    """Positions in ECI: MCI states get the Moon's position added."""
    r = track.r_m.copy()
    on_moon = np.array([b == "moon" for b in track.body], dtype=bool)
    if on_moon.any():
        r[on_moon] += np.asarray(get_ephemeris().moon_eci_m(track.t_s[on_moon])).reshape(-1, 3)
    return r


def plot_lunar_orbits(data: RunData, fig_path: Path) -> None:
    """Lunar orbits in MCI: the low orbits (x-y, x-z) and Queqiao-2's."""
    fig, axes = _new_figure(1, 3, size=(15.0, 5.5))
    for ax, (i, j, name) in zip(axes[:2], ((0, 1, "x-y"), (0, 2, "x-z")), strict=True):
        _circle(ax, R_MOON_M / _KM, "grey", "Moon")
        for vehicle in ("orbiter", "lander", "ascender"):
            track = data.track(vehicle)
            moon = None if track is None else track.on("moon")
            if moon is None or not len(moon):
                continue
            near = moon.where(moon.alt_m < 20_000_000.0)
            ax.plot(near.r_m[:, i] / _KM, near.r_m[:, j] / _KM, lw=0.6,
                    color=_VEHICLE_COLOURS[vehicle], label=vehicle)
        ax.set_xlim(-12_000, 12_000)
        ax.set_ylim(-12_000, 12_000)
        ax.set_aspect("equal")
        ax.set_title(f"CE-6 in lunar orbit (MCI {name})")
        ax.set_xlabel(f"{name[0]} [km]")
        ax.set_ylabel(f"{name[-1]} [km]")
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
    _relay_orbit(axes[2], data)
    fig.savefig(fig_path)


def _relay_orbit(ax: Axes, data: RunData) -> None:
    _circle(ax, R_MOON_M / _KM, "grey", "Moon")
    track = data.track("relay")
    moon = None if track is None else track.on("moon")
    if moon is None or not len(moon):
        _missing(ax, "relay telemetry")
    else:
        ax.plot(moon.r_m[:, 0] / _KM, moon.r_m[:, 2] / _KM, lw=0.6,
                color=_VEHICLE_COLOURS["relay"], label="Queqiao-2")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title("Queqiao-2 (MCI x-z)")
    ax.set_xlabel("x [km]")
    ax.set_ylabel("z [km]")
    ax.grid(alpha=0.3)


def _lat_lon_deg(track: Track) -> tuple[Vec, Vec]:
    r_mf = np.asarray(moon_fixed_from_mci(track.r_m, track.t_s)).reshape(-1, 3)
    lat = np.degrees(np.arctan2(r_mf[:, 2], np.hypot(r_mf[:, 0], r_mf[:, 1])))
    lon = np.degrees(np.arctan2(r_mf[:, 1], r_mf[:, 0]))
    return lat, lon


def _descent(data: RunData) -> Track | None:
    """The lander from a minute before powered descent to a minute after touchdown."""
    lander = data.track("lander")
    t0, t1 = data.first("powered_descent_start"), data.first("lunar_touchdown")
    if lander is None or t0 is None:
        return None
    t1 = t1 if t1 is not None else t0 + 1200.0
    part = lander.on("moon").between(t0 - 60.0, t1 + 60.0)
    return part if len(part) else None


def plot_landing_track(data: RunData, fig_path: Path) -> None:
    """The powered descent's ground track on a lat/lon map, the site marked."""
    fig, axes = _new_figure(1, 2, size=(14.0, 5.5))
    descent = _descent(data)
    touchdown = data.event("lunar_touchdown")
    lat_lon = _lat_lon_deg(descent) if descent is not None else None
    for ax, zoom in zip(axes, (False, True), strict=True):
        if lat_lon is not None:
            lat, lon = lat_lon
            ax.plot(lon, lat, color=_VEHICLE_COLOURS["lander"], lw=1.2, label="lander track")
            ax.plot(lon[0], lat[0], "o", color="black", ms=4, label="track start (PDI - 1 min)")
        else:
            _missing(ax, "lander telemetry in powered descent")
        ax.plot(LANDING_SITE_LON_DEG, LANDING_SITE_LAT_DEG, "*", color="red", ms=14,
                label="real site 41.6385 S 153.9852 W")
        if touchdown is not None and touchdown.values.get("lat_deg") is not None:
            ax.plot(float(touchdown.values["lon_deg"]), float(touchdown.values["lat_deg"]), "x",
                    color="black", ms=10, mew=2, label="twin touchdown")
        _map_limits(ax, lat_lon, zoom)
        ax.set_xlabel("selenographic longitude [deg E]")
        ax.set_ylabel("latitude [deg]")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
    axes[0].set_title("Powered descent ground track (Apollo basin)")
    axes[1].set_title("Near the site (±5 km)")
    fig.savefig(fig_path)


def _map_limits(ax: Axes, lat_lon: tuple[Vec, Vec] | None, zoom: bool) -> None:
    """A square map around the site (zoom) or the whole track: equal distances on
    both axes, so the limits already have the aspect and the axes' box is square.

    (Limits set on both axes plus adjustable="datalim" made matplotlib drop one
    of them and log "Ignoring fixed x/y limits" on every draw.)
    """
    # One degree of longitude is cos(lat) of a degree of latitude on the sphere.
    squash = float(np.cos(np.radians(LANDING_SITE_LAT_DEG)))
    if zoom or lat_lon is None:
        centre_lat, centre_lon = LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG
        half_lat_deg = float(np.degrees(5_000.0 / R_MOON_M)) if zoom else 10.0
    else:
        lat, lon = lat_lon
        margin_deg = 1.0
        lat_lo, lat_hi = min(lat.min(), LANDING_SITE_LAT_DEG), max(lat.max(), LANDING_SITE_LAT_DEG)
        lon_lo, lon_hi = min(lon.min(), LANDING_SITE_LON_DEG), max(lon.max(), LANDING_SITE_LON_DEG)
        centre_lat, centre_lon = (lat_lo + lat_hi) / 2.0, (lon_lo + lon_hi) / 2.0
        # The longer side, as degrees of latitude, sets both.
        half_lat_deg = max(lat_hi - lat_lo, (lon_hi - lon_lo) * squash) / 2.0 + margin_deg
    ax.set_xlim(centre_lon - half_lat_deg / squash, centre_lon + half_lat_deg / squash)
    ax.set_ylim(centre_lat - half_lat_deg, centre_lat + half_lat_deg)
    ax.set_aspect(1.0 / squash, adjustable="box")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))  # long labels on a square map


def plot_descent_profile(data: RunData, fig_path: Path) -> None:
    """Altitude, speed and thrust against time from powered descent start."""
    fig, axes = _new_figure(3, 1, size=(10.0, 9.0))
    descent = _descent(data)
    t0 = data.first("powered_descent_start")
    if descent is None or t0 is None:
        for ax in axes:
            _missing(ax, "lander telemetry in powered descent")
        fig.savefig(fig_path)
        return
    minutes = (descent.t_s - t0) / 60.0
    series = ((descent.alt_m / _KM, "height above 1737.4 km [km]"),
              (descent.speed_m_s, "speed [m/s]"),
              (descent.value("thrust_n") / _KM, "thrust [kN]"))
    for ax, (y, label) in zip(axes, series, strict=True):
        ax.plot(minutes, y, color=_VEHICLE_COLOURS["lander"], lw=1.2)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        _mark_events(ax, data, t0, ("hover_start", "lunar_touchdown"), scale_s=60.0)
    axes[0].set_title("Powered descent")
    axes[-1].set_xlabel(_utc_label(t0, "minutes"))
    fig.savefig(fig_path)


def _mark_events(ax: Axes, data: RunData, t0_s: float, names: Sequence[str],
                 scale_s: float) -> None:
    for name in names:
        t = data.first(name)
        if t is not None:
            ax.axvline((t - t0_s) / scale_s, color="grey", ls=":", lw=1)
            ax.text((t - t0_s) / scale_s, 0.95, name, rotation=90, va="top", ha="right",
                    fontsize=7, transform=ax.get_xaxis_transform())


def _lvlh(r_ref: Vec, v_ref: Vec, r: Vec) -> Vec:
    """Curvilinear LVLH of the reference: (along-track arc, radial, cross-track), metres.

    The along-track coordinate is the arc at the reference's radius (not the
    straight chord), so a vehicle in a lower orbit far behind reads as below
    and behind rather than as curving down out of the plot.
    """
    radius = np.linalg.norm(r_ref, axis=1)
    up = r_ref / radius[:, None]
    normal = np.cross(r_ref, v_ref)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    cross = np.sum(r * normal, axis=1)
    in_plane = r - cross[:, None] * normal
    angle = np.arctan2(np.sum(np.cross(up, in_plane) * normal, axis=1),
                       np.sum(up * in_plane, axis=1))
    return np.stack([radius * angle, np.linalg.norm(r, axis=1) - radius, cross], axis=1)


def plot_rendezvous(data: RunData, fig_path: Path) -> None:
    """The ascender relative to the orbiter (orbiter's LVLH), liftoff to docking."""
    fig, axes = _new_figure(1, 3, size=(17.0, 5.5))
    orbiter, ascender = data.track("orbiter"), data.track("ascender")
    t0 = data.first("ascent_liftoff")
    t1 = data.first("docking") or (t0 + 3 * 86400.0 if t0 is not None else None)
    if orbiter is None or ascender is None or t0 is None or t1 is None:
        for ax in axes:
            _missing(ax, "orbiter and ascender telemetry from liftoff to docking")
        fig.savefig(fig_path)
        return
    a = ascender.on("moon").between(t0, t1)
    o = orbiter.on("moon").between(t0, t1)
    common, ia, io = np.intersect1d(a.t_s, o.t_s, return_indices=True)
    if not len(common):
        for ax in axes:
            _missing(ax, "orbiter and ascender frames at the same instants")
        fig.savefig(fig_path)
        return
    rel_km = _lvlh(o.r_m[io], o.v_m_s[io], a.r_m[ia]) / _KM
    hours = (common - t0) / 3600.0
    final = common >= t1 - 3 * 3600.0
    for ax, pick, title in ((axes[0], slice(None), "liftoff to docking"),
                            (axes[1], final, "last 3 hours before docking")):
        sc = ax.scatter(rel_km[pick, 0], rel_km[pick, 1], c=hours[pick], s=4, cmap="viridis")
        ax.plot(0.0, 0.0, "*", color="tab:blue", ms=12, label="orbiter")
        fig.colorbar(sc, ax=ax, label="hours after liftoff")
        ax.set_xlabel("along-track (V-bar, arc) [km]")
        ax.set_ylabel("radial (R-bar, up) [km]")
        ax.set_title(f"Ascender in the orbiter's LVLH: {title}")
        ax.legend(fontsize=8)
    distance_km = np.linalg.norm(a.r_m[ia] - o.r_m[io], axis=1) / _KM
    axes[2].semilogy(hours, np.maximum(distance_km, 1e-3), color=_VEHICLE_COLOURS["ascender"])
    axes[2].set_xlabel(_utc_label(t0, "hours"))
    axes[2].set_ylabel("distance to the orbiter [km]")
    axes[2].set_title("Range, liftoff to docking")
    _mark_events(axes[2], data, t0, ("ascent_orbit_insertion", "rendezvous_aim_point",
                                     "docking"), scale_s=3600.0)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.savefig(fig_path)


def plot_entry_profile(data: RunData, fig_path: Path) -> None:
    """Altitude, speed, deceleration and heat rate of the returner's skip entry."""
    fig, axes = _new_figure(4, 1, size=(10.0, 11.0))
    reentry = data.track("reentry")
    t0 = data.first("entry_interface")
    if reentry is None or t0 is None:
        for ax in axes:
            _missing(ax, "returner telemetry from entry interface")
        fig.savefig(fig_path)
        return
    t1 = data.first("earth_landing") or t0 + 3600.0
    entry = reentry.on("earth").between(t0 - 120.0, t1 + 60.0)
    minutes = (entry.t_s - t0) / 60.0
    series = ((entry.alt_m / _KM, "altitude [km]"), (entry.speed_m_s / _KM, "speed [km/s]"),
              (entry.value("sensed_accel_m_s2") / G0_M_S2, "deceleration [g]"),
              (entry.value("heat_flux_w_m2") / 1e6, "heat rate [MW/m²]"))
    for ax, (y, label) in zip(axes, series, strict=True):
        ax.plot(minutes, y, color=_VEHICLE_COLOURS["reentry"], lw=1.2)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        _mark_events(ax, data, t0, ("skip_out", "second_entry", "parachute_deploy",
                                    "earth_landing"), scale_s=60.0)
    axes[0].set_title("Skip re-entry of the returner")
    axes[-1].set_xlabel(_utc_label(t0, "minutes"))
    fig.savefig(fig_path)


def plot_links(data: RunData, fig_path: Path) -> None:
    """When each vehicle had a link, and by which path."""
    fig, (ax,) = _new_figure(size=(13.0, 4.5))
    t_end = float(data.report.get("clock", {}).get("mission_time_s") or 0.0)
    intervals = link_intervals(data.events, t_end)
    vehicles = sorted({iv.vehicle for iv in intervals})
    day_s = 86400.0
    for row, vehicle in enumerate(vehicles):
        for path in sorted({iv.path for iv in intervals if iv.vehicle == vehicle}):
            spans = [((iv.start_s) / day_s, (iv.end_s - iv.start_s) / day_s)
                     for iv in intervals if iv.vehicle == vehicle and iv.path == path]
            ax.broken_barh(spans, (row - 0.35, 0.7), color=_PATH_COLOURS.get(path, "grey"),
                           label=path)
    if not vehicles:
        _missing(ax, "link_acquired / link_lost events")
    ax.set_yticks(range(len(vehicles)), vehicles)
    ax.set_xlim(0.0, max(t_end / day_s, 1.0))
    ax.set_xlabel("days after launch (2024-05-03T09:27:29Z)")
    ax.set_title("Link availability (green: direct to a ground station, blue: via Queqiao-2)")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    if unique:
        ax.legend(unique.values(), unique.keys(), loc="upper right", fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    fig.savefig(fig_path)


PLOTS: dict[str, Callable[[RunData, Path], None]] = {
    "trajectory": plot_trajectory,
    "lunar_orbits": plot_lunar_orbits,
    "landing_track": plot_landing_track,
    "descent": plot_descent_profile,
    "rendezvous": plot_rendezvous,
    "entry": plot_entry_profile,
    "links": plot_links,
}


def render_all(report_path: Path, out_dir: Path | None = None) -> list[Path]:
    """Render every plot of the report at `report_path`; return the PNG paths."""
    report = read_report(report_path)
    records = read_telemetry(telemetry_path(report_path))
    data = RunData(report, tracks_by_vehicle(records), _events(report))
    target = out_dir if out_dir is not None else report_path.parent
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, plot in PLOTS.items():
        path = target / f"{report_path.stem}.{name}.png"
        plot(data, path)
        written.append(path)
    return written
