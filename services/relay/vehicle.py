"""Queqiao-2: the far-side relay. Its orbit, power, and store-and-forward of frames.

Orbit: the fixed Kepler ellipse of `comms.queqiao2_state_mci` (Meng 2024 mean
elements; see that module for the choice). Power (reference (b): "> 1,350 W
solar array; 135 Ah battery"): the array is sun-tracking and rated 1,350 W at
1 AU; it is dark in the Moon's shadow (a cylinder: the umbra of a Moon-sized
body is ~374,000 km long, so cone and cylinder differ by < 0.5 % at 16,000 km;
no lunar eclipse by the Earth happens during CE-6). Battery 135 Ah at a 28 V
bus (the voltage is not published; 28 V is the common bus of CAST buses of
this class) = 3,780 Wh. Load 700 W (bus, the relay transponders and the Ka
downlink's 55 W TWTA, payloads; chosen: nothing is published).

Relaying (docs/mission.md "Communications"):

* ``{"type": "relay_frame", "frame": f}`` on ``xfer.relay``: a vehicle's frame
  sent through Queqiao-2. While Queqiao-2 sees a station (its state at the
  end of the previous step, i.e. at the frame's send time) and holds no older
  frames, it goes on at once on ``dl.relay`` as ``{"type": "forwarded",
  "origin": ..., "frame": f}`` with the vehicle's stamp (both legs' light
  time). Otherwise it is stored and played back, oldest first, at the
  Ka-band rate once a station sees Queqiao-2 again, re-stamped
  ``deliver_at_s = t + light time`` of the second leg.
* ``{"type": "relay_cmd", "to": vehicle, "command": {...}}``: a telecommand,
  forwarded on ``cmd.<to>`` (one step later than a direct command: the
  store-and-forward of the lock-step bus).

Outage (dispersible: ``relay.outage.start_s``, ``relay.outage.duration_s``; none
in the nominal mission): a safe mode or a loss of pointing during which
Queqiao-2 forwards nothing, over [start, start + duration) in mission
seconds. Frames are stored as in a ground gap, commands are held, and both
go on, in the order they came, at the end; ``relay_outage_start`` and
``relay_outage_end`` announce it. The relay's own telemetry still goes down
direct (a safe mode keeps the bus's TT&C; the relay payload is what stops).
The clock stops on both edges, so the outage starts and ends on a step
boundary: a message the relay takes at the start of a step (sent at its
``t_from``) is held if ``t_from`` lies in the outage.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

from services.dynamics import comms, links
from services.dynamics.constants import AU_M, R_MOON_M
from services.dynamics.power import Battery, battery_step
from services.kernel.envelope import Envelope
from services.kernel.messages import Forwarded, RelayCmd, RelayFrame, Transfer, encode
from services.kernel.parameters import Parameter
from services.kernel.recorder import FRAME_BITS, downlink_values
from services.kernel.vehicle import Outbox, Summary, VehicleCore

Vec3 = tuple[float, float, float]

ARRAY_RATED_W = 1_350.0  # reference (b), NSSDC
BATTERY_WH = 135.0 * 28.0  # 135 Ah (NSSDC) at an assumed 28 V bus
LOAD_W = 700.0  # chosen (see module docstring)
MASS_KG = 1_200.0  # reference (b): ~1,200 kg at launch
RELAY_STEP_S = 3_600.0  # Queqiao-2 never needs the clock to stop for it
#: Latest outage start: the nominal mission ends 52.9 days after launch; 60 days
#: leaves room for a plan that runs later.
OUTAGE_START_MAX_S = 60 * 86_400.0
#: Longest outage: two days. Chosen: a safe mode is recovered over a few
#: ground passes, typically within a day; a second day covers a slow one.
OUTAGE_DURATION_MAX_S = 2 * 86_400.0
#: A step boundary put on an outage edge may miss it by rounding (t_from + (edge
#: - t_from)); within this it is on the edge (the kernel's time-tag tolerance).
EDGE_TOL_S = 1e-6


def sun_eci_m(t_s: float) -> tuple[float, float, float]:
    """Sun from the DE421 Chebyshev refit (columns 3-5 of the fast table)."""
    v = links.ephemeris_row(t_s)
    return (float(v[3]), float(v[4]), float(v[5]))


def array_power_w(r_mci_m: tuple[float, float, float], t_s: float) -> float:
    """Sun-tracking array output: rating x (1 AU / d)^2, zero in the Moon's shadow."""
    moon = links.moon_eci_m(t_s)
    sun = sun_eci_m(t_s)
    to_sun = (sun[0] - moon[0] - r_mci_m[0], sun[1] - moon[1] - r_mci_m[1],
              sun[2] - moon[2] - r_mci_m[2])
    d_sun = math.sqrt(to_sun[0] ** 2 + to_sun[1] ** 2 + to_sun[2] ** 2)
    u = (to_sun[0] / d_sun, to_sun[1] / d_sun, to_sun[2] / d_sun)
    along = r_mci_m[0] * u[0] + r_mci_m[1] * u[1] + r_mci_m[2] * u[2]
    r2 = r_mci_m[0] ** 2 + r_mci_m[1] ** 2 + r_mci_m[2] ** 2
    if along < 0.0 and r2 - along * along < R_MOON_M * R_MOON_M:
        return 0.0
    return ARRAY_RATED_W * (AU_M / d_sun) ** 2


