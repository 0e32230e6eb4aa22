"""The user quota with the fleet's counts (RFC 8656 §7.2 step 8, design §9): the core
adds what `use_remote_counts` says an identity holds on other nodes to its own count;
{} makes the quota local again; the cache is bounded and keeps positive counts only.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.helpers.turn_harness import Client, assert_error, assert_success, make_server
from trelay.turn.allocation_table import MAX_REMOTE_IDENTITIES, AllocationTable
from trelay.turn.config import TurnConfig
from trelay.turn.server import TurnServer
from trelay.turn.stats import Quota

CONFIG = TurnConfig(realm="example.org", relay_host="198.51.100.1", user_quota=2)


def _client(server: TurnServer, n: int, username: str = "alice") -> Client:
    password = {"alice": "secret", "bob": "hunter2"}[username]
    return Client(server, ("203.0.113.5", 50000 + n), username, password)


def test_remote_counts_are_added_to_the_local_count() -> None:
    server = make_server(CONFIG)
    assert_success(first := _client(server, 1), first.allocate())
    server.use_remote_counts({"alice": 1})
    second = _client(server, 2)
    assert_error(second, second.allocate(), 486, signed=True)
    assert server.stats.quota_rejections[Quota.USER] == 1
    # Another identity is not affected.
    assert_success(bob := _client(server, 3, "bob"), bob.allocate())


def test_forgetting_the_remote_counts_makes_the_quota_local_again() -> None:
    server = make_server(CONFIG)
    server.use_remote_counts({"alice": 5})
    assert_error(first := _client(server, 1), first.allocate(), 486, signed=True)
    server.use_remote_counts({})
    assert_success(again := _client(server, 2), again.allocate())
    assert_success(third := _client(server, 3), third.allocate())
    assert_error(fourth := _client(server, 4), fourth.allocate(), 486, signed=True)


def test_identity_counts_are_what_is_published() -> None:
    server = make_server(CONFIG)
    assert dict(server.identity_counts()) == {}
    assert_success(first := _client(server, 1), first.allocate())
    assert_success(bob := _client(server, 2, "bob"), bob.allocate())
    assert dict(server.identity_counts()) == {"alice": 1, "bob": 1}
    assert_success(first, first.refresh(0))
    assert dict(server.identity_counts()) == {"bob": 1}


def test_without_a_quota_remote_counts_play_no_part() -> None:
    server = make_server()
    server.use_remote_counts({"alice": 1000})
    assert_success(first := _client(server, 1), first.allocate())


def test_the_cache_is_bounded_and_positive() -> None:
    table = AllocationTable(None)
    counts = {f"user{i}": 1 for i in range(MAX_REMOTE_IDENTITIES + 10)}
    counts["zero"] = 0
    table.use_remote_counts(counts)
    assert table.remote_count("user0") == 1
    assert table.remote_count("zero") == 0
    assert sum(1 for i in range(MAX_REMOTE_IDENTITIES + 10) if table.remote_count(f"user{i}")) == (
        MAX_REMOTE_IDENTITIES
    )


@given(local=st.integers(0, 4), remote=st.integers(-2, 6), quota=st.integers(1, 5))
def test_admitted_exactly_while_local_plus_remote_is_below_the_quota(
    local: int, remote: int, quota: int
) -> None:
    config = TurnConfig(realm="example.org", relay_host="198.51.100.1", user_quota=quota)
    server = make_server(config)
    for n in range(min(local, quota)):
        assert_success(client := _client(server, n), client.allocate())
    held = min(local, quota)
    server.use_remote_counts({"alice": remote})
    newcomer = _client(server, 99)
    reply = newcomer.allocate()
    if held + max(remote, 0) < quota:
        assert_success(newcomer, reply)
    else:
        assert_error(newcomer, reply, 486, signed=True)
