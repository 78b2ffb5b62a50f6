#!/usr/bin/env bash
# The Debian packages the test suite runs for real: haproxy (real processes and admin
# sockets), Chromium for the browser tests (Playwright drives /usr/bin/chromium, never a
# downloaded browser), curl for install.sh, iproute2 for network namespaces, and a real
# PowerDNS Authoritative server with its SQLite backend for the DNS provider tests
# (pdns_server with its HTTP API and RFC 2136 updates; dnsutils gives dig for poking at it),
# and Pebble, Let's Encrypt's test ACME server, for the ACME/DNS-01 tests (tests/support/pebble.py
# runs it with its DNS-01 lookups sent to that PowerDNS, so every challenge is checked for real),
# and PostgreSQL, whose server binaries tests/support/postgres.py runs on a cluster of its own
# (the migrations and a real `serverctl serve` on PostgreSQL).
set -euo pipefail
"$(dirname "$0")/apt-install.sh" haproxy chromium curl ca-certificates iproute2 procps \
  pdns-server pdns-backend-sqlite3 dnsutils pebble postgresql
