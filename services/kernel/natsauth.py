"""NATS identities and permissions: decentralized JWT auth (operator mode).

Why JWTs and not a static ``authorization { users }`` block: missions are
added while the server runs (forks, Monte Carlo cases on one NATS). An account
signing key mints a user JWT for (mission, identity) at any time; the server
checks it against the account JWT it already holds, with no reload.

Trust chain: operator (self-signed) -> operator signing key signs the ``TWIN``
account and the ``SYS`` account -> the account signing key signs each user.
One account holds every mission; missions are kept apart by the users'
permissions, every one of which names its mission (see :func:`permissions`).

The permission table is data (:data:`XFER_TARGETS`, :data:`COMMAND_TARGETS`,
:data:`JS_GRANTS`, :func:`permissions`) built from :mod:`subjects`, the one
source of subject names. Replies come back on a per-identity inbox prefix
(:func:`inbox_prefix`), which only that identity may subscribe to.

Errors::

    NatsAuthError
    ├── BadMission        a mission id that cannot be scoped safely
    ├── UnknownIdentity   no such identity
    ├── KeyStoreError     a key file that cannot be read or is not a seed
    └── JwtError          a token that is malformed or whose signature fails
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nkeys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.kernel.config import MISSION_ID_RE, VEHICLES
from services.kernel.errors import TwinError
from services.kernel.subjects import Subjects, subject_matches

__all__ = [
    "COMMAND_TARGETS", "GATEWAY", "IDENTITIES", "JS_GRANTS", "SERVICES", "XFER_TARGETS",
    "BadMission",
    "JetStreamLimits", "JwtError", "KeyStore", "KeyStoreError", "NKey", "NatsAuth",
    "NatsAuthError", "Permissions", "Publishers", "UnknownIdentity", "check_mission",
    "connect_options", "decode_jwt", "encode_jwt", "format_creds", "inbox_prefix",
    "permission_table", "permissions",
]

SERVICES: tuple[str, ...] = ("ground", *VEHICLES)
#: ``operator``: the CLI and ops tools (streams, the mission log); ``observer``:
#: read-only watchers (dashboards, the view); ``gateway``: the CCSDS gateway
#: (services/gateway/), which hears what ground hears and publishes nothing
#: (it commands through ground's gRPC).
GATEWAY = "gateway"
IDENTITIES: tuple[str, ...] = (*SERVICES, "operator", "observer", GATEWAY)

#: Whom each service hands over to, on ``xfer.<target>`` (docs/mission.md, the
#: hand-over protocol; the senders' ``out.transfer``/``out.send("xfer", ...)``).
XFER_TARGETS: Mapping[str, tuple[str, ...]] = {
    # relay_cmd: a command for a vehicle only Queqiao-2 sees (kernel/telecommand.py)
    "ground": ("relay",),
    # la_stack and returner hand-overs, docked/undocked, sample_ack; relay_frame
    "orbiter": ("lander", "ascender", "reentry", "relay"),
    # handover_ack (la_stack); ascender hand-over and sample_handover; relay_frame
    "lander": ("orbiter", "ascender", "relay"),
    # sample_handover, target_state; sample_ack and handover_ack; relay_frame
    "ascender": ("orbiter", "lander", "relay"),
    # handover_ack (returner); relay_frame (kernel/radio.py sends any vehicle's)
    "reentry": ("orbiter", "relay"),
    "relay": (),  # forwards frames on its own dl, commands on cmd (below)
}
#: Who may command whom on ``cmd.<target>``: ground all; Queqiao-2 the vehicles
#: it forwards a ``relay_cmd`` to (any but itself: kernel/links.py gives every
#: other vehicle a relay path, relay/vehicle.py sends ``cmd.<to>``).
COMMAND_TARGETS: Mapping[str, tuple[str, ...]] = {
    "ground": ("*",),
    "relay": tuple(v for v in VEHICLES if v != "relay"),
}

#: What each identity may do through the JetStream API, per stream ("log": the
#: mission log TWIN_<M>, "snap": the snapshots TWIN_<M>_SNAP). Publishing *into*
#: a stream needs no API grant: it is a publish to the stream's subject.
JS_GRANTS: Mapping[str, Mapping[str, frozenset[str]]] = {
    # ground creates both streams (bus.ensure_stream, SnapStore.ensure), reads
    # the last commit and its own snapshot back (SnapStore.last_commit, get),
    # the commits a fork branches from (commits) and its fork records (log get)
    "ground": {"log": frozenset({"info", "create", "get"}),
               "snap": frozenset({"info", "create", "get"})},
    **{v: {"log": frozenset({"info"}), "snap": frozenset({"info", "get"})} for v in VEHICLES},
    "operator": {"log": frozenset({"info", "create", "delete", "get", "read", "consumers"}),
                 "snap": frozenset({"info", "create", "delete", "get", "read", "consumers"})},
    # mission_log.py reads with an ephemeral pull consumer, no acks
    "observer": {"log": frozenset({"info", "read"})},
    GATEWAY: {},  # core NATS only: the downlink and the events
}

_JS = "$JS.API"
#: The API subjects each grant opens, ``{s}`` being the stream name.
_JS_API: Mapping[str, tuple[str, ...]] = {
    "info": (f"{_JS}.STREAM.INFO.{{s}}",),
    "create": (f"{_JS}.STREAM.CREATE.{{s}}", f"{_JS}.STREAM.UPDATE.{{s}}"),
    "delete": (f"{_JS}.STREAM.DELETE.{{s}}", f"{_JS}.STREAM.PURGE.{{s}}"),
    "get": (f"{_JS}.STREAM.MSG.GET.{{s}}",),
    # a filtered consumer (nats-py names even an ephemeral one: CREATE.<s>.<name>.<filter>);
    # the subject cannot tell a durable from an ephemeral: JetStreamLimits.consumers bounds them
    "read": (f"{_JS}.CONSUMER.CREATE.{{s}}", f"{_JS}.CONSUMER.CREATE.{{s}}.*.>",
             f"{_JS}.CONSUMER.INFO.{{s}}.*", f"{_JS}.CONSUMER.MSG.NEXT.{{s}}.*"),
    "consumers": (f"{_JS}.CONSUMER.CREATE.{{s}}.>", f"{_JS}.CONSUMER.DURABLE.CREATE.{{s}}.*",
                  f"{_JS}.CONSUMER.DELETE.{{s}}.*", f"{_JS}.CONSUMER.LIST.{{s}}",
                  f"{_JS}.CONSUMER.NAMES.{{s}}", "$JS.ACK.{s}.>"),
}



# --- errors ----------------------------------------------------------------------
class NatsAuthError(TwinError):
    """Base of this module's errors."""


