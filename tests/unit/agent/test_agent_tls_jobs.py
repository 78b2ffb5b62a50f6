"""tls.acme_issue / tls.acme_renew_force against a loopback stand-in for the control plane's
order endpoints (CSRs signed by a throwaway CA), the real openssl and a real haproxy serving
the installed PEM on a loopback TLS bind."""

from __future__ import annotations

import json
import socket
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_fakes import KEY
from agent_tls_fakes import ORDER, STATUS, AcmeStandIn, TestCA, serial_of

from balctl import haproxy_ctl, tls_certs
from balctl.config import AgentConfig
from balctl.errors import ParamError
from balctl.jobs import tls_jobs
from balctl.jobs.catalogue import CATALOGUE
from balctl.jobs.model import JobContext, Outcome
from balctl.paths import HostPaths
from balctl.proc import Deadline
from support.haproxy import HAProxy
from support.util import free_port, wait_until

FQDN = "edge.example.com"
NAMES = [FQDN, "www.example.com"]


class TlsHAProxy(HAProxy):
    """The support haproxy, its TLS frontend loading certs/<FQDN>.pem."""

    @property
    def cert(self) -> Path:
        return self.root / f"etc/haproxy/certs/{FQDN}.pem"


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tls_jobs, "POLL_INTERVAL_S", 0.05)


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "ca")


@pytest.fixture
def plane(ca: TestCA) -> Iterator[AcmeStandIn]:
    with AcmeStandIn(ca) as standin:
        yield standin


@pytest.fixture
def proxy(agent_root: HostPaths, ca: TestCA) -> Iterator[TlsHAProxy]:
    """Running, serving an old self-signed certificate with 10 days left."""
    haproxy = TlsHAProxy(
        "edge-1",
        Path(agent_root.root),
        f"127.0.0.1:{free_port()}",
        tls_bind=f"127.0.0.1:{free_port()}",
    )
    haproxy.cert.parent.mkdir(parents=True)
    haproxy.cert.write_text(ca.self_signed_pem(NAMES, days=10))
    haproxy.cert.chmod(0o600)
    haproxy.start()
    yield haproxy
    haproxy.kill()


def _ctx(
    agent_root: HostPaths, plane: AcmeStandIn, job_id: int = 7, budget: float = 60
) -> JobContext:
    cfg = AgentConfig(server=plane.url, key=KEY, hostname="edge-1")
    return JobContext(job_id, cfg, agent_root, Deadline(budget))


def _run(kind: str, params: Any, ctx: JobContext) -> Outcome:
    entry = CATALOGUE[kind]
    return entry.run(entry.check(params), ctx)


def _served_serial(bind: str, ca: TestCA) -> str:
    context = ssl.create_default_context(cafile=str(ca.folder / "ca.pem"))
    host, port = bind.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=FQDN) as tls:
            cert = tls.getpeercert()
    assert cert is not None
    return str(cert["serialNumber"]).upper()


def _served(bind: str, ca: TestCA) -> str:
    try:
        return _served_serial(bind, ca)
    except ssl.SSLError:
        return ""  # the old, self-signed one is still served


def _key_body(pem: str) -> str:
    start = pem.index("-----BEGIN PRIVATE KEY-----")
    return "".join(pem[start:].splitlines()[1:3])


def _assert_no_key(outcome: Outcome, pem: str) -> None:
    body = _key_body(pem)
    text = outcome.summary + outcome.output + json.dumps(outcome.result)
    assert body not in text and "PRIVATE KEY" not in text


# -- parameters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "why"),
    [
        (None, "missing parameter fqdn"),
        ({"fqdn": FQDN}, "missing parameter names"),
        ({"fqdn": FQDN, "names": [FQDN], "force": False, "x": 1}, "unknown parameter"),
        ({"fqdn": "Edge.example.com", "names": ["Edge.example.com"]}, "lowercase"),
        ({"fqdn": "*.example.com", "names": ["*.example.com"]}, "wildcard"),
        ({"fqdn": FQDN, "names": []}, "list of 1-10"),
        ({"fqdn": FQDN, "names": FQDN}, "list of 1-10"),
        ({"fqdn": FQDN, "names": [f"n{i}.example.com" for i in range(11)]}, "list of 1-10"),
        ({"fqdn": FQDN, "names": ["www.example.com", FQDN]}, "must start with the fqdn"),
        ({"fqdn": FQDN, "names": [FQDN, FQDN]}, "repeat"),
        ({"fqdn": FQDN, "names": [FQDN, "bad name.example.com"]}, "names[1]"),
        ({"fqdn": FQDN, "names": [FQDN], "force": "yes"}, "force must be true or false"),
        ({"fqdn": "../../x.example.com", "names": ["../../x.example.com"]}, "not a DNS name"),
    ],
)
def test_bad_params_are_refused(params: Any, why: str) -> None:
    for kind in ("tls.acme_issue", "tls.acme_renew_force"):
        with pytest.raises(ParamError, match=why.replace("[", r"\[").replace("*", r"\*")):
            CATALOGUE[kind].check(params)


