"""A real `trelay serve` for the reliability tests, and blocking probes of it.

Owns the node the fuzzer attacks: `running_node` starts the installed console script on
loopback with UDP, TCP and TLS listeners (TLS on the development certificate), a static
user and loopback peers allowed (every peer the tests name is on 127.0.0.0/8 or denied, so
nothing relayed can leave the machine), its log written to a file; `log_problems` reads
that log for tracebacks and ERROR lines. The probes are the "still serving" checks:
`binding` (an answered Binding request over UDP) and `allocate` (the 401 challenge, a
signed Allocate that must succeed, then a Refresh with LIFETIME 0). Blocking sockets with
timeouts: every wait is bounded.
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.trelay_process import trelay_command
from trelay.stun.address_attributes import XorRelayedAddress
from trelay.stun.attributes import Attribute, Lifetime, Nonce, Realm, RequestedTransport, Username
from trelay.stun.codes import MessageClass, Method
from trelay.stun.credentials import long_term_key
from trelay.stun.integrity import encode_signed
from trelay.stun.message import Message, decode_message, encode_message, new_transaction_id

USER, PASSWORD, REALM = "fuzz", "fuzz-password", "fuzz.example"
TIMEOUT = 5.0
Address = tuple[str, int]


@dataclass
class Node:
    process: subprocess.Popen[bytes]
    udp: Address
    tcp: Address
    tls: Address
    log: Path

    def log_problems(self) -> list[str]:
        """Lines of the node's log that are tracebacks or errors (none expected)."""
        lines = self.log.read_text(errors="replace").splitlines()
        return [line for line in lines if "Traceback" in line or ": ERROR: " in line]

    def alive(self) -> bool:
        return self.process.poll() is None


def _address(text: str) -> Address:
    host, port = text.rsplit(":", 1)
    return host.strip("[]"), int(port)


@contextmanager
def running_node(workdir: Path, *extra: str, loopback_peers: bool = True) -> Iterator[Node]:
    """`extra` flags are appended; without `loopback_peers` the default peer policy holds."""
    log = workdir / "trelay.log"
    command = [
        *trelay_command(), "serve",
        "--listen-udp", "127.0.0.1:0",
        "--listen-tcp", "127.0.0.1:0",
        "--listen-tls", "127.0.0.1:0",
        "--user", f"{USER}:{PASSWORD}",
        "--realm", REALM,
        *(["--allow-loopback-peers"] if loopback_peers else []),
        "--relay-address", "127.0.0.1",
        *extra,
    ]  # fmt: skip
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr
        )
    try:
        assert process.stdout is not None
        readable, _, _ = select.select([process.stdout], [], [], 30.0)
        assert readable, "no ready line within 30 s"
        ready = json.loads(process.stdout.readline())
        yield Node(
            process,
            _address(ready["udp"][0]),
            _address(ready["tcp"][0]),
            _address(ready["tls"][0]),
            log,
        )
    finally:
        process.kill()
        process.wait(TIMEOUT)


# --- probes -------------------------------------------------------------------------------


def udp_socket(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(TIMEOUT)
    sock.bind((host, 0))
    return sock


def exchange(sock: socket.socket, server: Address, data: bytes) -> Message:
    """Send a request; the response with its transaction id (others are skipped)."""
    sock.sendto(data, server)
    for _ in range(1000):  # bounded: each recv waits at most TIMEOUT
        reply, _ = sock.recvfrom(65536)
        if reply[8:20] == data[8:20]:
            return decode_message(reply)
    raise AssertionError("no response")


def binding(server: Address, source: str = "127.0.0.1") -> Message:
    """An answered Binding request from a fresh socket (RFC 8489 §3)."""
    with udp_socket(source) as sock:
        request = Message(Method.BINDING, MessageClass.REQUEST, new_transaction_id(), ())
        response = exchange(sock, server, encode_message(request))
    assert response.message_class is MessageClass.SUCCESS, response
    return response


def challenge(sock: socket.socket, server: Address) -> tuple[tuple[Attribute, ...], bytes]:
    """The 401 to an unsigned Allocate: (USERNAME, REALM, NONCE) to sign with, and the key."""
    first = Message(
        Method.ALLOCATE, MessageClass.REQUEST, new_transaction_id(), (RequestedTransport(17),)
    )
    reply = exchange(sock, server, encode_message(first))
    nonce, realm = reply.get(Nonce), reply.get(Realm)
    assert nonce is not None and realm is not None, reply
    auth = (Username(USER), Realm(realm.value), Nonce(nonce.value))
    return auth, long_term_key(USER, realm.value, PASSWORD)


def signed_request(
    sock: socket.socket,
    server: Address,
    auth: tuple[Attribute, ...],
    key: bytes,
    method: Method,
    *attributes: Attribute,
) -> Message:
    """A request signed with `key` (after `challenge`); its response."""
    request = Message(method, MessageClass.REQUEST, new_transaction_id(), (*attributes, *auth))
    return exchange(sock, server, encode_signed(request, key))


def open_allocation(
    sock: socket.socket, server: Address, *extra: Attribute
) -> tuple[tuple[Attribute, ...], bytes, Address]:
    """Challenge, then an Allocate that must succeed: (auth attributes, key, relayed)."""
    auth, key = challenge(sock, server)
    reply = signed_request(sock, server, auth, key, Method.ALLOCATE, RequestedTransport(17), *extra)
    assert reply.message_class is MessageClass.SUCCESS, reply
    relayed = reply.get(XorRelayedAddress)
    assert relayed is not None
    return auth, key, (relayed.host, relayed.port)


def allocate(server: Address, source: str = "127.0.0.1") -> None:
    """An authenticated Allocate that succeeds, then deleted (RFC 8656 §7.1, §7.3)."""
    with udp_socket(source) as sock:
        auth, key, _ = open_allocation(sock, server)
        delete = Message(
            Method.REFRESH, MessageClass.REQUEST, new_transaction_id(), (Lifetime(0), *auth)
        )
        deleted = exchange(sock, server, encode_signed(delete, key))
        assert deleted.message_class is MessageClass.SUCCESS, deleted


def client_tls_context() -> ssl.SSLContext:
    """The development certificate is self-signed: the tests do not verify it."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
