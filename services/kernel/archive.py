"""Ground's side of the downlink: frames on their way, frames archived. Pure.

A frame from ``dl.<vehicle>`` (or one the relay forwarded) is in flight until
its ``deliver_at_s`` has passed, then archived by origin and ``frame_seq``
(:class:`FrameArchive`: the numbers received as sorted ranges, duplicates,
playback count and the gaps). Frames and link events also tell ground the
path each vehicle was last heard on, which is what its telecommands go by
(:mod:`services.kernel.telecommand`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Slack on ``deliver_at_s``: a frame due at the end of a step is delivered in it.
_DUE_SLACK_S = 1e-9


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


@dataclass
class GroundArchive:
    """Frames in flight and archived per origin, and each vehicle's path as last
    heard in its downlink (frames and link events): ``[path, station, t_s]``."""

    archives: dict[str, FrameArchive] = field(default_factory=dict)
    in_flight: list[dict[str, Any]] = field(default_factory=list)
    paths: dict[str, list[Any]] = field(default_factory=dict)

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
        due = self._take_due(t_s)
        for frame in due:
            self.archives.setdefault(str(frame["origin"]), FrameArchive()).add(frame)
        return len(due)

    def deliver_new(self, t_s: float) -> list[dict[str, Any]]:
        """:meth:`deliver`, answering with the frames ground did not hold yet, in
        the order they reached it (what a mission control system is sent:
        services/gateway/)."""
        return [frame for frame in self._take_due(t_s)
                if self.archives.setdefault(str(frame["origin"]), FrameArchive()).add(frame)]

    def _take_due(self, t_s: float) -> list[dict[str, Any]]:
        """The frames in flight that have arrived by ``t_s``, in arrival order."""
        if not self.in_flight:  # every step of a coast with nothing on its way
            return []
        due = [f for f in self.in_flight if float(f["deliver_at_s"]) <= t_s + _DUE_SLACK_S]
        if not due:
            return []
        self.in_flight = [f for f in self.in_flight
                          if float(f["deliver_at_s"]) > t_s + _DUE_SLACK_S]
        due.sort(key=lambda f: (float(f["deliver_at_s"]), str(f["origin"]), int(f["frame_seq"])))
        return due

    def values(self) -> dict[str, float]:
        """Per vehicle: frames received / played back / missing, and the vehicle's own
        counters from its newest frame (sent, max backlog, link time, acquisitions)."""
        out: dict[str, float] = {}
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
                "in_flight": self.in_flight, "paths": self.paths}

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> GroundArchive:
        return cls({k: FrameArchive.from_snapshot(v) for k, v in snap["archives"].items()},
                   list(snap["in_flight"]), {k: list(v) for k, v in snap["paths"].items()})
