"""haproxy.install and `balctl --provision-haproxy`: for real where haproxy is installed (here),
and with stand-in apt-get / dnf scripts on a PATH without haproxy, which record their calls."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from agent_jobs_host import Host

from balctl import cli
from balctl.jobs.install import provision
from balctl.proc import Deadline

FAKE_VERSION = "9.9.9-standin"

# Records its arguments and DEBIAN_FRONTEND; `install` drops a fake haproxy next to itself.
STANDIN = """#!/bin/sh
printf '%s|%s\\n' "$*" "$DEBIAN_FRONTEND" >> "{log}"
echo "{name}: pretending to $1"
if [ "$1" = install ] && [ -z "$FAIL" ]; then
    printf '#!/bin/sh\\necho "HAProxy version {version} 2026/01/01 - https://haproxy.org/"\\n' \\
        > "{bindir}/haproxy"
    /bin/chmod 755 "{bindir}/haproxy"
fi
[ -z "$FAIL" ] || {{ echo "E: Unable to locate package haproxy"; exit 100; }}
"""


def _standin(bindir: Path, name: str) -> Path:
    log = bindir.parent / f"{name}.calls"
    script = bindir / name
    script.write_text(STANDIN.format(log=log, name=name, bindir=bindir, version=FAKE_VERSION))
    script.chmod(0o755)
    return log


@pytest.fixture
def bindir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    made = tmp_path / "bin"
    made.mkdir()
    monkeypatch.setenv("PATH", str(made))
    monkeypatch.delenv("FAIL", raising=False)
    return made


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_installed_haproxy_is_reported_and_nothing_runs(
    bindir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apt = _standin(bindir, "apt-get")
    monkeypatch.setenv("PATH", f"{bindir}:/usr/sbin:/usr/bin:/bin")
    real = subprocess.run(["haproxy", "-v"], capture_output=True, text=True, check=True)
    version = real.stdout.split()[2]

    outcome = provision(Deadline(60))

    assert outcome.ok
    assert outcome.summary == f"haproxy already installed ({version})"
    assert outcome.result == {"changed": False, "version": version}
    assert _calls(apt) == []


def test_apt_get_updates_then_installs_non_interactively(bindir: Path) -> None:
    apt = _standin(bindir, "apt-get")
    dnf = _standin(bindir, "dnf")

    outcome = provision(Deadline(60))

    assert outcome.ok, outcome.summary
    assert _calls(apt) == ["update|noninteractive", "install -y haproxy|noninteractive"]
    assert _calls(dnf) == []
    assert outcome.summary == f"haproxy installed with apt-get ({FAKE_VERSION})"
    assert outcome.result == {"changed": True, "version": FAKE_VERSION}
    assert "apt-get: pretending to update" in outcome.output


def test_dnf_installs_when_there_is_no_apt_get(bindir: Path) -> None:
    dnf = _standin(bindir, "dnf")
    outcome = provision(Deadline(60))
    assert outcome.ok, outcome.summary
    assert [call.split("|")[0] for call in _calls(dnf)] == ["install -y haproxy"]
    assert outcome.summary == f"haproxy installed with dnf ({FAKE_VERSION})"


def test_without_a_package_manager_the_job_fails_and_says_why(bindir: Path) -> None:
    outcome = provision(Deadline(60))
    assert not outcome.ok
    assert "neither apt-get nor dnf" in outcome.summary


def test_a_failed_install_fails_with_the_package_managers_words(
    bindir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _standin(bindir, "apt-get")
    monkeypatch.setenv("FAIL", "1")
    outcome = provision(Deadline(60))
    assert not outcome.ok
    assert outcome.summary == "apt-get could not install haproxy: apt-get exited with 100"
    assert "E: Unable to locate package haproxy" in outcome.output


def test_install_job_refuses_parameters(host: Host) -> None:
    done = host.job("haproxy.install", {"version": "2.8"})
    assert done.state == "failed"
    assert done.summary == (
        "invalid parameters for haproxy.install: unknown parameter(s) version (expected: none)"
    )


def test_cli_provision_haproxy(
    bindir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BALCTL_ROOT", str(tmp_path / "root"))
    assert cli.main(["--provision-haproxy"]) == 1
    assert "neither apt-get nor dnf" in capsys.readouterr().err

    apt = _standin(bindir, "apt-get")
    assert cli.main(["--provision-haproxy"]) == 0
    out = capsys.readouterr().out
    assert out.endswith(f"balctl: haproxy installed with apt-get ({FAKE_VERSION})\n")
    assert len(_calls(apt)) == 2

    assert cli.main(["--provision-haproxy"]) == 0  # now it is there: nothing runs
    assert "already installed" in capsys.readouterr().out
    assert len(_calls(apt)) == 2


def test_cli_provision_haproxy_needs_root_or_a_private_root(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BALCTL_ROOT", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.main(["--provision-haproxy"]) == 1
    assert "must run as root" in capsys.readouterr().err
