"""The modelled downlink: on-board recorder, scheduler and ground's frame archive. Pure.

On board (:class:`Downlink`), per vehicle: one frame per clock step (or per
``telemetry_interval_s``), numbered ``frame_seq`` 1, 2, 3..., goes into the
recorder. Each step with a path (`dynamics.links`), up to
``max(1, rate_bps * dt / FRAME_BITS)`` frames leave, oldest first: playback of
the backlog, then the live frame. Each is stamped with the path, the station,
``sent_at_s`` and ``deliver_at_s = sent_at_s + light time`` (both legs for a
relayed frame). The path found at the end of a step is taken to have held
over the step: the clock's steps are what the twin resolves, and coasts are
long, so the rate limit bites only in the playback after a long blackout in
short steps. At least one frame leaves per step with a path, so ground always
hears a vehicle that has one (a frame is 8,920 bits, < 10 ms of any link).

Path changes raise ``link_acquired`` (path, station, previous) and
``link_lost`` (path, station) events.

On the ground (:class:`FrameArchive`), per origin: the set of frame numbers
received (as sorted ranges), duplicates, playback count and the gaps.

:func:`run_downlink` is what :meth:`VehicleCore.after_step` runs for every
vehicle core (not ground): build the frame from ``summary()``, ask
`links.link_for`, publish direct frames on ``dl.<vehicle>`` and relayed ones
on ``xfer.relay`` as ``{"type": "relay_frame", "frame": ...}``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.dynamics.links import NO_LINK, Link, link_for, moon_eci_m
from services.kernel.outbox import Outbox, Summary

# One CCSDS TM transfer frame of 1,115 octets (the length used with
# Reed-Solomon interleave 5, CCSDS 131.0-B): a frame is one telemetry snapshot.
FRAME_BITS = 8_920
# Recorder size in frames: 2 Gbit / FRAME_BITS, a small solid-state recorder
# (chosen; CE-6's is unpublished). Days of one-per-step frames fit many times.
RECORDER_CAPACITY_FRAMES = 224_000


@dataclass
class DownlinkStats:
    """Counters a vehicle reports (summary values, stamped on every frame sent)."""

    recorded: int = 0
    sent_live: int = 0
    played_back: int = 0
    dropped: int = 0  # overwritten in a full recorder: never delivered
    max_backlog: int = 0
    acquisitions: int = 0
    link_s: float = 0.0  # mission time with a path
    active_s: float = 0.0  # mission time the vehicle flew its own body

    def as_dict(self) -> dict[str, float]:
        return {"recorded": self.recorded, "sent_live": self.sent_live,
                "played_back": self.played_back, "dropped": self.dropped,
                "max_backlog": self.max_backlog, "acquisitions": self.acquisitions,
                "link_s": self.link_s, "active_s": self.active_s}


@dataclass
class Downlink:
    """A vehicle's recorder and downlink scheduler."""

    origin: str
    frame_bits: int = FRAME_BITS
    capacity_frames: int = RECORDER_CAPACITY_FRAMES
    next_seq: int = 1
    last_record_t_s: float = -math.inf
    link: Link = NO_LINK
    stats: DownlinkStats = field(default_factory=DownlinkStats)
    queue: deque[dict[str, Any]] = field(default_factory=deque)

    @property
    def backlog(self) -> int:
        return len(self.queue)

    def record(self, t_s: float, body: dict[str, Any]) -> None:
        """Put one frame in the recorder (the oldest is lost if it is full)."""
        if len(self.queue) >= self.capacity_frames:
            self.queue.popleft()
            self.stats.dropped += 1
        self.queue.append({**body, "origin": self.origin, "frame_seq": self.next_seq, "t_s": t_s})
        self.next_seq += 1
        self.stats.recorded += 1
        self.last_record_t_s = t_s

    def step(self, t_from: float, t_to: float, link: Link
             ) -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, Any]]]]:
        """Account the step, note path changes, send what the link allows."""
        dt = max(0.0, t_to - t_from)
        self.stats.active_s += dt
        events = self._path_events(link)
        self.link = link
        if not link.up:
            self.stats.max_backlog = max(self.stats.max_backlog, self.backlog)
            return [], events
        self.stats.link_s += dt
        budget = max(1, int(link.rate_bps * dt / self.frame_bits))
        return self.transmit(t_to, link, budget), events

    def transmit(self, t_s: float, link: Link, budget: int) -> list[dict[str, Any]]:
        """Send up to ``budget`` frames, oldest first, stamped for their path."""
        sent: list[dict[str, Any]] = []
        stamp = {"path": link.path, "station": link.station, "sent_at_s": t_s,
                 "deliver_at_s": t_s + link.light_time_s}
        while self.queue and len(sent) < budget:
            frame = self.queue.popleft()
            live = frame["t_s"] >= t_s
            if live:
                self.stats.sent_live += 1
            else:
                self.stats.played_back += 1
            sent.append({**frame, **stamp, "playback": not live})
        self.stats.max_backlog = max(self.stats.max_backlog, self.backlog)
        report = {**self.stats.as_dict(), "backlog": self.backlog}
        for frame in sent:
            frame["dl"] = report
        return sent

    def dump(self, t_s: float, path: str = "recovery") -> list[dict[str, Any]]:
        """Everything still on board, read out at once (the recovered capsule)."""
        return self.transmit(t_s, Link(path, path), len(self.queue))

    def _path_events(self, link: Link) -> list[tuple[str, dict[str, Any]]]:
        old = self.link
        if link.path == old.path:
            return []
        if not link.up:
            return [("link_lost", {"path": old.path, "station": old.station})]
        self.stats.acquisitions += 1
        return [("link_acquired", {"path": link.path, "station": link.station,
                                   "previous": old.path,
                                   "light_time_s": round(link.light_time_s, 6)})]

    # --- snapshots -----------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        lk = self.link
        return {"origin": self.origin, "next_seq": self.next_seq,
                "last_record_t_s": self.last_record_t_s if math.isfinite(self.last_record_t_s)
                else None,
                "link": [lk.path, lk.station, lk.light_time_s, lk.rate_bps,
                         lk.vehicle_to_relay_s, lk.relay_to_station_s],
                "stats": self.stats.as_dict(), "queue": list(self.queue)}

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> Downlink:
        p, st, lt, rate, l1, l2 = snap["link"]
        raw = snap["stats"]
        stats = DownlinkStats(
            recorded=int(raw["recorded"]), sent_live=int(raw["sent_live"]),
            played_back=int(raw["played_back"]), dropped=int(raw["dropped"]),
            max_backlog=int(raw["max_backlog"]), acquisitions=int(raw["acquisitions"]),
            link_s=float(raw["link_s"]), active_s=float(raw["active_s"]))
        last = snap["last_record_t_s"]
        return cls(origin=str(snap["origin"]), next_seq=int(snap["next_seq"]),
                   last_record_t_s=-math.inf if last is None else float(last),
                   link=Link(str(p), str(st), float(lt), float(rate), float(l1), float(l2)),
                   stats=stats, queue=deque(dict(f) for f in snap["queue"]))


