"""The `trelay` subcommands that talk to files or to a running relay, not the relay itself.

Owns `token` (`trelay keys create`, `trelay token`: API keys and access tokens from the
shell), `admin` (`trelay sessions`, `trelay reload`), `fleet` (`trelay fleet nodes`,
`trelay fleet api-key`), `fleet_state` (`trelay fleet revoke|revocations|secret`) and
`usage` (`trelay usage`), and what they share: `admin_client` (the admin routes' flags,
request and error lines), `redis_command` (a store for one operation on the fleet's
Redis) and `outcome` (one-line errors, exit statuses, tables). `trelay.process.cli`
wires them in; `trelay serve` is `trelay.process.serve`.
"""
