"""agent.logs: which log it reads (BALCTL_LOG_FILE, the journal, the background-mode file), its
bounds, its parameter checks, and that no secret leaves the host; and the log file `run` keeps."""

from __future__ import annotations

import calendar
import logging
import os
import re
import stat
import time
from pathlib import Path

import pytest
from agent_fakes import KEY

from balctl import logfile
from balctl.config import AgentConfig, load_config
from balctl.errors import ConfigError, ParamError
from balctl.jobs import agent_logs
from balctl.jobs.catalogue import CATALOGUE
from balctl.jobs.model import JobContext, Outcome
from balctl.jobs.redact import redact
from balctl.paths import HostPaths
from balctl.proc import Deadline

ENROLMENT_SECRET = "Q7fh2KxLmN4pR8sTvW1yZ3bC5dE6gH9jA0kMnPqRsTuVwXyZ"  # 48, the server's shape


def _run(paths: HostPaths, log_file: Path | None = None, **params: object) -> Outcome:
    cfg = AgentConfig(
        server="http://127.0.0.1:9",
        key=KEY,
        hostname="edge-1",
        log_file=str(log_file) if log_file else None,
    )
    return agent_logs.run_job(agent_logs.check(params), JobContext(7, cfg, paths, Deadline(30)))


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def no_journal(agent_root: HostPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """systemd "runs" (its marker folder exists under the root) but journalctl is not on PATH."""
    agent_root.run_systemd_system.mkdir(parents=True)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty


# -- parameters -----------------------------------------------------------------------------------


def test_parameters_default_to_500_lines_and_no_age_limit() -> None:
    assert agent_logs.check(None) == {"lines": 500, "since_minutes": None}
    assert agent_logs.check({"lines": 5000, "since_minutes": None}) == {
        "lines": 5000,
        "since_minutes": None,
    }
    assert agent_logs.check({"since_minutes": 30})["since_minutes"] == 30


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"lines": 0}, "lines must be a whole number from 1 to 5000"),
        ({"lines": 5001}, "lines must be a whole number from 1 to 5000"),
        ({"lines": True}, "lines must be a whole number"),
        ({"lines": "10"}, "lines must be a whole number"),
        ({"since_minutes": 0}, "since_minutes must be a whole number from 1 to 10080"),
        ({"unit": "ssh.service"}, "unknown parameter(s) unit"),
        (["lines"], "params must be a JSON object"),
    ],
)
def test_bad_parameters_are_refused_with_the_reason(params: object, says: str) -> None:
    with pytest.raises(ParamError, match=re.escape(says)):
        agent_logs.check(params)


def test_the_catalogue_runs_agent_logs_with_its_check() -> None:
    entry = CATALOGUE["agent.logs"]
    assert entry.check is agent_logs.check and entry.run is agent_logs.run_job


# -- sources --------------------------------------------------------------------------------------


def test_the_configured_log_file_comes_first(agent_root: HostPaths, tmp_path: Path) -> None:
    _write(agent_root.log_file, ["background mode line"])
    own = _write(tmp_path / "own.log", ["2030-01-01T00:00:00Z balctl[INFO] heartbeat accepted"])
    outcome = _run(agent_root, own)
    assert outcome.ok, outcome.summary
    assert outcome.result is not None
    assert outcome.result["source"] == "file" and outcome.result["where"] == str(own)
    assert outcome.result["text"] == "2030-01-01T00:00:00Z balctl[INFO] heartbeat accepted\n"
    assert outcome.summary == f"1 log line(s) from {own}"


def test_without_systemd_the_background_mode_file_is_read(agent_root: HostPaths) -> None:
    _write(agent_root.log_file, ["one", "two", "three"])
    outcome = _run(agent_root, lines=2)
    assert outcome.result is not None
    assert outcome.result["text"] == "two\nthree\n" and outcome.result["lines"] == 2
    assert outcome.result["tried"] == [
        "balctl-heartbeat.service: systemd is not running on this host"
    ]


def test_a_missing_journalctl_falls_back_to_the_file(
    agent_root: HostPaths, no_journal: Path
) -> None:
    _write(agent_root.log_file, ["from the file"])
    outcome = _run(agent_root)
    assert outcome.ok and outcome.result is not None
    assert outcome.result["text"] == "from the file\n"
    assert outcome.result["tried"] == ["balctl-heartbeat.service: journalctl is not installed"]


