"""Sealing RFC 8016 MOBILITY-TICKETs on a relay node: AES-256 and HMAC-SHA256, per node key.

Owns the ticket crypto the pure core may not import: `SealedTickets` is the core's
`trelay.turn.mobility.TicketCodec`. A ticket is 32 ASCII bytes:

    base64url( AES-256(k_enc, block) || HMAC-SHA256(k_mac, AES-256(k_enc, block))[:8] )

where `block` is 16 bytes: a format byte, the worker index, the relayed port, the
allocation's random id, the ticket's serial and its expiry (`trelay.turn.mobility.Ticket`).
The block is one AES block, so encrypting it alone is a pseudorandom permutation (no
IV, no mode to misuse): the client learns nothing of what is inside, and two tickets
never share a block (the id, serial pair differs). The tag (encrypt-then-MAC, 64 bits)
authenticates it: an altered or forged ticket fails before anything inside is read.
Why not AES-GCM: its 12-byte nonce and 16-byte tag alone exceed what clients keep;
coturn's `turnutils_uclient` stores a ticket in 32 bytes and sends it with `strlen`, so a
ticket must be at most 32 bytes with no NUL (base64url has none). Opening also demands
that the allocation still holds that id and serial (`MobileAllocations.find`), and the
request carrying it must authenticate as the allocation's user: a forgery needs the
user's credentials and 64 bits of luck.

The key: both subkeys derive from one node key (`ticket_key`): the key nonces are
stamped with, which every worker of a node shares (its supervisor's, or derived from
the TURN REST secrets), so any worker opens a ticket any other sealed and reads which
worker holds the allocation (`owner`). A restart with a random key voids old tickets:
their allocations are gone with the process anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from trelay.turn.mobility import Ticket

FORMAT = 1
# Format, worker index, relayed port, allocation id, serial, expiry (seconds).
_BLOCK = struct.Struct("!BBHIII")
_TAG_BYTES = 8
# base64url of 16 + 8 bytes, no padding needed: 32 characters.
TICKET_BYTES = 32
MAX_WORKERS = 256


def ticket_key(node_key: bytes) -> bytes:
    """The key tickets are sealed with, from the node's key (its nonce key)."""
    return hashlib.sha256(b"trelay mobility ticket key|" + node_key).digest()


class SealedTickets:
    """The core's `TicketCodec` for one worker of a node (worker 0 when there is one)."""

    __slots__ = ("_cipher", "_mac_key", "worker")

    def __init__(self, key: bytes, worker: int = 0) -> None:
        if not 0 <= worker < MAX_WORKERS:
            raise ValueError(f"worker index {worker} outside 0..{MAX_WORKERS - 1}")
        self.worker = worker
        encryption_key = hashlib.sha256(b"encrypt|" + key).digest()
        self._mac_key = hashlib.sha256(b"authenticate|" + key).digest()
        # One block, enciphered alone: the raw block cipher, which ECB of one block is.
        self._cipher = Cipher(algorithms.AES256(encryption_key), modes.ECB())  # noqa: S305

    def seal(self, ticket: Ticket) -> bytes:
        block = _BLOCK.pack(
            FORMAT, self.worker, ticket.relayed_port, ticket.allocation_id, ticket.serial,
            ticket.expires_at,
        )  # fmt: skip
        encryptor = self._cipher.encryptor()
        sealed = encryptor.update(block) + encryptor.finalize()
        return base64.urlsafe_b64encode(sealed + self._tag(sealed))

    def open(self, sealed: bytes) -> Ticket | None:
        opened = self._open(sealed)
        if opened is None:
            return None
        _, ticket = opened
        return ticket

    def owner(self, sealed: bytes) -> int | None:
        """The index of the worker holding the ticket's allocation; None if the ticket
        was not sealed with this node's key."""
        opened = self._open(sealed)
        return None if opened is None else opened[0]

    def _open(self, sealed: bytes) -> tuple[int, Ticket] | None:
        if len(sealed) != TICKET_BYTES:
            return None
        try:
            raw = base64.urlsafe_b64decode(sealed)
        except (binascii.Error, ValueError):
            return None
        block, tag = raw[:16], raw[16:]
        if len(block) != 16 or not hmac.compare_digest(tag, self._tag(block)):
            return None
        decryptor = self._cipher.decryptor()
        fields = _BLOCK.unpack(decryptor.update(block) + decryptor.finalize())
        form, worker, port, allocation_id, serial, expires_at = fields
        if form != FORMAT:
            return None
        return worker, Ticket(port, allocation_id, serial, expires_at)

    def _tag(self, block: bytes) -> bytes:
        return hmac.new(self._mac_key, block, hashlib.sha256).digest()[:_TAG_BYTES]
