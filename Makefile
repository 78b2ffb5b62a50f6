# ServerCTL: `make run` starts the control plane, `make test` installs what the tests need and
# runs them all. `make install` is the set-up step both share.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint typecheck unit bench soak demo

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	scripts/ensure-python.sh
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: install
	$(BIN)/serverctl serve

lint: install
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

typecheck: install
	$(BIN)/mypy
	# The agent runs on hosts with Python 3.9: checked statically, as 3.9 is not installable here.
	$(BIN)/mypy --strict --python-version 3.9 src/balctl
	$(BIN)/vermin --quiet --no-tips --violations --target=3.9- --eval-annotations src/balctl

test: install
	scripts/install-test-packages.sh
	$(MAKE) --no-print-directory lint typecheck
	$(BIN)/pytest
	# The integration tests whose control plane takes its database from the `database_url`
	# fixture, again on a real PostgreSQL server (tests/conftest.py picks them).
	SERVERCTL_TEST_DATABASE=postgresql $(BIN)/pytest tests/integration -p no:cacheprovider

unit: install
	$(BIN)/pytest tests/unit

# Benchmarks print their figures last, one per line, name=value; never part of `make test`.
# `make bench QUICK=1` passes --quick to each (a minute or two apiece).
bench: install
	scripts/install-bench-packages.sh
	$(BIN)/python bench/heartbeat_ingest.py $(if $(QUICK),--quick)
	$(BIN)/python bench/failover.py $(if $(QUICK),--quick)
	$(BIN)/python bench/agent_footprint.py $(if $(QUICK),--quick)
	$(BIN)/python bench/job_dispatch.py $(if $(QUICK),--quick)

# The reliability soak at full length (5 minutes, 1,000 simulated members); `make test` runs 60 s.
soak: install
	scripts/install-test-packages.sh
	SERVERCTL_SOAK_S=300 $(BIN)/pytest tests/reliability -m soak -p no:cacheprovider

# One machine, a whole pool: control plane, PowerDNS, three agents with real haproxy. Ctrl-C ends it.
demo: install
	scripts/install-test-packages.sh
	$(BIN)/python scripts/demo.py
