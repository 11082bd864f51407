"""A vehicle's on-board recorder and downlink scheduler. Pure.

Per vehicle: one frame per clock step (or per ``telemetry_interval_s``),
numbered ``frame_seq`` 1, 2, 3..., goes into the recorder. Each step with a
path (`dynamics.links`), up to ``max(1, rate_bps * dt / FRAME_BITS)`` frames
leave, oldest first: playback of the backlog, then the live frame. Each is
stamped with the path, the station, ``sent_at_s`` and ``deliver_at_s =
sent_at_s + light time`` (both legs for a relayed frame). The path found at
the end of a step is taken to have held over the step: the clock's steps are
what the twin resolves, and coasts are long, so the rate limit bites only in
the playback after a long blackout in short steps. At least one frame leaves
per step with a path, so ground always hears a vehicle that has one (a frame
is 8,920 bits, < 10 ms of any link).

Path changes raise ``link_acquired`` (path, station, previous) and
``link_lost`` (path, station) events. What runs this each step is
:func:`services.kernel.radio.run_downlink`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from services.dynamics.links import NO_LINK, Link

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


def downlink_values(dl: Downlink | None) -> dict[str, float]:
    """Summary values for the metrics (gauges.VALUE_GAUGES and ServiceGauges.refresh)."""
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
