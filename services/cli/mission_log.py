"""What the CLI reads from the bus during and after a run.

* :class:`MissionLog` reads this run's events back from the JetStream stream
  (``Subjects(mission).stream_name``). It notes the stream's last sequence
  before the services start and reads only what comes after, so earlier runs
  with the same mission id on the same server never leak into the report
  (and their log is left alone).
* :class:`TelemetryRecorder` listens to the truth telemetry ``tm.*`` (core
  NATS) and keeps a downsampled copy for the plots; it also follows ``evt.*``
  for the live view (last event, each vehicle's link).

Both must be attached before the services start: the clock starts as soon as
every service has said hello, and core NATS keeps nothing for late comers.

Errors::

    MissionLogError    NATS unreachable, or the stream could not be read
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import nats
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from services.cli.report import LoggedEvent, event_from_envelope
from services.kernel.envelope import Envelope, decode
from services.kernel.errors import EnvelopeError
from services.kernel.natsauth import Publishers
from services.kernel.subjects import Subjects

log = logging.getLogger("twin.cli.mission_log")

__all__ = [
    "Downsampler",
    "MissionLog",
    "MissionLogError",
    "TelemetryRecorder",
    "read_telemetry",
    "telemetry_frames",
    "telemetry_path",
    "telemetry_record",
    "write_telemetry",
]

_FETCH_BATCH = 2000
_FETCH_TIMEOUT_S = 2.0
#: Fine sampling where things change fast: below these heights above the
#: central body, or with thrust, heating or sensed acceleration.
_FINE_ALT_M = {"moon": 50_000.0, "earth": 150_000.0}
_SENSED_ACCEL_FLOOR_M_S2 = 0.01


class MissionLogError(RuntimeError):
    """The bus or the mission log stream could not be used."""


# --- telemetry downsampling (pure) ---------------------------------------------


@dataclass
class Downsampler:
    """Decides which truth-telemetry frames the plots keep.

    Every frame in fast phases (thrust, heating, low over the body); otherwise
    the first frame in each `grid_s` bucket of mission time. The grid is the
    same for every vehicle and the clock is lock-step, so two vehicles' kept
    coast frames fall on the same instants (the rendezvous plot pairs them).
    A phase change is always kept.
    """

    grid_s: float = 60.0
    _bucket: dict[str, int] = field(default_factory=dict)
    _phase: dict[str, str] = field(default_factory=dict)

    def fine(self, body: Mapping[str, Any]) -> bool:
        values = body.get("values") or {}
        if values.get("thrust_n", 0.0) > 0.0 or values.get("heat_flux_w_m2", 0.0) > 0.0:
            return True
        if values.get("sensed_accel_m_s2", 0.0) > _SENSED_ACCEL_FLOOR_M_S2:
            return True
        limit = _FINE_ALT_M.get(str(body.get("body", "")))
        return limit is not None and float(body.get("alt_m", math.inf)) < limit

    def keep(self, vehicle: str, t_s: float, body: Mapping[str, Any]) -> bool:
        phase = str(body.get("phase", ""))
        changed = self._phase.get(vehicle) != phase
        self._phase[vehicle] = phase
        if not body.get("body"):  # stowed or ground: no state to plot
            return changed
        bucket = math.floor(t_s / self.grid_s)
        new_bucket = self._bucket.get(vehicle) != bucket
        self._bucket[vehicle] = bucket
        return changed or new_bucket or self.fine(body)


def telemetry_frames(env: Envelope) -> list[dict[str, Any]]:
    """The frames of one ``tm`` message (one per step, oldest first) as objects
    named by the message's ``fields``; a frame that does not fit them, or has no
    mission time and step, is left out."""
    fields, frames = env.body.get("fields"), env.body.get("frames")
    if not (isinstance(fields, list) and isinstance(frames, list)
            and all(isinstance(f, str) for f in fields)):
        return []
    named = (dict(zip(fields, f, strict=True)) for f in frames
             if isinstance(f, list) and len(f) == len(fields))
    return [f for f in named
            if isinstance(f.get("t"), int | float) and isinstance(f.get("step"), int)]


def telemetry_record(vehicle: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """One kept frame: time and vehicle first, then the telemetry body."""
    values = body.get("values") or {}
    return {"t_s": float(body["t"]), "vehicle": vehicle, "step": body["step"],
            "phase": body.get("phase", ""),
            "frame": body.get("frame", ""), "body": body.get("body", ""),
            "r_m": body.get("r_m"), "v_m_s": body.get("v_m_s"), "alt_m": body.get("alt_m"),
            "speed_m_s": body.get("speed_m_s"), "mass_kg": body.get("mass_kg"),
            "propellant_kg": body.get("propellant_kg"),
            "sample_mass_g": body.get("sample_mass_g"),
            "values": {k: values[k] for k in sorted(values)}}


def telemetry_path(report_path: Path) -> Path:
    """``<report stem>.telemetry.jsonl`` next to the report."""
    return report_path.with_name(f"{report_path.stem}.telemetry.jsonl")


def write_telemetry(path: Path, records: Iterable[Mapping[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(records, key=lambda r: (r["t_s"], r["vehicle"], r["step"]))
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in ordered))
    return path


def read_telemetry(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


# --- the bus side ---------------------------------------------------------------


class _Connection:
    """One NATS connection of the CLI's own; closing twice is safe."""

    def __init__(self, nats_url: str, mission_id: str, name: str,
                 options: Mapping[str, Any] | None = None) -> None:
        #: More ``nats.connect`` arguments: TLS, creds (Security.nats_options).
        self.options = dict(options or {})
        self.urls = [u.strip() for u in nats_url.split(",") if u.strip()]
        self.mission_id = mission_id
        self.subjects = Subjects(mission_id)
        self.name = name
        self.nc: Client | None = None

    async def connect(self) -> Client:
        try:
            self.nc = await nats.connect(servers=self.urls, name=self.name,
                                         max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                         pending_size=64 * 1024 * 1024, **self.options)
        except Exception as exc:  # nats-py raises several unrelated types here
            raise MissionLogError(f"cannot connect to NATS at {', '.join(self.urls)}: "
                                  f"{exc!r}") from exc
        return self.nc

    async def close(self) -> None:
        nc, self.nc = self.nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.drain()


