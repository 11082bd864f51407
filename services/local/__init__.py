"""The whole twin in one process, for tests, benchmarks and campaigns.

`simloop.SimLoop` drives the vehicle cores directly, without a bus;
`inproc.LocalTwin` runs every service with its own NATS connection and gRPC
server inside one event loop. Both compose services, so they live above the
kernel and the service packages, never inside the kernel.
"""
