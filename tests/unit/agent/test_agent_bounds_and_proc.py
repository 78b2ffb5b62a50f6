"""Output bounding (keep the tail, say how much was cut) and running commands."""

from __future__ import annotations

import sys
import time

import pytest

from balctl import proc
from balctl.bounds import bound_bytes, bound_output, one_line


def test_short_output_is_kept_as_is() -> None:
    assert bound_output("hello\n") == "hello\n"
    assert bound_output("x" * 64 * 1024) == "x" * 64 * 1024


def test_long_output_keeps_the_tail_with_a_marker() -> None:
    text = "".join(f"line {n}\n" for n in range(20_000))
    bounded = bound_output(text)
    assert len(bounded.encode()) == 64 * 1024
    marker, _, rest = bounded.partition("\n")
    cut = int(marker.split()[1])
    assert marker == f"[... {cut} bytes cut]"
    assert cut + len(rest.encode()) == len(text.encode())
    assert text.endswith(rest)


def test_bounding_never_splits_a_character() -> None:
    text = "é" * 40_000  # two bytes each
    bounded = bound_output(text, limit=1001)
    assert len(bounded.encode()) <= 1001
    marker, _, rest = bounded.partition("\n")
    assert set(rest) == {"é"}
    assert int(marker.split()[1]) + len(rest.encode()) == 80_000


def test_invalid_utf8_and_bytes_skipped_earlier() -> None:
    assert bound_bytes(b"ok \xff") == "ok \ufffd"
    assert bound_bytes(b"tail", skipped=10) == "[... 10 bytes cut]\ntail"


def test_a_nul_becomes_the_replacement_character() -> None:
    """The control plane refuses a NUL in a job's report; the agent never sends one."""
    assert bound_bytes(b"journal\x00line\n") == "journal\ufffdline\n"
    assert bound_output("a\x00b") == "a\ufffdb"
    assert one_line("failed:\x00 why") == "failed:\ufffd why"


def test_one_line() -> None:
    assert one_line("  a\n\tb  c ") == "a b c"
    assert one_line("x" * 600) == "x" * 497 + "..."


def test_run_captures_stdout_and_stderr() -> None:
    result = proc.run(
        [
            sys.executable,
            "-c",
            "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)",
        ],
        10,
    )
    assert result.returncode == 3 and not result.ok
    assert sorted(result.output.split()) == ["err", "out"]
    assert result.describe().endswith("exited with 3")


def test_run_kills_at_the_timeout() -> None:
    started = time.monotonic()
    result = proc.run(
        [sys.executable, "-c", "import time; print('x', flush=True); time.sleep(30)"], 0.5
    )
    assert time.monotonic() - started < 5
    assert result.returncode is None
    assert result.error is not None and "did not finish within 0.5 s" in result.error
    assert result.output == "x\n"


def test_run_reports_a_missing_program() -> None:
    result = proc.run(["/nonexistent/program"], 5)
    assert result.returncode is None
    assert result.describe() == "cannot run /nonexistent/program: No such file or directory"


def test_run_refuses_when_the_budget_is_spent() -> None:
    result = proc.run(["true"], proc.Deadline(0).cap(10))
    assert result.returncode is None and "time limit" in result.describe()


def test_children_never_see_the_agents_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BALCTL_KEY", "secret-value-123")
    monkeypatch.setenv("FE_ADDR", "127.0.0.1:8080")
    result = proc.run([sys.executable, "-c", "import os; print(sorted(os.environ))"], 10)
    assert "BALCTL_KEY" not in result.output
    assert "FE_ADDR" in result.output  # the rest of the environment is passed through
    assert proc.child_env({"X": "1"})["X"] == "1"


def test_output_is_bounded_to_its_tail() -> None:
    result = proc.run([sys.executable, "-c", "print('a' * 100000 + 'END')"], 10, limit=1000)
    assert len(result.output.encode()) <= 1000
    assert result.output.startswith("[... ") and result.output.endswith("END\n")
