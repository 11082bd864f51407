"""Shared fixtures: a real nats-server for the session, a fresh mission id per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import services  # noqa: F401  (sets GRPC_ENABLE_FORK_SUPPORT before a test module loads grpc)
from services.kernel.natsd import NatsServer
from services.kernel.security import provision


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture(scope="module")
def secure_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir with the twin's CA, certificates and NATS keys (provision)."""
    return tmp_path_factory.mktemp("secure")


@pytest.fixture(scope="module")
def secure_nats(secure_dir: Path) -> Iterator[NatsServer]:
    """A nats-server as `twin run` starts it: operator mode, mTLS required."""
    made = provision(secure_dir, "boot")
    with NatsServer(secure_dir / "nats", config=made.server_config) as server:
        yield server


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture
def mission_id() -> str:
    """Isolation between tests comes from a unique mission id (and so subjects)."""
    return "t-" + uuid.uuid4().hex[:12]


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
