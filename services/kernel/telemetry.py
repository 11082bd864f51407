"""Truth telemetry: each step's state, batched onto ``tm.<service>`` and streamed
to WatchTelemetry callers.

Truth telemetry is how operators and tests see a vehicle as it really is,
beside the modelled downlink (services/kernel/recorder.py) that sees it as the
links allow. A frame is made when due (the vehicle's and the configured
interval; never while a ``drop_telemetry`` fault lasts), encoded at once (the
core's state moves on), and published in batches: ``tm_batch`` frames, or
whatever waits after ``tm_delay_s`` wall seconds, whichever comes first.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from services.dynamics.timescale import iso_utc
from services.kernel.bus import Bus
from services.kernel.config import ServiceConfig
from services.kernel.outbox import Summary
from services.kernel.twin_pb import common_pb2, control_pb2
from services.kernel.vehicle import VehicleCore

log = logging.getLogger("twin.telemetry")

#: The fields of a truth-telemetry frame, in the order every frame lists them.
#: A ``tm`` message is ``{"fields": TM_FIELDS, "frames": [[...], ...]}``: the
#: names once a message, not once a frame (naming them in each frame made a
#: third of a vehicle's per-step work in the idle kernel; bench_instr).
TM_FIELDS = ("step", "t", "phase", "frame", "body", "r_m", "v_m_s", "alt_m", "speed_m_s",
             "mass_kg", "propellant_kg", "sample_mass_g", "values")
_TM_FIELDS_JSON = orjson.Fragment(orjson.dumps(TM_FIELDS))

Watcher = asyncio.Queue[control_pb2.TelemetryFrame | None]


def telemetry_frame(s: Any, step: int, t: float) -> list[Any]:
    """One truth-telemetry frame, in :data:`TM_FIELDS` order: the state at the
    end of ``step`` (mission time ``t``)."""
    return [step, t, s.phase, s.frame, s.central_body, s.r_m, s.v_m_s, s.altitude_m,
            s.speed_m_s, s.mass_kg, s.propellant_kg, s.sample_mass_g, s.values]


def _vec(v: tuple[float, float, float]) -> common_pb2.Vector3:
    return common_pb2.Vector3(x=v[0], y=v[1], z=v[2])


def state_from_summary(name: str, s: Summary) -> common_pb2.StateSummary:
    return common_pb2.StateSummary(
        vehicle=name, frame=s.frame, central_body=s.central_body, position_m=_vec(s.r_m),
        velocity_m_s=_vec(s.v_m_s), altitude_m=s.altitude_m, speed_m_s=s.speed_m_s,
        mass_kg=s.mass_kg, propellant_kg=s.propellant_kg, sample_mass_g=s.sample_mass_g,
        values=s.values)


def frame_from_summary(name: str, s: Summary, step: int, t: float) -> control_pb2.TelemetryFrame:
    return control_pb2.TelemetryFrame(service=name, step=step, mission_time_s=t, utc=iso_utc(t),
                                      phase=s.phase, state=state_from_summary(name, s))


class TelemetryStream:
    """One service's truth telemetry: frames waiting, their batching, watchers."""

    def __init__(self, bus: Bus, name: str, config: ServiceConfig) -> None:
        self.bus, self.name = bus, name
        self.interval_s, self.batch, self.delay_s = (config.tm_interval_s, config.tm_batch,
                                                     config.tm_delay_s)
        self.subject = bus.subjects.telemetry(name)
        #: Open WatchTelemetry streams (services/kernel/control.py).
        self.watchers: list[Watcher] = []
        self._frames: list[bytes] = []  # encoded when made: the core's state moves on
        self._last = (0, 0.0)  # step and time of the newest frame waiting
        self._last_t = -1e30
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def due(self, core: VehicleCore, t: float) -> bool:
        """Whether the step ending at ``t`` makes a frame."""
        return (t - self._last_t >= max(core.telemetry_interval_s(), self.interval_s)
                and "drop_telemetry" not in core.faults)

    def add(self, summary: Summary, step: int, t: float) -> bool:
        """Keep the step's frame and feed the watchers; True when the frames
        waiting fill a ``tm`` message (the caller publishes)."""
        frames = self._frames
        frames.append(orjson.dumps(telemetry_frame(summary, step, t),
                                   option=orjson.OPT_SERIALIZE_NUMPY))
        self._last, self._last_t = (step, t), t
        if self.watchers:
            self._feed_watchers(summary, step, t)
        if len(frames) >= self.batch:
            return True
        if self._timer is None:  # the first frame waiting: send by the deadline
            self._timer = asyncio.get_running_loop().call_later(self.delay_s, self._waited)
        return False

    async def publish(self) -> bool:
        """Publish the frames waiting as one ``tm`` message (its envelope stamped
        with the last frame's time and step); False if none."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        frames = self._frames
        nc = self.bus.nc
        if not frames or nc is None or nc.is_closed:
            return False
        self._frames = []
        step, t = self._last
        await self.bus.send(self.subject, "telemetry",
                            {"fields": _TM_FIELDS_JSON,
                             "frames": orjson.Fragment(b"[" + b",".join(frames) + b"]")},
                            t, step)
        return True

    async def settle(self, timeout_s: float = 2.0) -> None:
        """Publish the frames waiting and wait until nats-server holds them: whoever
        reads the status next, then the telemetry, finds every frame up to it."""
        if await self.publish():
            try:
                await self.bus.flush(timeout_s)
            except Exception as exc:  # a status answer must not fail on a slow bus
                log.warning("telemetry flush failed", extra={"error": repr(exc)})

    def close_watchers(self) -> None:
        """End every WatchTelemetry stream (the service is stopping)."""
        for q in self.watchers:
            q.put_nowait(None)

    def _waited(self) -> None:
        """The oldest frame waiting has waited ``tm_delay_s``: send what there is."""
        self._timer = None
        task = asyncio.ensure_future(self._publish_logged())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish_logged(self) -> None:
        try:
            await self.publish()
        except Exception:
            log.warning("telemetry frames not published", exc_info=True)

    def _feed_watchers(self, s: Summary, step: int, t: float) -> None:
        """One frame to every WatchTelemetry stream (the caller checks there is one)."""
        frame = frame_from_summary(self.name, s, step, t)
        for q in self.watchers:
            if not q.full():  # a slow watcher misses frames rather than stalling the clock
                q.put_nowait(frame)
