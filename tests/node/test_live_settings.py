"""trelay.node.live_settings: a reload applied to a real node on loopback.

Each test starts a node with `trelay.node.assembly.start_node` from a settings file,
edits the file, decides with `trelay.config.reload.reload_settings` and applies with
`apply_live`, then checks with real clients: the next TLS handshake gets the new
certificate (the open connection keeps working), a removed user cannot Allocate while
its allocation keeps refreshing and relaying, a newly denied peer gets 403 and stops
being relayed, a lowered quota refuses a new Allocate, new secrets are the ones that
authenticate.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.helpers.turn_client import TurnError, peer, udp_client
from trelay.config.flags import Flags
from trelay.config.reload import Reload, reload_settings
from trelay.config.settings import load_settings
from trelay.node.assembly import RunningNode, start_node
from trelay.node.live_settings import Applied, apply_live
from trelay.node.tls import SelfSignedCertificate, generate_self_signed
from trelay.ops.logs import set_level
from trelay.stun.codes import MessageClass, Method
from trelay.stun.message import Message, decode_message, encode_message
from trelay.turn.credential_sources import rest_password
from trelay.turn.stats import Drop

TIMEOUT = 10.0
USERS = 'users = { alice = "wonderland", bob = "builder" }'


def settings_file(
    directory: Path, *, users: str = USERS, extra: str = "", tls: bool = False
) -> str:
    listen_tls = 'tls = ["127.0.0.1:0"]' if tls else ""
    return f"""
[listen]
udp = ["127.0.0.1:0"]
{listen_tls}
[tls]
cert = "cert.pem"
key = "key.pem"
[auth]
realm = "live.test"
{users}
[relay]
allow_loopback_peers = true
{extra}
"""


class Files:
    """The settings file and the certificate pair beside it; `reload` edits and applies."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.config = directory / "trelay.toml"

    def write_pair(self, pair: SelfSignedCertificate) -> None:
        (self.directory / "cert.pem").write_bytes(pair.cert_pem)
        (self.directory / "key.pem").write_bytes(pair.key_pem)

    def reload(self, running: RunningNode, current_text: str, text: str) -> tuple[Reload, Applied]:
        self.config.write_text(current_text)
        current = load_settings(self.config)
        self.config.write_text(text)
        result = reload_settings(current, self.config, Flags())
        assert isinstance(result, Reload), result
        return result, apply_live(running, result)


@asynccontextmanager
async def node(directory: Path, text: str) -> AsyncIterator[tuple[RunningNode, Files]]:
    files = Files(directory)
    if not (directory / "cert.pem").exists():
        files.write_pair(generate_self_signed(["127.0.0.1"]))
    files.config.write_text(text)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(TIMEOUT):
            yield await start_node(nursery, load_settings(files.config)), files
        nursery.cancel_scope.cancel()


def der(pair: SelfSignedCertificate) -> bytes:
    return x509.load_pem_x509_certificate(pair.cert_pem).public_bytes(Encoding.DER)


async def tls_connect(address: tuple[str, int]) -> trio.SSLStream[trio.SocketStream]:
    # The test looks at the certificate it is served; it trusts none.
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    stream = await trio.open_ssl_over_tcp_stream(*address, ssl_context=client)
    await stream.do_handshake()
    return stream


async def binding_over(stream: trio.SSLStream[trio.SocketStream]) -> Message:
    request = Message(Method.BINDING, MessageClass.REQUEST, b"live-reload!")
    await stream.send_all(encode_message(request))
    data = b""
    while len(data) < 20 or len(data) < 20 + int.from_bytes(data[2:4]):
        chunk = await stream.receive_some(2048)
        assert chunk, "the connection closed"
        data += chunk
    return decode_message(data)


# --- TLS --------------------------------------------------------------------------------


