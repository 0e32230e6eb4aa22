"""The listen ports of a multi-worker node, made concrete and held by the supervisor.

Owns step 1 of `trelay.process.workers` and the per-worker settings:
- `reserve_listen_ports`: every listen address is first bound by a plain socket (no
  SO_REUSEPORT), so a port in use fails as with one process (`ListenError` naming its
  key) and a port-0 address gets a port nobody holds; then, per UDP (and DTLS) address,
  one SO_REUSEPORT socket per worker is bound and kept for the supervisor's whole life
  (see `Reservation` for why), with the program that hashes clients to workers by their
  source alone (`trelay.process.reuseport_steering`), and per TCP/TLS address one probe
  holds the port until the workers listen on it.
- `split_port_range` / `worker_settings`: each worker gets the settings with concrete
  ports, its own disjoint slice of `relay.ports`, and no HTTP port or token API.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field, replace

from trelay.config.api_settings import ApiSettings
from trelay.config.settings import HttpSettings, ListenSettings, Settings
from trelay.config.values import ListenAddress
from trelay.node.datagram_batch import enlarge_receive_buffer
from trelay.node.listeners import ListenError, nat_discovery_key, paired_ports
from trelay.process.reuseport_steering import attach_steering


@dataclass(slots=True)
class Reservation:
    """Concrete listen ports and the supervisor's sockets holding them.

    `udp[i][w]` is worker w's socket for `listen.udp[i]` (then for `listen.nat[i -
    len(listen.udp)]`, RFC 5780's other addresses, then for each `listen.dtls`: DTLS is
    UDP, and the kernel keeps each client's 4-tuple, so its whole association and the
    cookie exchange before it, on one worker), bound by the supervisor and kept
    for its whole life (a worker inherits it, a restarted one inherits it again), so the
    port's SO_REUSEPORT group never changes and the kernel keeps every UDP client on its
    worker: when a socket leaves a group, Linux moves the group's last socket into its
    slot, which would send one surviving worker's clients to the restarted one.
    `probes` hold TCP/TLS ports until the workers listen on them (bound, never listening,
    so no connection is ever queued on them).
    """

    listen: ListenSettings
    probes: list[socket.socket] = field(default_factory=list)
    udp: list[list[socket.socket]] = field(default_factory=list)

    def udp_fds(self, worker: int) -> tuple[int, ...]:
        return tuple(sockets[worker].fileno() for sockets in self.udp)

    def close(self) -> None:
        close_all(self.probes)
        for sockets in self.udp:
            close_all(sockets)


def reserve_listen_ports(listen: ListenSettings, workers: int) -> Reservation:
    """Every port of `listen` made concrete and held (see `Reservation`).

    A port-0 TCP address first tries its UDP twin's port (`trelay.node.listeners.paired_ports`).
    Raises `ListenError` (sockets opened so far are closed) when an address is taken.
    """
    reservation = Reservation(listen)
    probes = reservation.probes
    try:
        udp: list[ListenAddress] = []
        for index, address in enumerate(listen.udp):
            sockets: list[socket.socket] = []
            reservation.udp.append(sockets)
            udp.append(_reserve(socket.SOCK_DGRAM, f"listen.udp[{index}]", address, sockets,
                                workers))  # fmt: skip
        for address in listen.nat:  # RFC 5780's other three: after listen.udp, in `udp`
            sockets = []
            reservation.udp.append(sockets)
            _reserve(socket.SOCK_DGRAM, nat_discovery_key(listen, address), address, sockets,
                     workers)  # fmt: skip
        dtls: list[ListenAddress] = []
        for index, address in enumerate(listen.dtls):  # after listen.nat, in `udp`
            sockets = []
            reservation.udp.append(sockets)
            dtls.append(_reserve(socket.SOCK_DGRAM, f"listen.dtls[{index}]", address, sockets,
                                 workers))  # fmt: skip
        twins = paired_ports(listen, [(a.host, a.port) for a in udp])
        tcp: list[ListenAddress] = []
        for index, (address, twin) in enumerate(zip(listen.tcp, twins, strict=True)):
            key = f"listen.tcp[{index}]"
            if twin is not None:
                paired = replace(address, port=twin)
                try:
                    tcp.append(_reserve(socket.SOCK_STREAM, key, paired, probes))
                    continue
                except ListenError:
                    pass  # pairing is a convenience: any free port will do
            tcp.append(_reserve(socket.SOCK_STREAM, key, address, probes))
        tls = [_reserve(socket.SOCK_STREAM, f"listen.tls[{i}]", a, probes)
               for i, a in enumerate(listen.tls)]  # fmt: skip
    except BaseException:
        reservation.close()
        raise
    reservation.listen = ListenSettings(
        tuple(udp), tuple(tcp), tuple(tls), dtls=tuple(dtls), nat=listen.nat
    )
    return reservation


def _reserve(
    kind: socket.SocketKind,
    key: str,
    address: ListenAddress,
    holders: list[socket.socket],
    copies: int = 1,
) -> ListenAddress:
    """Check `address` is free, make its port concrete, bind `copies` SO_REUSEPORT
    sockets there (appended to `holders`)."""
    try:
        infos = socket.getaddrinfo(address.host or None, address.port, type=kind,
                                   flags=socket.AI_PASSIVE)  # fmt: skip
        family, _, proto, _, sockaddr = infos[0]
        # Without SO_REUSEPORT: fails if anyone holds the port, ours included.
        with _socket(family, kind, proto, reuse_port=False) as plain:
            plain.bind(sockaddr)
            port = plain.getsockname()[1]
        for _ in range(copies):
            holder = _socket(family, kind, proto, reuse_port=True)
            holders.append(holder)
            if kind == socket.SOCK_DGRAM:
                enlarge_receive_buffer(holder)  # as `trelay.node.udp_listener` does
            holder.bind((sockaddr[0], port, *sockaddr[2:]))
        if kind == socket.SOCK_DGRAM and copies > 1:
            # Clients hash to workers by their source alone, whatever sockets join the
            # group later (RFC 8016 mobility captures moved clients that way).
            attach_steering(holders[-1], copies)
    except OSError as exc:
        raise ListenError(key, address, exc) from exc
    return replace(address, port=port)


def _socket(family: int, kind: int, proto: int, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as the listeners
    if kind == socket.SOCK_STREAM:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()
    sockets.clear()


def split_port_range(ports: tuple[int, int] | None, count: int) -> list[tuple[int, int] | None]:
    """`count` contiguous, disjoint slices covering `ports` (None: any free port each)."""
    if ports is None:
        return [None] * count
    low, high = ports
    size = high - low + 1
    if size < count:
        raise ValueError(f"{low}-{high} has fewer ports than {count} workers")
    return [(low + i * size // count, low + (i + 1) * size // count - 1) for i in range(count)]


def worker_settings(settings: Settings, listen: ListenSettings) -> list[Settings]:
    """Each worker's settings: concrete ports, its relay port slice, no HTTP and no API."""
    slices = split_port_range(settings.relay.ports, settings.workers)
    shared = replace(settings, listen=listen, http=HttpSettings(listen=()), api=ApiSettings())
    return [replace(shared, relay=replace(settings.relay, ports=s)) for s in slices]
