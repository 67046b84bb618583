# Everyday commands. `make run` and `make test` are the README's two commands.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run ui test test-fast lint fmt proto lock loadtest bench clean

setup: $(STAMP) .tools/bin/.ok

# The package installs as `movieservice` (internal/ and proto/ mapped onto it).
# A strict editable install links every file into build/__editable__.*, so
# edits show at once but a file added or removed needs a reinstall: the
# directories (whose times change when that happens) are prerequisites, named
# with a trailing slash so `proto/` is the directory, not the phony target.
PACKAGE_DIRS := $(patsubst %,%/,$(shell find internal proto -type d -not -name __pycache__))

# Dependencies come from the dev lock (the runtime lock plus the dev extra), every
# file checked against its hash; the project itself is built with the locked
# setuptools (no build isolation, so nothing unhashed is fetched) and no deps.
$(STAMP): pyproject.toml requirements.lock requirements-dev.lock $(PACKAGE_DIRS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=strict
	touch $@

.tools/bin/.ok: scripts/install-tools.sh
	scripts/install-tools.sh
	touch $@

# Redis and FerretDB start locally unless REDIS_URL / MONGO_URL are set.
run: setup
	$(BIN)/movieservice dev

# The web UI (Streamlit) on http://127.0.0.1:8501 (or UI_PORT), a client of the service
# `make run` serves (UI_TARGET=host:port and UI_METRICS_URL=... point it elsewhere).
ui: setup
	$(BIN)/movieservice ui

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

# Re-lock after changing dependencies in pyproject.toml: requirements.lock (what the
# package needs at run time) and requirements-dev.lock (that plus the dev extra, the
# runtime lock as a constraint so shared packages get the same versions), both with
# hashes, for CPython 3.11 on Linux x86_64 (CI's machine) wherever it runs. Versions
# already locked are kept; UPGRADE="pkg ..." moves those packages to their newest.
# tests/test_locks.py fails when the locks no longer match pyproject.toml or .venv.
# uv comes from the dev lock; .venv is set up only when it has no uv, so that a
# lock that no longer installs (hand-edited, conflicted) does not stop its repair.
LOCK := $(BIN)/uv pip compile --quiet --no-config pyproject.toml
LOCK_FLAGS := --generate-hashes --python-version 3.11 --python-platform x86_64-unknown-linux-gnu
lock:
	test -x $(BIN)/uv || $(MAKE) --no-print-directory $(STAMP)
	$(LOCK) $(LOCK_FLAGS) -o requirements.lock $(foreach p,$(UPGRADE),--upgrade-package $(p))
	$(LOCK) --extra dev -c requirements.lock $(LOCK_FLAGS) -o requirements-dev.lock $(foreach p,$(UPGRADE),--upgrade-package $(p))

# ghz load tests of every RPC against the local stack (or TARGET=host:port TOKEN=...),
# failing when a scenario breaks its error or p99 limit. Reports in reports/loadtest/.
loadtest: setup
	$(BIN)/python scripts/loadtest.py $(if $(TARGET),--target $(TARGET) --token "$(TOKEN)")

# The benchmark (ratios measured within one run); writes BENCHMARKS.md.
bench: setup
	$(BIN)/python -m movieservice.bench

clean:
	rm -rf $(VENV) .tools .data .pytest_cache .mypy_cache .ruff_cache