async def test_a_new_certificate_is_served_on_the_next_handshake(tmp_path: Path) -> None:
    first, second = generate_self_signed(["127.0.0.1"]), generate_self_signed(["127.0.0.1"])
    Files(tmp_path).write_pair(first)
    text = settings_file(tmp_path, tls=True)
    async with node(tmp_path, text) as (running, files):
        (address,) = running.bound.tls
        before = await tls_connect(address)
        assert before.getpeercert(binary_form=True) == der(first)
        # A renewal as certbot does it: new content at the same paths.
        files.write_pair(second)
        result, applied = files.reload(running, text, text)
        assert [change.key for change in result.live] == ["tls.cert"]
        (line,) = applied.changed
        assert line.startswith(f"tls.cert: loaded {tmp_path / 'cert.pem'}")
        assert applied.failed == ()
        after = await tls_connect(address)
        assert after.getpeercert(binary_form=True) == der(second)
        # The connection made before the reload still serves STUN.
        reply = await binding_over(before)
        assert reply.message_class is MessageClass.SUCCESS
        assert reply.transaction_id == b"live-reload!"
        await before.aclose()
        await after.aclose()


async def test_a_key_that_does_not_match_keeps_the_certificate_in_force(tmp_path: Path) -> None:
    first, second = generate_self_signed(["127.0.0.1"]), generate_self_signed(["127.0.0.1"])
    Files(tmp_path).write_pair(first)
    text = settings_file(tmp_path, tls=True)
    async with node(tmp_path, text) as (running, files):
        (tmp_path / "key.pem").write_bytes(second.key_pem)  # the certificate is first's
        _, applied = files.reload(running, text, text)
        assert applied.changed == ()
        (problem,) = applied.failed
        assert problem.startswith("tls.key: does not match the certificate in")
        assert str(tmp_path / "cert.pem") in problem
        stream = await tls_connect(running.bound.tls[0])
        assert stream.getpeercert(binary_form=True) == der(first)
        await stream.aclose()


# --- users ------------------------------------------------------------------------------


async def test_a_removed_user_keeps_its_allocation_but_cannot_allocate(tmp_path: Path) -> None:
    text = settings_file(tmp_path)
    async with (
        node(tmp_path, text) as (running, files),
        udp_client(running.bound.udp[0]) as alice,
        peer() as other,
    ):
        relayed = await alice.allocate()
        await alice.create_permission(other.address)

        _, applied = files.reload(
            running, text, settings_file(tmp_path, users='users = { bob = "builder" }')
        )

        assert applied.changed == (
            "auth.users: 1 removed (1 in all) (1 keep their old credential for live allocations)",
        )
        assert await alice.refresh(600) == 600
        await other.send(relayed, b"to alice")
        assert await alice.receive_data() == (other.address, b"to alice")
        await alice.send_indication(other.address, b"to the peer")
        assert await other.receive() == (b"to the peer", relayed)
        async with udp_client(running.bound.udp[0]) as again:
            with pytest.raises(TurnError) as refused:
                await again.allocate()
        assert refused.value.code == 401
        async with udp_client(running.bound.udp[0]) as bob:
            bob.username, bob.password = "bob", "builder"
            await bob.allocate()
        assert len(running.node.server.allocations) == 2


async def test_new_shared_secrets_are_the_ones_that_authenticate(tmp_path: Path) -> None:
    old = settings_file(tmp_path, users='secrets = ["old-secret"]')
    new = settings_file(tmp_path, users='secrets = ["new-secret"]')
    username = f"{int(time.time()) + 3600}:app-user"  # within the longest credential lifetime
    async with node(tmp_path, old) as (running, files):
        _, applied = files.reload(running, old, new)
        assert applied.changed == ("auth.secrets: 1 secret (was 1)",)
        async with udp_client(running.bound.udp[0]) as stale:
            stale.username, stale.password = username, rest_password(b"old-secret", username)
            with pytest.raises(TurnError) as refused:
                await stale.allocate()
        assert refused.value.code == 401
        async with udp_client(running.bound.udp[0]) as fresh:
            fresh.username, fresh.password = username, rest_password(b"new-secret", username)
            await fresh.allocate()


# --- peers and quotas -------------------------------------------------------------------


