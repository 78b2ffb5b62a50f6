"""The agent never imports dataclasses (nor inspect, which it drags in with ast, dis and
tokenize): about 1 MB of resident memory the agent's footprint target cannot spare
(bench/agent_footprint.py). A new @dataclass anywhere under src/balctl fails here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src"


def _agent_modules() -> list[str]:
    """Every module of the agent, steady state and jobs alike, named from the source tree (the
    files themselves: pkgutil.walk_packages would import inspect in the child on its own)."""
    names = []
    for path in (SRC / "balctl").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names)


def test_no_agent_module_imports_dataclasses_or_inspect() -> None:
    modules = _agent_modules()
    assert {"balctl.cli", "balctl.heartbeat", "balctl.jobs.catalogue"} <= set(modules)
    # A fresh interpreter: this test process has imported dataclasses (pytest) long ago.
    code = (
        "import importlib, json, sys\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    listed = subprocess.run(
        [sys.executable, "-c", code, *modules],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    loaded = set(json.loads(listed.stdout))
    assert set(modules) <= loaded
    assert "dataclasses" not in loaded, "an agent module imports dataclasses"
    assert "inspect" not in loaded, "an agent module imports inspect"
