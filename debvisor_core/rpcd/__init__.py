"""debvisor-rpcd: the node's gRPC API (the ``rpcd`` extra: grpcio, cryptography, PyJWT,
prometheus-client). ``cli`` imports none of them; ``server`` and ``client`` need grpc.

grpc's fork support is turned off before grpc starts (unless the environment says
otherwise): with it, a process holding gRPC channels can lose a child that
``subprocess`` forks, by SIGABRT before exec ("epoll_wait error: Bad file descriptor",
grpc/grpc#43055) — and the daemon forks a child for every state change. Nothing here
forks and then uses grpc in the child, which is all that fork support is for.

And grpc's ``event_engine_listener`` experiment is turned off (``GRPC_EXPERIMENTS``, unless
the environment sets it): a connection the server accepts is then served by grpc's
classic I/O, polled by the thread that waits for the server's completion queue, instead
of handed between the EventEngine's threads and that one. Measured with rpcd on one
core (``bench/bench_rpcd.py``): about 1.4 fewer thread switches and 35 µs less CPU per
call, ~25 % more calls/s; grpc's maintainers name this variable as the way to turn the
experiment off. It only concerns listeners: a client is unchanged."""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
os.environ.setdefault("GRPC_EXPERIMENTS", "-event_engine_listener")

#: the port of a node's rpcd when an address names none (and of `rpcd serve` by default)
DEFAULT_PORT = 7443
#: initial metadata ``Invoke`` sends once it admitted the call (before the action runs): a
#: stream cut after it lost a node running the action, not one that refused it
ADMITTED = "x-debvisor-admitted"