class BadMission(NatsAuthError):
    def __init__(self, mission: str, problem: str) -> None:
        self.mission, self.problem = mission, problem
        super().__init__(f"mission id {mission!r}: {problem}")


class UnknownIdentity(NatsAuthError):
    def __init__(self, identity: str) -> None:
        self.identity = identity
        super().__init__(f"no NATS identity {identity!r}; use one of {', '.join(IDENTITIES)}")


class KeyStoreError(NatsAuthError):
    def __init__(self, path: Path, problem: str, fix: str) -> None:
        self.path, self.problem, self.fix = path, problem, fix
        super().__init__(f"{path}: {problem}; {fix}")


class JwtError(NatsAuthError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"not a valid NATS JWT: {reason}")


# --- the permission table ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Permissions:
    """What one identity of one mission may publish and subscribe to."""

    mission: str
    identity: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix(self.mission, self.identity)

    def to_claims(self) -> dict[str, Any]:
        """The ``pub``/``sub`` part of a user JWT's ``nats`` claims. nats-server
        reads an empty allow list as no limit at all, so an identity that may
        publish nothing (the gateway) is denied everything instead."""
        pub = {"allow": list(self.publish)} if self.publish else {"deny": [">"]}
        return {"pub": pub, "sub": {"allow": list(self.subscribe)}}


