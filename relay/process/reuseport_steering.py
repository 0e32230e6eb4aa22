"""Which worker's socket of a UDP listen address a datagram reaches: a classic BPF program.

Owns the hashing of clients to the workers of `trelay serve --workers N` (design §4).
The supervisor binds N SO_REUSEPORT sockets per UDP address, in worker order, and
attaches this program to the group (SO_ATTACH_REUSEPORT_CBPF): the kernel then hands a
datagram to socket `worker_for(source, N)`, computed from the source address and port
only. Why not the kernel's own hash: RFC 8016 mobility (`trelay.turn.mobility`) lets a
worker capture a moved client by a socket of the group connected to its new address
(`trelay.node.turn_node.TurnNode.capture_client`); on kernels before 6.13 a connected
socket counts in the group's size and the kernel's hash would then send most other
clients to other workers. With the program the index depends on N and the source alone,
whatever sockets join or leave; a socket at index N or above (a connected one) is never
chosen by it, and the kernel prefers a connected socket for its own 5-tuple anyway.

The hash: the source address folded to 32 bits (IPv6: the XOR of its four words; an
IPv4 datagram on a dual-stack socket is IPv4 here too), XOR the port times 65537, times
0x9E3779B1 (Fibonacci hashing), bits 16 and up, modulo N. `worker_for` computes the
same in Python (the tests predict where a client lands). IPv6 extension headers before
UDP are not skipped: such datagrams hash by whatever lies at the port's offset, stably.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct

SO_ATTACH_REUSEPORT_CBPF = 51  # <asm-generic/socket.h>
SKF_NET_OFF = -0x100000  # classic BPF: offsets relative to the network header
_GOLDEN = 0x9E3779B1
_PORT_SPREAD = 0x10001
_MASK = 0xFFFFFFFF

# Classic BPF opcodes (<linux/filter.h>), the few the program uses.
_LD_W_ABS, _LD_H_ABS, _LD_B_ABS, _LD_H_IND = 0x20, 0x28, 0x30, 0x48
_LDX_W_MEM, _LDX_B_MSH, _ST, _TAX = 0x61, 0xB1, 0x02, 0x07
_RSH_K, _MUL_K, _MOD_K, _XOR_X = 0x74, 0x24, 0x94, 0xAC
_JA, _JEQ_K, _RET_A = 0x05, 0x15, 0x16
_INSTRUCTION = struct.Struct("HBBI")


def _op(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> bytes:
    return _INSTRUCTION.pack(code, jt, jf, k & _MASK)


def steering_program(workers: int) -> bytes:
    """The program's instructions (struct sock_filter[]) for a group of `workers`."""
    if not 1 <= workers <= 0xFFFF:
        raise ValueError(f"workers: {workers} outside 1..65535")
    net = SKF_NET_OFF
    return b"".join(
        (
            _op(_LD_B_ABS, net),  # 0: version and header length
            _op(_RSH_K, 4),  # 1
            _op(_JEQ_K, 6, 0, 13),  # 2: IPv6 -> 3, else -> 16
            _op(_LD_W_ABS, net + 8),  # 3: the IPv6 source, folded word by word
            _op(_TAX),  # 4
            _op(_LD_W_ABS, net + 12),  # 5
            _op(_XOR_X),  # 6
            _op(_TAX),  # 7
            _op(_LD_W_ABS, net + 16),  # 8
            _op(_XOR_X),  # 9
            _op(_TAX),  # 10
            _op(_LD_W_ABS, net + 20),  # 11
            _op(_XOR_X),  # 12
            _op(_ST, 0),  # 13: M[0] = the folded address
            _op(_LD_H_ABS, net + 40),  # 14: the source port, behind the fixed header
            _op(_JA, 4),  # 15 -> 20
            _op(_LD_W_ABS, net + 12),  # 16: the IPv4 source
            _op(_ST, 0),  # 17
            _op(_LDX_B_MSH, net),  # 18: X = the IPv4 header's length
            _op(_LD_H_IND, net),  # 19: the source port
            _op(_MUL_K, _PORT_SPREAD),  # 20
            _op(_LDX_W_MEM, 0),  # 21
            _op(_XOR_X),  # 22
            _op(_MUL_K, _GOLDEN),  # 23
            _op(_RSH_K, 16),  # 24
            _op(_MOD_K, workers),  # 25
            _op(_RET_A),  # 26
        )
    )


def worker_for(source: tuple[str, int], workers: int) -> int:
    """The index of the socket (worker) the program picks for a datagram from `source`."""
    host, port = source[0], source[1]
    address = ipaddress.ip_address(host.partition("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    packed = (mapped or address).packed
    folded = 0
    for offset in range(0, len(packed), 4):
        folded ^= int.from_bytes(packed[offset : offset + 4], "big")
    value = (folded ^ (port * _PORT_SPREAD)) & _MASK
    return (((value * _GOLDEN) & _MASK) >> 16) % workers


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def attach_steering(sock: socket.socket, workers: int) -> None:
    """Attach the program to the SO_REUSEPORT group `sock` is in (any one socket of it);
    OSError if the kernel refuses it."""
    program = steering_program(workers)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // _INSTRUCTION.size, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, bytes(fprog))
