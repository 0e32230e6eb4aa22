"""trelay: a STUN/TURN relay and ICE toolkit on trio, installed as this one package.

The repository's folders map into it: `relay/` is this package, `trelay.stun` is the
folder `stun/` and `trelay.turn` the folder `turn/` (docs/design.md, "Layers"). Imports
point one way, each layer and room only at those below it (checked by import-linter):

- `trelay.stun`: the pure STUN codec (RFC 8489), standard library only.
- `trelay.turn`: the pure TURN server core and client core (RFC 8656), sans I/O.
- `trelay.config`: settings (TOML and flags), the files operators keep (secrets, API
  keys, revocations) and watching them.
- `trelay.node`: the data plane: listeners, the TURN node on trio sockets, TLS, and
  `trelay.node.assembly`, the one place a node is built from settings.
- `trelay.credentials`: credential minting: access tokens, the token API, ICE server
  lists.
- `trelay.ops`: the operator HTTP port: metrics, health, logs, the self-test page.
- `trelay.icekit`: the client side for tests: the ICE-policy shim, the throw-away relay,
  the pytest plugin.
- `trelay.process`: the `trelay` command, the worker supervisor, exit codes.

What users import has short paths: `trelay.icekit` (the shim and the throw-away relay)
and `trelay.stun.strategies` (hypothesis strategies).
"""
