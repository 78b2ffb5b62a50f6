from __future__ import annotations

from pathlib import Path

from balctl.paths import HostPaths


def test_default_root_uses_the_real_host_paths() -> None:
    paths = HostPaths.from_env({})
    assert paths.agent_env == Path("/etc/balctl/agent.env")
    assert paths.admin_socket == Path("/run/haproxy/admin.sock")
    assert paths.pyz == Path("/usr/local/lib/balctl/balctl.pyz")
    assert paths.unit_file == Path("/etc/systemd/system/balctl-heartbeat.service")


def test_balctl_root_prefixes_every_path(tmp_path: Path) -> None:
    paths = HostPaths.from_env({"BALCTL_ROOT": str(tmp_path) + "/"})
    every = [value for value in paths._asdict().values() if isinstance(value, Path)]
    every += [paths.pyz, paths.unit_file, paths.pidfile, paths.log_file]
    assert len(every) == 15
    for path in every:
        assert str(path).startswith(str(tmp_path) + "/"), path
    assert paths.ca_pem == tmp_path / "etc/balctl/ca.pem"
    assert paths.run_systemd_system == tmp_path / "run/systemd/system"
    assert paths.log_file == tmp_path / "var/log/balctl/agent.log"


def test_systemd_is_running_only_when_its_runtime_dir_exists(tmp_path: Path) -> None:
    paths = HostPaths.under(str(tmp_path))
    assert not paths.systemd_running()
    paths.run_systemd_system.mkdir(parents=True)
    assert paths.systemd_running()