# --- Ground: the archive ----------------------------------------------------------
@dataclass
class FrameArchive:
    """Frame numbers ground holds for one origin, as sorted disjoint [lo, hi] ranges."""

    ranges: list[list[int]] = field(default_factory=list)
    received: int = 0
    duplicates: int = 0
    played_back: int = 0
    relayed: int = 0
    last: dict[str, Any] = field(default_factory=dict)  # newest frame (by frame_seq)

    def add(self, frame: dict[str, Any]) -> bool:
        """Archive a frame; False if ground already held it."""
        seq = int(frame["frame_seq"])
        if not self._insert(seq):
            self.duplicates += 1
            return False
        self.received += 1
        self.played_back += bool(frame.get("playback"))
        self.relayed += frame.get("path") == "relay"
        if seq >= int(self.last.get("frame_seq", 0)):
            self.last = frame
        return True

    def _insert(self, seq: int) -> bool:
        rs = self.ranges
        lo, hi = 0, len(rs)
        while lo < hi:  # first range whose end is >= seq - 1
            mid = (lo + hi) // 2
            if rs[mid][1] < seq - 1:
                lo = mid + 1
            else:
                hi = mid
        i = lo
        if i < len(rs) and rs[i][0] <= seq <= rs[i][1]:
            return False
        if i < len(rs) and rs[i][1] == seq - 1:
            rs[i][1] = seq
            if i + 1 < len(rs) and rs[i + 1][0] == seq + 1:
                rs[i][1] = rs[i + 1][1]
                del rs[i + 1]
        elif i < len(rs) and rs[i][0] == seq + 1:
            rs[i][0] = seq
        else:
            rs.insert(i, [seq, seq])
        return True

    def gaps(self) -> list[tuple[int, int]]:
        """Missing frame numbers [lo, hi] below the newest received (from frame 1)."""
        out: list[tuple[int, int]] = []
        expect = 1
        for lo, hi in self.ranges:
            if lo > expect:
                out.append((expect, lo - 1))
            expect = hi + 1
        return out

    @property
    def missing(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.gaps())

    def snapshot(self) -> dict[str, Any]:
        return {"ranges": [list(r) for r in self.ranges], "received": self.received,
                "duplicates": self.duplicates, "played_back": self.played_back,
                "relayed": self.relayed, "last": self.last}

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> FrameArchive:
        return cls([list(map(int, r)) for r in snap["ranges"]], int(snap["received"]),
                   int(snap["duplicates"]), int(snap["played_back"]), int(snap["relayed"]),
                   dict(snap["last"]))


