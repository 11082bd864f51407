"""Ascender wiring: the shared runtime around its vehicle core."""

from __future__ import annotations

from services.ascender.vehicle import AscenderCore
from services.kernel.config import ServiceConfig
from services.kernel.runtime import ServiceRuntime


def make(config: ServiceConfig) -> ServiceRuntime:
    return ServiceRuntime(AscenderCore(config.seed), config)
