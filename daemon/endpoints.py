"""ZeroMQ endpoints: what both the frame source and the verdict publisher need to know of one."""

from __future__ import annotations


def binds_all_interfaces(endpoint: str) -> bool:
    """True for tcp://*:PORT, tcp://0.0.0.0:PORT and the IPv6 equivalents."""
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint.removeprefix("tcp://").rsplit(":", 1)[0]
    return host in ("*", "0.0.0.0", "::", "[::]", "[*]")
