"""natsauth without a server: the JWT encoding, the key store, the permission table."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import stat
from pathlib import Path

import nkeys
import pytest

from services.kernel.bus import subject_matches
from services.kernel.config import VEHICLES
from services.kernel.natsauth import (
    IDENTITIES,
    BadMission,
    JetStreamLimits,
    JwtError,
    KeyStore,
    KeyStoreError,
    NatsAuth,
    NKey,
    UnknownIdentity,
    check_mission,
    decode_jwt,
    encode_jwt,
    permission_table,
    permissions,
)
from services.kernel.subjects import Subjects


def _part(token: str, i: int) -> bytes:
    text = token.split(".")[i]
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def auth(tmp_path: Path) -> NatsAuth:
    return NatsAuth(KeyStore(tmp_path / "keys"), JetStreamLimits(memory_bytes=1 << 20,
                                                                 disk_bytes=1 << 30))


# --- the JWT encoding ------------------------------------------------------------------
def test_a_jwt_is_signed_by_its_issuer_seed_and_verifies_with_nkeys() -> None:
    issuer, subject = NKey.generate("account"), NKey.generate("user")
    token = encode_jwt(issuer, subject.public_key, "ce6-lander", {"type": "user"})
    head, body, sig = token.split(".")
    assert "=" not in token and json.loads(_part(token, 0)) == {"typ": "JWT",
                                                                 "alg": "ed25519-nkey"}
    assert nkeys.from_seed(bytearray(issuer.seed)).verify(f"{head}.{body}".encode(),
                                                          _part(token, 2))
    claims = decode_jwt(token)
    assert claims["iss"] == issuer.public_key and claims["sub"] == subject.public_key
    assert claims["name"] == "ce6-lander" and claims["nats"] == {"type": "user", "version": 2}
    assert isinstance(claims["iat"], int) and "exp" not in claims and sig


def test_the_jti_is_the_hash_of_the_common_claims_as_nats_jwt_makes_it() -> None:
    token = encode_jwt(NKey.generate("operator"), "ODUMMY", "op", {"type": "operator"},
                       expires_s=60)
    claims = decode_jwt(token)
    common = {k: claims[k] for k in ("exp", "iat", "iss", "name", "sub")}
    digest = hashlib.new("sha512_256", json.dumps(common, separators=(",", ":")).encode())
    assert claims["jti"] == base64.b32encode(digest.digest()).decode().rstrip("=")
    assert claims["exp"] == claims["iat"] + 60


def test_a_tampered_or_foreign_token_is_refused() -> None:
    key = NKey.generate("account")
    token = encode_jwt(key, "UX", "u", {"type": "user"})
    head, body, sig = token.split(".")
    forged = base64.urlsafe_b64encode(
        _part(token, 1).replace(b'"name":"u"', b'"name":"v"')).decode().rstrip("=")
    with pytest.raises(JwtError, match="signature does not verify"):
        decode_jwt(f"{head}.{forged}.{sig}")
    with pytest.raises(JwtError, match="parts"):
        decode_jwt(f"{head}.{body}")
    other_head = base64.urlsafe_b64encode(b'{"typ":"JWT","alg":"none"}').decode().rstrip("=")
    with pytest.raises(JwtError, match="header"):
        decode_jwt(f"{other_head}.{body}.{sig}")


def test_the_chain_operator_accounts_user(auth: NatsAuth) -> None:
    k = auth.keys
    op = decode_jwt(auth.operator_jwt())
    assert op["iss"] == op["sub"] == k.operator.public_key
    assert op["nats"]["signing_keys"] == [k.operator_signing.public_key]
    assert op["nats"]["system_account"] == k.system.public_key
    account = decode_jwt(auth.account_jwt())
    assert account["iss"] == k.operator_signing.public_key
    assert account["sub"] == k.account.public_key and account["nats"]["type"] == "account"
    assert account["nats"]["signing_keys"] == [k.account_signing.public_key]
    limits = account["nats"]["limits"]
    assert (limits["mem_storage"], limits["disk_storage"]) == (1 << 20, 1 << 30)
    assert decode_jwt(auth.system_jwt())["sub"] == k.system.public_key
    user = decode_jwt(auth.user_jwt(NKey.generate("user").public_key,
                                    permissions("ce6", "lander"), expires_s=3600))
    assert user["iss"] == k.account_signing.public_key
    assert user["nats"]["issuer_account"] == k.account.public_key
    assert user["sub"].startswith("U") and user["name"] == "ce6-lander" and "exp" in user
    assert user["nats"]["pub"]["allow"] == list(permissions("ce6", "lander").publish)
    assert user["nats"]["sub"]["allow"] == list(permissions("ce6", "lander").subscribe)


def test_creds_hold_the_user_jwt_and_its_seed(auth: NatsAuth, tmp_path: Path) -> None:
    path = auth.write_creds(tmp_path / "c" / "lander.creds", "ce6", "lander")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    token = re.search(r"-----BEGIN NATS USER JWT-----\n(.+)\n------END NATS USER JWT------",
                      text)
    seed = re.search(r"-----BEGIN USER NKEY SEED-----\n(.+)\n------END USER NKEY SEED------",
                     text)
    assert token is not None and seed is not None
    assert decode_jwt(token[1])["sub"] == NKey(seed[1].encode()).public_key


def test_server_config_preloads_both_accounts(auth: NatsAuth, tmp_path: Path) -> None:
    text = auth.server_config(jetstream_store_dir=tmp_path / "js", extra=["max_payload: 2MB"])
    assert "resolver: MEMORY" in text and text.rstrip().endswith("max_payload: 2MB")
    for key in (auth.keys.account.public_key, auth.keys.system.public_key):
        assert f'"{key}": "ey' in text
    assert f'system_account: "{auth.keys.system.public_key}"' in text
    assert f'store_dir: "{tmp_path / "js"}"' in text


def test_jetstream_limits_never_turn_jetstream_off() -> None:
    with pytest.raises(ValueError, match="disk_bytes=0"):
        JetStreamLimits(disk_bytes=0)


# --- the key store -------------------------------------------------------------------------
def test_the_key_store_keeps_its_keys_private_and_across_restarts(tmp_path: Path) -> None:
    first = KeyStore(tmp_path / "keys")
    again = KeyStore(tmp_path / "keys")
    assert again.account.public_key == first.account.public_key
    assert again.operator_signing.seed == first.operator_signing.seed
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    for path in (tmp_path / "keys").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert first.operator.public_key.startswith("O") and first.system.public_key[0] == "A"


def test_a_damaged_or_wrong_key_file_is_named(tmp_path: Path) -> None:
    KeyStore(tmp_path / "keys")
    (tmp_path / "keys" / "account.nk").write_bytes(b"not a seed\n")
    with pytest.raises(KeyStoreError, match=r"account\.nk: not an nkey seed"):
        KeyStore(tmp_path / "keys")
    (tmp_path / "keys" / "account.nk").write_bytes(NKey.generate("user").seed)
    with pytest.raises(KeyStoreError, match="not an account key"):
        KeyStore(tmp_path / "keys")


# --- the permission table ----------------------------------------------------------------
def _overlap(a: str, b: str) -> bool:
    """Whether some subject matches both patterns."""
    ta, tb = a.split("."), b.split(".")
    for i, (x, y) in enumerate(zip(ta, tb, strict=False)):
        if ">" in (x, y):
            return True
        if x != y and "*" not in (x, y):
            return False
        if i == min(len(ta), len(tb)) - 1:
            return len(ta) == len(tb)
    return False


def _may(mission: str, verb: str, subject: str) -> set[str]:
    return {i for i, p in permission_table(mission).items()
            if any(subject_matches(rule, subject)
                   for rule in (p.publish if verb == "pub" else p.subscribe))}


@pytest.mark.parametrize("mission", ["ce6", "a", "mc-0042"])
def test_no_rule_reaches_the_root_or_all_of_jetstream(mission: str) -> None:
    for p in permission_table(mission).values():
        for rule in (*p.publish, *p.subscribe):
            first = rule.split(".")[0]
            assert first not in ("*", ">") and rule not in ("$JS.>", "$JS.API.>"), rule
            assert not rule.startswith(("$JS.API.*", "$JS.*", "$JS.API.STREAM.*",
                                        "$JS.API.CONSUMER.*")), rule
            assert (rule.startswith((f"twin.{mission}.", f"_INBOX_{mission}_{p.identity}."))
                    or re.search(rf"\.TWIN_{mission.upper().replace('-', '_')}(_SNAP)?(\.|$)",
                                 rule)), rule


def test_no_rule_of_one_mission_reaches_another() -> None:
    pairs = [("ab", "ab-c"), ("ce6", "ce6-2"), ("x", "x-snap-b")]
    for a, b in pairs:
        rules_a = [r for p in permission_table(a).values() for r in (*p.publish, *p.subscribe)]
        rules_b = [r for p in permission_table(b).values() for r in (*p.publish, *p.subscribe)]
        clash = [(x, y) for x in rules_a for y in rules_b if _overlap(x, y)]
        assert not clash, clash


def test_only_ground_drives_the_clock_and_commands() -> None:
    s = Subjects("ce6")
    for subject in (s.tick, s.roll, s.restore, s.commit, s.command("relay"),
                    s.command("ground")):
        assert _may("ce6", "pub", subject) == {"ground"}, subject
    for vehicle in VEHICLES:
        if vehicle != "relay":  # Queqiao-2 forwards ground's relay_cmd
            assert _may("ce6", "pub", s.command(vehicle)) == {"ground", "relay"}


def test_each_vehicle_speaks_for_itself_only() -> None:
    s = Subjects("ce6")
    for vehicle in VEHICLES:
        for subject in (s.ack(vehicle), s.hello(vehicle), s.telemetry(vehicle),
                        s.downlink(vehicle), s.event(vehicle), s.ops(vehicle),
                        s.snapshot(vehicle)):
            assert _may("ce6", "pub", subject) == {vehicle}, subject
        assert _may("ce6", "sub", s.command(vehicle)) == {vehicle, "operator"}
    assert _may("ce6", "pub", s.transfer("reentry")) == {"orbiter"}
    assert _may("ce6", "pub", s.transfer("relay")) == set(VEHICLES) - {"relay"} | {"ground"}


def test_streams_are_made_by_ground_and_the_operator_dropped_by_the_operator() -> None:
    s = Subjects("ce6")
    for stream in (s.stream_name, s.snapshot_stream):
        assert _may("ce6", "pub", f"$JS.API.STREAM.CREATE.{stream}") == {"ground", "operator"}
        assert _may("ce6", "pub", f"$JS.API.STREAM.DELETE.{stream}") == {"operator"}
    assert _may("ce6", "pub", f"$JS.API.STREAM.MSG.GET.{s.snapshot_stream}") == (
        set(VEHICLES) | {"ground", "operator"})
    assert _may("ce6", "pub", "$JS.API.STREAM.NAMES") == set()
    assert _may("ce6", "pub", "$JS.API.INFO") == set()


def test_each_inbox_is_its_owners_alone() -> None:
    for identity in IDENTITIES:
        assert _may("ce6", "sub", f"_INBOX_ce6_{identity}.abc.def") == {identity}
    assert _may("ce6", "sub", "_INBOX.abc") == set()


@pytest.mark.parametrize("bad", ["", "CE6", "ce6\n", "a.b", "a*", "-x", "x-snap", "a" * 33])
def test_a_mission_id_that_cannot_be_scoped_is_refused(bad: str) -> None:
    with pytest.raises(BadMission):
        check_mission(bad)
    with pytest.raises(BadMission):
        permissions(bad, "ground")


def test_an_unknown_identity_is_named() -> None:
    with pytest.raises(UnknownIdentity, match=r"'mallory'.*ground"):
        permissions("ce6", "mallory")


def test_an_identity_that_may_publish_nothing_is_denied_everything() -> None:
    """nats-server reads an empty ``pub.allow`` as no limit at all: the gateway,
    which publishes nothing, must carry ``deny: [">"]`` instead."""
    gateway = permissions("ce6", "gateway")
    assert [p for p in gateway.publish if not p.startswith("_INBOX")] == []
    assert gateway.to_claims()["pub"] == {"deny": [">"]}
    assert "allow" in permissions("ce6", "lander").to_claims()["pub"]