@dataclass
class RelayCounts:
    forwarded: int = 0  # frames sent on at once
    stored: int = 0  # frames kept for later
    played_back: int = 0  # stored frames sent on
    commands: int = 0  # telecommands forwarded
    max_store: int = 0  # most frames held at once


class RelayCore(VehicleCore):
    name = "relay"
    PARAMETERS: ClassVar[tuple[Parameter, ...]] = (
        Parameter("outage.start_s", 0.0, "s", 0.0, OUTAGE_START_MAX_S,
                  "mission time at which Queqiao-2 stops forwarding (safe mode, pointing)"),
        Parameter("outage.duration_s", 0.0, "s", 0.0, OUTAGE_DURATION_MAX_S,
                  "how long it forwards nothing; frames and commands wait for the end"),
    )

    battery: Battery
    power_w: float
    unmet_wh: float
    ground: links.Link  # Queqiao-2 to a station, at self.t_s
    store: deque[dict[str, Any]]
    counts: RelayCounts
    #: True from the outage's start to its end (forwarding nothing).
    outage_active: bool
    #: Commands taken during the outage, in order: {"to": vehicle, "command": {...}}.
    held_commands: list[dict[str, Any]]

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.phase = "relay_ops"
        self.battery = Battery(BATTERY_WH, BATTERY_WH)
        self.power_w = 0.0
        self.unmet_wh = 0.0
        self.ground = links.NO_LINK
        self.store = deque()
        self.counts = RelayCounts()
        self.outage_active = False
        self.held_commands = []
        # (t, r, v) of the last state asked for: advance and summary share it
        self._state_cache: tuple[float, Vec3, Vec3] | None = None

    # --- messages -----------------------------------------------------------------
    def receive(self, message: Transfer, msg: Envelope, out: Outbox) -> None:
        match message:
            case RelayFrame():
                self._accept(dict(message.frame), msg.t, out)
            case RelayCmd() if self.outage_active:
                self.held_commands.append({"to": message.to, "command": dict(message.command)})
            case RelayCmd():
                out.send("cmd", message.to, msg.t, dict(message.command))
                self.counts.commands += 1

    def _accept(self, frame: dict[str, Any], t_s: float, out: Outbox) -> None:
        if self.ground.up and not self.store and not self.outage_active:
            self._forward({**frame, "relayed_at_s": t_s}, t_s, out)
            return
        self.store.append(frame)
        self.counts.stored += 1
        self.counts.max_store = max(self.counts.max_store, len(self.store))

    def _forward(self, frame: dict[str, Any], t_s: float, out: Outbox) -> None:
        out.send("dl", self.name, t_s, encode(Forwarded(origin=frame["origin"], frame=frame)))
        self.counts.forwarded += 1

    # --- steps ----------------------------------------------------------------------
    def advance(self, t_from: float, t_to: float, out: Outbox) -> float:
        self.t_s = t_to
        r, _ = self._state(t_to)
        self.power_w = array_power_w(r, t_to)
        step = battery_step(self.battery, self.power_w, LOAD_W, max(0.0, t_to - t_from))
        self.battery, self.unmet_wh = step.battery, self.unmet_wh + step.unmet_load_wh
        if "outage.duration_s" not in self.params:
            return RELAY_STEP_S
        return self._outage_step(t_to, out)

    # --- the outage ------------------------------------------------------------------
    def _outage_s(self) -> tuple[float, float]:
        start = self.param("outage.start_s")
        return start, start + self.param("outage.duration_s")

    def _outage_step(self, t_to: float, out: Outbox) -> float:
        """Start or end the outage at ``t_to``; the largest next step, which stops
        the clock on the outage's next edge."""
        start, end = self._outage_s()
        inside = start - EDGE_TOL_S <= t_to < end - EDGE_TOL_S
        if inside and not self.outage_active:
            self.outage_active = True
            out.event(self.name, "relay_outage_start", t_to, start_s=start, end_s=end,
                      stored_frames=len(self.store))
        elif self.outage_active and not inside:
            self.outage_active = False
            out.event(self.name, "relay_outage_end", t_to, start_s=start, end_s=end,
                      held_commands=len(self.held_commands), stored_frames=len(self.store))
            for held in self.held_commands:
                out.send("cmd", str(held["to"]), t_to, dict(held["command"]))
                self.counts.commands += 1
            self.held_commands = []
        edges = [t - t_to for t in (start, end) if t > t_to + EDGE_TOL_S]
        return min([RELAY_STEP_S, *edges])

    def after_step(self, t_from: float, t_to: float, out: Outbox) -> None:
        super().after_step(t_from, t_to, out)  # Queqiao-2's own frames, direct
        self.ground = links.relay_ground_link(t_to, self.ground.station)
        if not self.ground.up or not self.store or self.outage_active:
            return
        budget = max(1, int(self.ground.rate_bps * max(0.0, t_to - t_from) / FRAME_BITS))
        while self.store and budget > 0:
            frame = self.store.popleft()
            stamp = {"relayed_at_s": t_to, "deliver_at_s": t_to + self.ground.light_time_s,
                     "relay_playback": True}
            self._forward({**frame, **stamp}, t_to, out)
            self.counts.played_back += 1
            budget -= 1

    # --- views --------------------------------------------------------------------------
    def _state(self, t_s: float) -> tuple[Vec3, Vec3]:
        c = self._state_cache
        if c is None or c[0] != t_s:
            r, v = comms.queqiao2_state_mci(t_s)
            c = (t_s, (float(r[0]), float(r[1]), float(r[2])),
                 (float(v[0]), float(v[1]), float(v[2])))
            self._state_cache = c
        return c[1], c[2]

    def summary(self) -> Summary:
        r, v = self._state(self.t_s)
        dist = math.sqrt(sum(x * x for x in r))
        values = {"power_w": self.power_w, "battery_soc_ratio": self.battery.soc,
                  "unmet_load_wh": self.unmet_wh, "relay_store_frames": float(len(self.store)),
                  "relay_max_store_frames": float(self.counts.max_store),
                  "frames_forwarded": float(self.counts.forwarded),
                  "frames_relay_played_back": float(self.counts.played_back),
                  "commands_forwarded": float(self.counts.commands),
                  "ground_link_up": float(self.ground.up),
                  **downlink_values(self.downlink)}
        return Summary(phase=self.phase, frame="MCI", central_body="moon", r_m=r, v_m_s=v,
                       altitude_m=dist - R_MOON_M, speed_m_s=math.sqrt(sum(x * x for x in v)),
                       mass_kg=MASS_KG, values=values,
                       info={"ground_station": self.ground.station or "none"})
