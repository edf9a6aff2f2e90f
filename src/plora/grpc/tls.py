"""Optional TLS and mutual TLS for offer servers and fetch clients, and a throwaway PKI for tests and demos.

    >>> from plora.grpc.tls import make_test_pki, ServerTLS, ClientTLS
    >>> from plora.grpc.server import serve
    >>> from plora.grpc.client import get_inventory
    >>> pki = make_test_pki("certs/")
    >>> server_tls = ServerTLS(cert=pki["server_cert"], key=pki["server_key"], client_ca=pki["ca_cert"])  # mTLS
    >>> client_tls = ClientTLS(ca=pki["ca_cert"], cert=pki["client_cert"], key=pki["client_key"])
    >>> server = serve("out/", port=0, host="localhost", tls=server_tls)
    >>> sorted(e.id for e in get_inventory(server.address, tls=client_tls))
    ['legal', 'medical']
    >>> server.stop()

``python -m plora.grpc.tls certs/`` writes ca.pem, server.pem/server.key (SAN localhost, 127.0.0.1) and
client.pem/client.key, all ECDSA P-256 signed by the CA (the README shows the same with ``openssl``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from plora.errors import TransferError


def _read(path: str | os.PathLike[str] | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise TransferError(f"cannot read TLS {what} {path}: {err.strerror or err}") from None


def _load_pair(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str], who: str) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM), checked to parse and to belong together; TransferError with a hint otherwise."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert, key = _read(cert_path, f"{who} certificate") or b"", _read(key_path, f"{who} key") or b""
    swapped = " (are --tls-cert and --tls-key swapped?)"
    try:
        leaf = x509.load_pem_x509_certificates(cert)[0]
    except ValueError:
        raise TransferError(f"{cert_path} is not a PEM certificate"
                            + (swapped if b"PRIVATE KEY" in cert else "")) from None
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise TransferError(f"{key_path} is not an unencrypted PEM private key"
                            + (swapped if b"CERTIFICATE" in key else "")) from None
    spki = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise TransferError(f"the key {key_path} does not belong to the certificate {cert_path}")
    return key, cert


def _load_ca(path: str | os.PathLike[str] | None, what: str) -> bytes | None:
    from cryptography import x509

    pem = _read(path, what)
    if pem is not None:
        try:
            x509.load_pem_x509_certificates(pem)
        except ValueError:
            raise TransferError(f"{path} is not a PEM certificate ({what})") from None
    return pem


@dataclass(frozen=True)
class ServerTLS:
    """Server certificate and key (PEM); with ``client_ca`` the server requires client certificates (mTLS)."""

    cert: str | os.PathLike[str]
    key: str | os.PathLike[str]
    client_ca: str | os.PathLike[str] | None = None

    def credentials(self):  # -> grpc.ServerCredentials
        import grpc

        ca = _load_ca(self.client_ca, "client CA")
        pair = _load_pair(self.cert, self.key, "server")
        return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)


@dataclass(frozen=True)
class ClientTLS:
    """CA that signed the server certificate; ``cert``+``key`` present a client certificate (mTLS)."""

    ca: str | os.PathLike[str]
    cert: str | os.PathLike[str] | None = None
    key: str | os.PathLike[str] | None = None
    server_name: str | None = None  # override the name checked against the certificate

    def credentials(self):  # -> grpc.ChannelCredentials
        import grpc

        if (self.cert is None) != (self.key is None):
            raise TransferError("a client certificate needs both --tls-cert and --tls-key")
        key, cert = _load_pair(self.cert, self.key, "client") if self.cert is not None else (None, None)
        return grpc.ssl_channel_credentials(root_certificates=_load_ca(self.ca, "CA"), private_key=key,
                                            certificate_chain=cert)

    def options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def make_test_pki(out: str | os.PathLike[str], hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> dict[str, Path]:
    """A CA plus one server and one client certificate (ECDSA P-256, valid 7 days) under ``out``. For tests/demos."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from plora.fsio import atomic_write_bytes

    out = Path(out)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("plora test CA")).issuer_name(name("plora test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    server_cert, server_key = leaf(hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, sans)
    client_cert, client_key = leaf("plora client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    pem = serialization.Encoding.PEM
    files = {
        "ca_cert": ("ca.pem", ca.public_bytes(pem), 0o644),
        "server_cert": ("server.pem", server_cert.public_bytes(pem), 0o644),
        "server_key": ("server.key", key_pem(server_key), 0o600),
        "client_cert": ("client.pem", client_cert.public_bytes(pem), 0o644),
        "client_key": ("client.key", key_pem(client_key), 0o600),
    }
    return {k: atomic_write_bytes(out / fname, data, mode=mode) for k, (fname, data, mode) in files.items()}


if __name__ == "__main__":
    written = make_test_pki(sys.argv[1] if len(sys.argv) > 1 else "certs")
    for path in written.values():
        print(path)
