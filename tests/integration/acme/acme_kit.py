"""Helpers for the ACME tests: CSRs as an agent would send them, chain checks."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID


def make_csr(*names: str) -> str:
    """A CSR (EC P-256, its key thrown away) for `names`, the first also the subject CN."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def verify_chain(chain_pem: str, root_pem: str, name: str) -> list[x509.Certificate]:
    """The chain's certificates, after checking the leaf chains up to `root_pem` for `name`
    (raises cryptography's VerificationError otherwise)."""
    certs = x509.load_pem_x509_certificates(chain_pem.encode())
    root = x509.load_pem_x509_certificate(root_pem.encode())
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([root]))
        .time(datetime.datetime.now(datetime.UTC))
        .build_server_verifier(verification.DNSName(name))
    )
    verifier.verify(certs[0], certs[1:])
    return certs


def sans(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return sorted(ext.value.get_values_for_type(x509.DNSName))
