"""balctl: the ServerCTL host agent (standard library only, Python 3.9+).

It enrols the host with the control plane, then sends a heartbeat about once a second. See
docs/agent.md for the operator's view.
"""

from __future__ import annotations

__version__ = "0.1.0"
