"""Ports for RFC 5780 tests: the four addresses of NAT discovery need fixed ports that are
free on two loopback IPs (127.0.0.1 and 127.0.0.2, both loopback on Linux)."""

from __future__ import annotations

import socket

PRIMARY_HOST = "127.0.0.1"
ALTERNATE_HOST = "127.0.0.2"
PORT_TRIES = 50


def port_free_on_both(hosts: tuple[str, str] = (PRIMARY_HOST, ALTERNATE_HOST)) -> int:
    """A UDP port free on both `hosts` now (the caller binds it right after: the kernel
    hands out ephemeral ports at random, so another test taking it meanwhile is unlikely)."""
    for _ in range(PORT_TRIES):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as first:
            first.bind((hosts[0], 0))
            port: int = first.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as second:
                try:
                    second.bind((hosts[1], port))
                except OSError:
                    continue
                return port
    raise AssertionError(f"no UDP port free on both {hosts} in {PORT_TRIES} tries")


def two_ports() -> tuple[int, int]:
    """Two different such ports: the primary and the alternate."""
    primary = port_free_on_both()
    for _ in range(PORT_TRIES):
        alternate = port_free_on_both()
        if alternate != primary:
            return primary, alternate
    raise AssertionError("the kernel kept handing out one port")
