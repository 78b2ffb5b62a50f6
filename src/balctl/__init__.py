"""balctl: the ServerCTL host agent (standard library only, Python 3.9+).

It enrols the host with the control plane, then sends a heartbeat about once a second. See
docs/agent.md for the operator's view.

The agent does not use dataclasses: importing the module costs about 1 MB of the agent's memory
(it pulls in inspect, ast, dis and tokenize; bench/agent_footprint.py measures it). Immutable
records are typing.NamedTuple classes, mutable ones plain classes with __slots__;
tests/unit/agent/test_agent_no_dataclasses.py keeps it so.
"""

from __future__ import annotations

__version__ = "0.1.0"