async def test_a_new_deny_entry_refuses_new_permissions_and_stops_relaying(
    tmp_path: Path,
) -> None:
    text = settings_file(tmp_path)
    denied_text = settings_file(tmp_path, extra='deny_peers = ["127.0.0.2/32"]')
    async with (
        node(tmp_path, text) as (running, files),
        udp_client(running.bound.udp[0]) as alice,
        peer("127.0.0.2") as denied,
        peer("127.0.0.1") as allowed,
    ):
        relayed = await alice.allocate()
        await alice.create_permission(denied.address, allowed.address)

        _, applied = files.reload(running, text, denied_text)

        assert applied.changed == (
            "relay.deny_peers: + 127.0.0.2/32",
            "withdrawn from live allocations: 1 permission(s) and 0 channel(s) to peers now denied",
        )
        with pytest.raises(TurnError) as refused:
            await alice.create_permission(denied.address)
        assert refused.value.code == 403
        (allocation,) = running.node.server.allocations.values()
        assert set(allocation.permissions) == {"127.0.0.1"}
        # The denied peer's datagram is dropped (counted); the allowed one's arrives.
        dropped = running.node.counters.dropped
        before = dropped[Drop.NO_PERMISSION]
        await denied.send(relayed, b"let me in")
        with trio.fail_after(TIMEOUT):
            # The counters are plain integers (design §4): nothing to wait on but them.
            while dropped[Drop.NO_PERMISSION] == before:  # noqa: ASYNC110
                await trio.sleep(0.01)
        await allowed.send(relayed, b"hello")
        assert await alice.receive_data() == (allowed.address, b"hello")


async def test_a_lowered_quota_refuses_a_new_allocate(tmp_path: Path) -> None:
    text = settings_file(tmp_path, extra="[quotas]\nuser = 2")
    async with (
        node(tmp_path, text) as (running, files),
        udp_client(running.bound.udp[0]) as first,
        udp_client(running.bound.udp[0]) as second,
    ):
        await first.allocate()
        _, applied = files.reload(
            running, text, settings_file(tmp_path, extra="[quotas]\nuser = 1")
        )
        assert applied.changed == ("quotas.user: 2 -> 1",)
        with pytest.raises(TurnError) as refused:
            await second.allocate()
        assert refused.value.code == 486
        assert await first.refresh(600) == 600
        assert running.node.server.config.user_quota == 1


async def test_a_lowered_bound_per_allocation_refuses_new_permissions(tmp_path: Path) -> None:
    bound = "[quotas]\npeers_per_request = 2\npermissions_per_allocation = {}"
    text = settings_file(tmp_path, extra=bound.format(4))
    async with node(tmp_path, text) as (running, files), udp_client(running.bound.udp[0]) as client:
        await client.allocate()
        await client.create_permission(("127.0.0.11", 9), ("127.0.0.12", 9))
        lowered = settings_file(tmp_path, extra=bound.format(2))
        _, applied = files.reload(running, text, lowered)
        assert applied.changed == ("quotas.permissions_per_allocation: 4 -> 2",)
        with pytest.raises(TurnError) as refused:
            await client.create_permission(("127.0.0.13", 9))
        assert refused.value.code == 508
        await client.create_permission(("127.0.0.11", 9))  # what it holds, it refreshes
        assert running.node.server.config.permissions_per_allocation == 2


async def test_a_reload_without_changes_changes_nothing(tmp_path: Path) -> None:
    text = settings_file(tmp_path)
    async with node(tmp_path, text) as (running, files):
        server = running.node.server
        policy, config = server.policy, server.config
        result, applied = files.reload(running, text, text)
        assert result.live == () and applied == Applied()
        assert str(applied) == ""
        assert server.policy is policy and server.config is config


# --- the process's part -----------------------------------------------------------------


def test_set_level_changes_the_root_level_only() -> None:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        set_level("debug")
        assert root.level == logging.DEBUG
        set_level(logging.WARNING)
        assert root.level == logging.WARNING
        assert root.handlers == handlers
    finally:
        root.setLevel(level)
