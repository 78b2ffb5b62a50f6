"""Fixtures of the security and bad-input suites: real `serverctl serve` processes that one test
module shares, API tokens of a given role, and the Hypothesis profile the fuzzers run under."""

from __future__ import annotations

import collections.abc
import itertools

import pytest
from hypothesis import HealthCheck, settings

from support.netns import Lan, kill_namespace_processes
from support.server import ServerProcess, serverctl_cli, start_server, stop_process

# Repeatable in CI: the same examples every run (derandomize) and no example database carried
# between runs; no per-example deadline, as a loaded 2-core machine makes timings noisy. Each
# test sets its own `max_examples` on top: `@settings(parent=settings.get_profile(...))`.
settings.register_profile(
    "bad-input",
    database=None,
    derandomize=True,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


_made = itertools.count(1)


def _api_token(server: ServerProcess, role: str) -> str:
    name = f"{role}-token-{next(_made)}"
    made = serverctl_cli(
        "tokens", "create", "--name", name, "--role", role, data_dir=server.data_dir
    )
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def role_token() -> collections.abc.Callable[[ServerProcess, str], str]:
    """`role_token(server, "operator")`: a new API token of that role (viewer, operator, admin),
    made with `serverctl tokens create` as an operator would."""
    return _api_token


@pytest.fixture(scope="module")
def module_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> collections.abc.Iterator[ServerProcess]:
    """A real `serverctl serve` on loopback, shared by the tests of one module."""
    srv = start_server(tmp_path_factory.mktemp("cp"))
    yield srv
    stop_process(srv.process)


# The sandbox's LAN. Not 192.0.2/24: this machine's own network may use it.
SANDBOX_LAN = Lan("sfz", "203.0.113")


@pytest.fixture(scope="session")
def sandbox_client_ip() -> str:
    """The address the test process calls a `sandboxed_server` from (the LAN's gateway)."""
    return SANDBOX_LAN.gateway


@pytest.fixture(scope="module")
def sandboxed_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> collections.abc.Iterator[ServerProcess]:
    """A real `serverctl serve` in a network namespace on a documentation-range LAN with no route
    off it. Fuzzed settings name arbitrary hosts (DNS provider URLs, SMTP relays, S3 endpoints,
    nameservers to query): whatever the server tries to reach, nothing leaves this machine."""
    with SANDBOX_LAN as lan:
        host = lan.add_host("cp", 10)
        try:
            srv = start_server(
                tmp_path_factory.mktemp("cp"),
                host=host.address,
                port=8080,
                launcher=host.command([]),
            )
            yield srv
            stop_process(srv.process)
        finally:
            # Also when `serve` never answered: nothing may outlive the namespace.
            kill_namespace_processes(host)