# --- The vehicle side glue ------------------------------------------------------------
def frame_body(s: Summary) -> dict[str, Any]:
    """What one frame carries: the vehicle's own view of its state."""
    return {"phase": s.phase, "frame": s.frame, "body": s.central_body, "r_m": list(s.r_m),
            "v_m_s": list(s.v_m_s), "alt_m": s.altitude_m, "speed_m_s": s.speed_m_s,
            "mass_kg": s.mass_kg, "propellant_kg": s.propellant_kg,
            "sample_mass_g": s.sample_mass_g, "values": dict(s.values)}


def r_eci_of(s: Summary, t_s: float) -> tuple[float, float, float]:
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
    for frame in frames:
        if frame["path"] == "relay":
            out.send("xfer", "relay", t_s, {"type": "relay_frame", "frame": frame})
        else:
            out.send("dl", origin, t_s, frame)


def downlink_values(dl: Downlink | None) -> dict[str, float]:
    """Summary values for the metrics (runtime._VALUE_GAUGES and update_metrics)."""
    if dl is None:
        return {}
    st = dl.stats
    return {"backlog_frames": float(dl.backlog), "link_up": float(dl.link.up),
            "link_light_time_s": dl.link.light_time_s,
            "frames_recorded": float(st.recorded), "frames_sent_live": float(st.sent_live),
            "frames_played_back": float(st.played_back), "frames_dropped": float(st.dropped),
            "max_backlog_frames": float(st.max_backlog),
            "link_acquisitions": float(st.acquisitions),
            "link_fraction": st.link_s / st.active_s if st.active_s > 0 else 0.0}


# --- Ground: archive, what path each vehicle has, telecommand routing ---------------
#: Command fields that mark a time-tagged command (docs/mission.md: uploaded
#: in an earlier pass and run on board).
TIME_TAGS = ("execute_at_s", "execute_at_utc")


