"""The gateway pod's probe: ``grpc.health.v1.Health/Check`` on its own gRPC port.

The six services also serve health in plaintext on TWIN_HEALTH_PORT, for the
kubelet's native gRPC probe, which presents no client certificate. The
gateway (services/gateway/service.py) serves health only on its gRPC port,
with mutual TLS, so the kubelet cannot ask it directly: this script asks from
inside the pod (an exec probe), presenting the certificate the pod already
mounts for its Uplink calls to ground (client-gateway). No other file is
needed, and nothing is opened to other pods.

Exit 0 when the gateway answers SERVING (it does once every NATS subscription
is in place), 1 otherwise, saying why on stderr (``kubectl describe pod``
shows it). Mounted from the ConfigMap twin-gateway-probe; the image's Python
runs it.
"""

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

#: Well inside the probes' timeoutSeconds (5 s), which includes Python's start.
CALL_TIMEOUT_S = 2.0
_TRUE = ("1", "true", "yes", "on")


def _read(directory: str, name: str) -> bytes:
    with open(os.path.join(directory, name), "rb") as f:
        return f.read()


def channel() -> grpc.Channel:
    """The gateway's gRPC port on loopback, as the gateway serves it."""
    address = f"127.0.0.1:{os.environ.get('TWIN_GRPC_PORT', '50051')}"
    if os.environ.get("TWIN_INSECURE", "").strip().lower() in _TRUE:
        return grpc.insecure_channel(address)
    pki = os.environ["TWIN_PKI_DIR"]
    # The server certificate names 127.0.0.1 (services/kernel/pki.py).
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(
        _read(pki, "ca.crt"), _read(pki, "client-gateway.key"), _read(pki, "client-gateway.crt")))


def main() -> int:
    with channel() as ch:
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                         timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:  # raised as a grpc.Call: it has the code and details
            why = (f"{exc.code().name}: {exc.details()}" if isinstance(exc, grpc.Call)
                   else repr(exc))
            print(f"gateway health: {why}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if status != "SERVING":
        print(f"gateway health: {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
