"""`balctl --enrol`: introduce this host to the control plane and write agent.env.

The control plane checks the bearer secret, the source address and the hostname; its answer
names the member and pool this host became. Only after it said yes does the agent write
anything to disk, so a refused enrolment leaves the host as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any, Mapping, NamedTuple, Optional

from balctl import __version__, validate
from balctl.config import (
    HAPROXY_PIDFILE,
    PROBE_INTERVAL,
    AgentConfig,
    parse_probe_interval,
    save_config,
)
from balctl.errors import ConfigError, EnrolError, TransportError
from balctl.paths import HostPaths
from balctl.public_ip import resolve_ip
from balctl.transport import ControlPlaneClient, describe_detail, parse_server_url, tls_context

logger = logging.getLogger(__name__)

ENROL_PATH = "/api/agents/enrol"


class Enrolment(NamedTuple):
    member_id: int
    pool_id: int
    pool_name: str
    hostname: str
    agent_env: str


def enrol(
    server: str,
    key: str,
    hostname: str,
    source_ip: Optional[str] = None,
    ca_file: Optional[str] = None,
    public_ip: Optional[str] = None,
    *,
    paths: Optional[HostPaths] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> Enrolment:
    env = os.environ if environ is None else environ
    paths = paths or HostPaths.from_env(env)
    server = server.strip().rstrip("/")
    parse_server_url(server)
    validate.key(key)
    validate.hostname(hostname)
    source_ip = validate.ipv4(source_ip, "--source-ip") if source_ip else None
    public_ip = validate.ipv4(public_ip, "--public-ip") if public_ip else None
    if ca_file:
        ca_file = os.path.abspath(ca_file)
        tls_context(ca_file)  # fails now, with a clear message, if it is not a CA bundle
    probe_interval_s = parse_probe_interval(env.get(PROBE_INTERVAL))

    body = {
        "hostname": hostname,
        "ip": resolve_ip(server, source_ip, public_ip),
        "version": __version__,
    }
    with ControlPlaneClient(server, key, ca_file=ca_file, source_ip=source_ip) as client:
        logger.debug("enrolling %s with %s as %s", hostname, client.origin, body["ip"])
        status, answer = client.post_json(ENROL_PATH, body)
    if status >= 500:
        raise TransportError(f"{server} answered {status}: {describe_detail(answer)}")
    if status != 200:
        raise EnrolError(
            f"the control plane refused the enrolment ({status}): {describe_detail(answer)}",
            status,
        )
    result = _parse_answer(answer)

    installed_ca = _install_ca(ca_file, paths) if ca_file else None
    cfg = AgentConfig(
        server=server,
        key=key,
        hostname=hostname,
        source_ip=source_ip,
        ca_file=installed_ca,
        public_ip=public_ip,
        haproxy_pidfile=env.get(HAPROXY_PIDFILE) or None,
        probe_interval_s=probe_interval_s,
    )
    written = save_config(cfg, paths)
    return Enrolment(
        member_id=result["member_id"],
        pool_id=result["pool_id"],
        pool_name=result["pool_name"],
        hostname=result["hostname"],
        agent_env=str(written),
    )


def _parse_answer(answer: Mapping[str, Any]) -> Mapping[str, Any]:
    expected = {"member_id": int, "pool_id": int, "pool_name": str, "hostname": str}
    for name, kind in expected.items():
        value = answer.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise EnrolError(
                f"the control plane accepted the enrolment but its answer lacks {name!r}; "
                "is the server a ServerCTL control plane of a matching version?"
            )
    return answer


def _install_ca(ca_file: str, paths: HostPaths) -> str:
    """Copy the pinned CA next to agent.env, so the agent does not depend on where it was."""
    target = paths.ca_pem
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if os.path.abspath(ca_file) != str(target):
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copyfile(ca_file, tmp)
            os.chmod(tmp, 0o644)  # a CA certificate is public
            os.replace(tmp, target)
        else:
            os.chmod(target, 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot install the CA file as {target}: {exc}") from exc
    return str(target)
