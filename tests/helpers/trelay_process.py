"""A real `trelay serve` process for the tests, and a TURN Allocate against it.

`running_trelay` runs the installed console script (`.venv/bin/trelay`) with the given
flags, reads its ready line and kills it on leaving if the test has not stopped it;
`allocate_with` does the 401 challenge and a signed Allocate (and ChannelBinds) against
one of its UDP listeners. Every wait has a timeout.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from trelay.stun.address_attributes import XorPeerAddress, XorRelayedAddress
from trelay.stun.attributes import (
    ChannelNumber,
    Lifetime,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
)
from trelay.stun.codes import MessageClass, Method
from trelay.stun.credentials import long_term_key
from trelay.stun.error_attributes import ErrorCodeAttribute
from trelay.stun.integrity import encode_signed, verify_integrity
from trelay.stun.message import Message, decode_message, encode_message, new_transaction_id

TIMEOUT = 30
LOG_POLL = 0.02  # seconds between two reads of a running node's stderr


def trelay_command() -> list[str]:
    script = Path(sys.executable).with_name("trelay")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "trelay.process.cli"]  # pragma: no cover - not installed


@dataclass
class Running:
    process: trio.Process
    ready: dict[str, object]
    stderr_path: Path

    def addresses(self, transport: str) -> list[tuple[str, int]]:
        values = self.ready[transport]
        assert isinstance(values, list)
        pairs = [str(v).rsplit(":", 1) for v in values]
        return [(host.strip("[]"), int(port)) for host, port in pairs]

    async def log_when(self, done: Callable[[str], bool]) -> str:
        """The node's stderr once `done` holds of it, or as it is after `TIMEOUT` (the
        caller's asserts then say what is missing): a running node writes its INFO
        lines up to `trelay.ops.log_buffer.FLUSH_DELAY` after logging them."""
        for _ in range(int(TIMEOUT / LOG_POLL)):  # bounded: TIMEOUT at the most
            text = self.stderr_path.read_text()
            if done(text):
                break
            await trio.sleep(LOG_POLL)
        return text


async def read_line(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    for _ in range(10_000):
        if b"\n" in data:
            return data.partition(b"\n")[0]
        chunk = await stream.receive_some(4096)
        assert chunk, "stdout closed before the ready line"
        data += chunk
    raise AssertionError("no line")


@asynccontextmanager
async def running_trelay(
    tmp_path: Path, *args: str, launcher: Sequence[str] = ()
) -> AsyncIterator[Running]:
    """`trelay serve args` until its ready line; `launcher` runs it (e.g. a Python that
    sets a resource limit and execs the rest of its arguments)."""
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [*launcher, *trelay_command(), "serve", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        assert process.stdout is not None
        with trio.fail_after(TIMEOUT):
            line = await read_line(process.stdout)
        ready = json.loads(line)
        assert isinstance(ready, dict)
        yield Running(process, ready, stderr_path)
    finally:
        if process.returncode is None:
            process.kill()
            with trio.fail_after(TIMEOUT):
                await process.wait()


async def stop(running: Running, signal_number: int) -> int:
    """Send `signal_number` and wait (bounded) for the exit status."""
    running.process.send_signal(signal_number)
    with trio.fail_after(TIMEOUT):
        return await running.process.wait()


async def allocate_with(
    server: tuple[str, int],
    username: str,
    password: str,
    channel_binds: Sequence[tuple[tuple[str, int], int | None]] = (),
    *,
    refused: int | None = None,
    signed: bool = True,
) -> None:
    """401 challenge, then a signed Allocate that must succeed with a relayed address
    (or, with `refused`, fail with that error code, signed unless `signed` is False: a
    server cannot sign its answer to a username it does not know).

    Then one ChannelBind per (peer, expected error code or None for success), and the
    allocation is deleted (Refresh with LIFETIME 0), as a client that is done does: a
    drain then has nothing to wait for.
    """
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        await client.bind(("127.0.0.1", 0))
        transport = (RequestedTransport(17),)
        first = Message(Method.ALLOCATE, MessageClass.REQUEST, new_transaction_id(), transport)
        await client.sendto(encode_message(first), server)
        with trio.fail_after(TIMEOUT):
            challenge = decode_message(await client.recv(2048))
        nonce, realm = challenge.get(Nonce), challenge.get(Realm)
        assert nonce is not None and realm is not None
        attributes = (*transport, Username(username), Realm(realm.value), Nonce(nonce.value))
        second = Message(Method.ALLOCATE, MessageClass.REQUEST, new_transaction_id(), attributes)
        key = long_term_key(username, realm.value, password)
        await client.sendto(encode_signed(second, key), server)
        with trio.fail_after(TIMEOUT):
            data = await client.recv(2048)
        reply = decode_message(data)
        assert verify_integrity(data, key) is signed
        if refused is not None:
            error = reply.get(ErrorCodeAttribute)
            assert error is not None and error.code == refused, reply
            return
        assert reply.message_class is MessageClass.SUCCESS, reply
        assert reply.get(XorRelayedAddress) is not None
        for channel, (peer, expected) in enumerate(channel_binds, start=0x4000):
            bind = Message(
                Method.CHANNEL_BIND, MessageClass.REQUEST, new_transaction_id(),
                (ChannelNumber(channel), XorPeerAddress(*peer), *attributes[1:]),
            )  # fmt: skip
            await client.sendto(encode_signed(bind, key), server)
            with trio.fail_after(TIMEOUT):
                answer = decode_message(await client.recv(2048))
            error = answer.get(ErrorCodeAttribute)
            assert (None if error is None else error.code) == expected, answer
        delete = Message(
            Method.REFRESH,
            MessageClass.REQUEST,
            new_transaction_id(),
            (Lifetime(0), *attributes[1:]),
        )
        await client.sendto(encode_signed(delete, key), server)
        with trio.fail_after(TIMEOUT):
            deleted = decode_message(await client.recv(2048))
        assert deleted.message_class is MessageClass.SUCCESS, deleted