def check_mission(mission: str) -> Subjects:
    """The mission's subjects, once its id is known to scope it safely."""
    if not MISSION_ID_RE.fullmatch(mission):
        raise BadMission(mission, "must be 1-32 of a-z, 0-9, '-', starting with a letter "
                                  "or digit (TWIN_MISSION_ID)")
    if mission.endswith("-snap"):
        # TWIN_<M> of "x-snap" is TWIN_X_SNAP, mission x's snapshot stream.
        raise BadMission(mission, "must not end in '-snap': its mission log stream would be "
                                  "another mission's snapshot stream; choose another id")
    return Subjects(mission)


def inbox_prefix(mission: str, identity: str) -> str:
    """Where an identity's replies arrive (nats-py ``inbox_prefix=``). Neither
    part contains ``_``, so no two (mission, identity) share a prefix."""
    return f"_INBOX_{mission}_{identity}"


def _service_publish(s: Subjects, name: str) -> list[str]:
    own = [s.telemetry(name), s.event(name), s.ops(name), s.snapshot(name)]
    if name == "ground":
        # fork.*: the records of what-if forks made from this mission
        clock = [s.tick, s.roll, s.restore, s.commit, s.all_of("fork")]
    else:
        clock = [s.ack(name), s.hello(name)]
        own.append(s.downlink(name))
    handovers = [s.transfer(t) for t in XFER_TARGETS[name]]
    commands = [s.command(t) for t in COMMAND_TARGETS.get(name, ())]
    return [*clock, *own, *handovers, *commands]


def _service_subscribe(s: Subjects, name: str) -> list[str]:
    inbound = [s.command(name), s.transfer(name)]
    if name == "ground":  # ClockAuthority.attach, GroundCore.extra_subjects
        return [s.all_of("clock.ack"), s.all_of("clock.hello"), s.all_of("evt"),
                s.all_of("dl"), *inbound]
    return [s.tick, s.roll, s.restore, *inbound]


#: What a fork's ground may do on its parent's streams, and nothing more: read
#: its fork record and the events before the branch (log), and the committed
#: snapshots it branches from (snap). It writes nothing of the parent's.
PARENT_GRANTS: Mapping[str, frozenset[str]] = {"log": frozenset({"info", "get", "read"}),
                                               "snap": frozenset({"info", "get"})}


def _js_api(s: Subjects, grants_of: Mapping[str, frozenset[str]]) -> list[str]:
    streams = {"log": s.stream_name, "snap": s.snapshot_stream}
    out: list[str] = []
    for which, grants in grants_of.items():
        for grant in sorted(grants):
            out += [t.format(s=streams[which]) for t in _JS_API[grant]]
    return out


def permissions(mission: str, identity: str, parent: str | None = None) -> Permissions:
    """The permissions of ``identity`` in ``mission``: nothing outside it, but for
    a fork's ground (``parent`` given) read access to its parent's streams."""
    s = check_mission(mission)
    parent_api: list[str] = []
    if parent is not None and identity == "ground":
        if parent == mission:
            raise BadMission(mission, "a mission cannot be its own parent")
        # It seeds its own streams with the parent's: every service's snapshot
        # of the branch commit, and the events before it (fork.adopt).
        parent_api = [*_js_api(check_mission(parent), PARENT_GRANTS), s.all_of("snap"),
                      s.all_of("evt")]
    inbox = f"{inbox_prefix(mission, identity)}.>"
    if identity in SERVICES:
        pub, sub = _service_publish(s, identity), _service_subscribe(s, identity)
    elif identity == "operator":
        pub, sub = [], [s.everything]
    elif identity == GATEWAY:  # services/gateway/service.py's subscriptions
        pub, sub = [], [s.all_of("dl"), s.all_of("evt")]
    elif identity == "observer":
        pub, sub = [], [s.all_of(k) for k in ("tm", "dl", "evt", "ops")]
    else:
        raise UnknownIdentity(identity)
    return Permissions(mission, identity,
                       tuple([*pub, *_js_api(s, JS_GRANTS[identity]), *parent_api]),
                       tuple([*sub, inbox]))


