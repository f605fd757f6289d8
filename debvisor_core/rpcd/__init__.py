"""debvisor-rpcd: the node's gRPC API (the ``rpcd`` extra: grpcio, cryptography, PyJWT,
prometheus-client). ``cli`` imports none of them; ``server`` and ``client`` need grpc."""
