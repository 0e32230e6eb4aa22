from tests.helpers.turn_harness import Client, error_code, make_server
from trelay.stun.address_attributes import XorRelayedAddress
from trelay.stun.attributes import Lifetime, Nonce, Realm
from trelay.stun.codes import MessageClass
from trelay.turn.actions import SendToPeer

PEER = ("127.0.0.1", 40000)


def test_allocate_permit_bind_relay() -> None:
    server = make_server()
    client = Client(server)
    reply = client.allocate()
    assert reply.message_class is MessageClass.SUCCESS, reply
    relayed = reply.get(XorRelayedAddress)
    assert relayed is not None and relayed.host == "198.51.100.1"
    lifetime = reply.get(Lifetime)
    assert lifetime is not None and lifetime.value == 600
    assert error_code(client.permit(PEER)) is None
    actions = client.send_indication(PEER, b"hello")
    assert actions == [SendToPeer(relayed.address, PEER, b"hello")]
    assert error_code(client.bind(0x4000, PEER)) is None
    allocation = server.allocations[client.five_tuple]
    assert allocation.channels == {0x4000: PEER}
    assert server.peer_datagram(allocation, PEER, b"hey") == b"\x40\x00\x00\x03hey"


def test_unauthenticated_gets_401_with_realm_and_nonce() -> None:
    client = Client(make_server())
    from trelay.stun.attributes import RequestedTransport
    from trelay.stun.codes import Method

    reply = client.send(client.request(Method.ALLOCATE, RequestedTransport(17), sign=False), False)
    assert error_code(reply) == 401
    assert reply is not None and reply.get(Realm) is not None and reply.get(Nonce) is not None
