"""The reliability suite's figures: what a test measured, shown at the end of the run.

A test asks for `figures` and fills it (name -> value). The values appear in pytest's terminal
summary as `name=value` lines under the test's name, and in `<basetemp>/reliability-figures.json`,
so docs/reliability.md can quote a run's numbers and anyone can script them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

MEASURED = pytest.StashKey[dict[str, dict[str, object]]]()


@pytest.fixture
def figures(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, object]]:
    measured: dict[str, object] = {}
    yield measured
    every = request.config.stash.setdefault(MEASURED, {})
    every[request.node.nodeid] = measured
    path = tmp_path_factory.getbasetemp() / "reliability-figures.json"
    path.write_text(json.dumps(every, indent=2, default=str) + "\n")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    every = terminalreporter.config.stash.get(MEASURED, {})
    if not every:
        return
    terminalreporter.section("reliability figures")
    for nodeid, measured in every.items():
        terminalreporter.write_line(nodeid)
        for name, value in measured.items():
            terminalreporter.write_line(f"  {name}={value}")
