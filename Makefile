# ptviz: the two commands the README promises, and their parts.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test setup build lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Install the project (compiles the Cython core) with its test tools.
setup: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'

# Rebuild the Cython core in place after editing engine/*.pyx.
build: setup
	$(BIN)/python setup.py -q build_ext --inplace

run: setup
	$(BIN)/python -m engine explore scenarios/seed_race_v4.6.toml || true
	$(BIN)/python -m engine explore scenarios/seed_race_seed.toml

test: setup
	$(BIN)/ruff check engine tests
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m engine.bench

lint: setup
	$(BIN)/ruff check engine tests
	$(BIN)/ruff format --check engine tests

clean:
	rm -rf build *.egg-info engine/_core.c engine/_core*.so engine/_bits.h
