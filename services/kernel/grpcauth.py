"""Authenticated gRPC: mTLS credentials and authorization by role.

Every caller presents a client certificate issued by the twin's CA
(services/kernel/pki.py); the TLS handshake verifies it, and
:class:`RoleInterceptor` reads the caller's identity (the certificate's CN) and
role (its SAN URI ``urn:change6-twin:role:<role>``) from the call's auth context.
Optionally a bearer token (metadata ``authorization: Bearer <token>``, from a
:class:`TokenTable`) names the caller instead; a token, when sent, wins.

Roles are ordered: ``operator`` may call everything a ``viewer`` may.
:data:`METHOD_ROLES` is the one table of which role each RPC needs; a method
missing from it is refused for everyone (tests check it lists every RPC of
proto/twin/v1). Refused calls end with UNAUTHENTICATED (no usable identity) or
PERMISSION_DENIED (a role too low), are counted in ``twin_grpc_refused_total``
and logged with the caller.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter

from services.kernel.errors import TwinError
from services.kernel.pki import ROLES, CertFiles, role_from_uris

log = logging.getLogger("twin.grpcauth")

VIEWER, OPERATOR = ROLES
_RANK = {role: rank for rank, role in enumerate(ROLES)}

_VC, _MC = "/twin.v1.VehicleControl/", "/twin.v1.MissionClock/"
#: The least role each RPC needs, by full method path. One place, data only.
METHOD_ROLES: Mapping[str, str] = MappingProxyType({
    _VC + "GetStatus": VIEWER,
    _VC + "WatchTelemetry": VIEWER,
    _VC + "SendCommand": OPERATOR,
    _VC + "InjectFault": OPERATOR,
    _VC + "ClearFault": OPERATOR,
    _MC + "GetTime": VIEWER,
    _MC + "ListTargets": VIEWER,
    _MC + "Pause": OPERATOR,
    _MC + "Resume": OPERATOR,
    _MC + "SetWarp": OPERATOR,
    _MC + "Step": OPERATOR,
    _MC + "RunUntil": OPERATOR,
    _MC + "Fork": OPERATOR,
    "/twin.v1.GroundStation/Uplink": OPERATOR,
    "/grpc.health.v1.Health/Check": VIEWER,
    "/grpc.health.v1.Health/Watch": VIEWER,
    "/grpc.health.v1.Health/List": VIEWER,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": VIEWER,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": VIEWER,
})

_BEARER = "bearer "
_TOKEN_SHA256 = "sha256:"
#: The role label of a refused caller that has none.
NO_ROLE = "none"


class TokenFileError(TwinError):
    def __init__(self, path: Path, line: int, problem: str) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        super().__init__(f"{path}:{line}: {problem}; write each line as "
                         "'<identity> <role> <token>' (or 'sha256:<hex digest>' for the "
                         f"token), role one of {', '.join(ROLES)}")


@dataclass(frozen=True)
class Caller:
    """Who makes a call: identity, role (None if it has no known one), and
    where they came from ("certificate", "token" or "none")."""

    identity: str
    role: str | None
    source: str


ANONYMOUS = Caller("anonymous", None, "none")


class TokenTable:
    """Bearer tokens -> callers, keyed by the token's SHA-256 (the table never
    holds a token itself when the file gives digests)."""

    def __init__(self, entries: Mapping[str, tuple[str, str]]) -> None:
        """``entries``: token SHA-256 hex digest -> (identity, role)."""
        for identity, role in entries.values():
            if role not in ROLES:
                raise ValueError(f"token for {identity!r}: role {role!r} is not one of "
                                 f"{', '.join(ROLES)}")
        self._by_digest = dict(entries)

    @classmethod
    def from_tokens(cls, tokens: Mapping[str, tuple[str, str]]) -> TokenTable:
        """From plain tokens: token -> (identity, role)."""
        return cls({_digest(t): who for t, who in tokens.items()})

    @classmethod
    def load(cls, path: Path) -> TokenTable:
        """Read ``<identity> <role> <token|sha256:hex>`` lines; '#' starts a comment."""
        entries: dict[str, tuple[str, str]] = {}
        for number, raw in enumerate(path.read_text().splitlines(), 1):
            words = raw.split("#", 1)[0].split()
            if not words:
                continue
            if len(words) != 3:
                raise TokenFileError(path, number, f"{len(words)} fields, not 3")
            identity, role, secret = words
            if role not in ROLES:
                raise TokenFileError(path, number, f"unknown role {role!r}")
            digest = (secret.removeprefix(_TOKEN_SHA256).lower()
                      if secret.startswith(_TOKEN_SHA256) else _digest(secret))
            if len(digest) != 64:
                raise TokenFileError(path, number, "a sha256 digest is 64 hex digits")
            entries[digest] = (identity, role)
        return cls(entries)

    def caller(self, token: str) -> Caller | None:
        digest = _digest(token)
        for known, (identity, role) in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return Caller(identity, role, "token")
        return None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- credentials -----------------------------------------------------------------
def server_credentials(files: CertFiles, *,
                       require_client_auth: bool = True) -> grpc.ServerCredentials:
    """TLS for a server: its certificate, and (by default) a client certificate
    from the twin's CA required of every caller. ``require_client_auth=False``
    is for token-only callers; the server then asks for no certificate, so a
    role is only ever read from one the handshake verified."""
    return grpc.ssl_server_credentials([(files.key_pem(), files.cert_pem())],
                                       root_certificates=files.ca_pem(),
                                       require_client_auth=require_client_auth)


def channel_credentials(client: CertFiles | None, *, ca_pem: bytes | None = None,
                        token: str | None = None) -> grpc.ChannelCredentials:
    """TLS for a caller: trust the twin's CA, present ``client``'s certificate
    (if any), and send ``token`` as a bearer token on every call (if any)."""
    root = ca_pem if ca_pem is not None else client.ca_pem() if client else None
    if root is None:
        raise ValueError("channel_credentials needs the CA: pass a client certificate "
                         "or ca_pem")
    creds = grpc.ssl_channel_credentials(
        root_certificates=root, private_key=client.key_pem() if client else None,
        certificate_chain=client.cert_pem() if client else None)
    if token is not None:
        creds = grpc.composite_channel_credentials(
            creds, grpc.access_token_call_credentials(token))
    return creds


def caller_from_auth_context(auth: Mapping[str, Sequence[bytes]]) -> Caller | None:
    """The caller a verified TLS client certificate names, or None without one.

    gRPC puts the peer's URI SANs under ``peer_uri`` (all SANs under
    ``x509_subject_alternative_name`` in older versions) and its CN under
    ``x509_common_name``; they are there only once the handshake verified the
    certificate against the CA."""
    if list(auth.get("transport_security_type", ())) != [b"ssl"]:
        return None
    cns = list(auth.get("x509_common_name", ()))
    if len(cns) != 1:
        return None
    uris = auth.get("peer_uri") or auth.get("x509_subject_alternative_name") or ()
    role = role_from_uris([u.decode(errors="replace") for u in uris])
    return Caller(cns[0].decode(errors="replace"), role, "certificate")


# --- authorization ---------------------------------------------------------------
@dataclass(frozen=True)
class Refusal:
    code: grpc.StatusCode
    reason: str


def decide(method: str, caller: Caller, table: Mapping[str, str] = METHOD_ROLES
           ) -> Refusal | None:
    """None if ``caller`` may call ``method``, else why not (pure: no I/O)."""
    short = method.rsplit("/", 1)[-1]
    if caller.role is None:
        how = ("its certificate carries no known role" if caller.source == "certificate"
               else "no client certificate or bearer token")
        return Refusal(grpc.StatusCode.UNAUTHENTICATED,
                       f"caller {caller.identity!r} has no role ({how}); use a client "
                       f"certificate or token with a role ({', '.join(ROLES)})")
    need = table.get(method)
    if need is None:
        return Refusal(grpc.StatusCode.PERMISSION_DENIED,
                       f"{method} is not in the authorization table, so no role may call it")
    if _RANK[caller.role] < _RANK[need]:
        return Refusal(grpc.StatusCode.PERMISSION_DENIED,
                       f"role {caller.role} may not call {short} (it needs {need})")
    return None


Behavior = Callable[..., Any]


class RoleInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Authorize every call by the caller's role, before the servicer runs.

    ``intercept_service`` sees only the method and metadata, not the peer, so
    it wraps the handler: the check runs inside the call, with the servicer
    context and its ``auth_context()``. ``base_labels`` (e.g. mission and
    service) lead the counter's own labels method, role and code.
    """

    def __init__(self, registry: CollectorRegistry, *,
                 table: Mapping[str, str] = METHOD_ROLES, tokens: TokenTable | None = None,
                 base_labels: Mapping[str, str] | None = None) -> None:
        self.table = table
        self.tokens = tokens
        self._base = dict(base_labels or {})
        self.refused = Counter("twin_grpc_refused", "gRPC calls refused by authorization",
                               [*self._base, "method", "role", "code"], registry=registry)

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails],
                                         Awaitable[grpc.RpcMethodHandler | None]],
            details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None  # gRPC answers UNIMPLEMENTED
        method: str = details.method
        metadata = tuple(details.invocation_metadata or ())

        async def check(context: grpc.aio.ServicerContext) -> None:
            await self.authorize(method, metadata, context)

        return _guarded(handler, check)

    def caller(self, metadata: Sequence[tuple[str, str | bytes]],
               context: grpc.aio.ServicerContext) -> Caller | None:
        """The caller, or None for a bearer token that is not in the table.
        A token is looked at only when this interceptor has a token table;
        otherwise the certificate alone names the caller."""
        token = _bearer(metadata)
        if token is not None and self.tokens is not None:
            return self.tokens.caller(token)
        return caller_from_auth_context(context.auth_context()) or ANONYMOUS

    async def authorize(self, method: str, metadata: Sequence[tuple[str, str | bytes]],
                        context: grpc.aio.ServicerContext) -> None:
        caller = self.caller(metadata, context)
        refusal = (decide(method, caller, self.table) if caller is not None else
                   Refusal(grpc.StatusCode.UNAUTHENTICATED,
                           "the bearer token is not known; ask an operator for a valid one"))
        if refusal is None:
            return
        who = caller or Caller("unknown-token", None, "token")
        code = refusal.code.name
        self.refused.labels(*self._base.values(), method, who.role or NO_ROLE, code).inc()
        log.warning("grpc call refused: %s", refusal.reason, extra={
            "method": method, "caller": who.identity, "role": who.role or NO_ROLE,
            "via": who.source, "peer": context.peer(), "code": code})
        await context.abort(refusal.code, refusal.reason)


