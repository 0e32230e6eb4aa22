"""trelay's pure TURN server core: (bytes, addresses, now) in, replies and actions out.

Imports `stun` and the standard library only: no sockets, no clock, no trio (design §2, §3).
One concept per module; `binding` answers STUN Binding (RFC 8489 §6.3.1) and defines
`Responder`, the callable the runtime's listeners hand every received STUN message to.
"""
