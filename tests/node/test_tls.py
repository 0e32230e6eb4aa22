"""TLS contexts: the throw-away certificate, loading files, and a loopback handshake."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from trelay.config.settings import TlsSettings
from trelay.config.values import SettingsError
from trelay.node.tls import (
    ALPN_PROTOCOLS,
    SelfSignedCertificate,
    context_for,
    context_from_pem,
    generate_self_signed,
    self_signed_context,
    server_context,
)

TIMEOUT = 20


def alt_names(cert_pem: bytes) -> tuple[set[str], set[str]]:
    certificate = x509.load_pem_x509_certificate(cert_pem)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return ips, set(san.get_values_for_type(x509.DNSName))


def write_pair(directory: Path, pair: SelfSignedCertificate) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    return cert, key


def test_self_signed_names_the_hosts_and_loopback() -> None:
    pair = generate_self_signed(["192.0.2.7", "2001:db8::7", "relay.example", "0.0.0.0"])
    ips, dns = alt_names(pair.cert_pem)
    assert ips == {"192.0.2.7", "2001:db8::7", "127.0.0.1", "::1"}
    assert dns == {"relay.example", "localhost"}
    key = serialization.load_pem_private_key(pair.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    certificate = x509.load_pem_x509_certificate(pair.cert_pem)
    assert certificate.subject == certificate.issuer
    assert certificate.not_valid_before_utc < certificate.not_valid_after_utc
    assert pair.key_pem.decode() not in repr(pair)


def test_each_self_signed_certificate_is_new() -> None:
    assert generate_self_signed([]).key_pem != generate_self_signed([]).key_pem


async def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[bytes, str | None]:
    """Connect over loopback; return the server's DER certificate and the ALPN chosen."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def answer(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, server, server_side=True)
        try:
            data = await tls.receive_some(100)
            await tls.send_all(data.upper())
        except trio.BrokenResourceError:
            return  # the client gave up on the handshake
        await tls.aclose()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, answer, listeners)
            # The server name is "127.0.0.1": a verifying client checks the IP SAN.
            stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=client)
            await stream.send_all(b"ping")
            assert await stream.receive_some(100) == b"PING"
            der = stream.getpeercert(binary_form=True)
            alpn = stream.selected_alpn_protocol()
            await stream.aclose()
            nursery.cancel_scope.cancel()
    assert der is not None
    return der, alpn


def client_trusting(cert_pem: bytes) -> ssl.SSLContext:
    client = ssl.create_default_context(cadata=cert_pem.decode())
    client.set_alpn_protocols(["stun.turn"])
    return client


async def test_handshake_verifies_against_the_generated_certificate() -> None:
    pair = generate_self_signed(["127.0.0.1"])
    der, alpn = await handshake(context_from_pem(pair), client_trusting(pair.cert_pem))
    assert der == x509.load_pem_x509_certificate(pair.cert_pem).public_bytes(
        serialization.Encoding.DER
    )
    assert alpn == "stun.turn"
    assert alpn in ALPN_PROTOCOLS


async def test_self_signed_context_serves_a_certificate_for_loopback() -> None:
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    der, _ = await handshake(self_signed_context(["127.0.0.1"]), client)
    san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert ipaddress.ip_address("127.0.0.1") in san.value.get_values_for_type(x509.IPAddress)


async def test_a_client_that_does_not_trust_it_fails() -> None:
    other = generate_self_signed(["127.0.0.1"])
    with pytest.RaisesGroup(trio.BrokenResourceError):
        await handshake(self_signed_context(["127.0.0.1"]), client_trusting(other.cert_pem))


async def test_context_from_files(tmp_path: Path) -> None:
    pair = generate_self_signed(["127.0.0.1"])
    cert, key = write_pair(tmp_path, pair)
    server = server_context(cert, key)
    assert server.minimum_version >= ssl.TLSVersion.TLSv1_2
    der, _ = await handshake(server, client_trusting(pair.cert_pem))
    assert x509.load_der_x509_certificate(der) == x509.load_pem_x509_certificate(pair.cert_pem)
    # context_for picks the files when both are set, and a new certificate otherwise.
    assert isinstance(context_for(TlsSettings(cert, key), []), ssl.SSLContext)
    assert isinstance(context_for(TlsSettings(), ["127.0.0.1"]), ssl.SSLContext)


def test_a_certificate_file_without_a_certificate(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path, generate_self_signed([]))
    cert.write_text("not a certificate\n")
    with pytest.raises(SettingsError) as caught:
        server_context(cert, key)
    assert caught.value.key == "tls.cert"
    assert str(cert) in caught.value.problem


def test_a_key_file_without_a_key(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path, generate_self_signed([]))
    key.write_bytes(generate_self_signed([]).cert_pem)
    with pytest.raises(SettingsError) as caught:
        server_context(cert, key)
    assert caught.value.key == "tls.key"
    assert "no usable PEM private key" in caught.value.problem


def test_a_key_that_does_not_match(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path, generate_self_signed([]))
    key.write_bytes(generate_self_signed([]).key_pem)
    with pytest.raises(SettingsError) as caught:
        server_context(cert, key)
    assert caught.value.key == "tls.key"
    assert "does not match" in caught.value.problem


def test_an_encrypted_key(tmp_path: Path) -> None:
    cert, key_path = write_pair(tmp_path, generate_self_signed([]))
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(SettingsError) as caught:
        server_context(cert, key_path)
    assert caught.value.key == "tls.key"
    assert "encrypted" in caught.value.problem


def test_missing_files(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path, generate_self_signed([]))
    with pytest.raises(SettingsError) as caught:
        server_context(tmp_path / "gone.pem", key)
    assert (caught.value.key, caught.value.problem) == (
        "tls.cert",
        f"file not found: {tmp_path / 'gone.pem'}",
    )
    with pytest.raises(SettingsError) as caught:
        server_context(cert, tmp_path / "gone.pem")
    assert caught.value.key == "tls.key"