class MissionLog:
    """This run's events, read back from the mission-log stream.

    ``async with MissionLog(url, mission) as log:`` before the services
    start (it notes where the stream stands), then ``await log.read()``
    once the clock has finished.
    """

    def __init__(self, nats_url: str, mission_id: str, start_seq: int | None = None, *,
                 options: Mapping[str, Any] | None = None) -> None:
        self._conn = _Connection(nats_url, mission_id, f"twin-cli-{mission_id}-log", options)
        #: The stream's last sequence before this run (given: a resumed run's,
        #: whose report reads its log from its first start).
        self.start_seq = start_seq if start_seq is not None else 0
        self._given = start_seq is not None

    async def __aenter__(self) -> Self:
        await self._conn.connect()
        if not self._given:
            self.start_seq = await self._last_seq()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._conn.close()

    async def _last_seq(self) -> int:
        assert self._conn.nc is not None
        try:
            info = await self._conn.nc.jetstream().stream_info(self._conn.subjects.stream_name)
        except NotFoundError:
            return 0  # the services create it; this run is all it will hold
        return int(info.state.last_seq)

    async def read(self) -> list[LoggedEvent]:
        """Every event this run published, in the report's order."""
        return sorted((event_from_envelope(env) for env in await self.read_envelopes()),
                      key=lambda e: e.order_key)

    async def read_envelopes(self) -> list[Envelope]:
        nc = self._conn.nc
        if nc is None:
            raise MissionLogError("the mission log is not open")
        last = await self._last_seq()
        if last <= self.start_seq:
            return []
        js = nc.jetstream()
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                opt_start_seq=self.start_seq + 1, ack_policy=AckPolicy.NONE,
                                inactive_threshold=30.0, mem_storage=True)
        subjects = self._conn.subjects
        sub = await js.pull_subscribe(subjects.all_of("evt"), stream=subjects.stream_name,
                                      config=config)
        try:
            return await self._fetch_all(sub)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _fetch_all(self, sub: Any) -> list[Envelope]:
        """Every event the consumer has (the stream also holds ``ops`` records,
        which its filter leaves out: counted by what is pending, not by the
        stream's last sequence)."""
        out: list[Envelope] = []
        if (await sub.consumer_info()).num_pending == 0:
            return out
        # The services' source check, applied to the log too: an event whose
        # envelope claims a source that may not publish its subject (a vehicle
        # forging another's event) is not the mission's, so not the report's.
        publishers = Publishers(self._conn.mission_id)
        forged = 0
        while True:
            try:
                msgs: list[Msg] = await sub.fetch(_FETCH_BATCH, timeout=_FETCH_TIMEOUT_S)
            except TimeoutError as exc:
                raise MissionLogError(f"the mission log stopped after {len(out)} events") \
                    from exc
            for msg in msgs:
                with contextlib.suppress(EnvelopeError):
                    env = decode(msg.data, mission=self._conn.mission_id)
                    if env.src in publishers.of(msg.subject):
                        out.append(env)
                    else:
                        forged += 1
            if msgs and msgs[-1].metadata.num_pending == 0:
                if forged:
                    log.warning("mission log: events whose source may not publish their "
                                "subject left out of the report", extra={"count": forged})
                return out


