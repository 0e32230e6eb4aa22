"""trelay's pure TURN server core: (bytes, addresses, now) in, replies and actions out.

Imports `stun` and the standard library only; no sockets, no clock, no trio. Modules:
`binding` (the STUN Binding responder, RFC 8489 §6.3.1, and the `Responder` type the
runtime's listeners call).
"""