@dataclass
class GroundLinks:
    """Ground's comms bookkeeping: frames in flight and archived, each vehicle's
    path as last seen in its downlink (frames and link events), held commands."""

    archives: dict[str, FrameArchive] = field(default_factory=dict)
    in_flight: list[dict[str, Any]] = field(default_factory=list)
    paths: dict[str, list[Any]] = field(default_factory=dict)  # vehicle -> [path, station, t]
    held: list[dict[str, Any]] = field(default_factory=list)
    routed: dict[str, int] = field(default_factory=dict)  # route -> commands

    # --- downlink -------------------------------------------------------------
    def on_downlink(self, body: dict[str, Any]) -> None:
        """A frame on dl.<vehicle>, or one relay forwarded (``type`` forwarded)."""
        frame = body["frame"] if body.get("type") == "forwarded" else body
        self.in_flight.append(frame)
        origin = str(frame["origin"])
        sent = float(frame["sent_at_s"])
        known = self.paths.get(origin)
        if known is None or sent >= known[2]:
            self.paths[origin] = [str(frame["path"]), str(frame["station"]), sent]

    def on_event(self, vehicle: str, name: str, body: dict[str, Any], t_s: float) -> None:
        if name == "link_acquired":
            self.paths[vehicle] = [str(body.get("path")), str(body.get("station", "")), t_s]
        elif name == "link_lost":
            self.paths[vehicle] = ["none", "", t_s]

    def deliver(self, t_s: float) -> int:
        """Archive the frames that have reached ground by ``t_s``; return how many."""
        if not self.in_flight:  # every step of a coast with nothing on its way
            return 0
        due = [f for f in self.in_flight if float(f["deliver_at_s"]) <= t_s + 1e-9]
        if not due:
            return 0
        self.in_flight = [f for f in self.in_flight if float(f["deliver_at_s"]) > t_s + 1e-9]
        due.sort(key=lambda f: (float(f["deliver_at_s"]), str(f["origin"]), int(f["frame_seq"])))
        for frame in due:
            self.archives.setdefault(str(frame["origin"]), FrameArchive()).add(frame)
        return len(due)

    # --- telecommands -----------------------------------------------------------
    def path_to(self, target: str) -> str:
        """``direct``, ``relay`` or ``none``. A vehicle never heard from rides
        stowed in a stack that has a link: its commands go direct."""
        known = self.paths.get(target)
        if known is None:
            return "direct"
        return "relay" if known[0] == "relay" else ("none" if known[0] == "none" else "direct")

    def route(self, target: str, command: dict[str, Any], t_s: float, out: Outbox,
              stored: bool = False) -> str:
        """Send a command by the target's path, or hold it. ``stored``: an
        absolute-time plan item, uploaded in an earlier pass like a time-tagged
        command; those go at once whatever the path."""
        tagged = stored or any(k in command for k in TIME_TAGS)
        path = "direct" if tagged else self.path_to(target)
        if path == "none":
            self.held.append({"target": target, "command": command, "held_at_s": t_s})
            out.event("ground", "command_held", t_s, target=target, op=command.get("op"),
                      plan_id=command.get("plan_id"))
            return "held"
        self._send(target, command, path, t_s, out)
        return path

    def release(self, t_s: float, out: Outbox) -> None:
        """Send held commands whose target has a path again, in the order held."""
        if not self.held:
            return
        keep = []
        for h in self.held:
            path = self.path_to(h["target"])
            if path == "none":
                keep.append(h)
                continue
            self._send(h["target"], h["command"], path, t_s, out)
            out.event("ground", "command_released", t_s, target=h["target"],
                      op=h["command"].get("op"), plan_id=h["command"].get("plan_id"), path=path,
                      held_s=t_s - float(h["held_at_s"]))
        self.held = keep

    def _send(self, target: str, command: dict[str, Any], path: str, t_s: float,
              out: Outbox) -> None:
        self.routed[path] = self.routed.get(path, 0) + 1
        if path == "relay":
            out.send("xfer", "relay", t_s, {"type": "relay_cmd", "to": target,
                                            "command": command})
        else:
            out.send("cmd", target, t_s, command)

    # --- report ---------------------------------------------------------------
    def values(self) -> dict[str, float]:
        """Per vehicle: frames received / played back / missing, and the vehicle's own
        counters from its newest frame (sent, max backlog, link time, acquisitions)."""
        out: dict[str, float] = {"frames_in_flight": float(len(self.in_flight)),
                                 "commands_held": float(len(self.held))}
        for route, n in sorted(self.routed.items()):
            out[f"commands_{route}"] = float(n)
        for origin, a in sorted(self.archives.items()):
            dl = a.last.get("dl", {})
            out[f"frames_received_{origin}"] = float(a.received)
            out[f"frames_played_back_{origin}"] = float(a.played_back)
            out[f"frames_relayed_{origin}"] = float(a.relayed)
            out[f"frames_missing_{origin}"] = float(a.missing)
            out[f"frames_duplicate_{origin}"] = float(a.duplicates)
            out[f"frames_sent_{origin}"] = float(dl.get("sent_live", 0) + dl.get("played_back", 0))
            out[f"frames_lost_{origin}"] = float(dl.get("dropped", 0))
            out[f"max_backlog_{origin}"] = float(dl.get("max_backlog", 0))
            out[f"link_acquisitions_{origin}"] = float(dl.get("acquisitions", 0))
            active = float(dl.get("active_s", 0.0))
            up = float(dl.get("link_s", 0.0))
            out[f"link_fraction_{origin}"] = up / active if active else 0.0
        return out

    def info(self) -> dict[str, str]:
        out = {}
        for origin, a in sorted(self.archives.items()):
            gaps = a.gaps()
            out[f"frames_{origin}"] = str(a.received)
            out[f"gaps_{origin}"] = ",".join(f"{lo}-{hi}" for lo, hi in gaps[:20]) or "none"
        for vehicle, (path, station, _t) in sorted(self.paths.items()):
            out[f"path_{vehicle}"] = f"{path}:{station}" if station else path
        return out

    def snapshot(self) -> dict[str, Any]:
        return {"archives": {k: a.snapshot() for k, a in sorted(self.archives.items())},
                "in_flight": self.in_flight, "paths": self.paths, "held": self.held,
                "routed": self.routed}

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> GroundLinks:
        return cls({k: FrameArchive.from_snapshot(v) for k, v in snap["archives"].items()},
                   list(snap["in_flight"]), {k: list(v) for k, v in snap["paths"].items()},
                   list(snap["held"]), dict(snap["routed"]))


