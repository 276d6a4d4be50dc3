"""TLS for federation (Server-Server API, "TLS"): the listener's context, the outbound
client's context and connector, and self-signed certificates for test networks.

- ``server_ssl_context``: the federation listener (TLS 1.2 or later) from PEM files.
- ``client_ssl_context``: outbound requests verify peers against the system's certificate
  authorities and check the host name (the spec: "rely on the operating system's
  judgement"); on a test network (``federation.test_network``) nothing is verified, so
  self-signed peers work. Never for a server on the Internet.
- ``outbound_connector``: an aiohttp connector with that context whose resolver drops
  non-public addresses (``netguard``), except on test networks.
- ``generate_self_signed``: an EC P-256 certificate with DNS and IP subjectAltNames, for
  test networks and development only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path
from typing import Final

import aiohttp
from aiohttp.abc import AbstractResolver

from peyvand.netguard import FilteringResolver

SELF_SIGNED_VALIDITY: Final = datetime.timedelta(days=3650)


def generate_self_signed(cert_path: Path, key_path: Path, hostnames: list[str]) -> None:
    """Write a new self-signed certificate (PEM) and its private key (PEM, mode 0600).

    ``hostnames`` are DNS names or IP addresses (``127.0.0.1``, ``::1``; IP addresses become
    IP-address subjectAltNames); the first one is also the subject's common name. Valid for
    ten years from yesterday (a little clock skew does no harm).
    """
    # cryptography only here: importing it costs the server about 8 MiB of RSS (issue 15).
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not hostnames:
        raise ValueError("a certificate needs at least one host name")
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for name in dict.fromkeys(hostnames):  # de-duplicated, order kept
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name.strip("[]"))))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0].strip("[]"))])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + SELF_SIGNED_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_file(key_path, key_pem, 0o600)
    _write_file(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` atomically to ``path`` with permissions ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def server_ssl_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """The federation listener's context: TLS 1.2 or later, the certificate chain and key.

    Raises ``OSError`` (file missing or unreadable) or ``ssl.SSLError`` (not a matching
    PEM certificate and key).
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    context.set_alpn_protocols(["http/1.1"])
    return context


def client_ssl_context(test_network: bool) -> ssl.SSLContext:
    """The context for outbound federation requests (TLS 1.2 or later).

    Normally it verifies the peer's certificate against the system's certificate
    authorities and checks the host name (given as SNI). With ``test_network`` it verifies
    nothing: for test networks with self-signed certificates only.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if test_network:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def outbound_connector(
    test_network: bool, *, limit: int = 100, limit_per_host: int = 8
) -> tuple[aiohttp.TCPConnector, AbstractResolver]:
    """A keep-alive connector for outbound federation traffic, and its resolver.

    The connector uses ``client_ssl_context(test_network)``; unless ``test_network``, its
    resolver keeps only public addresses (``netguard.FilteringResolver``). Callers must
    still check IP-literal hosts themselves (aiohttp does not resolve those), and close the
    resolver after the session (aiohttp closes only resolvers it made).
    """
    inner = aiohttp.DefaultResolver()
    resolver: AbstractResolver = inner if test_network else FilteringResolver(inner)
    connector = aiohttp.TCPConnector(
        resolver=resolver,
        ssl=client_ssl_context(test_network),
        limit=limit,
        limit_per_host=limit_per_host,
    )
    return connector, resolver