def permission_table(mission: str) -> dict[str, Permissions]:
    """Every identity's permissions in ``mission`` (the issue's closing table)."""
    return {identity: permissions(mission, identity) for identity in IDENTITIES}


class Publishers:
    """Which services may publish each of one mission's subjects, by the table
    above: the envelope source check holds a received message's ``src`` to it
    (a vehicle's ack must come from that vehicle, a command from ground or relay)."""

    #: Subjects remembered; beyond, each is worked out again (a flood of odd
    #: subjects on a plaintext bus must not grow memory).
    CACHE_MAX = 1024

    def __init__(self, mission: str) -> None:
        s = Subjects(mission)
        self._publish = {svc: tuple(_service_publish(s, svc)) for svc in SERVICES}
        self._cache: dict[str, frozenset[str]] = {}

    def of(self, subject: str) -> frozenset[str]:
        hit = self._cache.get(subject)
        if hit is None:
            hit = frozenset(svc for svc, patterns in self._publish.items()
                            if any(subject_matches(p, subject) for p in patterns))
            if len(self._cache) < self.CACHE_MAX:
                self._cache[subject] = hit
        return hit


# --- keys -----------------------------------------------------------------------------
_PREFIXES: Mapping[str, int] = {"operator": nkeys.PREFIX_BYTE_OPERATOR,
                                "account": nkeys.PREFIX_BYTE_ACCOUNT,
                                "user": nkeys.PREFIX_BYTE_USER}


@dataclass(frozen=True, slots=True)
class NKey:
    """One nkey: its seed (``S...``), public key (``O...``, ``A...``, ``U...``), signing."""

    seed: bytes = field(repr=False)  # never into a log line or a traceback

    @classmethod
    def generate(cls, kind: str) -> NKey:
        return cls(bytes(nkeys.encode_seed(secrets.token_bytes(32), _PREFIXES[kind])))

    @property
    def public_key(self) -> str:
        return str(nkeys.from_seed(bytearray(self.seed)).public_key.decode())

    def sign(self, data: bytes) -> bytes:
        return bytes(nkeys.from_seed(bytearray(self.seed)).sign(data))


