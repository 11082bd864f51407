"""One vehicle service with an idle core: the kernel's runtime as its own process.

::

    TWIN_SERVICE=orbiter TWIN_NATS_URL=... python bench/_kernel_idle_service.py

The same entry point as ``python -m services.<name>`` (``run_service``: config
from the TWIN_* environment, uvloop, metrics, gRPC, NATS), with the vehicle
core swapped for one that does no physics and no downlink. Six processes of
this kind (ground being the real ground) measure what the kernel itself costs
per step across process boundaries, whatever the vehicle cores cost.
"""

from __future__ import annotations

import os

from _kernel_inproc import IdleCore

from services.kernel.config import ServiceConfig
from services.kernel.runtime import ServiceRuntime, run_service


def make(config: ServiceConfig) -> ServiceRuntime:
    return ServiceRuntime(IdleCore(config.service, config.seed), config)


if __name__ == "__main__":
    run_service(os.environ["TWIN_SERVICE"], make)
