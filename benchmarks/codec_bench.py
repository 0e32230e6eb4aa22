"""STUN codec throughput: messages decoded, encoded and integrity-checked per second.

Run as `python -m benchmarks.codec_bench` (or `make bench`); never run by the tests. It
times three realistic messages with `time.perf_counter`, a fixed iteration count and
several repeats, keeps the best repeat (the least disturbed by the rest of the machine),
prints a table and rewrites the "Codec" section of benchmarks/README.md with the command,
the machine and the figures. Other sections of that file are left as they are.

The messages:

- an ICE connectivity check (Binding request: USERNAME, PRIORITY, ICE-CONTROLLING,
  USE-CANDIDATE, MESSAGE-INTEGRITY with a short-term key, FINGERPRINT);
- an authenticated Allocate request (REQUESTED-TRANSPORT, LIFETIME, USERNAME, REALM,
  NONCE, SOFTWARE, MESSAGE-INTEGRITY with a long-term key, FINGERPRINT);
- a Send indication carrying 1200 bytes of DATA (XOR-PEER-ADDRESS, DATA, FINGERPRINT;
  indications are never authenticated, so it is checked for its fingerprint only).

"encode" is what a sender does: `encode_signed` for the signed messages, `encode_signed`
with FINGERPRINT only for the indication. "check" is `verify_integrity` (when the message
is signed) followed by `verify_fingerprint`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.report import README, machine_lines, write_marked_section
from trelay.stun.address_attributes import XorPeerAddress
from trelay.stun.attributes import (
    Data,
    IceControlling,
    Lifetime,
    Nonce,
    Priority,
    Realm,
    RequestedTransport,
    Software,
    UseCandidate,
    Username,
)
from trelay.stun.codes import MessageClass, Method, TransportProtocol
from trelay.stun.credentials import long_term_key, short_term_key
from trelay.stun.integrity import encode_signed, verify_fingerprint, verify_integrity
from trelay.stun.message import Message, decode_message

START = "<!-- codec-bench:start -->"
END = "<!-- codec-bench:end -->"


@dataclass(frozen=True, slots=True)
class Case:
    """One benchmarked message: how to encode it and the bytes a receiver gets."""

    name: str
    message: Message
    key: bytes | None

    def encode(self) -> bytes:
        return encode_signed(self.message, self.key)

    def check(self, data: bytes) -> bool:
        signed = self.key is None or verify_integrity(data, self.key)
        return signed and verify_fingerprint(data)


def cases() -> list[Case]:
    tid = bytes.fromhex("b7e7a701bc34d686fa87dfae")
    ice_username = "KRuP:9q+M"
    binding = Message(
        Method.BINDING,
        MessageClass.REQUEST,
        tid,
        (
            Username(ice_username),
            Priority(1853817087),
            IceControlling(0x932FF9B151263B36),
            UseCandidate(),
        ),
    )
    user, realm = "1735689600:alice", "turn.example.org"
    allocate = Message(
        Method.ALLOCATE,
        MessageClass.REQUEST,
        tid,
        (
            RequestedTransport(TransportProtocol.UDP),
            Lifetime(600),
            Username(user),
            Realm(realm),
            Nonce("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"),
            Software("trelay benchmark"),
        ),
    )
    send = Message(
        Method.SEND,
        MessageClass.INDICATION,
        tid,
        (XorPeerAddress("198.51.100.20", 49152), Data(bytes(range(256)) * 4 + bytes(176))),
    )
    return [
        Case("Binding request (ICE check)", binding, short_term_key("9sL8tH2dBqkC1XjW4vyb5Q")),
        Case("Allocate request (auth)", allocate, long_term_key(user, realm, "correct horse")),
        Case("Send indication (1200 B)", send, None),
    ]


def best_rate(operation: Callable[[], object], iterations: int, repeats: int) -> float:
    """Operations per second of the fastest of `repeats` runs of `iterations` calls."""
    best = float("inf")
    for _ in range(repeats):
        loop = range(iterations)
        start = time.perf_counter()
        for _ in loop:
            operation()
        best = min(best, time.perf_counter() - start)
    return iterations / best


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    size: int
    decode: float
    encode: float
    check: float


def measure(case: Case, iterations: int, repeats: int) -> Result:
    data = case.encode()
    # Sanity first: a benchmark of a codec that does not round trip measures nothing.
    decoded = decode_message(data)
    assert decoded.attributes[: len(case.message.attributes)] == case.message.attributes
    assert case.check(data)
    return Result(
        case.name,
        len(data),
        decode=best_rate(lambda: decode_message(data), iterations, repeats),
        encode=best_rate(case.encode, iterations, repeats),
        check=best_rate(lambda: case.check(data), iterations, repeats),
    )


def table(results: list[Result]) -> str:
    header = "| message | bytes | decoded/s | encoded/s | checked/s |"
    rule = "|---|--:|--:|--:|--:|"
    rows = [
        f"| {r.name} | {r.size} | {r.decode:,.0f} | {r.encode:,.0f} | {r.check:,.0f} |"
        for r in results
    ]
    return "\n".join([header, rule, *rows])


def report(results: list[Result], command: str, iterations: int, repeats: int) -> str:
    return "\n".join(
        [
            f"Command: `{command}` ({iterations} iterations, best of {repeats} repeats).",
            "",
            *machine_lines(),
            "",
            table(results),
            "",
            "decoded/s: `decode_message`; encoded/s: `encode_signed` (MESSAGE-INTEGRITY and",
            "FINGERPRINT for the requests, FINGERPRINT only for the indication); checked/s:",
            "`verify_integrity` for the signed requests, then `verify_fingerprint`.",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only, keep README.md")
    args = parser.parse_args(argv)
    results = [measure(case, args.iterations, args.repeats) for case in cases()]
    print(table(results))
    if not args.no_write:
        command = " ".join(["python -m benchmarks.codec_bench", *sys.argv[1:]]).strip()
        body = report(results, command, args.iterations, args.repeats)
        write_marked_section(README, START, END, body, "## Codec")
        print(f"\nwritten to {README}")


if __name__ == "__main__":
    main()