def test_params_and_the_forced_renewal() -> None:
    given = {"fqdn": FQDN, "names": NAMES, "force": False}
    assert CATALOGUE["tls.acme_issue"].check(given) == given
    assert CATALOGUE["tls.acme_issue"].check({"fqdn": FQDN, "names": [FQDN]})["force"] is False
    assert CATALOGUE["tls.acme_renew_force"].check(given)["force"] is True


# -- the whole flow, with a real haproxy -------------------------------------------------------


def test_issue_installs_the_pem_and_haproxy_serves_it(
    agent_root: HostPaths, plane: AcmeStandIn, proxy: TlsHAProxy, ca: TestCA
) -> None:
    old_pid = proxy.pid()
    outcome = _run("tls.acme_issue", {"fqdn": FQDN, "names": NAMES, "force": False},
                   _ctx(agent_root, plane))  # fmt: skip
    assert outcome.ok, outcome
    pem = proxy.cert.read_text()
    assert stat.S_IMODE(proxy.cert.stat().st_mode) == 0o600
    # The combined PEM: the chain as the CA sent it, then the key made on this host.
    chain = plane.orders[("edge-1", 7)]["chain"]
    assert pem.startswith(chain) and pem.rstrip().endswith("-----END PRIVATE KEY-----")
    serial = serial_of(chain, agent_root.lib_dir.parent)
    result = outcome.result
    assert result is not None
    assert result == {
        "path": f"/etc/haproxy/certs/{FQDN}.pem",
        "not_after": result["not_after"],
        "serial": serial,
        "names": NAMES,
        "referenced": True,
        "reloaded": True,
        "ordered": True,
    }
    assert outcome.summary.startswith(f"installed /etc/haproxy/certs/{FQDN}.pem, valid until ")
    assert proxy.pid() != old_pid
    assert wait_until(lambda: _served(proxy.tls_bind or "", ca) == serial, 5, what="new cert")
    # What crossed the wire: the CSR and ids, then polls; the key stays here.
    assert [path for path, _ in plane.requests] == [ORDER, STATUS, STATUS]
    assert plane.requests[0][1]["hostname"] == "edge-1" and plane.requests[0][1]["job_id"] == 7
    assert set(plane.requests[0][1]) == {"hostname", "job_id", "csr"}
    assert set(plane.requests[1][1]) == {"hostname", "job_id"}
    assert "PRIVATE" not in json.dumps(plane.requests)
    _assert_no_key(outcome, pem)
    assert list(tls_certs.work_root(agent_root).iterdir()) == []  # the work key is gone


def test_a_valid_certificate_is_reused_and_force_orders_again(
    agent_root: HostPaths, plane: AcmeStandIn, proxy: TlsHAProxy, ca: TestCA
) -> None:
    params = {"fqdn": FQDN, "names": NAMES, "force": False}
    first = _run("tls.acme_issue", params, _ctx(agent_root, plane, 1))
    assert first.ok and first.result is not None
    installed = proxy.cert.read_bytes()

    again = _run("tls.acme_issue", params, _ctx(agent_root, plane, 2))
    assert again.ok
    assert again.summary.endswith("not ordered again")
    assert "valid until" in again.summary
    assert again.result == {**first.result, "reloaded": False, "ordered": False}
    assert [body["job_id"] for path, body in plane.requests if path == ORDER] == [1]
    assert proxy.cert.read_bytes() == installed

    # Other names: ordered again even without force.
    other = _run("tls.acme_issue", {**params, "names": [FQDN]}, _ctx(agent_root, plane, 3))
    assert other.ok and other.result is not None and other.result["ordered"] is True

    forced = _run("tls.acme_renew_force", {**params, "names": [FQDN]}, _ctx(agent_root, plane, 4))
    assert forced.ok and forced.result is not None and forced.result["ordered"] is True
    assert forced.result["serial"] != other.result["serial"]
    assert [body["job_id"] for path, body in plane.requests if path == ORDER] == [1, 3, 4]
    assert wait_until(
        lambda: _served(proxy.tls_bind or "", ca) == forced.result["serial"],  # type: ignore[index]
        5,
        what="renewed cert",
    )


