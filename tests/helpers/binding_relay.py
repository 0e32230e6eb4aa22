"""A trelay Binding server on loopback for third-party clients: what it saw, where it is.

`RecordingResponder` remembers the source of every message it answers, so a test can
compare what a client printed with what trelay really saw on the wire; `ThreadedRelay`
is what the interop fixture (tests/interop/conftest.py) hands the tests.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from trelay.turn.binding import Responder

SOFTWARE = "trelay interop"


class RecordingResponder:
    """A BindingResponder that remembers the source of every message it is given."""

    def __init__(self, inner: Responder) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._sources: list[tuple[str, int]] = []

    def __call__(self, data: bytes, source: tuple[str, int]) -> bytes | None:
        with self._lock:
            self._sources.append(source)
        return self.inner(data, source)

    def sources(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._sources)

    def clear(self) -> None:
        with self._lock:
            self._sources.clear()


@dataclass
class ThreadedRelay:
    """Where the listeners are, the certificate the TLS one presents, what it saw."""

    udp: tuple[str, int]
    udp6: tuple[str, int] | None
    tcp: tuple[str, int]
    tls: tuple[str, int]
    cert_pem: bytes
    responder: RecordingResponder