# --- Metrics (called from ServiceRuntime.update_metrics) ------------------------------
_COUNTERS = (("frames_sent_live", "frames_sent"), ("frames_played_back", "frames_played_back"),
             ("frames_dropped", "frames_lost"))


@dataclass
class LinkMetrics:
    """Turns the downlink's summary values into the catalog's link metrics.

    Counters get the increase since the last step. A vehicle's ``link`` label
    is its own name (its path to ground, whichever it is); the series is removed
    while the vehicle has no body of its own, so a stowed or finished vehicle
    never reads as a lost link."""

    last: dict[str, float] = field(default_factory=dict)
    linked: bool = False

    def update(self, m: Any, service: str, values: dict[str, float]) -> None:
        """A vehicle's link gauges from its summary values."""
        if "link_up" not in values:
            if self.linked:
                m.link_up.remove(m.mission, m.service, service)
                m.light_time.remove(m.mission, m.service, service)
                self.linked = False
            return
        self.linked = True
        m.link_up.labels(m.mission, m.service, service).set(values["link_up"])
        m.light_time.labels(m.mission, m.service, service).set(values["link_light_time_s"])
        for key, family in _COUNTERS:
            self._inc(m, family, key, service, values.get(key, 0.0))

    def update_ground(self, m: Any, values: dict[str, float]) -> None:
        """Ground's frame counters per vehicle, from ground's summary values."""
        prefix = "frames_received_"
        for key, value in values.items():
            if key.startswith(prefix):
                self._inc(m, "frames_received", key, key[len(prefix):], value)

    def _inc(self, m: Any, family: str, key: str, vehicle: str, value: float) -> None:
        delta = value - self.last.get(key, 0.0)
        counter = m.child(family, vehicle)  # the series exists from the first step, at 0
        if delta > 0.0:
            counter.inc(delta)
        self.last[key] = max(value, self.last.get(key, 0.0))


def merge_downlink_values(core: Any, values: dict[str, float]) -> None:
    """Add a core's downlink values to its summary values (the core's own win)."""
    for key, value in downlink_values(core.downlink).items():
        values.setdefault(key, value)
