"""What the test machine's network can do, asked once per test session."""

from __future__ import annotations

import functools
import socket


@functools.cache
def ipv6_loopback_works() -> bool:
    """True if a UDP socket can bind ::1 (some containers have no IPv6 at all)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True
