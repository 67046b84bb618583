# Everyday commands. `make run` and `make test` are the README's two commands.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast lint fmt proto loadtest bench clean

setup: $(STAMP) .tools/bin/.ok

# The package installs as `movieservice` (internal/ and proto/ mapped onto it).
# A strict editable install links every file into build/__editable__.*, so
# edits show at once but a file added or removed needs a reinstall: the
# directories (whose times change when that happens) are prerequisites, named
# with a trailing slash so `proto/` is the directory, not the phony target.
PACKAGE_DIRS := $(patsubst %,%/,$(shell find internal proto -type d -not -name __pycache__))

$(STAMP): pyproject.toml requirements.lock $(PACKAGE_DIRS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e . --config-settings editable_mode=strict
	touch $@

.tools/bin/.ok: scripts/install-tools.sh
	scripts/install-tools.sh
	touch $@

# Redis and FerretDB start locally unless REDIS_URL / MONGO_URL are set.
run: setup
	$(BIN)/movieservice dev

test: setup
	$(BIN)/pytest
	$(MAKE) --no-print-directory lint

# The tests without the slow ones (fault and load tests).
test-fast: setup
	$(BIN)/pytest -m "not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy cmd/server/main.py

fmt: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Regenerate the Python (proto/movies/v1/) and Go (gen/go/) code after editing the .proto.
proto: setup
	$(BIN)/python scripts/gen_proto.py
	scripts/gen_go.sh

# ghz load tests of every RPC against the local stack (or TARGET=host:port TOKEN=...),
# failing when a scenario breaks its error or p99 limit. Reports in reports/loadtest/.
loadtest: setup
	$(BIN)/python scripts/loadtest.py $(if $(TARGET),--target $(TARGET) --token "$(TOKEN)")

# The benchmark (ratios measured within one run); writes BENCHMARKS.md.
bench: setup
	$(BIN)/python -m movieservice.bench

clean:
	rm -rf $(VENV) .tools .data .pytest_cache .mypy_cache .ruff_cache
