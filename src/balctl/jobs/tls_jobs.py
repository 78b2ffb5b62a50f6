"""tls.acme_issue and tls.acme_renew_force: a certificate for the pool's failover name.

The control plane answers the ACME DNS-01 challenge (it holds the DNS credentials); the key is
made here and never leaves the host. Steps (docs/agent.md, "TLS certificates"):
1. unless forced, a PEM already installed for the same names with more than RENEW_BEFORE_S left
   is kept: the job completes at once (Let's Encrypt allows 5 certificates per exact name set a
   week, so members must not order again on every run);
2. `haproxy -c` must pass before anything is ordered (an order whose result would be rolled back
   only costs rate limit), except when the one problem may be this very PEM, still missing;
3. an EC P-256 key and a CSR (tls_certs.py), POST ORDER_PATH, then POST STATUS_PATH every
   POLL_INTERVAL_S until the chain comes, the CA's error comes, or the job's time runs out;
4. the chain's leaf must carry the key's public key and every name; chain + key are written as
   one PEM (0600, atomically) at /etc/haproxy/certs/<fqdn>.pem, `haproxy -c` runs, and HAProxy
   reloads when its configuration references the file. A failed check or reload puts the
   previous file back (or removes the new one) and, when a new HAProxy had taken over, reloads
   again.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from balctl import haproxy_ctl, proc, tls_certs
from balctl.config import AgentConfig
from balctl.errors import AgentError, JobError, ParamError, TransportError
from balctl.files import fsync_dir, write_private
from balctl.haproxy_cfg import config_files, read_sections
from balctl.haproxy_refs import HostTree, closure, references
from balctl.jobs import params as p
from balctl.jobs.model import JobContext, Outcome
from balctl.paths import HostPaths
from balctl.transport import ControlPlaneClient, JsonDict, describe_detail

logger = logging.getLogger(__name__)

ORDER_PATH = "/api/agents/tls/order"
STATUS_PATH = "/api/agents/tls/order/status"
POLL_INTERVAL_S = 3.0
RENEW_BEFORE_S = 30 * 86400
MAX_NAMES = 10
# Kept back from the job's time for checking, installing and reloading once the chain is here.
INSTALL_RESERVE_S = 30.0
# A rollback must be able to reload even when the job's own time is used up.
ROLLBACK_BUDGET_S = 120.0
DEFAULT_TIMEOUT_S = 900.0
CERTS_DIR = "certs"


# -- parameters --------------------------------------------------------------------------------


def check(params: Any) -> Dict[str, Any]:
    """{"fqdn": name, "names": [fqdn, ...] (unique, at most MAX_NAMES), "force": bool}; `force`
    may be left out (false)."""
    given = p.known(p.as_object(params), ("fqdn", "names", "force"))
    for key in ("fqdn", "names"):
        if key not in given:
            raise ParamError(f"missing parameter {key}")
    fqdn = _name(given.get("fqdn"), "fqdn")
    raw = given.get("names")
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_NAMES:
        raise ParamError(f"names must be a list of 1-{MAX_NAMES} DNS names")
    names = [_name(item, f"names[{index}]") for index, item in enumerate(raw)]
    if len(set(names)) != len(names):
        raise ParamError("names must not repeat a name")
    if names[0] != fqdn:
        raise ParamError(f"names must start with the fqdn {fqdn!r}")
    force = given.get("force", False)
    if not isinstance(force, bool):
        raise ParamError("force must be true or false")
    return {"fqdn": fqdn, "names": names, "force": force}


def check_forced(params: Any) -> Dict[str, Any]:
    """tls.acme_renew_force: the same parameters, always forced."""
    checked = check(params)
    checked["force"] = True
    return checked


def _name(value: Any, key: str) -> str:
    problem = tls_certs.dns_name_problem(value)
    if problem is not None:
        raise ParamError(f"{key} {problem}")
    assert isinstance(value, str)
    return value


# -- the job -----------------------------------------------------------------------------------


def pem_path(paths: HostPaths, fqdn: str) -> Path:
    return paths.haproxy_dir / CERTS_DIR / f"{fqdn}.pem"


def issue(params: Dict[str, Any], ctx: JobContext) -> Outcome:
    fqdn, names, force = params["fqdn"], params["names"], params["force"]
    target = pem_path(ctx.paths, fqdn)
    logical = ctx.paths.logical(str(target)) or str(target)
    if tls_certs.openssl_binary() is None:
        return Outcome(False, tls_certs.OPENSSL_MISSING)
    output: List[str] = []
    if not force:
        kept = _reusable(target, names, ctx.deadline, output)
        if kept is not None:
            date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(kept.not_after))
            result = _result(logical, kept, names, _referenced(ctx.paths, logical), False, False)
            return Outcome(
                True,
                f"{logical} is valid until {date}, not ordered again",
                "\n".join(output),
                result,
            )
    if target.is_symlink():
        # Replacing it would turn someone else's managed file into ours behind their back.
        return Outcome(
            False,
            f"{logical} is a symlink (a certificate managed elsewhere): remove it to let "
            "ServerCTL install its own",
            "\n".join(output),
        )
    precheck = _precheck(ctx, logical, target)
    if precheck is not None:
        return Outcome(False, precheck.summary, precheck.output)
    work: Optional[Path] = None
    try:
        work = tls_certs.make_work_dir(ctx.paths, f"job-{ctx.job_id}")
        made = tls_certs.make_key_and_csr(work, names, ctx.deadline)
        output.append(f"made an EC P-256 key and a CSR for {', '.join(names)}")
        chain = _order(ctx, made.csr_pem, output)
        leaf, chain_text = _checked_chain(work, chain, made.key_path, names, ctx.deadline)
        output.append(f"received certificate serial {leaf.serial} for {', '.join(leaf.sans)}")
        combined = chain_text.encode("ascii") + made.key_path.read_bytes()
        return _install(ctx, target, logical, combined, leaf, names, output)
    except AgentError as exc:
        return Outcome(False, str(exc), "\n".join(output))
    except OSError as exc:
        return Outcome(False, f"cannot write the key or the certificate: {exc}", "\n".join(output))
    finally:
        if work is not None:
            tls_certs.remove_work_dir(work)  # the key now lives only in the installed PEM


def _result(
    logical: str,
    info: tls_certs.CertInfo,
    names: List[str],
    referenced: bool,
    reloaded: bool,
    ordered: bool,
) -> Dict[str, Any]:
    return {
        "path": logical,
        "not_after": info.not_after,
        "serial": info.serial,
        "names": list(names),
        "referenced": referenced,
        "reloaded": reloaded,
        "ordered": ordered,
    }


def _reusable(
    target: Path, names: List[str], deadline: proc.Deadline, output: List[str]
) -> Optional[tls_certs.CertInfo]:
    """The installed certificate when it covers exactly `names` with enough time left."""
    if not target.is_file():
        return None
    try:
        info = tls_certs.inspect(target, deadline)
    except tls_certs.CertError as exc:
        output.append(f"the installed {target.name} cannot be read ({exc}): ordering a new one")
        return None
    if set(info.sans) != set(names):
        output.append(
            f"the installed certificate is for {', '.join(info.sans) or 'no DNS name'}: "
            "ordering one for the requested names"
        )
        return None
    left = info.not_after - time.time()
    if left <= RENEW_BEFORE_S:
        output.append(f"the installed certificate has {max(0, int(left // 86400))} days left")
        return None
    return info


def _precheck(ctx: JobContext, logical: str, target: Path) -> Optional[haproxy_ctl.Step]:
    """A failed Step when nothing should be ordered, else None."""
    step = haproxy_ctl.validate(ctx.paths, ctx.deadline)
    if step.ok:
        return None
    if not target.exists() and _referenced(ctx.paths, logical, missing_too=True):
        # The operator added the `ssl crt` line first: this PEM is what the check misses.
        return None
    return haproxy_ctl.Step(False, f"not ordering a certificate: {step.summary}", step.output)


def _referenced(paths: HostPaths, logical: str, missing_too: bool = False) -> bool:
    """Does the HAProxy configuration load the file at `logical` (directly, through a crt
    folder or crt-list, or through a symlink)? With `missing_too`, a reference to a file that
    does not exist yet counts."""
    files = config_files(paths)
    if not files:
        return False
    tree = HostTree(paths.root)
    refs = references(read_sections(files), paths.root, tree)
    if logical in closure(refs.files, paths.root, tree):
        return True
    if not missing_too:
        return False
    # Named but missing, or in a crt folder the configuration loads.
    folder = logical.rsplit("/", 1)[0]
    named = any(i["reason"] == "missing" and i["path"] == logical for i in refs.skipped)
    return named or folder in refs.looked_at


# -- talking to the control plane --------------------------------------------------------------


def _client(cfg: AgentConfig) -> ControlPlaneClient:
    return ControlPlaneClient(cfg.server, cfg.key, ca_file=cfg.ca_file, source_ip=cfg.source_ip)


def _order(ctx: JobContext, csr: str, output: List[str]) -> str:
    """The PEM chain the control plane got for `csr`; JobError with the CA's message."""
    ident = {"hostname": ctx.cfg.hostname, "job_id": ctx.job_id}
    reserve = min(INSTALL_RESERVE_S, ctx.deadline.seconds / 4)
    started = time.monotonic()
    with _client(ctx.cfg) as client:
        answer = _post(client, ORDER_PATH, {**ident, "csr": csr}, ctx, reserve)
        output.append(f"order sent to {client.origin}")
        while True:
            state = answer.get("state")
            if state == "valid":
                chain = answer.get("chain")
                if not isinstance(chain, str) or not chain.strip():
                    raise JobError("the control plane said the order is valid but sent no chain")
                output.append(f"certificate ready after {time.monotonic() - started:.0f} s")
                return chain
            if state == "failed":
                raise JobError(f"the certificate order failed: {_error_text(answer)}")
            if state != "pending":
                raise JobError(f"the control plane answered an unknown order state {state!r:.40}")
            if ctx.deadline.remaining() <= reserve + POLL_INTERVAL_S:
                raise JobError(
                    "no certificate within the job's time limit: the order was still pending "
                    f"after {time.monotonic() - started:.0f} s"
                )
            time.sleep(POLL_INTERVAL_S)
            answer = _post(client, STATUS_PATH, ident, ctx, reserve)


