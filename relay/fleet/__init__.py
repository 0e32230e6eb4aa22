"""The fleet: what a node shares with the other nodes, through Redis (design §9).

Owns the connection to the shared store (`trelay.fleet.store`: a Redis reached through
coredis, its state and its reconnection) and the node registry (`trelay.fleet.registry`:
each node's entry with a short TTL, refreshed by a heartbeat, and the listing of the
live ones), and what the token API takes from it: placement (`placement`, pure: the
nearest available nodes), the cached listing it reads (`directory`) and the API keys
every API node knows (`api_keys`); and what a TURN-serving process runs beside its core
(`node_link`): overflow and drain to a healthy node (`overflow`, 300 ALTERNATE-SERVER)
and the fleet-wide user quota (`quotas`), each feeding the core plain values it reads
synchronously.

Invariants: nothing here is on the data path or in TURN authentication. A node with no
`[fleet]` settings never builds a store (no connection is attempted); a node that loses
Redis keeps relaying and verifying credentials, and only its registry entry lapses.
`trelay.node` never imports this room; the fleet reads the node's counters from the
outside, as the metrics do.
"""
