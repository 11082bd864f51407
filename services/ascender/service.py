"""Ascender wiring: the shared runtime around its vehicle core."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry

from services.ascender.vehicle import AscenderCore
from services.kernel.config import ServiceConfig
from services.kernel.runtime import ServiceRuntime


def make(config: ServiceConfig, registry: CollectorRegistry = REGISTRY) -> ServiceRuntime:
    return ServiceRuntime(AscenderCore(config.seed), config, registry)
