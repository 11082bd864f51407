"""The NATS subject scheme: ``twin.<mission>.<kind>.<service>``.

Every subject carries the mission id, so several missions can share one NATS.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "twin"

#: Kinds of subject and the transport each rides on.
CLOCK_TICK = "clock.tick"
CLOCK_ACK = "clock.ack"
CLOCK_HELLO = "clock.hello"
CLOCK_ROLL = "clock.roll"
CLOCK_RESTORE = "clock.restore"
SNAPSHOT = "snap"
OPS = "ops"
TELEMETRY = "tm"
EVENT = "evt"
COMMAND = "cmd"
TRANSFER = "xfer"
DOWNLINK = "dl"
FORK = "fork"


@dataclass(frozen=True)
class Subjects:
    mission: str

    def _s(self, kind: str, service: str | None = None) -> str:
        base = f"{PREFIX}.{self.mission}.{kind}"
        return f"{base}.{service}" if service else base

    @property
    def tick(self) -> str:
        return self._s(CLOCK_TICK)

    @property
    def roll(self) -> str:
        return self._s(CLOCK_ROLL)

    def ack(self, service: str) -> str:
        return self._s(CLOCK_ACK, service)

    def hello(self, service: str) -> str:
        return self._s(CLOCK_HELLO, service)

    @property
    def restore(self) -> str:
        """Ground to every service: restore a committed snapshot (a rollback)."""
        return self._s(CLOCK_RESTORE)

    def snapshot(self, service: str) -> str:
        """A service's snapshots (JetStream, :attr:`snapshot_stream`)."""
        return self._s(SNAPSHOT, service)

    @property
    def commit(self) -> str:
        """Ground's commit records: which snapshots form a consistent set."""
        return self._s(SNAPSHOT, "commit")

    @property
    def snapshot_stream(self) -> str:
        """JetStream stream holding this mission's snapshots and commits."""
        return f"{self.stream_name}_SNAP"

    def ops(self, service: str) -> str:
        """What the platform did to the mission (rollbacks, restores): kept in the
        mission log beside the events, never part of the mission's report."""
        return self._s(OPS, service)

    def fork(self, child: str) -> str:
        """Ground's record of a what-if fork made from this mission, in the mission
        log (services/ground/fork.py): the child's ground reads it to start."""
        return self._s(FORK, child)

    def telemetry(self, service: str) -> str:
        return self._s(TELEMETRY, service)

    def event(self, service: str) -> str:
        return self._s(EVENT, service)

    def command(self, service: str) -> str:
        return self._s(COMMAND, service)

    def transfer(self, service: str) -> str:
        return self._s(TRANSFER, service)

    def downlink(self, service: str) -> str:
        """The modelled downlink (frames that crossed a link), unlike ``tm`` (truth)."""
        return self._s(DOWNLINK, service)

    def of(self, kind: str, service: str) -> str:
        """The subject of one kind (``evt``, ``cmd``, ``xfer``, ``dl``, ``tm``) and
        service: where an outbox item goes."""
        return self._s(kind, service)

    def all_of(self, kind: str) -> str:
        return self._s(kind, "*")

    @property
    def clock_root(self) -> str:
        """Root of the clock protocol's subjects (tick, ack, hello, roll, restore)."""
        return self._s("clock")

    @property
    def everything(self) -> str:
        return f"{PREFIX}.{self.mission}.>"

    @property
    def stream_name(self) -> str:
        """JetStream stream holding the mission log (events) of this mission."""
        return f"TWIN_{self.mission.upper().replace('-', '_')}"

    def kind_of(self, subject: str) -> str:
        """The kind part of one of this mission's subjects (``tm``, ``clock.ack``...)."""
        rest = subject[len(PREFIX) + len(self.mission) + 2:]
        head, _, tail = rest.partition(".")
        if head == "clock":
            return "clock." + tail.partition(".")[0]
        return head


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: ``*`` is one token, ``>`` the rest."""
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)