class TelemetryRecorder:
    """Downsampled truth telemetry for the plots, and live facts for the view."""

    def __init__(self, nats_url: str, mission_id: str, grid_s: float = 60.0,
                 recent_events: int = 5, *, options: Mapping[str, Any] | None = None) -> None:
        self._conn = _Connection(nats_url, mission_id, f"twin-cli-{mission_id}-tm", options)
        self.sampler = Downsampler(grid_s)
        self.records: list[dict[str, Any]] = []
        self.frames_seen = 0
        self.links: dict[str, str] = {}  # vehicle -> "direct:Kashgar", "relay:...", "none"
        self.recent: deque[str] = deque(maxlen=recent_events)
        # Every event `recent` shows, with its mission time, for plain output
        # that writes each one (recent forgets, and carries no time).
        self.timeline: list[tuple[float, str]] = []
        self._subs: list[Subscription] = []
        self._last_step: dict[str, int] = {}  # newest frame's step per vehicle

    async def __aenter__(self) -> Self:
        nc = await self._conn.connect()
        subjects = self._conn.subjects
        self._subs = [
            await nc.subscribe(subjects.all_of("tm"), cb=self._on_tm,
                               pending_msgs_limit=1_000_000,
                               pending_bytes_limit=512 * 1024 * 1024),
            await nc.subscribe(subjects.all_of("evt"), cb=self._on_evt,
                               pending_msgs_limit=100_000),
            await nc.subscribe(subjects.all_of("ops"), cb=self._on_ops),
        ]
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._conn.close()

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until everything published so far has been handled here.

        The server answers the flush's PING after the messages routed to us
        before it; then the callbacks still have to work through the queue.
        """
        if self._conn.nc is None:
            return
        with contextlib.suppress(Exception):
            await self._conn.nc.flush(timeout=math.ceil(timeout_s))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        # nats-py offers no event for "queue empty": poll its counter briefly.
        while any(sub.pending_msgs for sub in self._subs) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    def _decode(self, msg: Msg) -> Envelope | None:
        try:
            return decode(msg.data, mission=self._conn.mission_id)
        except EnvelopeError:
            return None

    async def _on_tm(self, msg: Msg) -> None:
        env = self._decode(msg)
        if env is None or env.src == "ground":  # ground flies nothing
            return
        last = self._last_step.get(env.src, -1)
        for frame in telemetry_frames(env):
            if frame["step"] <= last:  # run again after a rollback: kept already
                continue
            last = self._last_step[env.src] = frame["step"]
            self.frames_seen += 1
            if self.sampler.keep(env.src, frame["t"], frame):
                self.records.append(telemetry_record(env.src, frame))

    async def _on_ops(self, msg: Msg) -> None:
        """A rollback seen in the live view and as a line (restores are in the logs)."""
        env = self._decode(msg)
        if env is None or env.body.get("name") not in ("rollback", "rolled_back"):
            return
        body = env.body
        what = (f"rollback ({body.get('reason')}) to step {body.get('to_step')}"
                if body["name"] == "rollback" else f"rolled back, running again ({env.src})")
        self.recent.append(what)
        self.timeline.append((env.t, self.recent[-1]))

    async def _on_evt(self, msg: Msg) -> None:
        env = self._decode(msg)
        if env is None:
            return
        name = str(env.body.get("name", ""))
        if name == "link_acquired":
            self.links[env.src] = f"{env.body.get('path', '?')}:{env.body.get('station', '?')}"
        elif name == "link_lost":
            self.links[env.src] = "none"
        if not name.startswith(("link_", "plan_item", "burn_")):
            self.recent.append(f"{name} ({env.src})")
            self.timeline.append((env.t, self.recent[-1]))

    def write(self, path: Path) -> Path:
        return write_telemetry(path, self.records)