class KeyStore:
    """The operator's and accounts' seeds in a directory (0700, seeds 0600),
    loaded if there, created if not: a restart keeps every identity."""

    #: file stem -> kind of key
    KEYS: Mapping[str, str] = {"operator": "operator", "operator-signing": "operator",
                               "account": "account", "account-signing": "account",
                               "system": "account"}

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        keys = {stem: self._load_or_create(stem, kind) for stem, kind in self.KEYS.items()}
        self.operator, self.operator_signing = keys["operator"], keys["operator-signing"]
        self.account, self.account_signing = keys["account"], keys["account-signing"]
        self.system = keys["system"]

    def _load_or_create(self, stem: str, kind: str) -> NKey:
        path = self.directory / f"{stem}.nk"
        if not path.exists():
            self._create(path, NKey.generate(kind))
        key = NKey(path.read_bytes().strip())
        try:
            public = key.public_key
        except Exception as exc:  # nkeys raises its own errors, and binascii's
            raise KeyStoreError(path, f"not an nkey seed ({type(exc).__name__})",
                                "restore the file or delete the key store to start over "
                                "(every minted credential then stops working)") from exc
        if public[0] != kind[0].upper():
            raise KeyStoreError(path, f"holds a {public[0]}... key, not an {kind} key",
                                "restore the right seed to this file")
        return key

    @staticmethod
    def _create(path: Path, key: NKey) -> None:
        """Write the seed whole, then link it in: two processes starting at once
        both end up with the one that was linked first."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.seed + b"\n")
        try:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink()


# --- JWTs --------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}


def encode_jwt(issuer: NKey, subject: str, name: str, nats: dict[str, Any],
               *, expires_s: float | None = None) -> str:
    """A NATS v2 JWT: ``nats`` claims of ``subject``, signed by ``issuer``.

    ``jti`` is the SHA-512/256 of the common claims with ``jti`` empty, base32
    without padding, as nats-io/jwt does (ClaimsData.hash)."""
    now = int(time.time())  # wall time, rightly: nats-server checks iat/exp against it
    common: dict[str, Any] = {}
    if expires_s is not None:
        common["exp"] = now + int(expires_s)
    common |= {"iat": now, "iss": issuer.public_key, "name": name, "sub": subject}
    jti = base64.b32encode(hashlib.new("sha512_256", _json(common)).digest()).rstrip(b"=")
    claims = {"jti": jti.decode(), **common, "nats": {**nats, "version": 2}}
    signing_input = f"{_b64(_json(_HEADER))}.{_b64(_json(claims))}"
    return f"{signing_input}.{_b64(issuer.sign(signing_input.encode()))}"


def _public_key_bytes(public: str) -> bytes:
    """The 32 ed25519 bytes of an nkey public key (prefix byte, key, CRC-16)."""
    try:
        raw = base64.b32decode(public + "=" * (-len(public) % 8))
    except ValueError as exc:
        raise JwtError(f"issuer {public!r} is not an nkey public key") from exc
    if len(raw) != 35:
        raise JwtError(f"issuer {public!r} is not an nkey public key")
    return raw[1:33]


def decode_jwt(token: str) -> dict[str, Any]:
    """The claims of ``token``, once its signature by ``iss`` is verified."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise JwtError(f"{len(parts)} dot-separated parts, not 3")
    try:
        header, claims = json.loads(_unb64(parts[0])), json.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
    except ValueError as exc:
        raise JwtError(f"a part is not base64url JSON ({exc})") from exc
    if header != _HEADER:
        raise JwtError(f"header {header!r}, not {_HEADER!r}")
    if not isinstance(claims, dict) or not isinstance(claims.get("iss"), str):
        raise JwtError("claims carry no issuer (iss)")
    key = Ed25519PublicKey.from_public_bytes(_public_key_bytes(claims["iss"]))
    try:
        key.verify(signature, f"{parts[0]}.{parts[1]}".encode())
    except InvalidSignature:
        raise JwtError(f"signature does not verify with issuer {claims['iss']}") from None
    return claims


def format_creds(user_jwt: str, user_seed: bytes) -> str:
    """A ``.creds`` file's text, as ``nsc`` writes it and nats-py reads it."""
    return (f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{user_seed.decode()}\n"
            "------END USER NKEY SEED------\n\n"
            "*************************************************************\n")


# --- the authority -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class JetStreamLimits:
    """The TWIN account's JetStream limits (-1: no limit). The server must have
    room for the storage limits (its ``max_file_store``/``max_memory_store``)."""

    memory_bytes: int = 256 * 1024 * 1024
    disk_bytes: int = 4 * 1024 * 1024 * 1024
    streams: int = -1
    consumers: int = -1

    def __post_init__(self) -> None:
        for name in ("memory_bytes", "disk_bytes", "streams", "consumers"):
            value = getattr(self, name)
            if value == 0 or value < -1:
                raise ValueError(f"JetStreamLimits.{name}={value}: must be > 0, or -1 for "
                                 "no limit (0 would turn JetStream off)")

    def to_claims(self) -> dict[str, Any]:
        return {"mem_storage": self.memory_bytes, "disk_storage": self.disk_bytes,
                "streams": self.streams, "consumer": self.consumers}


_UNLIMITED = {"subs": -1, "data": -1, "payload": -1}
_ACCOUNT_LIMITS = {**_UNLIMITED, "imports": -1, "exports": -1, "wildcards": True,
                   "conn": -1, "leaf": -1}