def test_the_journal_is_read_with_journalctl_when_systemd_runs(
    agent_root: HostPaths, no_journal: Path
) -> None:
    # A stand-in journalctl (no journald here): it prints the arguments it was given.
    fake = no_journal / "journalctl"
    fake.write_text('#!/bin/sh\necho "2030-01-01T00:00:00+0000 host balctl[1]: args: $*"\n')
    fake.chmod(0o755)
    outcome = _run(agent_root, lines=20, since_minutes=15)
    assert outcome.ok and outcome.result is not None
    assert outcome.result["source"] == "journald"
    assert outcome.result["text"].endswith(
        "args: -u balctl-heartbeat.service -n 20 --no-pager -o short-iso --since=-15min\n"
    )


def test_an_empty_journal_falls_back_to_the_file(agent_root: HostPaths, no_journal: Path) -> None:
    fake = no_journal / "journalctl"
    fake.write_text('#!/bin/sh\necho "-- No entries --"\n')
    fake.chmod(0o755)
    _write(agent_root.log_file, ["from the file"])
    outcome = _run(agent_root)
    assert outcome.result is not None and outcome.result["text"] == "from the file\n"
    assert "the journal has no lines of balctl-heartbeat.service" in outcome.result["tried"][0]


def test_no_log_anywhere_fails_and_says_what_to_set(agent_root: HostPaths, tmp_path: Path) -> None:
    outcome = _run(agent_root, tmp_path / "absent.log")
    assert not outcome.ok
    assert outcome.summary.startswith("found no agent log to read: ")
    assert f"{tmp_path / 'absent.log'}: no such file" in outcome.summary
    assert "Set BALCTL_LOG_FILE" in outcome.summary


def test_a_fifo_at_the_log_path_is_refused_without_hanging(
    agent_root: HostPaths, tmp_path: Path
) -> None:
    fifo = tmp_path / "fifo.log"
    os.mkfifo(fifo)
    _write(agent_root.log_file, ["fallback"])
    started = time.monotonic()
    outcome = _run(agent_root, fifo)
    assert time.monotonic() - started < 5
    assert outcome.result is not None and outcome.result["text"] == "fallback\n"
    assert f"{fifo}: not a regular file" in outcome.result["tried"]


# -- bounds ---------------------------------------------------------------------------------------


def test_lines_are_the_newest_ones_asked_for(agent_root: HostPaths) -> None:
    _write(agent_root.log_file, [f"line {n}" for n in range(6000)])
    outcome = _run(agent_root, lines=5000)
    assert outcome.result is not None
    lines = outcome.result["text"].splitlines()
    assert len(lines) == 5000 and lines[0] == "line 1000" and lines[-1] == "line 5999"
    assert outcome.result["truncated"] is False


def test_text_is_cut_to_256_kib_keeping_the_newest_lines(agent_root: HostPaths) -> None:
    _write(agent_root.log_file, [f"{n:04d} " + "x" * 995 for n in range(400)])  # 400 KB
    outcome = _run(agent_root, lines=400)
    assert outcome.result is not None
    text = outcome.result["text"]
    assert len(text.encode()) <= agent_logs.MAX_TEXT_BYTES
    assert outcome.result["truncated"] is True
    assert text.splitlines()[-1].startswith("0399 ")
    assert "cut to the newest 256 KiB" in outcome.summary


def test_a_short_file_is_completed_from_its_last_rotation(agent_root: HostPaths) -> None:
    _write(Path(f"{agent_root.log_file}.1"), [f"old {n}" for n in range(10)])
    _write(agent_root.log_file, ["new 0", "new 1", "new 2"])
    outcome = _run(agent_root, lines=5)
    assert outcome.result is not None
    assert outcome.result["text"].splitlines() == ["old 8", "old 9", "new 0", "new 1", "new 2"]


def test_since_minutes_keeps_recent_lines_and_their_tracebacks(agent_root: HostPaths) -> None:
    def stamp(ago_s: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - ago_s))

    _write(
        agent_root.log_file,
        [
            f"{stamp(3600)} balctl[INFO] an hour ago",
            "Traceback (old)",
            f"{stamp(60)} balctl[ERROR] a minute ago",
            "Traceback (recent)",
        ],
    )
    outcome = _run(agent_root, since_minutes=10)
    assert outcome.result is not None
    assert outcome.result["text"].splitlines()[1:] == ["Traceback (recent)"]
    assert "a minute ago" in outcome.result["text"]


def test_local_time_stamps_of_the_stderr_format_are_understood() -> None:
    local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1_900_000_000)) + ",123"
    assert agent_logs._stamp(f"{local} balctl[INFO] x") == 1_900_000_000
    utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_900_000_000))
    assert agent_logs._stamp(f"{utc} balctl[INFO] x") == calendar.timegm(time.gmtime(1_900_000_000))


def test_since_minutes_without_stamps_keeps_everything_and_says_so(agent_root: HostPaths) -> None:
    _write(agent_root.log_file, ["no stamp here"])
    outcome = _run(agent_root, since_minutes=5)
    assert outcome.result is not None
    assert outcome.result["text"] == "no stamp here\n"
    assert "since_minutes was not applied" in outcome.result["note"]


