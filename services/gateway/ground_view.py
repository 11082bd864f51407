"""What ground hears, as CCSDS packets for a mission control system. Pure.

The gateway sees what ground sees, not the simulation's truth. Frames on
``dl.*`` are on their way until their ``deliver_at_s``. A frame has arrived
once ground's clock has passed that time. The gateway reads that clock from
the messages themselves: a frame or an event stamped ``t`` was published in a
step that ended at ``t``, and ground, which takes each step last, archives
what has arrived by then in that same step. So every message delivers the
frames due by its time. Queqiao-2 sends or forwards frames nearly every step,
so this is as prompt as the clock's ticks, without a fifth more messages to
hear. Each frame is sent once, in the order ground archives frames, using the
same :class:`~services.kernel.archive.GroundArchive` ground keeps. After a
rollback the same frames come again, and the gateway drops them as ground
does.

Every mission event becomes an EVENT packet once; an event sent again after a
rollback keeps its source and sequence number, so the gateway drops it.

Each vehicle's path, as ground last heard it, goes out as a LINKS packet
whenever it changes. Ground's events about an operator's telecommand (its id
is ``command_id``) become CMD_ACK packets:

* ``command_uplinked`` or ``command_released`` on a path: **uplinked**;
* the vehicle's ``command_executed``: **executed**;
* ``command_rejected``: **failed**, with the reason.

**Accepted** comes from ground's answer to the Uplink call (service.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.gateway import packets
from services.kernel.archive import GroundArchive
from services.kernel.config import VEHICLES

#: CMD_ACK stages (docs/ccsds.md).
ACCEPTED, UPLINKED, EXECUTED, FAILED = "accepted", "uplinked", "executed", "failed"
_ROUTED = ("direct", "relay")


@dataclass
class GroundView:
    """The packets of what ground hears, each sequence-counted per APID."""

    archive: GroundArchive = field(default_factory=GroundArchive)
    seqs: packets.SequenceCounts = field(default_factory=packets.SequenceCounts)
    #: (source, sequence number) of every event sent: a repeat is dropped.
    events_sent: set[tuple[str, int]] = field(default_factory=set)
    links_sent: dict[str, str] = field(default_factory=dict)
    t_s: float = 0.0  # ground's clock, as far as the gateway knows

    # --- what arrives on the bus ----------------------------------------------------
    def on_downlink(self, body: dict[str, Any], t_s: float) -> list[bytes]:
        """A frame on ``dl.<vehicle>`` (or one Queqiao-2 forwarded), published at
        ``t_s``: the frames that reached ground by then."""
        self.archive.on_downlink(body)
        return self.clock(t_s)

    def clock(self, t_s: float) -> list[bytes]:
        """Ground's clock has reached ``t_s``: the frames that arrived by then."""
        if t_s <= self.t_s:
            return []  # nothing new can have arrived (or a rollback runs again)
        self.t_s = t_s
        return self._delivered(t_s)

    def on_event(self, source: str, seq: int, t_s: float, name: str,
                 body: Mapping[str, Any]) -> list[bytes]:
        """A mission event: its packet, and what it says of links and commands."""
        if (source, seq) in self.events_sent:
            return []
        self.events_sent.add((source, seq))
        delivered = self.clock(t_s)
        out = [packets.event_packet(source, name, body, t_s,
                                    self.seqs.next(packets.APIDS[source]))]
        self.archive.on_event(source, name, dict(body), t_s)
        ack = self._ack_of(name, body, t_s)
        if ack is not None:
            out.append(ack)
        return delivered + out + self._links_if_changed(t_s)

    def ack(self, command_id: int, stage: str, reason: str, t_s: float) -> bytes:
        return packets.ack_packet(command_id, stage, reason, t_s,
                                  self.seqs.next(packets.APIDS["ground"]))

    # --- inside --------------------------------------------------------------------
    def _delivered(self, t_s: float) -> list[bytes]:
        out = [packets.hk_packet(frame, self.seqs.next(packets.APIDS[str(frame["origin"])]))
               for frame in self.archive.deliver_new(t_s)]
        return out + self._links_if_changed(t_s)

    def _links_if_changed(self, t_s: float) -> list[bytes]:
        now = {v: str(self.archive.paths[v][0]) if v in self.archive.paths else "none"
               for v in VEHICLES}
        if now == self.links_sent:
            return []
        self.links_sent = now
        return [packets.links_packet(now, t_s, self.seqs.next(packets.APIDS["ground"]))]

    def _ack_of(self, name: str, body: Mapping[str, Any], t_s: float) -> bytes | None:
        command_id = body.get("command_id")
        if not isinstance(command_id, int) or isinstance(command_id, bool) or command_id <= 0:
            return None
        if name in ("command_uplinked", "command_released") and body.get("path") in _ROUTED:
            return self.ack(command_id, UPLINKED, "", t_s)
        if name == "command_executed":
            return self.ack(command_id, EXECUTED, "", t_s)
        if name == "command_rejected":
            return self.ack(command_id, FAILED, str(body.get("reason", "")), t_s)
        return None
