"""NATS in operator mode with the twin's identities: what each may and may not do.

A real nats-server runs with the configuration natsauth writes (JWTs, MEMORY
resolver, JetStream); each test connects real clients with minted ``.creds``.
A refused publish or subscription is seen as the server's ``-ERR``
(nats-py's error callback); that a refused message went nowhere is seen by a
witness that reads the whole mission: the refused message would have reached
it before a marker the same connection publishes next.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig

from services.kernel.natsauth import KeyStore, NatsAuth, connect_options, inbox_prefix
from services.kernel.natsd import NatsServer
from services.kernel.snapstore import SnapStore
from services.kernel.subjects import Subjects

#: Wall seconds to wait for something that should come at once (a deadline, not a measure).
WAIT_S = 5.0
#: How long a JetStream request the server refused is waited for: it never gets an answer.
REFUSED_REQUEST_TIMEOUT_S = 0.5


class OperatorModeServer(NatsServer):
    """The embedded server with natsauth's configuration file."""

    def __init__(self, state_dir: Path, config: Path) -> None:
        super().__init__(state_dir)
        self.config = config

    def _command(self) -> list[str]:
        return [*super()._command(), "-c", str(self.config)]


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory) -> NatsAuth:
    return NatsAuth(KeyStore(tmp_path_factory.mktemp("keys")))


