"""Shared fixtures: a real nats-server for the session, a fresh mission id per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import services  # noqa: F401  (sets GRPC_ENABLE_FORK_SUPPORT before a test module loads grpc)
from services.kernel.natsd import NatsServer


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
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