def _bearer(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str) \
                and value[:len(_BEARER)].lower() == _BEARER:
            return value[len(_BEARER):].strip()
    return None


def _guarded(handler: grpc.RpcMethodHandler,
             check: Callable[[grpc.aio.ServicerContext], Awaitable[None]]
             ) -> grpc.RpcMethodHandler:
    """``handler`` with ``check(context)`` awaited before its behaviour runs."""
    kinds = (("unary_unary", grpc.unary_unary_rpc_method_handler),
             ("unary_stream", grpc.unary_stream_rpc_method_handler),
             ("stream_unary", grpc.stream_unary_rpc_method_handler),
             ("stream_stream", grpc.stream_stream_rpc_method_handler))
    for attr, make in kinds:
        inner = getattr(handler, attr)
        if inner is not None:
            return make(_wrap(inner, check), request_deserializer=handler.request_deserializer,
                        response_serializer=handler.response_serializer)
    raise TypeError(f"a gRPC method handler with no behaviour: {handler!r}")


def _wrap(inner: Behavior,
          check: Callable[[grpc.aio.ServicerContext], Awaitable[None]]) -> Behavior:
    """Keep the behaviour's shape: grpc.aio treats an async generator (or a
    plain generator) as a response stream and awaits a coroutine."""
    if inspect.isasyncgenfunction(inner):
        async def agen(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await check(context)
            async for response in inner(request, context):
                yield response
        return agen
    if inspect.isgeneratorfunction(inner):
        async def gen(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await check(context)
            for response in inner(request, context):
                yield response
        return gen

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await check(context)
        result = inner(request, context)
        return await result if inspect.isawaitable(result) else result
    return call
