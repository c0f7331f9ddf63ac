# ptviz: the two commands the README promises, and their parts.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-postgres setup build lint bench bench-engine bench-cli bench-explore bench-callgrind bench-web bench-bundle bench-load bench-moments clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Install the project (compiles the Cython core) with its test tools.
setup: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/python -m bench.build

# Rebuild the Cython core in place after editing engine/*.pyx.
build: setup
	$(BIN)/python setup.py -q build_ext --inplace
	$(BIN)/python -m bench.build

# The web debugger on its embedded default: daphne, SQLite (./db.sqlite3), the in-process
# channel layer and PTVIZ_WORKERS engine worker processes; Ctrl-C stops them all.
run: setup
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py serve --host $(HOST) --port $(PORT)

test: setup
	$(BIN)/ruff check engine ptviz bench tests
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory test-postgres

# The distributed deployment's tests again on PostgreSQL (127.0.0.1:5432, user postgres,
# trust auth: pytest-django creates and drops the database test_ptviz_rel_ci). Skipped
# with a note when no PostgreSQL answers there, except in CI (CI=true), where it must.
PG_URL ?= postgres://postgres@127.0.0.1:5432/ptviz_rel_ci
test-postgres: setup
	@if $(BIN)/python -c "import socket; socket.create_connection(('127.0.0.1', 5432), 1)" 2>/dev/null || [ -n "$$CI" ]; then \
	  DATABASE_URL=$(PG_URL) $(BIN)/python -m pytest -q -p no:cacheprovider \
	    tests/web/test_failover.py tests/web/test_faults.py tests/web/test_hostile_imports.py \
	    "tests/web/test_live.py::test_step_produces_a_delta_with_the_engines_events[redis]" \
	    "tests/web/test_live.py::test_run_and_pause_while_running[redis]"; \
	else echo "(no PostgreSQL on 127.0.0.1:5432: the PostgreSQL run is skipped)"; fi

# Benchmarks (bench/, never part of `make test`): the engine's, then the web debugger's.
bench: bench-engine bench-cli bench-explore bench-web

# 200 viewers of one session, 50 sessions running at once (bench/load.py).
bench-load: setup
	$(BIN)/python -m bench.load

bench-engine: setup
	$(BIN)/python -m bench.engine

# `python -m engine run`/`explore` on 1M-leaf bulk scenarios, whole processes, next to the C loop.
bench-cli: setup
	$(BIN)/python -m bench.cli

# The explorer's states per CPU-second and bytes per state (--large: up to 14.9M states),
# and explore --jobs 2 against the serial explorer (identical results, wall and CPU path).
bench-explore: setup
	$(BIN)/python -m bench.explore

# Instructions per micro-step of the core and of the C loop, counted by callgrind.
bench-callgrind: setup
	$(BIN)/python -m bench.callgrind

# Starts its own deployments (temporary SQLite files, free ports; the Redis one only when
# Redis answers on 127.0.0.1:6379) and drives /usr/bin/chromium headless.
bench-web: setup
	$(BIN)/python -m bench.web

# One viewer's seek in a 1M-step session, presence and follow mode (bench/moments.py).
bench-moments: setup
	$(BIN)/python -m bench.moments

# Bundle sizes and import times next to the recording export of the same sessions.
bench-bundle: setup
	$(BIN)/python -m bench.bundle_bench

lint: setup
	$(BIN)/ruff check engine ptviz bench tests
	$(BIN)/ruff format --check engine ptviz bench tests

clean:
	rm -rf build *.egg-info engine/_core.c engine/_core*.so engine/_states*.so engine/_states.c bench/_baseline*.so engine/_bits.h
