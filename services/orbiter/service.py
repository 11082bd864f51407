"""Orbiter wiring: the shared runtime around its vehicle core."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry

from services.orbiter.vehicle import OrbiterCore
from services.kernel.config import ServiceConfig
from services.kernel.runtime import ServiceRuntime


def make(config: ServiceConfig, registry: CollectorRegistry = REGISTRY) -> ServiceRuntime:
    return ServiceRuntime(OrbiterCore(config.seed), config, registry)
