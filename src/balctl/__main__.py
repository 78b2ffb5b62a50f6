"""`python -m balctl`: the same entry point as the zipapp's top-level __main__.py."""

from __future__ import annotations

from balctl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