def _post(
    client: ControlPlaneClient,
    path: str,
    body: Mapping[str, Any],
    ctx: JobContext,
    reserve: float,
) -> JsonDict:
    """POST with retries on network errors, 5xx and 429 (the control plane keys orders by
    hostname and job id, so a repeated POST is safe); JobError on a refusal."""
    while True:
        try:
            status, answer = client.post_json(path, body)
        except TransportError as exc:
            problem = str(exc)
        else:
            if 200 <= status < 300:
                return answer
            if isinstance(answer.get("state"), str):
                return answer  # a refusal that says "failed" with the CA's own error
            detail = describe_detail(answer)
            if status < 500 and status != 429:
                raise JobError(f"the control plane refused the order ({status}): {detail}")
            problem = f"the control plane answered {status}: {detail}"
        if ctx.deadline.remaining() <= reserve + POLL_INTERVAL_S:
            raise JobError(f"gave up on the certificate order: {problem}")
        logger.warning("certificate order for job %d: %s; retrying", ctx.job_id, problem)
        time.sleep(POLL_INTERVAL_S)


def _error_text(answer: Mapping[str, Any]) -> str:
    error = answer.get("error")
    if isinstance(error, str) and error.strip():
        return " ".join(error.split())[:1000]
    return describe_detail(answer)


