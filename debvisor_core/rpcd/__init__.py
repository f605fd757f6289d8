"""debvisor-rpcd: the node's gRPC API (the ``rpcd`` extra: grpcio, cryptography, PyJWT,
prometheus-client). ``cli`` imports none of them; ``server`` and ``client`` need grpc.

grpc's fork support is turned off before grpc starts (unless the environment says
otherwise): with it, a process holding gRPC channels can lose a child that
``subprocess`` forks, by SIGABRT before exec ("epoll_wait error: Bad file descriptor",
grpc/grpc#43055) — and the daemon forks a child for every state change. Nothing here
forks and then uses grpc in the child, which is all that fork support is for."""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

#: the port of a node's rpcd when an address names none (and of `rpcd serve` by default)
DEFAULT_PORT = 7443
#: initial metadata ``Invoke`` sends once it admitted the call (before the action runs): a
#: stream cut after it lost a node running the action, not one that refused it
ADMITTED = "x-debvisor-admitted"
