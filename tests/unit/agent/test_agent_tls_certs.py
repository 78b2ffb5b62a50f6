"""tls_certs: names checked before they reach argv, key and CSR made by the real openssl (key
0600 in a 0700 folder), certificates read back, chains checked."""

from __future__ import annotations

import calendar
import stat
import time
from pathlib import Path

import pytest
from agent_tls_fakes import TestCA, openssl, serial_of

from balctl import tls_certs
from balctl.files import write_private
from balctl.paths import HostPaths
from balctl.proc import Deadline


@pytest.mark.parametrize(
    "name", ["edge.example.com", "a.b", "x-1.example.co.uk", "a" * 63 + ".example.com"]
)
def test_good_names(name: str) -> None:
    assert tls_certs.dns_name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("Edge.example.com", "lowercase"),
        ("*.example.com", "wildcard"),
        ("localhost", "not a DNS name"),
        ("edge.example.com.", "not a DNS name"),
        ("-edge.example.com", "not a DNS name"),
        ("edge_1.example.com", "not a DNS name"),
        ("a" * 64 + ".example.com", "not a DNS name"),
        ("edge.example.com -subj /cn=x", "not a DNS name"),
        ("edge.example.com,dns:evil.com", "not a DNS name"),
        ("10.0.0.1", "IP address"),
        ("", "1-253 characters"),
        (("a" * 60 + ".") * 5 + "com", "1-253 characters"),
        (42, "must be a string"),
    ],
)
def test_bad_names_are_refused(name: object, why: str) -> None:
    problem = tls_certs.dns_name_problem(name)
    assert problem is not None and why in problem


def test_key_and_csr_for_the_names(agent_root: HostPaths) -> None:
    work = tls_certs.make_work_dir(agent_root, "job-1")
    assert stat.S_IMODE(work.stat().st_mode) == 0o700
    assert stat.S_IMODE(tls_certs.work_root(agent_root).stat().st_mode) == 0o700
    names = ["edge.example.com", "www.example.com"]
    made = tls_certs.make_key_and_csr(work, names, Deadline(30))
    assert made.key_path.parent == work
    assert stat.S_IMODE(made.key_path.stat().st_mode) == 0o600
    assert "PRIVATE KEY" in made.key_path.read_text()
    assert "PRIVATE" not in made.csr_pem
    (work / "check.csr").write_text(made.csr_pem)
    text = openssl("req", "-in", "check.csr", "-noout", "-text", "-verify", cwd=work)
    assert "Subject: CN = edge.example.com" in text
    assert "DNS:edge.example.com, DNS:www.example.com" in text
    assert "prime256v1" in text or "P-256" in text
    tls_certs.remove_work_dir(work)
    assert not work.exists()


def test_a_name_too_long_for_a_cn_goes_in_the_sans_only(agent_root: HostPaths) -> None:
    long_name = "a" * 60 + ".example.com"
    work = tls_certs.make_work_dir(agent_root, "job-2")
    made = tls_certs.make_key_and_csr(work, [long_name], Deadline(30))
    (work / "check.csr").write_text(made.csr_pem)
    text = openssl("req", "-in", "check.csr", "-noout", "-text", cwd=work)
    assert "CN =" not in text and f"DNS:{long_name}" in text


def test_names_are_checked_again_before_argv(agent_root: HostPaths) -> None:
    work = tls_certs.make_work_dir(agent_root, "job-3")
    with pytest.raises(tls_certs.CertError, match="not a DNS name"):
        tls_certs.make_key_and_csr(work, ["ok.example.com", "-config=/etc/passwd"], Deadline(30))
    assert list(work.iterdir()) == []


def test_missing_openssl_says_what_to_install(
    agent_root: HostPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tls_certs, "openssl_binary", lambda: None)
    work = tls_certs.make_work_dir(agent_root, "job-4")
    with pytest.raises(tls_certs.CertError, match="install the openssl package"):
        tls_certs.make_key_and_csr(work, ["edge.example.com"], Deadline(30))


def test_inspect_reads_a_signed_certificate(agent_root: HostPaths, tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca", name="Throwaway Test CA")
    work = tls_certs.make_work_dir(agent_root, "job-5")
    made = tls_certs.make_key_and_csr(work, ["edge.example.com", "b.example.com"], Deadline(30))
    chain = ca.sign(made.csr_pem, days=90)
    leaf = tls_certs.split_chain(chain)[0]
    # A combined PEM, key last (as installed) and key first (as some operators write them).
    for order, text in (("last", chain + made.key_path.read_text()),
                        ("first", made.key_path.read_text() + chain)):  # fmt: skip
        pem = tmp_path / f"combined-{order}.pem"
        pem.write_text(text)
        info = tls_certs.inspect(pem, Deadline(30))
        assert info.subject == "CN=edge.example.com"
        assert info.sans == ["edge.example.com", "b.example.com"]
        assert info.issuer == "CN=Throwaway Test CA"
        assert abs(info.not_after - (time.time() + 90 * 86400)) < 120
        assert info.serial == serial_of(leaf, tmp_path)
    assert tls_certs.public_key_of_key(made.key_path, Deadline(30)) == (
        tls_certs.public_key_of_cert(tmp_path / "combined-last.pem", Deadline(30))
    )


def test_inspect_of_garbage_and_of_a_certificate_without_sans(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    info = tls_certs.inspect(tmp_path / "ca" / "ca.pem", Deadline(30))
    assert info.sans == [] and info.subject == info.issuer == "CN=Throwaway Test CA"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(tls_certs.CertError, match="could not read the certificate"):
        tls_certs.inspect(garbage, Deadline(30))
    assert ca.pem


def test_openssl_dates_without_locale() -> None:
    expected = calendar.timegm((2027, 2, 2, 3, 4, 5, 0, 0, 0))
    assert tls_certs.parse_openssl_date("Feb  2 03:04:05 2027 GMT") == expected
    assert tls_certs.parse_openssl_date("Dec 31 23:59:59 2049 GMT") == calendar.timegm(
        (2049, 12, 31, 23, 59, 59, 0, 0, 0)
    )
    with pytest.raises(tls_certs.CertError):
        tls_certs.parse_openssl_date("2027-02-02 03:04:05Z")


def test_a_chain_holds_certificates_only(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    combined = ca.self_signed_pem(["a.example.com"], 10)
    assert len(tls_certs.split_chain(ca.pem + ca.pem)) == 2
    with pytest.raises(tls_certs.CertError, match="PRIVATE KEY"):
        tls_certs.split_chain(combined)
    with pytest.raises(tls_certs.CertError, match="no PEM certificate"):
        tls_certs.split_chain("hello")
    with pytest.raises(tls_certs.CertError, match="more than 10"):
        tls_certs.split_chain(ca.pem * 11)


def test_write_private_is_0600_whatever_it_replaces(tmp_path: Path) -> None:
    target = tmp_path / "x.pem"
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["x.pem"]
