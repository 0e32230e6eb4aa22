"""Settings of the DTLS listeners (`[dtls]`): how much per-client state they may keep.

Owns one section of the settings tree (`trelay.config.settings` composes it):

    [dtls]                         # per DTLS listener (each worker's); 0 = unlimited
    associations_per_source = 128  # from one IPv4 address or IPv6 /64, handshaking or up
    handshakes = 512               # handshakes in progress at once
    associations = 10000           # associations at once, handshaking or up

Why these bounds and not others (`trelay.node.dtls_listener` applies them): a ClientHello
without a valid cookie costs nothing (the HelloVerifyRequest is stateless); one that
returns the cookie makes an association, an OpenSSL connection mid-handshake, measured at
about 75 KB of server memory each, and an established association about 90 KB. The
defaults bound one source at about 10 MB, half-open handshakes at about 40 MB and the
listener at about 0.9 GB. Where the listeners listen is `[listen] dtls`; the certificate
is `[tls]`'s; the handshake and idle timeout is `[stream] idle_timeout`, as for TLS.

Invariants: every value is an integer >= 0, checked at load (a `SettingsError` naming its
key); the section absent means the defaults above. Read at start only.
"""

from __future__ import annotations

from dataclasses import dataclass

from trelay.config.values import Table, read_count

DEFAULT_PER_SOURCE = 128
DEFAULT_HANDSHAKES = 512
DEFAULT_ASSOCIATIONS = 10_000


@dataclass(frozen=True, slots=True)
class DtlsSettings:
    """What one DTLS listener keeps at most; 0 = unlimited."""

    associations_per_source: int = DEFAULT_PER_SOURCE
    handshakes: int = DEFAULT_HANDSHAKES
    associations: int = DEFAULT_ASSOCIATIONS


def read_dtls(table: Table) -> DtlsSettings:
    """`[dtls]`; the defaults for what it does not say."""
    return DtlsSettings(
        associations_per_source=read_count(table, "associations_per_source", DEFAULT_PER_SOURCE),
        handshakes=read_count(table, "handshakes", DEFAULT_HANDSHAKES),
        associations=read_count(table, "associations", DEFAULT_ASSOCIATIONS),
    )
