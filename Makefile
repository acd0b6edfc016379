# Mercator Jupiter: build, run and test everything from a fresh machine.
#
#   make run    build, then serve the gateway locally (sink, provider stand-in, Envoy)
#   make test   build, then run every test: Rust units, clippy, Rego tests, and the
#               integration tests against a real Envoy; the unit and integration tests
#               run beside a throwaway PostgreSQL server (scripts/test-postgres.sh, which
#               installs the Debian postgresql package when it is missing)
#
# Everything installed lands in the project: the wasm target through rustup, Envoy and
# the Python test clients in .venv, development keys and certificates in .dev.

SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
WASM_TARGET := wasm32-wasip1
WASM := target/$(WASM_TARGET)/release/mercator_filter.wasm
BIN := target/release
DEV := .dev

.PHONY: all build filter binaries wasm-target venv dev run test unit lint policy-test \
	integration test-postgres fuzz fmt clean

all: build

build: filter binaries

wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

filter: wasm-target
	$(CARGO) build --release --locked --target $(WASM_TARGET) -p mercator-filter

binaries:
	$(CARGO) build --release --locked -p mercator-evidence-sink -p mercator-provider-standin

$(VENV)/.installed: tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

venv: $(VENV)/.installed

# Development material, made once and kept: CA and server certificate, signing key, the
# sink's key file, two demo users' API keys, the stand-in's provider keys.
dev: binaries
	$(BIN)/mercator dev-init --dir $(DEV)

run: build venv dev
	scripts/run-local.sh

test: build venv unit lint policy-test integration

# The evidence sink's store tests run on SQLite and on PostgreSQL: scripts/test-postgres.sh
# starts a throwaway server, sets MERCATOR_TEST_POSTGRES_URL, runs the command, stops it.
unit:
	scripts/test-postgres.sh $(CARGO) test --workspace --locked

# Only the PostgreSQL-backed sink tests, Rust and integration.
test-postgres: build venv
	scripts/test-postgres.sh $(CARGO) test --locked -p mercator-evidence-sink
	MERCATOR_WASM=$(WASM) MERCATOR_BIN=$(BIN) scripts/test-postgres.sh \
		$(VENV)/bin/python -m pytest tests/test_evidence_postgres.py -q

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) clippy --locked --target $(WASM_TARGET) -p mercator-filter -- -D warnings

policy-test: binaries
	$(BIN)/mercator policy test policies

# The property tests of everything the filter parses (requests, answers, event streams),
# with many more cases than `make unit` runs; FUZZ_CASES sets how many.
FUZZ_CASES ?= 100000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release --locked -p mercator-filter --test properties

integration: build venv
	MERCATOR_WASM=$(WASM) MERCATOR_BIN=$(BIN) scripts/test-postgres.sh \
		$(VENV)/bin/python -m pytest tests -q

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf $(VENV)
