"""Relay wiring: the shared runtime around its vehicle core."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry

from services.kernel.config import ServiceConfig
from services.kernel.runtime import ServiceRuntime
from services.relay.vehicle import RelayCore


def make(config: ServiceConfig, registry: CollectorRegistry = REGISTRY) -> ServiceRuntime:
    return ServiceRuntime(RelayCore(config.seed), config, registry)
