"""A tiny HTTP/1.1 client on trio for the operator port tests (httpx is not a dependency).

One request per connection (`Connection: close`), the response read to EOF and parsed
into status, headers (lower-cased names) and body; every wait is bounded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import trio

TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


async def http_request(
    address: tuple[str, int],
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> HttpResponse:
    host, port = address
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    request = "\r\n".join(lines) + "\r\n\r\n"
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(request.encode("ascii") + body)
            data = bytearray()
            for _ in range(100_000):  # bounded: at most ~6 GB, far more than any answer
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _unchunk(body)
    return HttpResponse(int(status_line.split()[1]), headers, body)


def _unchunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)
