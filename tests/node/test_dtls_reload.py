"""DTLS with certificate files: the same pair as TLS, reloaded live (a renewal applies to new
handshakes, an association made before keeps working; a key that does not match keeps the
certificate in force), and `trelay serve --listen-dtls` naming where DTLS listens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from cryptography import x509

from tests.helpers.dtls_client import ServerCertificate, dtls_channel, dtls_client
from tests.helpers.trelay_process import running_trelay
from trelay.config.flags import Flags
from trelay.config.reload import Reload, reload_settings
from trelay.config.settings import load_settings
from trelay.node.assembly import RunningNode, start_node
from trelay.node.live_settings import Applied, apply_live
from trelay.node.tls import SelfSignedCertificate, generate_self_signed
from trelay.stun.codes import MessageClass, Method
from trelay.stun.message import Message, decode_message, encode_message, new_transaction_id

TIMEOUT = 20
SETTINGS = """
[listen]
tls = ["127.0.0.1:0"]
dtls = ["127.0.0.1:0"]
[tls]
cert = "cert.pem"
key = "key.pem"
[auth]
realm = "dtls.test"
users = { alice = "wonderland" }
"""


def write_pair(directory: Path, pair: SelfSignedCertificate) -> None:
    (directory / "cert.pem").write_bytes(pair.cert_pem)
    (directory / "key.pem").write_bytes(pair.key_pem)


def certificate(pair: SelfSignedCertificate) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pair.cert_pem)


def reload(running: RunningNode, config: Path) -> Applied:
    current = load_settings(config)
    result = reload_settings(current, config, Flags())
    assert isinstance(result, Reload), result
    assert [change.key for change in result.live] == ["tls.cert"]
    return apply_live(running, result)


@asynccontextmanager
async def node(directory: Path) -> AsyncIterator[RunningNode]:
    config = directory / "trelay.toml"
    config.write_text(SETTINGS)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(TIMEOUT):
            yield await start_node(nursery, load_settings(config))
        nursery.cancel_scope.cancel()


async def served_certificate(address: tuple[str, int]) -> x509.Certificate:
    recorded = ServerCertificate()
    async with dtls_channel(address, recorded=recorded):
        assert recorded.certificate is not None
        return recorded.certificate


async def binding(channel: trio.DTLSChannel) -> Message:
    request = Message(Method.BINDING, MessageClass.REQUEST, new_transaction_id())
    await channel.send(encode_message(request))
    with trio.fail_after(TIMEOUT):
        return decode_message(await channel.receive())


async def test_a_renewed_certificate_is_served_on_the_next_dtls_handshake(tmp_path: Path) -> None:
    first, second = generate_self_signed(["127.0.0.1"]), generate_self_signed(["127.0.0.1"])
    write_pair(tmp_path, first)
    async with node(tmp_path) as running:
        (address,) = running.bound.dtls
        assert running.dtls_certificate is not None
        assert await served_certificate(address) == certificate(first)
        async with dtls_channel(address) as before:
            write_pair(tmp_path, second)  # a renewal: new content at the same paths
            applied = reload(running, tmp_path / "trelay.toml")
            assert applied.failed == ()
            assert await served_certificate(address) == certificate(second)
            # The association made before the reload still serves STUN.
            assert (await binding(before)).message_class is MessageClass.SUCCESS


async def test_a_key_that_does_not_match_keeps_the_dtls_certificate(tmp_path: Path) -> None:
    first, second = generate_self_signed(["127.0.0.1"]), generate_self_signed(["127.0.0.1"])
    write_pair(tmp_path, first)
    async with node(tmp_path) as running:
        (tmp_path / "key.pem").write_bytes(second.key_pem)  # the certificate is first's
        applied = reload(running, tmp_path / "trelay.toml")
        (problem,) = applied.failed
        assert problem.startswith("tls.key: does not match the certificate in")
        assert await served_certificate(running.bound.dtls[0]) == certificate(first)


async def test_trelay_serve_listens_for_dtls_and_names_it_in_the_ready_line(
    tmp_path: Path,
) -> None:
    args = ("--listen-udp", "127.0.0.1:0", "--listen-dtls", "127.0.0.1:0",
            "--listen-http", "127.0.0.1:0", "--user", "alice:wonderland")  # fmt: skip
    async with running_trelay(tmp_path, *args) as running:
        (dtls,) = running.addresses("dtls")
        (udp,) = running.addresses("udp")
        # UDP and DTLS are both UDP: two ports. Browsers get no DTLS URI.
        assert dtls != udp
        assert "dtls" not in str(running.ready["ice_servers"])
        async with dtls_client(dtls) as client:
            relayed = await client.allocate()
            assert relayed[0] == "127.0.0.1"
