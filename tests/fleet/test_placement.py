"""Placement (`trelay.fleet.placement`): nearest region, neighbours, least loaded, available
only, at most `count`; client networks (longest prefix) and X-Forwarded-For from trusted
proxies only. Examples, then hypothesis properties over random fleets."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from trelay.config.placement_settings import ClientNetwork
from trelay.fleet.placement import (
    NetworkMap,
    client_address,
    place,
    placed_uris,
    region_rank,
)
from trelay.fleet.registry import NodeEntry

REGIONS = ("eu-central", "eu-west", "us-east", "ap-south")


def node(
    node_id: str,
    region: str,
    *,
    allocations: int = 0,
    cpu: float = 0.0,
    ready: bool = True,
    draining: bool = False,
    overloaded: bool = False,
    uris: tuple[str, ...] | None = None,
) -> NodeEntry:
    return NodeEntry(
        node_id=node_id,
        region=region,
        public_uris=(f"turn:{node_id}.example.org:3478?transport=udp",) if uris is None else uris,
        ready=ready,
        draining=draining,
        allocations=allocations,
        relayed_bps=0.0,
        cpu_share=cpu,
        updated_at=0.0,
        overloaded=overloaded,
    )


def ids(nodes: tuple[NodeEntry, ...]) -> list[str]:
    return [n.node_id for n in nodes]


def test_the_client_s_region_first_least_loaded_first() -> None:
    fleet = [
        node("us1", "us-east"),
        node("fra2", "eu-central", allocations=10),
        node("fra1", "eu-central", allocations=3),
        node("dub1", "eu-west"),
    ]
    assert ids(place(fleet, "eu-central", ("eu-west",), 2)) == ["fra1", "fra2"]
    assert ids(place(fleet, "eu-central", ("eu-west",), 3)) == ["fra1", "fra2", "dub1"]


def test_neighbours_in_their_order_then_the_rest() -> None:
    fleet = [node("us1", "us-east"), node("dub1", "eu-west"), node("sg1", "ap-south")]
    assert ids(place(fleet, "eu-central", ("eu-west", "us-east"), 3)) == ["dub1", "us1", "sg1"]
    assert ids(place(fleet, "eu-central", ("us-east", "eu-west"), 2)) == ["us1", "dub1"]
    # A region nobody serves and nobody lists still gets the rest, by load.
    assert ids(place(fleet, "nowhere", (), 1)) == ["dub1"]


def test_cpu_share_then_node_id_break_ties() -> None:
    fleet = [node("b", "eu-west", cpu=0.5), node("c", "eu-west", cpu=0.1), node("a", "eu-west")]
    assert ids(place(fleet, "eu-west", (), 3)) == ["a", "c", "b"]
    same = [node("b", "eu-west"), node("a", "eu-west")]
    assert ids(place(same, "eu-west", (), 2)) == ["a", "b"]


def test_draining_overloaded_not_ready_and_uri_less_nodes_are_never_placed() -> None:
    fleet = [
        node("drain", "eu-central", draining=True),
        node("full", "eu-central", overloaded=True),
        node("boot", "eu-central", ready=False),
        node("mute", "eu-central", uris=()),
        node("far", "us-east", allocations=500),
    ]
    assert ids(place(fleet, "eu-central", (), 2)) == ["far"]
    assert place(fleet[:4], "eu-central", (), 2) == ()


def test_uris_in_placement_order_each_once() -> None:
    shared = "turn:anycast.example.org:3478?transport=udp"
    a = node("a", "eu-west", uris=("stun:a:3478", shared))
    b = node("b", "eu-west", uris=(shared, "turns:b:5349?transport=tcp"))
    assert placed_uris((a, b)) == ("stun:a:3478", shared, "turns:b:5349?transport=tcp")


def test_region_rank() -> None:
    assert region_rank("eu", "eu", ("us",)) == 0
    assert region_rank("us", "eu", ("us",)) == 1
    assert region_rank("ap", "eu", ("us",)) == 2


def net(cidr: str, region: str) -> ClientNetwork:
    return ClientNetwork(ipaddress.ip_network(cidr), region)


def test_client_networks_longest_prefix_wins() -> None:
    networks = NetworkMap(
        (
            net("203.0.113.0/24", "eu-central"),
            net("203.0.113.128/25", "eu-west"),
            net("2001:db8::/32", "us-east"),
        )
    )
    assert networks.region_of("203.0.113.5") == "eu-central"
    assert networks.region_of("203.0.113.200") == "eu-west"
    assert networks.region_of("2001:db8::1") == "us-east"
    assert networks.region_of("::ffff:203.0.113.200") == "eu-west"  # IPv4-mapped
    assert networks.region_of("198.51.100.1") is None
    assert networks.region_of("not an address") is None
    assert networks.region_of(None) is None


TRUSTED = (ipaddress.ip_network("10.0.0.0/8"),)


def test_forwarded_for_only_from_a_trusted_proxy() -> None:
    # Straight from a client: its header is ignored (it could say anything).
    assert client_address("198.51.100.7", "203.0.113.5", TRUSTED) == "198.51.100.7"
    # Through the load balancer: the rightmost hop that is not a trusted proxy.
    assert client_address("10.0.0.2", "203.0.113.5", TRUSTED) == "203.0.113.5"
    assert client_address("10.0.0.2", "1.2.3.4, 203.0.113.5, 10.1.1.1", TRUSTED) == "203.0.113.5"
    # Garbage in the chain: nothing left of it is believed.
    assert client_address("10.0.0.2", "203.0.113.5, junk", TRUSTED) == "10.0.0.2"
    # Only proxies in the chain: the leftmost proxy is as far as we can see.
    assert client_address("10.0.0.2", "10.9.9.9", TRUSTED) == "10.9.9.9"
    assert client_address("10.0.0.2", None, TRUSTED) == "10.0.0.2"
    assert client_address("10.0.0.2", "203.0.113.5", ()) == "10.0.0.2"
    assert client_address(None, "203.0.113.5", TRUSTED) is None


# --- properties -------------------------------------------------------------------------

entries = st.lists(
    st.builds(
        node,
        st.text("abcdef0123", min_size=1, max_size=6),
        st.sampled_from(REGIONS),
        allocations=st.integers(0, 50),
        cpu=st.floats(0, 4),
        ready=st.booleans(),
        draining=st.booleans(),
        overloaded=st.booleans(),
    ),
    max_size=12,
    unique_by=lambda n: n.node_id,
)
neighbour_lists = st.lists(st.sampled_from(REGIONS), unique=True, max_size=3).map(tuple)


@given(entries, st.sampled_from(REGIONS), neighbour_lists, st.integers(0, 6))
def test_placement_properties(
    fleet: list[NodeEntry], region: str, neighbours: tuple[str, ...], count: int
) -> None:
    chosen = place(fleet, region, neighbours, count)
    available = [n for n in fleet if n.available]
    # At most count, never an unavailable node, and as many as can be had.
    assert len(chosen) == min(count, len(available))
    assert all(n.available for n in chosen)
    assert len({n.node_id for n in chosen}) == len(chosen)
    # Nearest first, then least loaded within a rank.
    keys = [
        (region_rank(n.region, region, neighbours), n.allocations, n.cpu_share, n.node_id)
        for n in chosen
    ]
    assert keys == sorted(keys)
    # Nothing left out is nearer (or equally near and less loaded) than what was chosen.
    if chosen:
        worst = keys[-1]
        for other in available:
            if other not in chosen:
                key = (
                    region_rank(other.region, region, neighbours),
                    other.allocations,
                    other.cpu_share,
                    other.node_id,
                )
                assert key > worst
    # The input order does not matter.
    assert place(list(reversed(fleet)), region, neighbours, count) == chosen


@given(entries, st.sampled_from(REGIONS), neighbour_lists)
def test_a_node_of_the_client_s_region_always_beats_the_others(
    fleet: list[NodeEntry], region: str, neighbours: tuple[str, ...]
) -> None:
    chosen = place(fleet, region, neighbours, 1)
    local = [n for n in fleet if n.available and n.region == region]
    if local:
        assert chosen[0].region == region
