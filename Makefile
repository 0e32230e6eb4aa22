# The two commands the README opens with: `make run` and `make test`.
# Each creates .venv when missing and installs the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck layers unit bench bench-coturn soak clean install

# `make install PREFIX=/opt/trelay`: a venv at PREFIX with trelay installed from a wheel
# built from this checkout (trelay is not on PyPI yet), for deploy/systemd/trelay.service,
# which runs $(PREFIX)/bin/trelay. A venv because Debian 12 refuses system-wide pip
# installs. Running it again replaces trelay with the checkout's current build (the
# version number may not have changed, so it is uninstalled first) and keeps the rest.
# The tests run it offline: WHEEL_PYTHON (a Python with hatchling), WHEEL_FLAGS and
# INSTALL_FLAGS let them pass --no-build-isolation, --no-index and --no-deps.
PREFIX ?= /opt/trelay
DIST ?= dist
WHEEL_PYTHON ?= $(PREFIX)/bin/python
WHEEL_FLAGS ?=
INSTALL_FLAGS ?=

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/trelay serve --allow-loopback-peers --selftest

test: lint typecheck layers unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

layers: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks.codec_bench

# trelay beside coturn (issue 13): a C load generator (benchmarks/loadgen.c, built with the
# machine's gcc) relays both ways through each; ~6 minutes, rewrites its section of
# benchmarks/README.md. BENCH_FLAGS='--quick --no-write' is a 2-minute look;
# BENCH_FLAGS='--baseline REV' measures another commit in the same rounds (before/after).
BENCH_FLAGS ?=
bench-coturn: $(STAMP)
	$(BIN)/python -m benchmarks.relay_vs_coturn $(BENCH_FLAGS)

# The reliability soak (issue 15): 100 UDP clients at 50 ChannelData/s each through a real
# `trelay serve` for 10 minutes, the server's RSS sampled; SOAK_FLAGS='--minutes 1' is
# shorter, SOAK_FLAGS=--write puts the figures into benchmarks/README.md.
SOAK_FLAGS ?=
soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak $(SOAK_FLAGS)

install:
	test -x $(PREFIX)/bin/python || $(PYTHON) -m venv $(PREFIX)
	rm -f $(DIST)/trelay-*.whl
	$(WHEEL_PYTHON) -m pip wheel --quiet --no-deps $(WHEEL_FLAGS) --wheel-dir $(DIST) .
	$(PREFIX)/bin/python -m pip uninstall --quiet --quiet --yes trelay
	$(PREFIX)/bin/python -m pip install --quiet $(INSTALL_FLAGS) $(DIST)/trelay-*.whl

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
