"""A private CA and a server certificate for 127.0.0.1, made for one test."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# A self-signed CA certificate (no key kept anywhere): loaded as a pinned CA
# bundle by the agent's tests and as a ca-file by HAProxy's.
TEST_CA_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBiDCCAS+gAwIBAgIUG0+5QcOEryPkQg00TJI0RVPxkS8wCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwOYmFsY3RsIHRlc3QgQ0EwIBcNMjYxMTI0MDM0OTA1WhgPMjEy
NjEwMzEwMzQ5MDVaMBkxFzAVBgNVBAMMDmJhbGN0bCB0ZXN0IENBMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAE26LhByntoTDq4Rd6BcPfWOnxSQQlw9agi1BvdeXF
rI05c4E6fmjDg9GAiwyIrh4ocT4X6F24uprlXG6EikQsPaNTMFEwHQYDVR0OBBYE
FOAeezFx9vL6hBveqU98HDvHSwdlMB8GA1UdIwQYMBaAFOAeezFx9vL6hBveqU98
HDvHSwdlMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgDLcZIE5a
tB2aRPNRYfwEJvdyTH9vI23QgsuhQKMEN8wCIGLrcHEd2q4SsOaphI3C5Ympebin
Tp8KQfU6YENbwBgY
-----END CERTIFICATE-----
"""


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca_and_server_cert(folder: Path, ip: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """Returns (ca.pem, server.pem, server.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("ServerCTL test CA"))
        .issuer_name(_name("ServerCTL test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(ip))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


def write_site_cert(pem: Path, ip: str) -> Path:
    """A combined PEM (certificate, then key) for `ip`, as HAProxy's `ssl crt` loads it; the CA
    that signed it is written beside it as `<pem>.ca` (outside the PEM, for clients to trust)."""
    folder = pem.parent / f".make-{pem.stem}"
    ca, cert, key = make_ca_and_server_cert(folder, ip)
    pem.parent.mkdir(parents=True, exist_ok=True)
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    pem.chmod(0o600)
    pem.with_name(pem.name + ".ca").write_bytes(ca.read_bytes())
    for path in (ca, cert, key):
        path.unlink()
    folder.rmdir()
    return pem
