"""`twin up/run --ccsds-tm HOST:PORT --ccsds-tc HOST:PORT`: the CCSDS gateway
(services/gateway/) beside a run.

The gateway starts before the six services: the clock starts as soon as they
have all said hello, and what the gateway has not subscribed to by then (the
first frames, the first events) is gone, since core NATS keeps nothing for a
late listener. It learns ground's gRPC port from the supervisor's port plan,
to uplink the telecommands it receives. The supervisor watches it like a
service: a gateway that dies is restarted, and one that keeps dying stops the
run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from services.cli.grpc_client import Endpoint, TwinChannels
from services.cli.supervisor import (
    ServiceProcess,
    Supervisor,
    child_pythonpath,
    pick_free_ports,
)
from services.kernel.config import host_port
from services.kernel.natsauth import GATEWAY

__all__ = ["CcsdsLink", "free_udp_port", "parse_address", "spawn_gateway", "wait_gateway"]

#: Wall seconds the gateway has to stop when the run ends.
STOP_GRACE_S = 5.0


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port free now on ``host`` (where the gateway will take telecommands)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def parse_address(text: str, option: str) -> tuple[str, int]:
    """HOST:PORT, or ValueError saying what to write."""
    try:
        return host_port(text)
    except ValueError:
        raise ValueError(f"{option} {text!r}: write HOST:PORT, e.g. 127.0.0.1:10015") from None


@dataclass(frozen=True)
class CcsdsLink:
    """Where telemetry packets go, and where telecommands are received (None: none)."""

    tm: tuple[str, int]
    tc: tuple[str, int] | None = None

    def describe(self) -> str:
        tc = f", telecommands on udp://{self.tc[0]}:{self.tc[1]}" if self.tc else ""
        return f"CCSDS gateway: telemetry to udp://{self.tm[0]}:{self.tm[1]}{tc}"


async def spawn_gateway(stack: contextlib.AsyncExitStack, sup: Supervisor, link: CcsdsLink,
                        log_dir: Path) -> ServiceProcess:
    """Start the gateway (stopped when ``stack`` closes); :func:`wait_gateway`
    says when it listens."""
    grpc_port, metrics_port = pick_free_ports(2, sup.config.grpc_host)
    ground_port = sup.plan_ports()["ground"][0]
    extra = {"TWIN_CCSDS_TM": f"{link.tm[0]}:{link.tm[1]}",
             "TWIN_CCSDS_TC": f"{link.tc[0]}:{link.tc[1]}" if link.tc else "",
             "TWIN_GROUND_GRPC": f"127.0.0.1:{ground_port}"}
    env = {**os.environ, "PYTHONPATH": child_pythonpath(), "PYTHONUNBUFFERED": "1",
           **sup.config.service_env(GATEWAY, grpc_port, metrics_port), **extra}
    log_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before any child
    child = ServiceProcess(GATEWAY, grpc_port, metrics_port, log_dir / f"{GATEWAY}.log", env)
    await child.spawn()
    stack.push_async_callback(_stop, child)
    sup.watch_child(GATEWAY, child)
    return child


async def wait_gateway(sup: Supervisor, child: ServiceProcess, timeout_s: float) -> None:
    """Until the gateway's health says SERVING: every subscription in place."""
    endpoint = Endpoint(GATEWAY, "127.0.0.1", child.grpc_port)
    async with TwinChannels({GATEWAY: endpoint},
                            credentials=sup.channel_credentials()) as channels:
        await asyncio.wait_for(channels.wait_serving(GATEWAY), timeout_s)


async def _stop(child: ServiceProcess) -> None:
    proc = child.proc
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