# -- checking and installing ---------------------------------------------------------------------


def _checked_chain(
    work: Path, chain: str, key_path: Path, names: List[str], deadline: proc.Deadline
) -> Tuple[tls_certs.CertInfo, str]:
    """The leaf's details and the chain as PEM text, once the leaf is proved ours."""
    certs = tls_certs.split_chain(chain)
    chain_text = "\n".join(certs) + "\n"
    chain_file = work / "chain.pem"
    chain_file.write_text(chain_text, encoding="ascii")
    leaf = tls_certs.inspect(chain_file, deadline)
    if tls_certs.public_key_of_cert(chain_file, deadline) != tls_certs.public_key_of_key(
        key_path, deadline
    ):
        raise JobError("the certificate received does not match the key made for it: not installed")
    missing = [name for name in names if name not in leaf.sans]
    if missing:
        raise JobError(f"the certificate received does not cover {', '.join(missing)}")
    if leaf.not_after <= time.time():
        raise JobError("the certificate received has already expired: not installed")
    return leaf, chain_text


def _install(
    ctx: JobContext,
    target: Path,
    logical: str,
    combined: bytes,
    leaf: tls_certs.CertInfo,
    names: List[str],
    output: List[str],
) -> Outcome:
    # Checks and the reload get at least INSTALL_RESERVE_S, whatever the order took.
    deadline = proc.Deadline(max(ctx.deadline.remaining(), INSTALL_RESERVE_S))
    folder = target.parent
    if not folder.is_dir():
        folder.mkdir(mode=0o700, parents=True)
        fsync_dir(folder.parent)
    previous: Optional[Tuple[bytes, int]] = None
    if target.is_file():
        previous = (target.read_bytes(), target.stat().st_mode & 0o7777)
    write_private(target, combined)
    output.append(f"wrote {logical} (0600)")
    check = haproxy_ctl.validate(ctx.paths, deadline)
    output.append(check.output.rstrip("\n"))
    if not check.ok:
        undo = _put_back(target, previous)
        return Outcome(False, f"{check.summary}; {undo}", "\n".join(output))
    referenced = _referenced(ctx.paths, logical)
    reloaded = False
    summary = f"installed {logical}, valid until {_date(leaf.not_after)}"
    if referenced:
        step = haproxy_ctl.reload(ctx.paths, ctx.cfg.haproxy_pidfile, deadline)
        output.append(step.output.rstrip("\n"))
        if not step.ok:
            undo = _put_back(target, previous)
            if step.took_over:
                back = haproxy_ctl.reload(
                    ctx.paths, ctx.cfg.haproxy_pidfile, proc.Deadline(ROLLBACK_BUDGET_S)
                )
                output.append("# rollback\n" + back.output.rstrip("\n"))
                undo += " and reloaded" if back.ok else f", but reloading failed: {back.summary}"
            return Outcome(False, f"{step.summary}; {undo}", "\n".join(output))
        reloaded = True
        summary += f"; {step.summary}"
    else:
        summary += (
            f"; the HAProxy configuration does not reference it yet (add `ssl crt {logical}` "
            "to a bind line)"
        )
    logger.info("installed certificate %s (serial %s)", logical, leaf.serial)
    result = _result(logical, leaf, names, referenced, reloaded, True)
    return Outcome(True, summary, "\n".join(output), result)


def _put_back(target: Path, previous: Optional[Tuple[bytes, int]]) -> str:
    try:
        if previous is None:
            os.unlink(target)
            return f"removed the new {target.name}"
        write_private(target, previous[0], previous[1])
        return f"restored the previous {target.name}"
    except OSError as exc:
        return f"and could not put the previous {target.name} back: {exc}"


def _date(when: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(when))