# -- redaction ------------------------------------------------------------------------------------


def test_no_secret_leaves_the_host(agent_root: HostPaths) -> None:
    _write(
        agent_root.log_file,
        [
            f"balctl[DEBUG] sending with key {KEY}",
            "balctl[DEBUG] Authorization: Bearer sct_abcdefghijklmnopqrstuvwxyz0123456789ABCD",
            "balctl[DEBUG] curl -H 'authorization: Bearer abc.def-ghi'",
            'balctl[DEBUG] {"api_token": "cf-test-token-5b7d1e", "zone": "example.com"}',
            'balctl[DEBUG] password=hunter22 secret: s3cr3t-value BALCTL_KEY="k1"',
            "balctl[DEBUG] fetching https://user:pa55word@store.example/x?X-Amz-Signature=abcd",
            f"balctl[DEBUG] another member's secret {ENROLMENT_SECRET}",
            "balctl[INFO] heartbeat accepted; sha256 " + "ab" * 32,
        ],
    )
    outcome = _run(agent_root)
    assert outcome.result is not None
    text = outcome.result["text"]
    for secret in (
        KEY,
        "sct_abcdefghij",
        "abc.def-ghi",
        "cf-test-token-5b7d1e",
        "hunter22",
        "s3cr3t-value",
        "k1",
        "pa55word",
        "abcd",
        ENROLMENT_SECRET,
    ):
        assert secret not in text, secret
    assert outcome.output == text
    assert '"zone": "example.com"' in text and '"api_token": "[REDACTED]"' in text
    assert "ab" * 32 in text  # a digest is not a secret
    assert outcome.result["redactions"] >= 9


def test_redact_leaves_ordinary_text_alone() -> None:
    text = "job 42 (haproxy.reload) completed: reloaded; token:ci queued job; key 'be_app'"
    assert redact(text) == (text, 0)
    assert redact("-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----") == (
        "-----BEGIN PRIVATE KEY-----[REDACTED]-----END PRIVATE KEY-----",
        1,
    )


# -- the log file `balctl run` keeps (BALCTL_LOG_FILE) --------------------------------------------


def test_the_log_file_is_written_in_utc_and_private(tmp_path: Path) -> None:
    logger = logging.getLogger("balctl-test-logfile")
    path = tmp_path / "var/log/agent.log"
    handler = logfile.attach(logger, str(path))
    assert handler is not None
    try:
        logger.warning("heartbeat refused")
        assert logfile.attach(logger, str(path)) is handler  # attached once
    finally:
        logger.removeHandler(handler)
        handler.close()
    line = path.read_text()
    assert line.endswith("balctl[WARNING] heartbeat refused\n")
    assert agent_logs._stamp(line) is not None and line[19] == "Z"
    assert stat.S_IMODE(path.stat().st_mode) == logfile.FILE_MODE


def test_the_log_file_rotates_and_stays_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logfile, "LOG_FILE_MAX_BYTES", 2000)
    logger = logging.getLogger("balctl-test-rotation")
    logger.setLevel(logging.INFO)
    path = tmp_path / "agent.log"
    handler = logfile.attach(logger, str(path))
    assert handler is not None
    try:
        for n in range(200):
            logger.info("line %03d %s", n, "y" * 40)
    finally:
        logger.removeHandler(handler)
        handler.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["agent.log", "agent.log.1", "agent.log.2"]
    assert all((tmp_path / name).stat().st_size <= 2000 for name in files)
    assert path.read_text().splitlines()[-1].endswith(f"line 199 {'y' * 40}")


def test_an_unwritable_log_file_is_a_warning_not_a_stop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    logger = logging.getLogger("balctl-test-unwritable")
    with caplog.at_level(logging.WARNING, logger="balctl-test-unwritable"):
        assert logfile.attach(logger, str(blocker / "agent.log")) is None
    assert "logging to stderr only" in caplog.text


def test_log_file_setting_is_read_from_agent_env(agent_root: HostPaths) -> None:
    env = {"BALCTL_SERVER": "http://127.0.0.1:9", "BALCTL_KEY": KEY, "BALCTL_HOSTNAME": "edge-1"}
    cfg = load_config(agent_root, {**env, "BALCTL_LOG_FILE": "/var/log/balctl/own.log"})
    assert cfg.log_file == "/var/log/balctl/own.log"
    assert cfg.to_env()["BALCTL_LOG_FILE"] == "/var/log/balctl/own.log"
    with pytest.raises(ConfigError, match="must be an absolute path"):
        load_config(agent_root, {**env, "BALCTL_LOG_FILE": "agent.log"})
