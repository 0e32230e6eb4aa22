"""The private network namespace the peer-policy tests run in (`tests.helpers.private_network`).

A test under `@private_network` runs in a child process whose network namespace holds
only `lo`: it sees no other interface, and a datagram to an address off the machine
cannot be sent at all (no route), which is what makes a wrongly granted permission
harmless there. Parameters reach the child (one child per parameter set).
"""

from __future__ import annotations

import errno
import socket

import pytest

from tests.helpers.private_network import inside, interfaces, private_network


@private_network
@pytest.mark.parametrize("host", ["192.0.2.1", "169.254.169.254", "10.0.0.1"])
def test_only_loopback_and_nothing_leaves_the_machine(host: str) -> None:
    assert inside()
    assert interfaces() == ["lo"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(OSError) as refused:
            sock.sendto(b"must not leave", (host, 9))
        assert refused.value.errno == errno.ENETUNREACH
        sock.sendto(b"loopback works", ("127.0.0.1", 9))
