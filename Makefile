# Two commands on a fresh machine with Python 3.11+ and make:
#   make run    install into .venv and start Gatehouse on http://127.0.0.1:8000
#   make test   install with the test extras, run ruff and mypy --strict, then the whole suite
#   make load   N simulated tutorial users for 60 s on a server of its own (LOAD_ARGS="--users 20 --seconds 60")
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/gatehouse serve

# make check: the linters alone (ruff on everything, mypy --strict on the package); make test runs them first.
.PHONY: check
check: $(VENV)/.installed-test
	$(BIN)/ruff check gatehouse tests bench
	$(BIN)/mypy

# Two workers, a test file at a time each (--dist loadfile: a module's servers stay in one worker).
# Most tests wait on servers, browsers and databases, so two workers take about half the time.
PYTEST_WORKERS ?= -n 2 --dist loadfile
test: check
	$(BIN)/python -m pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info

# A benchmark, not a test: starts its own server (rate limits off, temporary data folder); see bench/load.py.
# httpx (the load generator's client) comes with the test extras.
.PHONY: load
load: $(VENV)/.installed-test
	$(BIN)/python -m bench.load $(LOAD_ARGS)

# make bench: the tutorial workload against Gatehouse, PocketBase, a Python ceiling and a driver floor
# (bench/tutorial.py, ~25 minutes; then the realtime fan-out, bench/realtime.py, REALTIME_ARGS; BENCH_ARGS=--quick: a 3-minute smoke run; BENCH_ARGS="--baseline REV": also
# Gatehouse at git revision REV, and current / baseline per step). Results in bench/results/tutorial.*
.PHONY: bench
$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@ $(VENV)/.installed

bench: $(VENV)/.installed-bench
	command -v wrk >/dev/null 2>&1 || apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }
	$(BIN)/python -m bench.tutorial $(BENCH_ARGS)
	$(BIN)/python -m bench.realtime $(REALTIME_ARGS)

# make bench-realtime: the realtime step alone (bench/realtime.py): N subscribers on one table through Gatehouse's
# postgres_changes and PocketBase's SSE subscriptions, one change per 10 ms; REALTIME_ARGS="--subscribers 20 --runs 3".
# Results in bench/results/realtime.*
.PHONY: bench-realtime
bench-realtime: $(VENV)/.installed-bench
	$(BIN)/python -m bench.realtime $(REALTIME_ARGS)

# make bench-cluster: the production recipe (Debian PostgreSQL 15, SeaweedFS, 3 Gatehouse processes behind HAProxy)
# under load with faults (kill -9 of a process, SeaweedFS stopped 10 s; exits 1 if an acknowledged write is lost),
# then the same load with 1, 2 and 3 processes (bench/cluster.py). Results in bench/results/cluster-*.{json,md}
.PHONY: bench-cluster
bench-cluster: $(VENV)/.installed-test
	$(BIN)/python -m bench.cluster $(CLUSTER_ARGS)
	$(BIN)/python -m bench.cluster --scale 1,2,3 $(CLUSTER_SCALE_ARGS)