class NatsAuth:
    """Operator mode from one key store: the server's config and users' creds."""

    ACCOUNT_NAME = "TWIN"
    SYSTEM_NAME = "SYS"

    def __init__(self, keys: KeyStore, limits: JetStreamLimits | None = None,
                 operator_name: str = "change6-twin") -> None:
        self.keys = keys
        self.limits = limits or JetStreamLimits()
        self.operator_name = operator_name

    @property
    def account_public_key(self) -> str:
        return self.keys.account.public_key

    def operator_jwt(self) -> str:
        k = self.keys
        return encode_jwt(k.operator, k.operator.public_key, self.operator_name,
                          {"type": "operator", "signing_keys": [k.operator_signing.public_key],
                           "system_account": k.system.public_key,
                           "strict_signing_key_usage": True})

    def account_jwt(self) -> str:
        """The TWIN account: JetStream on with :attr:`limits`; users signed by
        the account signing key only."""
        k = self.keys
        return encode_jwt(k.operator_signing, k.account.public_key, self.ACCOUNT_NAME,
                          {"type": "account", "signing_keys": [k.account_signing.public_key],
                           "limits": {**_ACCOUNT_LIMITS, **self.limits.to_claims()}})

    def system_jwt(self) -> str:
        k = self.keys
        return encode_jwt(k.operator_signing, k.system.public_key, self.SYSTEM_NAME,
                          {"type": "account", "limits": _ACCOUNT_LIMITS})

    def user_jwt(self, user_public_key: str, perms: Permissions,
                 *, expires_s: float | None = None) -> str:
        return encode_jwt(self.keys.account_signing, user_public_key,
                          f"{perms.mission}-{perms.identity}",
                          {"type": "user", **perms.to_claims(), **_UNLIMITED,
                           "issuer_account": self.account_public_key},
                          expires_s=expires_s)

    def creds(self, mission: str, identity: str, *, expires_s: float | None = None,
              parent: str | None = None) -> str:
        """A fresh user of ``identity`` in ``mission`` (a fork of ``parent``), as
        ``.creds`` text."""
        user = NKey.generate("user")
        token = self.user_jwt(user.public_key, permissions(mission, identity, parent),
                              expires_s=expires_s)
        return format_creds(token, user.seed)

    def write_creds(self, path: Path, mission: str, identity: str,
                    *, expires_s: float | None = None, parent: str | None = None) -> Path:
        """Write :meth:`creds` to ``path`` (0600), replacing what was there."""
        text = self.creds(mission, identity, expires_s=expires_s, parent=parent)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        tmp.replace(path)
        return path

    def server_config(self, *, jetstream_store_dir: Path | None = None,
                      extra: Sequence[str] = ()) -> str:
        """nats-server configuration: operator mode, a MEMORY resolver preloaded
        with both accounts, JetStream (its store, if given here rather than by
        ``-sd``). ``extra``: more lines (tls, cluster) added as given."""
        k = self.keys
        lines = ["# operator mode, written by services/kernel/natsauth.py",
                 f"operator: {json.dumps(self.operator_jwt())}",
                 f"system_account: {json.dumps(k.system.public_key)}",
                 "resolver: MEMORY",
                 "resolver_preload: {",
                 f"  {json.dumps(k.account.public_key)}: {json.dumps(self.account_jwt())}",
                 f"  {json.dumps(k.system.public_key)}: {json.dumps(self.system_jwt())}",
                 "}"]
        if jetstream_store_dir is not None:
            lines.append(f"jetstream: {{store_dir: {json.dumps(str(jetstream_store_dir))}}}")
        return "\n".join([*lines, *extra, ""])

    def write_server_config(self, path: Path, *, jetstream_store_dir: Path | None = None,
                            extra: Sequence[str] = ()) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.server_config(jetstream_store_dir=jetstream_store_dir, extra=extra))
        return path


def connect_options(creds_path: Path, mission: str, identity: str) -> dict[str, Any]:
    """What ``nats.connect(**...)`` needs to be ``identity`` of ``mission``."""
    return {"user_credentials": str(creds_path), "inbox_prefix": inbox_prefix(mission, identity)}
