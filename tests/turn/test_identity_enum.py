"""`trelay.turn.identity_enum.IdentityEnum`: the core's dictionary-key enums hash by
identity in C (Enum's own hash is a Python call per hash), consistently with `==`."""

from __future__ import annotations

import pytest

from trelay.turn.actions import EndReason
from trelay.turn.addressing import ClientTransport
from trelay.turn.auth import AuthFailure
from trelay.turn.identity_enum import IdentityEnum
from trelay.turn.stats import Quota
from trelay.turn.timers import TimerKind


@pytest.mark.parametrize("kind", [ClientTransport, AuthFailure, EndReason, Quota, TimerKind])
def test_the_core_key_enums_hash_by_identity_in_c(kind: type[IdentityEnum]) -> None:
    assert issubclass(kind, IdentityEnum)
    assert getattr(kind, "__hash__") is object.__hash__  # noqa: B009 - the class attribute
    for member in kind:
        assert hash(member) == object.__hash__(member)
        assert kind(member.value) is member  # lookup by value is unchanged
