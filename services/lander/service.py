"""Lander wiring: the shared runtime around its vehicle core."""

from __future__ import annotations

from services.kernel.config import ServiceConfig
from services.kernel.runtime import ServiceRuntime
from services.lander.vehicle import LanderCore


def make(config: ServiceConfig) -> ServiceRuntime:
    return ServiceRuntime(LanderCore(config.seed), config)
