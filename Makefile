# One entry point for everything a developer or CI does.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: run test lint bench browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP)

run: $(STAMP)
	$(BIN)/omni serve

# The suite includes the console's test in a real browser: `browser` first.
test: $(TEST_STAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

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

# Needs wrk (Debian/Ubuntu: sudo apt-get install -y wrk); it says so when missing.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

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