@pytest.fixture(scope="module")
def server(auth: NatsAuth, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    state = tmp_path_factory.mktemp("nats-auth")
    config = auth.write_server_config(state / "server.conf")
    with OperatorModeServer(state, config) as srv:
        yield srv


class Conn:
    """One identity's connection, and the server's errors it was told of."""

    def __init__(self, nc: Client, errors: asyncio.Queue[str]) -> None:
        self.nc, self.errors = nc, errors

    async def refused(self, what: str, subject: str) -> None:
        """The server's next error is a permissions violation for ``what`` on ``subject``."""
        text = await asyncio.wait_for(self.errors.get(), WAIT_S)
        assert f'permissions violation for {what} to "{subject.lower()}"' in text, text


class Mission:
    """Connects identities of one mission to the server."""

    def __init__(self, server: NatsServer, auth: NatsAuth, mission: str, creds_dir: Path) -> None:
        self.server, self.auth, self.mission, self.creds_dir = server, auth, mission, creds_dir
        self.s = Subjects(mission)
        self.conns: list[Client] = []

    async def connect(self, identity: str) -> Conn:
        errors: asyncio.Queue[str] = asyncio.Queue()

        async def on_error(exc: Exception) -> None:
            errors.put_nowait(str(exc))

        creds = self.auth.write_creds(self.creds_dir / f"{self.mission}-{identity}.creds",
                                      self.mission, identity)
        nc = await nats.connect(self.server.url, error_cb=on_error, allow_reconnect=False,
                                **connect_options(creds, self.mission, identity))
        self.conns.append(nc)
        return Conn(nc, errors)

    async def close(self) -> None:
        for nc in self.conns:
            await nc.close()


@pytest.fixture
async def m(server: NatsServer, auth: NatsAuth, mission_id: str,
            tmp_path: Path) -> AsyncIterator[Mission]:
    mission = Mission(server, auth, mission_id, tmp_path)
    yield mission
    await mission.close()


async def witness(conn: Conn, subject: str) -> asyncio.Queue[Msg]:
    """A subscription whose messages queue up, in place on the server on return."""
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        queue.put_nowait(msg)

    await conn.nc.subscribe(subject, cb=on_msg)
    await conn.nc.flush()
    return queue


async def received_until(queue: asyncio.Queue[Msg], marker: str) -> list[str]:
    """Subjects received up to and including ``marker``'s."""
    seen: list[str] = []
    while not seen or seen[-1] != marker:
        seen.append((await asyncio.wait_for(queue.get(), WAIT_S)).subject)
    return seen


# --- the clock and commands: ground's alone -----------------------------------------
async def test_a_vehicle_cannot_tick_roll_restore_or_command(m: Mission) -> None:
    lander, orbiter, operator = [await m.connect(n) for n in ("lander", "orbiter", "operator")]
    everything = await witness(operator, m.s.everything)
    orbiter_in = await witness(orbiter, m.s.tick)
    for subject in (m.s.tick, m.s.roll, m.s.restore, m.s.command("orbiter"), m.s.commit):
        await lander.nc.publish(subject, b"forged")
        await lander.refused("publish", subject)
    await lander.nc.publish(m.s.ack("lander"), b"marker")
    assert await received_until(everything, m.s.ack("lander")) == [m.s.ack("lander")]
    assert orbiter_in.empty()


async def test_ground_ticks_and_commands_reach_the_vehicles(m: Mission) -> None:
    ground, lander = await m.connect("ground"), await m.connect("lander")
    inbound = await witness(lander, f"twin.{m.mission}.*.*")  # refused in part: see below
    await lander.refused("subscription", f"twin.{m.mission}.*.*")
    ticks, commands = await witness(lander, m.s.tick), await witness(lander, m.s.command("lander"))
    await ground.nc.publish(m.s.tick, b"tick")
    await ground.nc.publish(m.s.command("lander"), b"cmd")
    assert (await asyncio.wait_for(ticks.get(), WAIT_S)).data == b"tick"
    assert (await asyncio.wait_for(commands.get(), WAIT_S)).data == b"cmd"
    assert inbound.empty() and ground.errors.empty() and lander.errors.empty()


# --- each vehicle its own subjects, and only the hand-overs it makes ------------------
async def test_a_vehicle_acks_for_itself_only(m: Mission) -> None:
    ground, lander = await m.connect("ground"), await m.connect("lander")
    acks = await witness(ground, m.s.all_of("clock.ack"))
    await lander.nc.publish(m.s.ack("orbiter"), b"forged")
    await lander.refused("publish", m.s.ack("orbiter"))
    await lander.nc.publish(m.s.hello("orbiter"), b"forged")
    await lander.refused("publish", m.s.hello("orbiter"))
    await lander.nc.publish(m.s.ack("lander"), b"own")
    assert await received_until(acks, m.s.ack("lander")) == [m.s.ack("lander")]


async def test_hand_overs_go_only_where_the_mission_sends_them(m: Mission) -> None:
    lander, ascender = await m.connect("lander"), await m.connect("ascender")
    to_ascender = await witness(ascender, m.s.transfer("ascender"))
    for forbidden in (m.s.transfer("reentry"), m.s.downlink("orbiter"), m.s.event("ground")):
        await lander.nc.publish(forbidden, b"x")
        await lander.refused("publish", forbidden)
    await lander.nc.publish(m.s.transfer("ascender"), b"sample_handover")
    assert (await asyncio.wait_for(to_ascender.get(), WAIT_S)).data == b"sample_handover"
    # the relay forwards a command, but may not command itself or drive the clock
    relay = await m.connect("relay")
    commands = await witness(ascender, m.s.command("ascender"))
    await relay.nc.publish(m.s.command("relay"), b"x")
    await relay.refused("publish", m.s.command("relay"))
    await relay.nc.publish(m.s.command("ascender"), b"relay_cmd")
    assert (await asyncio.wait_for(commands.get(), WAIT_S)).data == b"relay_cmd"


# --- missions apart -----------------------------------------------------------------------
async def test_one_missions_identities_cannot_touch_another(m: Mission, server: NatsServer,
                                                            auth: NatsAuth, tmp_path: Path) -> None:
    other = Mission(server, auth, m.mission + "-b", tmp_path)
    try:
        b_ground = await other.connect("ground")
        await b_ground.nc.jetstream().add_stream(_log_config(other.s))
        a_ground, a_operator = await m.connect("ground"), await m.connect("operator")
        b_everything = await witness(await other.connect("operator"), other.s.everything)
        await a_ground.nc.publish(other.s.tick, b"forged")
        await a_ground.refused("publish", other.s.tick)
        await a_operator.nc.subscribe(other.s.everything)
        await a_operator.refused("subscription", other.s.everything)
        js = a_operator.nc.jetstream(timeout=REFUSED_REQUEST_TIMEOUT_S)
        with pytest.raises(nats.errors.TimeoutError):
            await js.delete_stream(other.s.stream_name)
        await a_operator.refused("publish", f"$JS.API.STREAM.DELETE.{other.s.stream_name}")
        await b_ground.nc.publish(other.s.tick, b"marker")
        assert await received_until(b_everything, other.s.tick) == [other.s.tick]
        assert (await b_ground.nc.jetstream().stream_info(other.s.stream_name)).config.name
    finally:
        await other.close()


def _streams(server: NatsServer) -> set[str]:
    """Every stream on the server, as its monitoring port tells."""
    with urllib.request.urlopen(f"{server.monitor_url}/jsz?accounts=true&streams=true",
                                timeout=WAIT_S) as reply:
        jsz = json.load(reply)
    return {stream["name"] for account in jsz.get("account_details", [])
            for stream in account.get("stream_detail", [])}


# --- JetStream: streams are ground's and the operator's; vehicles write into them --------
def _log_config(s: Subjects) -> StreamConfig:
    """The mission log's configuration as services/kernel/bus.py makes it."""
    return StreamConfig(name=s.stream_name, subjects=[s.all_of("evt"), s.all_of("ops")])


async def test_ground_makes_the_log_a_vehicle_writes_events_but_cannot_manage_it(
        m: Mission) -> None:
    ground, orbiter = await m.connect("ground"), await m.connect("orbiter")
    await ground.nc.jetstream().add_stream(_log_config(m.s))
    ack = await orbiter.nc.jetstream().publish(m.s.event("orbiter"), b"loi_burn",
                                               stream=m.s.stream_name)
    assert ack.stream == m.s.stream_name and ack.seq == 1
    # a refused request is dropped by the server and times out at the client:
    # all three at once, so the test waits out one timeout, not three
    js = orbiter.nc.jetstream(timeout=REFUSED_REQUEST_TIMEOUT_S)
    outcomes = await asyncio.gather(
        js.add_stream(StreamConfig(name=m.s.stream_name + "_X", subjects=[f"twin.{m.mission}.x"])),
        js.update_stream(_log_config(m.s)), js.delete_stream(m.s.stream_name),
        return_exceptions=True)
    assert all(isinstance(o, nats.errors.TimeoutError) for o in outcomes), outcomes
    refused = sorted([await asyncio.wait_for(orbiter.errors.get(), WAIT_S) for _ in outcomes])
    assert refused == [f'nats: permissions violation for publish to "$js.api.stream.{verb}.{name}"'
                       for verb, name in (("create", m.s.stream_name.lower() + "_x"),
                                          ("delete", m.s.stream_name.lower()),
                                          ("update", m.s.stream_name.lower()))]
    info = await ground.nc.jetstream().stream_info(m.s.stream_name)
    assert info.state.messages == 1
    assert _streams(m.server) >= {m.s.stream_name}
    assert m.s.stream_name + "_X" not in _streams(m.server)


async def test_snapshots_a_vehicle_stores_and_restores_its_own(m: Mission) -> None:
    ground, lander = await m.connect("ground"), await m.connect("lander")
    await SnapStore(ground.nc.jetstream(), m.s).ensure()
    store = SnapStore(lander.nc.jetstream(), m.s)
    where = await store.put("lander", {"phase": "surface", "sample_mass_g": 1935.3})
    assert (await store.get("lander", where))["sample_mass_g"] == 1935.3
    await lander.nc.publish(m.s.snapshot("orbiter"), b"forged")
    await lander.refused("publish", m.s.snapshot("orbiter"))


async def test_the_operator_manages_streams_an_observer_only_reads(m: Mission) -> None:
    operator, ground, observer = [await m.connect(n) for n in ("operator", "ground", "observer")]
    await operator.nc.jetstream().add_stream(_log_config(m.s))
    await ground.nc.jetstream().publish(m.s.event("ground"), b"mission_start")
    # read as services/cli/mission_log.py does: an unnamed pull consumer, no acks
    config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE,
                            inactive_threshold=30.0, mem_storage=True)
    sub = await observer.nc.jetstream().pull_subscribe(m.s.all_of("evt"), stream=m.s.stream_name,
                                                       config=config)
    assert [msg.data for msg in await sub.fetch(1, timeout=WAIT_S)] == [b"mission_start"]
    for subject in (m.s.event("ground"), f"$JS.API.STREAM.DELETE.{m.s.stream_name}"):
        await observer.nc.publish(subject, b"")
        await observer.refused("publish", subject)
    await observer.nc.subscribe(m.s.all_of("cmd"))
    await observer.refused("subscription", m.s.all_of("cmd"))
    assert await operator.nc.jetstream().delete_stream(m.s.stream_name)
    assert m.s.stream_name not in _streams(m.server)


