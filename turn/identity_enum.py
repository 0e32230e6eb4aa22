"""`IdentityEnum`: an `Enum` whose members hash by identity, in C.

`Enum`'s own `__hash__` hashes the member's name in Python, a function call per hash.
The members of a plain `Enum` are singletons compared by identity (unlike `IntEnum` or
`StrEnum` members, which equal their values), so the identity hash agrees with `==`.
The core's enums that key dictionaries on every request use it: a `FiveTuple`'s
transport, hashed a dozen times per Allocate, and the counters by auth failure, end
reason and quota, and the timer kinds (issue 13 part 4).
"""

from __future__ import annotations

from enum import Enum


class IdentityEnum(Enum):
    """Base of a plain `Enum` used as a dictionary key on the request path."""

    __hash__ = object.__hash__
