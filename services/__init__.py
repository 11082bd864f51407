"""change6-twin: the digital twin of Chang'e-6 (see README.md)."""

import os as _os

# gRPC's fork support restarts its poller threads in a forked child; a child
# that subprocess.Popen forks (with close_fds) and then execs can hit the
# closed epoll fd first and abort (grpc/grpc#43055). The CLI, the supervisor and
# the tests fork services while gRPC runs, and nothing here needs gRPC across a
# fork, so it is off unless the operator turns it on. Set before grpc loads.
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
