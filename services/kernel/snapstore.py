"""Coordinated snapshots in JetStream: what a rollback restores.

Why a stream and not a KV bucket: a commit names one snapshot per service by
its stream sequence number, so a service's newer, not yet committed snapshot
never hides the committed one (a KV key would hold only the newest). One
stream per mission, file storage, subjects ``twin.<m>.snap.<service>`` and
``twin.<m>.snap.commit``, keeping the last ``keep`` of each
(:data:`DEFAULT_KEEP`, ``TWIN_SNAPSHOT_KEEP``): the committed set and the one
being written are all a rollback needs; the older ones are the history a
what-if fork branches from (services/ground/fork.py), so a fork can start at
any instant since the oldest commit kept.

Snapshots are orjson then zlib (level 1): the largest, the lander's near the
end of the mission, is ~480 kB of JSON and ~60 kB compressed, well under
NATS's 1 MB default message limit. Each carries the SHA-256 of its bytes in the
commit, checked before a restore.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import Any

import orjson
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from services.kernel.bus import add_or_update_stream
from services.kernel.errors import TwinError
from services.kernel.subjects import Subjects

#: Snapshots kept per service (and commits). A rollback needs two (the committed
#: set, the next being written); the rest are history for forks. The nominal
#: mission at full speed commits ~10 times (every 1,000 steps or 2 wall s), so 64
#: keep all of it; near the end a commit is ~0.3 MB of compressed snapshots, so
#: the history stays under ~20 MB of file storage per mission.
DEFAULT_KEEP = 64
#: Fewer would let a new, uncommitted snapshot evict the committed one.
MIN_KEEP = 3


class SnapshotError(TwinError):
    """A snapshot that cannot be read back as committed."""


@dataclass(frozen=True, slots=True)
class Stored:
    """Where a service's snapshot lies, and how to know it again."""

    seq: int  # stream sequence number
    digest: str  # SHA-256 of the stored bytes, hex
    size: int  # stored bytes

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "digest": self.digest, "bytes": self.size}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Stored:
        return cls(int(raw["seq"]), str(raw["digest"]), int(raw["bytes"]))


def encode(snapshot: dict[str, Any]) -> bytes:
    return zlib.compress(orjson.dumps(snapshot, option=orjson.OPT_SERIALIZE_NUMPY), 1)


def decode(data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(zlib.decompress(data))
    return out


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SnapStore:
    """One mission's snapshots and commits in JetStream."""

    def __init__(self, js: JetStreamContext, subjects: Subjects) -> None:
        self.js, self.subjects = js, subjects
        self.stream = subjects.snapshot_stream

    async def ensure(self, replicas: int = 1, keep: int = DEFAULT_KEEP) -> None:
        """Create the stream (idempotent: every service may try)."""
        cfg = StreamConfig(name=self.stream, subjects=[self.subjects.all_of("snap")],
                           retention=RetentionPolicy.LIMITS, storage=StorageType.FILE,
                           max_msgs_per_subject=max(keep, MIN_KEEP), num_replicas=replicas)
        await add_or_update_stream(self.js, cfg)

    async def put(self, service: str, snapshot: dict[str, Any]) -> Stored:
        data = encode(snapshot)
        ack = await self.js.publish(self.subjects.snapshot(service), data, stream=self.stream)
        return Stored(ack.seq, digest(data), len(data))

    async def get(self, service: str, where: Stored) -> dict[str, Any]:
        """The snapshot ``where`` names, checked against its digest."""
        try:
            msg = await self.js.get_msg(self.stream, seq=where.seq)
        except NotFoundError:
            raise SnapshotError(f"{service}'s snapshot #{where.seq} is gone from "
                                f"{self.stream}") from None
        data = msg.data or b""
        if msg.subject != self.subjects.snapshot(service) or digest(data) != where.digest:
            raise SnapshotError(f"{service}'s snapshot #{where.seq} in {self.stream} is not "
                                "the one committed (subject or digest differs)")
        return decode(data)

    async def commit(self, record: dict[str, Any]) -> None:
        await self.js.publish(self.subjects.commit, orjson.dumps(record), stream=self.stream)

    async def last_commit(self) -> dict[str, Any] | None:
        """The newest commit record, or None before the first (or with no stream)."""
        try:
            msg = await self.js.get_last_msg(self.stream, self.subjects.commit)
        except NotFoundError:
            return None
        record: dict[str, Any] = orjson.loads(msg.data or b"{}")
        return record

    async def commits(self) -> list[dict[str, Any]]:
        """Every commit record the stream still holds, oldest first (a direct
        get of the next commit after each: no consumer, so only the ``get``
        grant is needed, which a fork's ground has on its parent's stream)."""
        out: list[dict[str, Any]] = []
        seq = 1
        while True:
            try:
                msg = await self.js.get_msg(self.stream, seq=seq, subject=self.subjects.commit,
                                            next=True)
            except NotFoundError:
                return out
            out.append(orjson.loads(msg.data or b"{}"))
            assert msg.seq is not None
            seq = msg.seq + 1


def rehome(snapshot: dict[str, Any], mission: str) -> dict[str, Any]:
    """A service's snapshot as it would be in ``mission``: the same state, with the
    mission id in it and in every message it holds replaced (a fork's copy of its
    parent's committed snapshot; the runtime refuses a snapshot of another mission)."""
    held = [[mission, *raw[1:]] for raw in snapshot.get("held", ())]
    return {**snapshot, "mission": mission, "held": held}
