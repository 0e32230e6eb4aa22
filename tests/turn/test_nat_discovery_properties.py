"""Properties of RFC 5780 answers over any mix of its attributes (hypothesis): an answer
always goes to the request's source IP, always leaves from one of the node's four
addresses, says truthfully where from, and is never much larger than its request."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.turn.test_nat_discovery import FOUR, NAT, _binding, _changed, _send, _server
from trelay.stun.address_attributes import ResponseOrigin, XorMappedAddress
from trelay.stun.attributes import Attribute, ChangeRequest, Padding, ResponsePort
from trelay.stun.codes import MessageClass
from trelay.stun.message import decode_message
from trelay.turn.addressing import ClientTransport
from trelay.turn.binding import reflexive_address
from trelay.turn.nat_discovery import MAX_PADDING

clients = st.tuples(
    st.one_of(
        st.ip_addresses(v=4).map(str),
        st.ip_addresses(v=6).map(str),
    ),
    st.integers(1, 0xFFFF),
)
attribute_sets = st.tuples(
    st.none() | st.builds(ChangeRequest, st.booleans(), st.booleans()),
    st.none() | st.builds(ResponsePort, st.integers(0, 0xFFFF)),
    st.none() | st.binary(max_size=3000).map(Padding),
)


@settings(max_examples=300, deadline=None)
@given(
    at=st.sampled_from(FOUR),
    client=clients,
    attributes=attribute_sets,
    transport=st.sampled_from(list(ClientTransport)),
)
def test_an_answer_goes_only_to_the_source_ip_from_one_of_the_four(
    at: tuple[str, int],
    client: tuple[str, int],
    attributes: tuple[ChangeRequest | None, ResponsePort | None, Padding | None],
    transport: ClientTransport,
) -> None:
    present: list[Attribute] = [a for a in attributes if a is not None]
    request = _binding(*present)
    sent = _send(_server(), request, at=at, client=client, transport=transport)
    assert len(sent) == 1
    route, data = sent[0].five_tuple, sent[0].data
    assert route.client[0] == client[0]  # never another IP (RFC 5780 §9)
    assert route.server in NAT.addresses
    assert route.transport is transport
    reply = decode_message(data)
    change, port, padding = attributes
    if reply.message_class is MessageClass.ERROR or transport is not ClientTransport.UDP:
        assert route.client == client and route.server == at  # back the way it came
        # Only over UDP are they honoured (elsewhere: 420) or named in a success.
        assert reply.get(ResponseOrigin) is None
        assert reply.message_class is MessageClass.ERROR or not present
        return
    # The source as the client sent it (an IPv4-mapped source unwrapped, as for any Binding).
    assert reply.get(XorMappedAddress) == XorMappedAddress(*reflexive_address(client))
    assert reply.get(ResponseOrigin) == ResponseOrigin(*route.server)
    expected = at if change is None else _changed(at, change.change_ip, change.change_port)
    assert route.server == expected
    assert route.client == (client if port is None else (client[0], port.value))
    answered = reply.get(Padding)
    if padding is None:
        assert answered is None
    else:
        assert answered is not None
        assert len(answered.value) == min(len(padding.value), MAX_PADDING)
    # Never a reflector: at most the coturn-like 5x of small requests, and padding is
    # never more than the request's own.
    assert len(data) <= max(5 * len(request), len(request) + 64)
