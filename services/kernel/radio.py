"""The on-board downlink's step: what a vehicle core's radio does after each step.

:func:`run_downlink` is what :meth:`VehicleCore.after_step` runs for every
vehicle core (not ground): build the frame from ``summary()``, record it
(:mod:`services.kernel.recorder`), ask `links.link_for` for the path, and
publish what the recorder sends: direct frames on ``dl.<vehicle>``, relayed
ones on ``xfer.relay`` as ``{"type": "relay_frame", "frame": ...}``. Pure:
messages go to the step's outbox.
"""

from __future__ import annotations

from typing import Any, Protocol

from services.dynamics.links import NO_LINK, link_for, moon_eci_m
from services.kernel.outbox import Outbox, Summary
from services.kernel.recorder import Downlink


def frame_body(s: Summary) -> dict[str, Any]:
    """What one frame carries: the vehicle's own view of its state."""
    return {"phase": s.phase, "frame": s.frame, "body": s.central_body, "r_m": list(s.r_m),
            "v_m_s": list(s.v_m_s), "alt_m": s.altitude_m, "speed_m_s": s.speed_m_s,
            "mass_kg": s.mass_kg, "propellant_kg": s.propellant_kg,
            "sample_mass_g": s.sample_mass_g, "values": dict(s.values)}


def r_eci_of(s: Summary, t_s: float) -> tuple[float, float, float]:
    """The vehicle's position in ECI, the frame the link geometry works in."""
    r = s.r_m
    if s.frame == "MCI" or (s.frame != "ECI" and s.central_body == "moon"):
        m = moon_eci_m(t_s)
        return (r[0] + m[0], r[1] + m[1], r[2] + m[2])
    return (float(r[0]), float(r[1]), float(r[2]))


class Radio(Protocol):
    """What the downlink needs of the vehicle that carries it (a VehicleCore)."""

    name: str
    downlink: Downlink | None

    def summary(self) -> Summary: ...

    def telemetry_interval_s(self) -> float: ...

    def link_blocked(self) -> bool: ...


def downlink_of(core: Radio) -> Downlink:
    """The core's downlink, created on first use."""
    dl = core.downlink
    if dl is None:
        dl = Downlink(core.name)
        core.downlink = dl
    return dl


def run_downlink(core: Radio, t_from: float, t_to: float, out: Outbox) -> Downlink | None:
    """Record this step's frame and send what the path allows. A core with no
    body of its own (stowed, or gone) records and sends nothing."""
    s = core.summary()
    if not s.central_body:
        return core.downlink
    dl = downlink_of(core)
    interval = core.telemetry_interval_s()
    if t_to - dl.last_record_t_s >= interval:
        dl.record(t_to, frame_body(s))
    blocked = core.link_blocked()
    link = NO_LINK if blocked else link_for(core.name, r_eci_of(s, t_to), t_to, dl.link)
    sent, events = dl.step(t_from, t_to, link)
    for name, values in events:
        out.event(core.name, name, t_to, alt_m=s.altitude_m, speed_m_s=s.speed_m_s,
                  mass_kg=s.mass_kg, **values)
    publish_frames(core.name, sent, out, t_to)
    return dl


def publish_frames(origin: str, frames: list[dict[str, Any]], out: Outbox, t_s: float) -> None:
    """Frames sent by the relay path go to Queqiao-2, which forwards them to ground."""
    for frame in frames:
        if frame["path"] == "relay":
            out.send("xfer", "relay", t_s, {"type": "relay_frame", "frame": frame})
        else:
            out.send("dl", origin, t_s, frame)
