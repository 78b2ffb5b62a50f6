#!/usr/bin/env bash
# The Debian packages the benchmarks need beyond the test suite's: wrk drives the heartbeat
# load, keepalived is the peer bench/failover.py measures ServerCTL against.
set -euo pipefail
"$(dirname "$0")/install-test-packages.sh"
"$(dirname "$0")/apt-install.sh" wrk keepalived
