"""The data plane of a relay node: sockets in, the pure core in the middle, sockets out.

Owns the listeners (`udp_listener`, `stream_listener`, `dtls_listener`, started together
by `listeners`), what they hand traffic to (`frontend`), the TURN node that runs
`trelay.turn.server` on trio sockets (`turn_node`, with the hot loops in `data_path` and
`datagram_batch`), server TLS and DTLS certificates (`tls`), the core built from settings
(`turn_setup`) and `assembly`, the one function that starts a node. Serves no HTTP and
mints no tokens (import contract).
"""
