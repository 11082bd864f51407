"""Configuration from the environment: defaults, and errors that say what to fix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.kernel.config import DEFAULT_PORTS, SERVICE_NAMES, ServiceConfig
from services.kernel.errors import ConfigError
from services.kernel.security import security_of

#: A secure service's least environment: where its certificates are.
SECURE = {"TWIN_PKI_DIR": "/etc/twin/pki"}


def test_defaults_give_each_service_its_own_ports() -> None:
    cfgs = [ServiceConfig.from_env(s, SECURE) for s in SERVICE_NAMES]
    assert [(c.grpc_port, c.metrics_port) for c in cfgs] == [DEFAULT_PORTS[s]
                                                             for s in SERVICE_NAMES]
    assert len({c.grpc_port for c in cfgs}) == len(SERVICE_NAMES)
    assert cfgs[0].warp == 0.0 and cfgs[0].mission_id == "ce6"


def test_values_are_read_from_the_environment() -> None:
    cfg = ServiceConfig.from_env("ground", {
        **SECURE, "TWIN_MISSION_ID": "m-2", "TWIN_NATS_URL": "nats://a:1,nats://b:2",
        "TWIN_WARP": "3600",
        "TWIN_START_PAUSED": "true", "TWIN_EXPECT": "orbiter,relay", "TWIN_GRPC_PORT": "0"})
    assert cfg.nats_urls == ("nats://a:1", "nats://b:2")
    assert (cfg.warp, cfg.start_paused, cfg.expect, cfg.grpc_port) == (
        3600.0, True, ("orbiter", "relay"), 0)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TWIN_GRPC_PORT": "abc"}, "TWIN_GRPC_PORT"),
        ({"TWIN_GRPC_PORT": "70000"}, "TWIN_GRPC_PORT"),
        ({"TWIN_MISSION_ID": "Has Spaces"}, "TWIN_MISSION_ID"),
        ({"TWIN_MISSION_ID": "ce6\n"}, "TWIN_MISSION_ID"),  # would end a protocol line
        ({"TWIN_NATS_URL": "localhost:4222"}, "TWIN_NATS_URL"),
        ({"TWIN_WARP": "-2"}, "TWIN_WARP"),
        ({"TWIN_WARP": "fast"}, "TWIN_WARP"),
        ({"TWIN_LOG_LEVEL": "LOUD"}, "TWIN_LOG_LEVEL"),
        ({"TWIN_START_PAUSED": "maybe"}, "TWIN_START_PAUSED"),
        ({"TWIN_EXPECT": "orbiter,rover"}, "TWIN_EXPECT"),
        ({"TWIN_FLIGHT_PLAN": "/no/such/plan.json"}, "TWIN_FLIGHT_PLAN"),
        ({"TWIN_ACK_TIMEOUT_S": "0"}, "TWIN_ACK_TIMEOUT_S"),
        ({"TWIN_TM_INTERVAL_S": "-1"}, "TWIN_TM_INTERVAL_S"),
        ({"TWIN_SNAPSHOT_EVERY_STEPS": "-5"}, "TWIN_SNAPSHOT_EVERY_STEPS"),
        ({"TWIN_SNAPSHOT_EVERY_STEPS": "often"}, "TWIN_SNAPSHOT_EVERY_STEPS"),
        ({"TWIN_SNAPSHOT_EVERY_S": "0"}, "TWIN_SNAPSHOT_EVERY_S"),
        ({"TWIN_TM_BATCH": "0"}, "TWIN_TM_BATCH"),
        ({"TWIN_TM_BATCH": "many"}, "TWIN_TM_BATCH"),
        ({"TWIN_TM_DELAY_S": "0"}, "TWIN_TM_DELAY_S"),
        ({"TWIN_PKI_DIR": ""}, "TWIN_PKI_DIR"),  # secure by default: no PKI, no start
        ({"TWIN_INSECURE": "perhaps"}, "TWIN_INSECURE"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        ServiceConfig.from_env("ground", {**SECURE, **env})
    assert info.value.variable == variable
    assert variable in str(info.value)


def test_secure_unless_plaintext_is_asked_for() -> None:
    secure = ServiceConfig.from_env("orbiter", {**SECURE, "TWIN_NATS_CREDS": "/c/o.creds"})
    assert not secure.insecure and security_of(secure).pki_dir is not None
    assert str(security_of(secure).creds_for("ce6", "orbiter")) == "/c/o.creds"
    plain = ServiceConfig.from_env("orbiter", {"TWIN_INSECURE": "true"})
    assert plain.insecure and security_of(plain).nats_options("ce6", "orbiter") == {}
    with pytest.raises(ConfigError) as info:
        ServiceConfig.from_env("orbiter", {})
    assert "TWIN_INSECURE=true" in str(info.value)


def test_a_bad_value_stops_the_process_with_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "services.orbiter"],
                          env={"TWIN_GRPC_PORT": "abc", "PATH": ""}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "TWIN_GRPC_PORT='abc'" in lines[0] and "whole number" in lines[0]
