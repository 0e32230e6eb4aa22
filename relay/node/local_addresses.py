"""The host's own IP addresses, for the peer policy's self-relay check (design §6).

Owns `local_addresses()`: every address configured on the host's interfaces, read from
the kernel with one rtnetlink dump (RTM_GETADDR, rtnetlink(7)); IFA_LOCAL is the local
address of an IPv4 interface (IFA_ADDRESS is the far end on a point-to-point link), and
IFA_ADDRESS the address of an IPv6 one. Link-local IPv6 addresses come without their
zone (the policy compares addresses, and a peer address carries none).

Why: a listener bound to 0.0.0.0 or :: answers at every address of the host, so a peer
at any of them with a listener's port would make the relay talk TURN to itself
(`trelay.turn.policy.OwnEndpoints`). The node gives the list to the core at start and at
each reload (`refresh_local_addresses`); addresses added between two reloads are not
known until the next one. Loopback and the unspecified addresses are denied with the
wildcard ports whatever this finds.

Where rtnetlink is not available (not Linux, or a sandbox without it) the list is
empty and that is logged once per call: the core still knows loopback and the
configured relay and external addresses.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import struct
from typing import Protocol

logger = logging.getLogger(__name__)

_RTM_NEWADDR = 20
_RTM_GETADDR = 22
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_IFA_ADDRESS = 1
_IFA_LOCAL = 2
_NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
_RTATTR = struct.Struct("=HH")  # length, type
_MAX_REPLIES = 4096  # datagrams read for one dump: a bound, far above any real host
_RECEIVE_BYTES = 65536


class UsesLocalAddresses(Protocol):
    def use_local_addresses(self, hosts: list[str]) -> None: ...


def refresh_local_addresses(server: UsesLocalAddresses) -> list[str]:
    """Enumerate the host's addresses and hand them to `server` (a `TurnServer`)."""
    hosts = local_addresses()
    server.use_local_addresses(hosts)
    return hosts


def local_addresses() -> list[str]:
    """Every IPv4 and IPv6 address of the host's interfaces, as text; [] if unknown."""
    try:
        return sorted(set(_dump()))
    except OSError as exc:
        logger.warning("cannot list the host's addresses (rtnetlink): %s", exc)
        return []


def _dump() -> list[str]:
    netlink = getattr(socket, "AF_NETLINK", None)
    if netlink is None:
        raise OSError("no AF_NETLINK on this platform")
    with socket.socket(netlink, socket.SOCK_RAW, 0) as sock:  # NETLINK_ROUTE is 0
        sock.settimeout(2.0)
        sock.bind((0, 0))
        sequence = os.getpid() & 0xFFFF
        body = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        header = _NLMSG_HEADER.pack(
            _NLMSG_HEADER.size + len(body), _RTM_GETADDR, _NLM_F_REQUEST | _NLM_F_DUMP,
            sequence, 0,
        )  # fmt: skip
        sock.send(header + body)
        found: list[str] = []
        for _ in range(_MAX_REPLIES):
            done = _parse(sock.recv(_RECEIVE_BYTES), sequence, found)
            if done:
                return found
    raise OSError("rtnetlink dump did not end")


def _parse(data: bytes, sequence: int, found: list[str]) -> bool:
    """Add the addresses in one netlink datagram to `found`; True at the dump's end."""
    offset = 0
    while offset + _NLMSG_HEADER.size <= len(data):
        length, kind, _, seq, _ = _NLMSG_HEADER.unpack_from(data, offset)
        if length < _NLMSG_HEADER.size:
            raise OSError("malformed netlink message")
        if seq == sequence:
            if kind == _NLMSG_DONE:
                return True
            if kind == _NLMSG_ERROR:
                raise OSError("rtnetlink refused the address dump")
            if kind == _RTM_NEWADDR:
                address = _address(data[offset + _NLMSG_HEADER.size : offset + length])
                if address is not None:
                    found.append(address)
        offset += (length + 3) & ~3
    return False


def _address(message: bytes) -> str | None:
    if len(message) < _IFADDRMSG.size:
        return None
    family = message[0]
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    size = 4 if family == socket.AF_INET else 16
    attributes: dict[int, bytes] = {}
    offset = _IFADDRMSG.size
    while offset + _RTATTR.size <= len(message):
        length, kind = _RTATTR.unpack_from(message, offset)
        if length < _RTATTR.size:
            break
        attributes[kind] = message[offset + _RTATTR.size : offset + length]
        offset += (length + 3) & ~3
    raw = attributes.get(_IFA_LOCAL) or attributes.get(_IFA_ADDRESS)
    if raw is None or len(raw) != size:
        return None
    return str(ipaddress.ip_address(raw))