# --- replies, and who may connect at all -----------------------------------------------
async def test_an_identity_cannot_read_anothers_inbox(m: Mission) -> None:
    lander, orbiter = await m.connect("lander"), await m.connect("orbiter")
    for subject in (f"{inbox_prefix(m.mission, 'orbiter')}.>", "_INBOX.>"):
        await lander.nc.subscribe(subject)
        await lander.refused("subscription", subject)
    # the orbiter's own replies still come back to it
    await (await m.connect("ground")).nc.jetstream().add_stream(_log_config(m.s))
    info = await orbiter.nc.jetstream().stream_info(m.s.stream_name)
    assert info.config.name == m.s.stream_name and lander.errors.empty()


async def test_a_client_without_valid_credentials_cannot_connect(
        server: NatsServer, mission_id: str, tmp_path: Path) -> None:
    async def on_error(exc: Exception) -> None:
        pass

    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(server.url, error_cb=on_error, allow_reconnect=False)
    # creds minted by another operator's account are refused the same way
    stranger = NatsAuth(KeyStore(tmp_path / "stranger-keys"))
    creds = stranger.write_creds(tmp_path / "g.creds", mission_id, "ground")
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(server.url, error_cb=on_error, allow_reconnect=False,
                           **connect_options(creds, mission_id, "ground"))
