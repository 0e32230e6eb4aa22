"""Server-side TLS and DTLS: contexts from PEM files, and a dev certificate.

Owns how a `TlsSettings` becomes an `ssl.SSLContext` (the TLS stream listeners) and an
`OpenSSL.SSL.Context` (the DTLS listener, `trelay.node.dtls_listener`: trio's DTLS runs
on pyOpenSSL, the standard `ssl` module has no DTLS):
- with cert and key files, they are parsed first (so a bad file is a `SettingsError`
  naming `tls.cert` or `tls.key`, raised before anything binds), then loaded;
- without them, a throw-away self-signed certificate (EC P-256, a week long) is made for
  the listen hosts plus localhost, 127.0.0.1 and ::1 (dev default only: browsers do not
  trust it);
- `contexts_for` makes both from one certificate: the files, or one throw-away
  certificate that TLS and DTLS share, so a client sees the same one either way;
- `DtlsCertificate` is the DTLS side's certificate in force, replaceable (a reload):
  pyOpenSSL refuses to change a context once a connection was made from it, so `load`
  makes a new context and each new handshake switches to it from its listener's own
  (`listening_context`) in the servername callback, which OpenSSL runs for every
  ClientHello, with or without SNI, before it picks the certificate. Associations
  already made keep theirs, new handshakes get the new pair (as with TLS's
  `ssl.SSLContext.load_cert_chain`).

Invariants: TLS 1.2 and DTLS 1.2 at least (RFC 8489 §6.2.3 requires TLS 1.2 or later
for STUN over TLS and DTLS 1.2 or later over DTLS); ALPN offers "stun.turn" and
"stun.nat-discovery" (RFC 7443 §4), on both; a private key written to disk for `ssl` or
OpenSSL to load lives in a private temporary directory that is removed as soon as it is
loaded.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import exceptions, x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL

from trelay.config.settings import TlsSettings
from trelay.config.values import SettingsError

ALPN_PROTOCOLS = ("stun.turn", "stun.nat-discovery")
SELF_SIGNED_LIFETIME = timedelta(days=7)
SELF_SIGNED_NAMES = ("localhost", "127.0.0.1", "::1")
# OpenSSL's DTLS1_2_VERSION (pyOpenSSL names only the TLS versions).
DTLS1_2_VERSION = 0xFEFD


@dataclass(frozen=True, slots=True)
class SelfSignedCertificate:
    """A PEM certificate and its PEM (PKCS#8, unencrypted) private key."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ServerContexts:
    """The TLS listeners' context and the DTLS listeners', None where none listens."""

    tls: ssl.SSLContext | None = None
    dtls: DtlsCertificate | None = None


def contexts_for(
    tls: TlsSettings, tls_hosts: Iterable[str], dtls_hosts: Iterable[str]
) -> ServerContexts:
    """Both contexts from one certificate: `tls`'s files, or one throw-away certificate
    for every listen host when no files are set. Empty hosts: no context of that kind."""
    tls_hosts, dtls_hosts = list(tls_hosts), list(dtls_hosts)
    if not tls_hosts and not dtls_hosts:
        return ServerContexts()
    if tls.cert_file is None or tls.key_file is None:
        certificate = generate_self_signed([*tls_hosts, *dtls_hosts])
        return ServerContexts(
            context_from_pem(certificate) if tls_hosts else None,
            DtlsCertificate(dtls_context_from_pem(certificate)) if dtls_hosts else None,
        )
    return ServerContexts(
        server_context(tls.cert_file, tls.key_file) if tls_hosts else None,
        DtlsCertificate(dtls_server_context(tls.cert_file, tls.key_file)) if dtls_hosts else None,
    )


def context_for(tls: TlsSettings, hosts: Iterable[str]) -> ssl.SSLContext:
    """The server context for `tls`; self-signed for `hosts` when no files are set."""
    if tls.cert_file is None or tls.key_file is None:
        return self_signed_context(hosts)
    return server_context(tls.cert_file, tls.key_file)


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """Load a certificate chain and key, or raise `SettingsError` saying which is wrong."""
    check_pair_files(cert_file, key_file)
    context = _base_context()
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        problem = f"does not match the certificate in {cert_file} ({exc.reason})"
        raise SettingsError("tls.key", problem) from None
    return context


def dtls_server_context(cert_file: Path, key_file: Path) -> SSL.Context:
    """`server_context` for the DTLS listeners (pyOpenSSL, as trio's DTLS needs)."""
    check_pair_files(cert_file, key_file)
    context = _base_dtls_context()
    load_dtls_certificate(context, cert_file, key_file)
    return context


class DtlsCertificate:
    """The certificate DTLS handshakes get: `current`, a context with it loaded, replaced
    whole by `load` (module docstring: why not changed in place)."""

    __slots__ = ("current",)

    def __init__(self, current: SSL.Context) -> None:
        self.current = current

    def listening_context(self) -> SSL.Context:
        """A context for one DTLS listener (trio's endpoint configures the one it is
        given, once): its handshakes take the certificate in force when they start."""
        context = _base_dtls_context()
        context.set_tlsext_servername_callback(self._switch)
        return context

    def load(self, cert_file: Path, key_file: Path) -> None:
        """New handshakes get this pair; `SettingsError` (naming `tls.key`) if it does
        not match, and the pair in force stays."""
        context = _base_dtls_context()
        load_dtls_certificate(context, cert_file, key_file)
        self.current = context

    def _switch(self, connection: SSL.Connection) -> None:
        connection.set_context(self.current)


def load_dtls_certificate(context: SSL.Context, cert_file: Path, key_file: Path) -> None:
    """Load a certificate chain (replacing the chain in force) and its key into `context`;
    `SettingsError` naming `tls.key` when they do not match. Check the files first
    (`check_pair_files`): a failure here may leave the context half-changed."""
    try:
        context.use_certificate_chain_file(str(cert_file))
        context.use_privatekey_file(str(key_file))
        context.check_privatekey()
    except SSL.Error as exc:
        problem = f"does not match the certificate in {cert_file} ({_openssl_reason(exc)})"
        raise SettingsError("tls.key", problem) from None


def check_pair_files(cert_file: Path, key_file: Path) -> None:
    """Read and parse a certificate file and a key file, or raise `SettingsError` naming
    `tls.cert` or `tls.key` (whether they match is for the loading to find out)."""
    cert_pem = _read("tls.cert", cert_file)
    key_pem = _read("tls.key", key_file)
    try:
        x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise SettingsError("tls.cert", f"no PEM certificate in {cert_file}") from None
    try:
        serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise SettingsError("tls.key", f"encrypted keys are not supported: {key_file}") from None
    except (ValueError, exceptions.UnsupportedAlgorithm):
        raise SettingsError("tls.key", f"no usable PEM private key in {key_file}") from None


def self_signed_context(hosts: Iterable[str]) -> ssl.SSLContext:
    """A server context with a fresh throw-away certificate for `hosts`."""
    return context_from_pem(generate_self_signed(hosts))


def context_from_pem(certificate: SelfSignedCertificate) -> ssl.SSLContext:
    """Load PEM bytes into a server context (the ssl module only loads from files)."""
    context = _base_context()
    with pem_files(certificate.cert_pem, certificate.key_pem) as (cert_path, key_path):
        context.load_cert_chain(cert_path, key_path)
    return context


def dtls_context_from_pem(certificate: SelfSignedCertificate) -> SSL.Context:
    """`context_from_pem` for the DTLS listeners."""
    context = _base_dtls_context()
    with pem_files(certificate.cert_pem, certificate.key_pem) as (cert_path, key_path):
        load_dtls_certificate(context, cert_path, key_path)
    return context


@contextlib.contextmanager
def pem_files(cert_pem: bytes, key_pem: bytes) -> Iterator[tuple[Path, Path]]:
    """The PEM bytes as two files for a loader that reads only files, in a private
    directory (created mode 0700, the key file 0600) removed, key included, on leaving."""
    with tempfile.TemporaryDirectory(prefix="trelay-tls-") as directory:
        cert_path = Path(directory, "cert.pem")
        key_path = Path(directory, "key.pem")
        cert_path.write_bytes(cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as key_file:
            key_file.write(key_pem)
        yield cert_path, key_path


def generate_self_signed(
    hosts: Iterable[str], *, lifetime: timedelta = SELF_SIGNED_LIFETIME
) -> SelfSignedCertificate:
    """An EC P-256 key and a self-signed server certificate naming `hosts` and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trelay throw-away dev cert")])
    # Backdated a little so that a client whose clock is slightly behind accepts it.
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.SubjectAlternativeName(_alt_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return SelfSignedCertificate(
        cert_pem=certificate.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def _alt_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys((*hosts, *SELF_SIGNED_NAMES)):
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            names.append(x509.DNSName(host))
            continue
        if not address.is_unspecified:  # 0.0.0.0 and :: are no one's name
            names.append(x509.IPAddress(address))
    return names


def _base_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))
    return context


def _base_dtls_context() -> SSL.Context:
    context = SSL.Context(SSL.DTLS_SERVER_METHOD)
    context.set_min_proto_version(DTLS1_2_VERSION)
    # An association waiting for its next record holds no record buffers (OpenSSL frees
    # them when empty): measured (RSS, 1,000 loopback associations), about 110 KB of
    # server memory per established association without, 90 KB with.
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    context.set_alpn_select_callback(_select_alpn)
    return context


def _select_alpn(
    connection: SSL.Connection, offered: list[bytes]
) -> bytes | SSL._NoOverlappingProtocols:
    # RFC 7443 §4: answer with the client's first protocol we speak; a client offering
    # only others gets no ALPN extension (not a failed handshake), as `ssl` does.
    for protocol in offered:
        if protocol.decode("ascii", "replace") in ALPN_PROTOCOLS:
            return protocol
    return SSL.NO_OVERLAPPING_PROTOCOLS


def _openssl_reason(error: SSL.Error) -> str:
    # pyOpenSSL's errors carry [(library, function, reason), ...].
    details = error.args[0] if error.args else []
    if isinstance(details, list) and details and isinstance(details[-1], tuple):
        return str(details[-1][-1])
    return str(error) or type(error).__name__


def _read(key: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SettingsError(key, f"file not found: {path}") from None
    except OSError as exc:
        raise SettingsError(key, f"cannot read {path}: {exc.strerror}") from None
