"""trelay's runtime: the only layer with sockets, clocks, files, processes and the CLI.

Modules: `settings` (the configuration tree, TOML and flags), `tls` (server SSL
contexts, the throw-away dev certificate), `udp_listener` and `stream_listener` (the
UDP, TCP and TLS listeners), `frontend` (what listeners hand traffic to), `turn_node`
(the TURN frontend), `server` (starts every listener of a `Settings`),
`ice_config` (the RTCConfiguration `iceServers` for the bound addresses) and `cli` (the
`trelay` command; nothing imports it).
"""
