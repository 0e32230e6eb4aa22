"""The `trelay` subcommands that talk to files or to a running relay, not the relay itself.

Owns `token` (`trelay keys create`, `trelay token`: API keys and access tokens from the
shell) and `admin` (`trelay sessions`, `trelay reload`: clients of a running relay's
admin routes) and `fleet` (`trelay fleet nodes`, `trelay fleet api-key`: the fleet's
live nodes and its API keys). `trelay.process.cli` wires them in; `trelay serve` is
`trelay.process.serve`.
"""
