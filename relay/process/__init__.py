"""The processes an operator runs: the `trelay` command, the supervisor and its workers.

Owns the command line (`cli`, which nothing imports; `token_commands`), the multi-core
node (`workers` supervises, `worker` is one child, `listen_reservation` holds the ports)
and the exit codes every process ends with (`exit_codes`).
"""
