# The platform's routines. The README's two commands are `make demo` and `make test`;
# .ci/run calls `make test`.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.8

.PHONY: install system-deps compose-check demo test lint format stop clean

# The suite's temporary files, one folder per checkout: pytest's default folder is shared by
# every run on the machine, and each run prunes the older ones, data of a running suite's
# PostgreSQL servers included.
PYTEST_BASETEMP ?= /tmp/c360-pytest-$(shell printf '%s' "$(CURDIR)" | md5sum | cut -c1-8)

# Go, for compose-check: on PATH, or where the official tarball installs it.
GO ?= $(shell command -v go || echo /usr/local/go/bin/go)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The virtual environment with the pinned dependencies of requirements.lock (idempotent).
install: $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .

# What the tests need beyond Python packages: Debian's Chromium (and Java with Maven, which
# fetches the Kafka broker's jars from Maven Central on first use).
system-deps: install
	scripts/install_system_deps.sh

# docker-compose.yml's check where the docker client has no compose plugin: the official
# compose-go loader (scripts/compose-check), built from the Go proxy's modules. Without Go,
# the test that uses it is skipped and says why.
compose-check: $(BIN)/python
	@rm -f "$(BIN)/compose-check"; \
	if [ ! -x "$(GO)" ]; then \
		echo "no Go toolchain: docker-compose.yml is not loaded with compose-go" >&2; \
	elif ! (cd scripts/compose-check && "$(GO)" build -o "$(CURDIR)/$(BIN)/compose-check" .); then \
		echo "compose-check did not build (see above): docker-compose.yml is not loaded with compose-go" >&2; \
	fi

# Main command: set everything up and run the platform (database, load, API, Airflow, stream).
demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/c360 demo

# Test command: the whole suite against real PostgreSQL, Kafka, Airflow and Chromium.
# pytest exits 5 when it collected no tests; that is a failure here, not a pass. The test
# servers' data (a few GB) is kept for a look after a failure, and removed after a pass.
test: install system-deps compose-check
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest --basetemp="$(PYTEST_BASETEMP)" $(PYTEST_ARGS); \
	status=$$?; if [ $$status -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi; \
	if [ $$status -eq 0 ]; then rm -rf "$(PYTEST_BASETEMP)"; fi; \
	exit $$status

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Stop every service the demo started.
stop:
	$(BIN)/c360 stop

clean: stop
	rm -rf .c360 data/generated
