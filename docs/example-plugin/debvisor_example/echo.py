"""A tiny TCP echo server: the example plugin's lab service."""

from __future__ import annotations

import socketserver
import sys


class Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line)


if __name__ == "__main__":
    with socketserver.ThreadingTCPServer(("127.0.0.1", int(sys.argv[1])), Echo) as srv:
        srv.serve_forever()
