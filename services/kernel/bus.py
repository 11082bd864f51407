"""The service's side of NATS: envelopes out, validated envelopes in.

A malformed or foreign message is counted (``twin_bus_decode_errors_total``),
logged with its reason and dropped; it never reaches service code. So is one
whose envelope ``src`` may not publish its subject by the permission table
(services/kernel/natsauth.py), when the check is on: reason ``wrong_source``,
a forged sender. Every drop is counted; the log says the first of each reason
at once and then at most one line a :data:`DROP_LOG_PERIOD_S` (:class:`DropLog`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from services.kernel.envelope import Envelope, Sequencer, decode, encode_fields
from services.kernel.errors import EnvelopeError, TwinError
from services.kernel.metrics import Metrics
from services.kernel.natsauth import Publishers
from services.kernel.subjects import Subjects, subject_matches

log = logging.getLogger("twin.bus")

__all__ = ["Bus", "subject_matches"]

#: Wall seconds between pings to the server, two of which may go unanswered.
PING_INTERVAL_S = 5
#: Wall seconds one mission-log publish waits for its acknowledgement, and how
#: long it goes on trying while the server is away before the service fails.
DURABLE_TIMEOUT_S = 5.0
DURABLE_RETRY_S = 120.0

#: Wall seconds the mission log remembers event ids: a day covers a rollback
#: (seconds) and a resume after a full stop (``twin up --resume``).
DEDUP_WINDOW_S = 86_400.0

#: Largest message the mission log keeps. Every subject it holds (``evt``,
#: ``ops``) is one a vehicle may publish on, up to the server's max_payload
#: (1 MiB), and the log keeps each for 30 days: without a limit one identity
#: could fill the account's JetStream storage, which every mission shares.
#: The nominal mission's largest event is 483 bytes (measured: seed 6, 1,618
#: events, 0.5 MB in all).
MISSION_LOG_MAX_MSG_BYTES = 64 * 1024

#: Wall seconds between looks for a stream ground has not created yet.
STREAM_POLL_S = 0.1

CONTROL_KINDS = frozenset({"tick", "ack", "hello", "roll", "restore", "ops"})

#: Wall seconds between two log lines about dropped messages of one reason. A
#: publisher that sends garbage (a fault, or a compromised identity within its
#: permissions) would otherwise write a WARNING per message: 10,000 a second
#: fill a service's log and slow it more than the garbage itself.
DROP_LOG_PERIOD_S = 10.0


class StreamsMissing(TwinError):
    def __init__(self, stream: str, waited_s: float) -> None:
        self.stream, self.waited_s = stream, waited_s
        super().__init__(f"stream {stream} still missing after {waited_s:.0f} s: ground "
                         "creates it at start; start ground (or check its log)")


Handler = Callable[[Envelope, str], Awaitable[None] | None]


class DropLog:
    """Log lines about dropped messages: the first of a reason at once, then at
    most one per :data:`DROP_LOG_PERIOD_S`, saying how many went unlogged since
    (``suppressed``). The metric counts every one; this only spares the log."""

    def __init__(self, period_s: float = DROP_LOG_PERIOD_S) -> None:
        self.period_s = period_s
        self._next: dict[str, float] = {}  # reason -> monotonic time of its next line
        self._quiet: Counter[str] = Counter()  # reason -> drops not logged since its last line

    def dropped(self, message: str, reason: str, extra: dict[str, Any]) -> None:
        now = time.monotonic()  # wall time: paces log lines only
        if now < self._next.get(reason, 0.0):
            self._quiet[reason] += 1
            return
        self._next[reason] = now + self.period_s
        log.warning(message, extra={**extra, "reason": reason,
                                    "suppressed": self._quiet.pop(reason, 0)})


class Bus:
    def __init__(self, mission: str, source: str, metrics: Metrics,
                 on_failure: Callable[[str, BaseException], None]) -> None:
        self.mission, self.source = mission, source
        #: Part of each event's id in the mission log (ServiceConfig.run_id).
        self.run_id = ""
        self.subjects = Subjects(mission)
        #: Whose envelopes each subject may carry (the envelope source check),
        #: None for no check. Only meaningful beside NATS permissions, which
        #: bind the subject to the publisher: on a plaintext bus anyone may
        #: publish anything with any ``src`` (ServiceRuntime turns it on when secure).
        self.publishers: Publishers | None = None
        self.metrics = metrics
        # Mission data (evt, cmd, xfer, dl), truth telemetry (tm) and clock
        # control (tick, ack, hello, roll) count separately: how often a roll
        # call repeats, and how many telemetry frames share a message, depend on
        # wall time, and must not shift the sequence numbers of the mission's data.
        self.seq = Sequencer()
        self.tm_seq = Sequencer()
        self.control_seq = Sequencer()
        self.nc: Client | None = None
        self.closing = False
        self.js: JetStreamContext | None = None
        self._labels = metrics.labels()
        self.drop_log = DropLog()
        #: Called when a handler raises: the runtime counts it and stops the service.
        self.on_failure = on_failure
        #: Called after a reconnect (messages may have been lost meanwhile).
        self.on_reconnect: Callable[[], Awaitable[None]] | None = None

    async def connect(self, urls: tuple[str, ...], name: str, **options: Any) -> None:
        """Connect; ``options`` (TLS, creds, inbox prefix: Security.nats_options)
        go to ``nats.connect`` as given."""
        async def reconnected() -> None:
            self.metrics.child("reconnects").inc()
            url = str(self.nc.connected_url) if self.nc else ""
            log.warning("reconnected to NATS", extra={"url": url})
            if self.on_reconnect is not None:
                await self.on_reconnect()

        async def disconnected() -> None:
            if self.closing:
                log.info("disconnected from NATS (closing)")
            else:
                log.warning("disconnected from NATS")

        async def error(exc: Exception) -> None:
            log.warning("NATS error", extra={"error": repr(exc)})

        self.nc = await nats.connect(
            servers=list(urls), name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
            reconnected_cb=reconnected, disconnected_cb=disconnected, error_cb=error,
            pending_size=64 * 1024 * 1024,
            # A server that stops answering (stalled, or its host gone) is found
            # within two missed pings, not nats-py's default two minutes.
            ping_interval=PING_INTERVAL_S, max_outstanding_pings=2, **options,
        )
        self.js = self.nc.jetstream()

    async def ensure_stream(self, replicas: int = 1) -> None:
        """Create the mission log stream (idempotent).

        After a rollback the steps since the commit run again and publish their
        events again, byte for byte (the mission is deterministic). Each event
        carries a message id, run, source and sequence number, and the stream
        drops an id it has seen within :data:`DEDUP_WINDOW_S`: the log holds each
        event once, with no gap. A message over :data:`MISSION_LOG_MAX_MSG_BYTES`
        is refused (ground still hears it, and counts it if malformed)."""
        assert self.js is not None
        cfg = StreamConfig(name=self.subjects.stream_name,
                           subjects=[self.subjects.all_of(k) for k in ("evt", "ops", "fork")],
                           retention=RetentionPolicy.LIMITS, storage=StorageType.FILE,
                           max_age=30 * 86400.0, num_replicas=replicas,
                           duplicate_window=DEDUP_WINDOW_S,
                           max_msg_size=MISSION_LOG_MAX_MSG_BYTES)
        await add_or_update_stream(self.js, cfg)

    async def wait_for_streams(self, names: tuple[str, ...], timeout_s: float) -> None:
        """Wait until ground (or an operator) has created the streams: a vehicle
        may look a stream up but not create one (natsauth.JS_GRANTS)."""
        assert self.js is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for name in names:
            said = False
            while True:
                try:
                    await self.js.stream_info(name)
                    break
                except NotFoundError:
                    if loop.time() > deadline:
                        raise StreamsMissing(name, timeout_s) from None
                    if not said:
                        log.info("waiting for ground to create a stream",
                                 extra={"stream": name})
                        said = True
                    await asyncio.sleep(STREAM_POLL_S)

    def next_seq(self, kind: str) -> int:
        return (self.control_seq if kind in CONTROL_KINDS
                else self.tm_seq if kind == "telemetry" else self.seq).next()

    def envelope(self, kind: str, body: dict[str, Any], t: float, step: int) -> Envelope:
        return Envelope(self.mission, self.source, self.next_seq(kind), t, step, kind, body)

    async def send(self, subject: str, kind: str, body: dict[str, Any], t: float, step: int,
                   *, durable: bool = False) -> bytes:
        """Number, encode and publish one message (mission data with ``durable``
        to the JetStream mission log); return its bytes (for sending again)."""
        seq = self.next_seq(kind)
        data = encode_fields(self.mission, self.source, seq, t, step, kind, body)
        if durable:  # mission data is numbered deterministically: its id drops a repeat
            await self._publish_durable(subject, data, None if kind in CONTROL_KINDS
                                        else f"{self.run_id}:{self.source}:{seq}")
        else:
            assert self.nc is not None
            await self.nc.publish(subject, data)
        self.metrics.bus_out.inc(kind)
        return data

    async def record_ops(self, name: str, t: float, step: int, **values: Any) -> None:
        """Put what the platform did (a rollback, a restore) in the mission log,
        on ``ops.<source>``: beside the events, outside the report, and not
        numbered among the mission's messages."""
        await self.send(self.subjects.ops(self.source), "ops", {"name": name, **values}, t, step,
                        durable=True)

    async def _publish_durable(self, subject: str, data: bytes, msg_id: str | None) -> None:
        """Publish to the mission log, trying again while the server is away (a
        restart, a stall): the message id makes a try that did land count once."""
        assert self.js is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DURABLE_RETRY_S
        delay = 0.1
        while True:
            try:
                await self.js.publish(subject, data,
                                      headers={"Nats-Msg-Id": msg_id} if msg_id else None,
                                      timeout=DURABLE_TIMEOUT_S)
                return
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError,
                    nats.errors.ConnectionReconnectingError) as exc:
                if loop.time() + delay > deadline:
                    raise
                log.warning("mission log publish not acknowledged, trying again",
                            extra={"subject": subject, "error": type(exc).__name__})
                await asyncio.sleep(delay)
                delay = min(2 * delay, 2.0)

    async def flush(self, timeout_s: float) -> None:
        """Wait until the server has everything published so far.

        nats-py 2.16 leaves the future of a flush that timed out in its queue of
        pings; the late pong then meets a cancelled future and kills the
        client's read loop, and the connection hears nothing until its ping
        check gives up. The cancelled futures are swapped for fresh ones, so a
        late pong lands on a future nobody awaits and the pongs stay in step."""
        nc = self.nc
        assert nc is not None
        try:
            await nc.flush(timeout=max(1, math.ceil(timeout_s)))
        except nats.errors.FlushTimeoutError:
            loop = asyncio.get_running_loop()
            nc._pongs = [loop.create_future() if f.done() else f for f in nc._pongs]
            raise

    async def resend(self, subject: str, data: bytes) -> None:
        """Publish bytes :meth:`send` returned once more (a tick or an ack that may
        have been lost): the same message, same sequence number, not counted again."""
        assert self.nc is not None
        if data:  # b"": nothing sent yet, so nothing to send again (an empty message is junk)
            await self.nc.publish(subject, data)

    async def subscribe(self, subject: str, handler: Handler) -> None:
        assert self.nc is not None
        metrics = self.metrics
        mission = self.mission
        publishers = self.publishers
        dropped = self.drop_log.dropped

        async def on_msg(msg: Msg) -> None:
            try:
                env = decode(msg.data, mission=mission)
            except EnvelopeError as exc:
                metrics.child("decode_errors", exc.reason).inc()
                dropped("dropped malformed message", exc.reason,
                        {"subject": msg.subject, "detail": exc.detail[:200]})
                return
            if publishers is not None and env.src not in publishers.of(msg.subject):
                metrics.child("decode_errors", "wrong_source").inc()
                dropped("dropped message whose source may not publish its subject",
                        "wrong_source", {"subject": msg.subject, "src": env.src[:64]})
                return
            metrics.bus_in.inc(env.kind)
            try:
                result = handler(env, msg.subject)
                if result is not None:
                    await result
            except Exception as exc:
                # Loud: the service's state may now be half-updated, so it must
                # not go on stepping as if nothing happened (on_failure stops it).
                log.exception("handler failed", extra={"subject": msg.subject, "kind": env.kind})
                self.on_failure("handler", exc)

        await self.nc.subscribe(subject, cb=on_msg, pending_msgs_limit=1_000_000)

    async def drain(self) -> None:
        self.closing = True
        if self.nc is not None and not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception:
                log.debug("drain failed", exc_info=True)
                await self.nc.close()


async def add_or_update_stream(js: JetStreamContext, cfg: StreamConfig) -> None:
    """Create the stream ``cfg`` describes, or bring an existing one to it
    (idempotent: every start may try). If it neither exists nor can be made,
    the creation's error says why (e.g. more replicas than servers)."""
    try:
        await js.add_stream(cfg)
    except Exception as created:
        try:  # it exists with another configuration
            await js.update_stream(cfg)
        except nats.js.errors.NotFoundError:
            raise created from None
