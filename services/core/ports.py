"""Free TCP ports on the loopback interface, for servers started by tests, benches and `eval e2e --local`."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now (the OS picks it; another binder may still race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])
