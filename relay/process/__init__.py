"""The processes an operator runs: the `trelay` command, the supervisor and its workers.

Owns the command line (`cli`, which nothing imports; the other subcommands in
`commands`), serving until a signal (`serve`, with `ready` for the ready line, `drain`,
`reload`, `session_admin`, `preflight` for the checks before anything binds, `systemd`
for sd_notify), the multi-core node (`workers` supervises, `worker` is one child,
`listen_reservation` holds the ports) and the exit codes every process ends with
(`exit_codes`).
"""
