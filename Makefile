# Mercator Jupiter: build, run and test everything from a fresh machine.
#
#   make run    build, then serve the gateway locally (sink, provider stand-in, Envoy)
#   make test   build, then run every test: Rust units, clippy, Rego tests, and the
#               integration tests against a real Envoy (the unit and integration tests
#               run beside a throwaway PostgreSQL server: scripts/test-postgres.sh, which
#               installs the Debian postgresql package when it is missing), and a few
#               seconds of `make bench`
#   make bench  the cost of governance: the same load through the provider stand-in, Envoy,
#               Envoy with the filter loaded but idle, and the full filter, plus criterion
#               micro-benchmarks; `make bench PEERS=1` adds the LiteLLM proxy
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
# Benchmark tools, pinned and installed into the project.
TOOLS := .tools
OHA_VERSION := 1.16.0
OHA := $(TOOLS)/bin/oha
BENCH_VENV := .venv-bench
LITELLM_VERSION := 1.106.12
# Criterion's time per micro-benchmark in `make bench`, seconds.
BENCH_MEASURE_SECONDS ?= 3

.PHONY: all build filter binaries wasm-target venv dev run test unit lint policy-test \
	integration test-postgres fuzz fmt clean bench bench-smoke bench-micro bench-wasm

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

test: build venv unit lint policy-test integration bench-smoke

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

# oha: an open-loop, fixed-rate HTTP load generator that corrects for coordinated omission.
$(OHA):
	$(CARGO) install --locked --quiet --root $(TOOLS) oha --version $(OHA_VERSION)

# The LiteLLM proxy, pinned, in its own virtual environment (only for PEERS=1).
$(BENCH_VENV)/.installed:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check \
		"litellm[proxy]==$(LITELLM_VERSION)"
	touch $@

bench-micro:
	$(CARGO) bench --locked -p mercator-evidence --bench signing -- \
		--warm-up-time 1 --measurement-time $(BENCH_MEASURE_SECONDS)
	$(CARGO) bench --locked -p mercator-filter --bench request_path -- \
		--warm-up-time 1 --measurement-time $(BENCH_MEASURE_SECONDS)

# The same steps in a WebAssembly VM (Node's V8), when Node is installed.
bench-wasm: wasm-target
	$(CARGO) build --release --locked --target $(WASM_TARGET) -p mercator-filter --example wasm_steps
	@mkdir -p bench/results
	@if command -v node >/dev/null; then \
		node --no-warnings bench/wasm_steps.mjs \
			target/$(WASM_TARGET)/release/examples/wasm_steps.wasm > bench/results/wasm-steps.jsonl \
			&& cat bench/results/wasm-steps.jsonl; \
	else \
		rm -f bench/results/wasm-steps.jsonl; echo "node not found: wasm step timings skipped"; \
	fi

bench: build venv $(OHA) $(if $(PEERS),$(BENCH_VENV)/.installed) bench-micro bench-wasm
	MERCATOR_WASM=$(WASM) MERCATOR_BIN=$(BIN) MERCATOR_OHA=$(OHA) \
		$(VENV)/bin/python bench/loadtest.py $(if $(PEERS),--peers)

# What `make test` runs: every micro-benchmark once (criterion's test mode) and about a
# second of load per configuration, to show that `make bench` still works.
bench-smoke: build venv $(OHA)
	$(CARGO) test --locked -p mercator-evidence --bench signing
	$(CARGO) test --locked -p mercator-filter --bench request_path
	MERCATOR_WASM=$(WASM) MERCATOR_BIN=$(BIN) MERCATOR_OHA=$(OHA) \
		$(VENV)/bin/python bench/loadtest.py --smoke

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf $(VENV) $(BENCH_VENV) $(TOOLS)
