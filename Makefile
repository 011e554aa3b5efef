# One entry point for everything a developer or CI does.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: run demo test test-cluster cluster lint bench browser wrk clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP)

# `make run PORT=9000` serves on another port (public_url follows it); ARGS go to
# `omni serve` as they are: `make run ARGS="--processes 2"`.
run: $(STAMP)
	$(BIN)/omni serve $(if $(PORT),--port $(PORT)) $(ARGS)

# `omni demo` against `make run` (the same PORT, if you gave one).
demo: $(STAMP)
	$(BIN)/omni demo $(if $(PORT),--port $(PORT)) $(ARGS)

# The suite includes the console's test in a real browser: `browser` first.
test: $(TEST_STAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# A local Redis Cluster (3 primaries, 1 replica each) under ./var/cluster, and omni
# serving on it in cluster mode; Ctrl-C stops both. `make cluster PORT=9000` serves on
# another port, as `make run` does; ARGS go to `omni serve`.
cluster: $(STAMP)
	$(BIN)/python -m omni.redis_cluster --dir var/cluster $(if $(PORT),--port $(PORT)) $(ARGS)

# The whole suite again on a real Redis Cluster (3 primaries, 1 replica each) that the
# session starts from the embedded binary, with omni in cluster mode.
test-cluster: $(TEST_STAMP) browser
	OMNI_TEST_CLUSTER=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# The layering and import cycles too: import-linter's contracts (pyproject.toml) and
# tools/check_imports.py, before mypy, whose errors on a circle name only its symptom.
lint: $(TEST_STAMP)
	$(BIN)/ruff check omni adapters tests bench tools
	$(BIN)/ruff format --check omni adapters tests bench tools
	$(BIN)/lint-imports
	$(BIN)/python tools/check_imports.py
	$(BIN)/mypy

$(BENCH_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@ $(STAMP)

# Needs wrk: as root (CI) it is installed when missing, as `browser` installs chromium;
# otherwise this says the one command, and the bench stops saying so too.
# BENCH_ARGS=--quick: every section, shorter, in about five minutes; BENCH_ARGS="--only
# cluster": the cluster section alone (its entries replace theirs in latest.json).
bench: $(BENCH_STAMP) wrk
	$(BIN)/python -m bench $(BENCH_ARGS)

wrk:
	@if command -v wrk >/dev/null 2>&1; then \
		echo "wrk: $$(command -v wrk)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; \
	else \
		echo "wrk is not installed: sudo apt-get install -y wrk (make bench needs it)"; \
	fi

# The console's browser test drives Debian's chromium headless. As root (CI) it is
# installed when missing; otherwise this says how, and that test fails saying so.
browser:
	@if command -v chromium >/dev/null 2>&1; then \
		echo "chromium: $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "chromium is not installed: sudo apt-get install -y chromium (the console's browser test needs it)"; \
	fi

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
