"""What an operator configures: the settings tree and the files a node reads and watches.

Owns the settings (`settings`, with its sections `auth_settings` and `api_settings`, the
value readers of `values` and the command line's overrides in `flags`), the files
operators keep beside them (`secrets_file`, `api_keys`, `revocations`), reading them
bounded and writing them atomically (`files`), and re-reading them when they change
(`file_watch`).
"""
