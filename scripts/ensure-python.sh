#!/usr/bin/env bash
# Make sure python3 (3.11 or newer) with venv and pip is there; install Debian's if not.
set -euo pipefail
here=$(dirname "$0")
if command -v python3 >/dev/null && python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  exit 0
fi
"$here/apt-install.sh" python3 python3-venv python3-pip
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "ServerCTL needs Python 3.11 or newer; this machine has $(python3 --version)" >&2
  exit 1
}