def test_a_failed_order_fails_with_the_cas_message_and_keeps_the_old_pem(
    agent_root: HostPaths, plane: AcmeStandIn, proxy: TlsHAProxy
) -> None:
    plane.outcome = "failed"
    before = proxy.cert.read_bytes()
    outcome = _run("tls.acme_issue", {"fqdn": FQDN, "names": NAMES}, _ctx(agent_root, plane))
    assert not outcome.ok
    assert outcome.summary == f"the certificate order failed: {plane.error}"
    assert proxy.cert.read_bytes() == before
    assert list(tls_certs.work_root(agent_root).iterdir()) == []


def test_a_refused_order_names_the_reason(
    agent_root: HostPaths, plane: AcmeStandIn, proxy: TlsHAProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 409, {"detail": "rate limited for these names until 2030-01-01T00:00:00Z"}

    monkeypatch.setattr(plane, "answer", refuse)
    outcome = _run("tls.acme_issue", {"fqdn": FQDN, "names": NAMES}, _ctx(agent_root, plane))
    assert not outcome.ok
    assert outcome.summary == (
        "the control plane refused the order (409): rate limited for these names until "
        "2030-01-01T00:00:00Z"
    )


def test_an_order_still_pending_at_the_deadline_fails(
    agent_root: HostPaths, plane: AcmeStandIn, proxy: TlsHAProxy
) -> None:
    plane.outcome = "pending"
    outcome = _run(
        "tls.acme_issue", {"fqdn": FQDN, "names": NAMES}, _ctx(agent_root, plane, budget=4)
    )
    assert not outcome.ok
    assert outcome.summary.startswith("no certificate within the job's time limit")
    assert len([p for p, _ in plane.requests if p == STATUS]) >= 3


def test_a_chain_for_another_key_is_not_installed(
    agent_root: HostPaths, plane: AcmeStandIn, proxy: TlsHAProxy, ca: TestCA
) -> None:
    other = tls_certs.make_work_dir(agent_root, "other")
    stranger = tls_certs.make_key_and_csr(other, NAMES, Deadline(30))
    plane.chain_override = ca.sign(stranger.csr_pem)
    tls_certs.remove_work_dir(other)
    before = proxy.cert.read_bytes()
    outcome = _run("tls.acme_issue", {"fqdn": FQDN, "names": NAMES}, _ctx(agent_root, plane))
    assert not outcome.ok
    assert "does not match the key" in outcome.summary
    assert proxy.cert.read_bytes() == before


def test_not_referenced_installs_without_a_reload(
    agent_root: HostPaths, plane: AcmeStandIn, ca: TestCA
) -> None:
    plain = HAProxy("edge-1", Path(agent_root.root), f"127.0.0.1:{free_port()}")
    plain.start()
    try:
        pid = plain.pid()
        outcome = _run("tls.acme_issue", {"fqdn": FQDN, "names": [FQDN]}, _ctx(agent_root, plane))
        assert plain.pid() == pid
    finally:
        plain.kill()
    assert outcome.ok, outcome
    assert outcome.result is not None
    assert (outcome.result["referenced"], outcome.result["reloaded"]) == (False, False)
    assert f"add `ssl crt /etc/haproxy/certs/{FQDN}.pem` to a bind line" in outcome.summary
    target = tls_jobs.pem_path(agent_root, FQDN)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700


def test_a_config_still_invalid_after_install_removes_the_new_pem(
    agent_root: HostPaths, plane: AcmeStandIn
) -> None:
    # The operator named the PEM before it existed (so the check before ordering may fail on
    # it), but the configuration has a second problem the new PEM does not fix.
    agent_root.haproxy_dir.mkdir(parents=True)
    target = tls_jobs.pem_path(agent_root, FQDN)
    agent_root.haproxy_cfg.write_text(
        "defaults\n    mode http\n    timeout client 5s\n    timeout server 5s\n"
        "    timeout connect 5s\n\nfrontend tls\n"
        f"    bind 127.0.0.1:{free_port()} ssl crt {target}\n"
        f"    bind 127.0.0.1:{free_port()} ssl crt {target.parent}/missing.pem\n"
    )
    outcome = _run("tls.acme_issue", {"fqdn": FQDN, "names": [FQDN]}, _ctx(agent_root, plane))
    assert not outcome.ok
    assert outcome.summary.startswith("configuration is invalid: ")
    assert outcome.summary.endswith(f"removed the new {FQDN}.pem")
    assert "missing.pem" in outcome.output
    assert not target.exists()
    assert [p for p, _ in plane.requests][:1] == [ORDER]


def test_an_invalid_config_orders_nothing(agent_root: HostPaths, plane: AcmeStandIn) -> None:
    agent_root.haproxy_dir.mkdir(parents=True)
    agent_root.haproxy_cfg.write_text("frontend x\n    bind 127.0.0.1:1 nonsense-keyword\n")
    outcome = _run("tls.acme_issue", {"fqdn": FQDN, "names": [FQDN]}, _ctx(agent_root, plane))
    assert not outcome.ok
    assert outcome.summary.startswith("not ordering a certificate: configuration is invalid")
    assert plane.requests == []


def test_no_haproxy_config_orders_nothing(agent_root: HostPaths, plane: AcmeStandIn) -> None:
    outcome = _run("tls.acme_issue", {"fqdn": FQDN, "names": [FQDN]}, _ctx(agent_root, plane))
    assert not outcome.ok
    assert "there is no HAProxy configuration" in outcome.summary
    assert plane.requests == []


def test_a_failed_check_after_install_restores_the_previous_pem(
    agent_root: HostPaths, plane: AcmeStandIn, proxy: TlsHAProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = haproxy_ctl.validate
    calls: list[bytes] = []

    def second_check_fails(paths: HostPaths, deadline: Deadline) -> haproxy_ctl.Step:
        calls.append(proxy.cert.read_bytes())
        if len(calls) == 2:  # the check after the new PEM was written
            return haproxy_ctl.Step(False, "configuration is invalid: [ALERT] stand-in", "out")
        return real(paths, deadline)

    monkeypatch.setattr(haproxy_ctl, "validate", second_check_fails)
    before = proxy.cert.read_bytes()
    proxy.cert.chmod(0o640)
    pid = proxy.pid()
    outcome = _run("tls.acme_issue", {"fqdn": FQDN, "names": NAMES}, _ctx(agent_root, plane))
    assert not outcome.ok
    assert outcome.summary == (
        f"configuration is invalid: [ALERT] stand-in; restored the previous {FQDN}.pem"
    )
    assert calls[1] != before  # the new PEM was in place for the check
    assert proxy.cert.read_bytes() == before
    assert stat.S_IMODE(proxy.cert.stat().st_mode) == 0o640
    assert proxy.pid() == pid


def test_a_failed_reload_restores_and_reloads_the_previous_pem(
    agent_root: HostPaths, plane: AcmeStandIn, proxy: TlsHAProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = haproxy_ctl.reload
    seen: list[bytes] = []

    def first_reload_fails(paths: HostPaths, pidfile: Any, deadline: Deadline) -> haproxy_ctl.Step:
        seen.append(proxy.cert.read_bytes())
        step = real(paths, pidfile, deadline)
        if len(seen) == 1:
            return step._replace(ok=False, summary="haproxy reloaded; but stand-in failure")
        return step

    monkeypatch.setattr(haproxy_ctl, "reload", first_reload_fails)
    before = proxy.cert.read_bytes()
    outcome = _run("tls.acme_issue", {"fqdn": FQDN, "names": NAMES}, _ctx(agent_root, plane))
    assert not outcome.ok
    assert outcome.summary == (
        f"haproxy reloaded; but stand-in failure; restored the previous {FQDN}.pem and reloaded"
    )
    assert seen[0] != before and seen[1] == before
    assert proxy.cert.read_bytes() == before
    assert proxy.alive()


def test_missing_openssl_fails_the_job_clearly(
    agent_root: HostPaths, plane: AcmeStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tls_certs, "openssl_binary", lambda: None)
    outcome = _run("tls.acme_issue", {"fqdn": FQDN, "names": [FQDN]}, _ctx(agent_root, plane))
    assert not outcome.ok
    assert outcome.summary == "openssl is not installed on this host: install the openssl package"


def test_a_symlinked_pem_is_left_alone(
    agent_root: HostPaths, plane: AcmeStandIn, proxy: TlsHAProxy, tmp_path: Path
) -> None:
    managed = agent_root.host("/etc/ssl/managed.pem")
    managed.parent.mkdir(parents=True)
    proxy.cert.rename(managed)
    proxy.cert.symlink_to(managed)
    outcome = _run("tls.acme_renew_force", {"fqdn": FQDN, "names": NAMES}, _ctx(agent_root, plane))
    assert not outcome.ok
    assert outcome.summary.startswith(f"/etc/haproxy/certs/{FQDN}.pem is a symlink")
    assert proxy.cert.is_symlink() and plane.requests == []
