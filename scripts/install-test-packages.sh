#!/usr/bin/env bash
# The Debian packages the test suite runs for real: haproxy (real processes and admin
# sockets), Chromium for the browser tests (Playwright drives /usr/bin/chromium, never a
# downloaded browser), curl for install.sh, iproute2 for network namespaces.
set -euo pipefail
"$(dirname "$0")/apt-install.sh" haproxy chromium curl ca-certificates iproute2 procps
