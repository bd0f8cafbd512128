# Switchyard: the two commands are `make run` and `make test`.
#
# Set-up (shared by both) installs everything the project needs inside the
# repository: a Python virtualenv (.venv) with the pinned packages that make
# the models and carry ONNX Runtime, the ONNX Runtime shared library copied to
# .cache/onnxruntime, and the generated model files. Each step is skipped
# when its inputs have not changed.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        := .venv
VENV_PY     := $(VENV)/bin/python
VENV_STAMP  := $(VENV)/.installed
ORT_VERSION := 1.32.0
ORT_LIB     := .cache/onnxruntime/libonnxruntime.so.$(ORT_VERSION)
MODEL_STAMP := models/repository/.generated
BINARY      := target/release/switchyard
CARGO       ?= cargo
# What the benchmarks build: the whole workspace's binaries, as `make test`
# builds them (building single packages unifies features differently and
# rebuilds most dependencies).
BENCH_BUILD := --workspace --bins
# 1 (default): the release gateway is built with profile-guided optimisation.
PGO         ?= 1
LAMBDA_STAMP := $(VENV)/.lambda-installed
LAMBDA_EMULATOR_PORT ?= 9000

.PHONY: help setup build run test test-rust test-models lint fmt bench-local bench-container \
	bench-lambda lambda-emulator lambda-package clean-models clean-docker

help:
	@echo "make run    set up, build and start the gateway on 127.0.0.1:8000"
	@echo "make build  only the set-up and the profile-guided release gateway (PGO=0: without PGO)"
	@echo "make test   set up, then run every test, clippy and the format check"
	@echo "make setup  only the set-up (virtualenv, ONNX Runtime, models)"
	@echo "make bench-local   gateway vs raw ONNX Runtime benchmark (bench/)"
	@echo "make bench-peers   gateway vs Flask, MLServer, Ray Serve and the raw loop (PEERS_ARGS=--quick)"
	@echo "make bench-overhead  gateway added latency per backend vs direct, nginx, cold starts (OVERHEAD_ARGS=--quick)"
	@echo "make bench-burst   the placements through Poisson bursts, live and simulated (BURST_ARGS=--quick)"
	@echo "make bench-codec   request body decoding vs a generic JSON parse, in process"

$(VENV_STAMP): models/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r models/requirements.txt
	touch $@

$(ORT_LIB): $(VENV_STAMP)
	mkdir -p $(dir $@)
	cp "$$($(VENV_PY) -c 'import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))')/capi/libonnxruntime.so.$(ORT_VERSION)" $@.tmp
	mv $@.tmp $@

# The Lambda emulator (cargo-lambda, with the Zig toolchain it builds with).
$(LAMBDA_STAMP): $(VENV_STAMP) backends/lambda/requirements.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r backends/lambda/requirements.txt
	touch $@

$(MODEL_STAMP): $(VENV_STAMP) models/gen/make_models.py models/checksums.sha256
	$(VENV_PY) models/gen/make_models.py --out models/repository
	touch $@

setup: $(ORT_LIB) $(MODEL_STAMP) $(LAMBDA_STAMP)

# The release gateway, built with profile-guided optimisation
# (scheduler/pgo/build.sh: an instrumented build, a training run on
# loopback, then the optimised build). PGO=0 builds it without, which is
# quicker to build and slower to serve (bench/README.md, "PGO").
build: setup
ifeq ($(PGO),0)
	$(CARGO) build --release --locked -p switchyard
else
	CARGO=$(CARGO) scheduler/pgo/build.sh
endif

# The gateway on its embedded default config, with the Lambda emulator
# beside it (stopped when the gateway stops). The container tier uses the
# Docker engine directly.
run: build
	@LAMBDA_EMULATOR_PORT=$(LAMBDA_EMULATOR_PORT) backends/lambda/emulator.sh & EMULATOR=$$!; \
	trap 'kill $$EMULATOR 2>/dev/null' EXIT INT TERM; \
	$(BINARY) serve

test: setup test-models test-rust lint lambda-package

test-models: setup
	$(VENV_PY) models/gen/test_models.py

# `build` first, so that `target/release/switchyard serve` works after
# `make test` as after `make run`. The suite itself builds in the `suite`
# profile (Cargo.toml: release without the whole-program optimisation) into
# target/suite/, every binary of the workspace too: the tests start some
# that no test of their own package asks Cargo for (the Lambda function).
# The suite removes its containers itself; what a failed test left (its
# containers) and the images the suite built are removed here whatever the
# outcome.
test-rust: build
	$(CARGO) build --profile suite --locked --workspace --bins
	$(CARGO) test --profile suite --locked --workspace; status=$$?; \
	if docker info >/dev/null 2>&1; then \
	  docker ps -aq --filter label=io.switchyard.managed --filter name=switchyard-test- | xargs -r docker rm -f >/dev/null; \
	  docker images -q --filter label=io.switchyard.managed --filter 'reference=switchyard-worker-test*' | xargs -r docker rmi -f >/dev/null; \
	  docker images -q --filter label=io.switchyard.managed --filter 'reference=switchyard-worker-overhead*' | xargs -r docker rmi -f >/dev/null; \
	fi; exit $$status

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# The benchmarks' binaries: the whole workspace, then the profile-guided
# gateway (`make build`) put back where cargo's plain build of it lands. The
# benches that would build the gateway themselves are told not to
# (--no-build): it is built here.
.PHONY: bench-build
bench-build: setup
	$(CARGO) build --release --locked $(BENCH_BUILD)
	$(MAKE) --no-print-directory build

bench-local: bench-build
	target/release/switchyard-bench local --no-build

# The container and Lambda parts of bench-overhead alone:
# bench/results/overhead-container.* and overhead-lambda.*.
bench-container: OVERHEAD_ARGS = --backend container
bench-container: bench-overhead

bench-lambda: OVERHEAD_ARGS = --backend lambda
bench-lambda: bench-overhead

# The Lambda emulator alone, on 127.0.0.1:$(LAMBDA_EMULATOR_PORT).
lambda-emulator: setup
	LAMBDA_EMULATOR_PORT=$(LAMBDA_EMULATOR_PORT) backends/lambda/emulator.sh

# A deployable Lambda package (bootstrap + ONNX Runtime + models, zipped);
# the script checks the artefact, and `make test` runs it.
lambda-package: setup
	backends/lambda/package.sh

# Removes every container and image Switchyard created on this engine.
clean-docker:
	-docker ps -aq --filter label=io.switchyard.managed | xargs -r docker rm -f
	-docker images -q --filter label=io.switchyard.managed | xargs -r docker rmi -f

clean-models:
	rm -rf models/repository/*/[0-9]* models/repository/*/testdata $(MODEL_STAMP)

# switchyard-loadgen against wrk (installed with apt-get if missing) on a
# trivial endpoint and on the gateway; writes bench/results/loadgen.{md,json}.
.PHONY: bench-loadgen
bench-loadgen: bench-build
	target/release/switchyard-bench loadgen --no-build

# The soak: the paper's ramp through all three tiers with faults injected
# (killed containers, a frozen and a stopped Lambda service, SIGTERM at the
# end); fails if any request was lost. About 4 minutes; not part of `make
# test`. `make soak SOAK_ARGS=--quick` runs a 40 s version.
.PHONY: soak
soak: bench-build
	target/release/switchyard-bench soak $(SOAK_ARGS); status=$$?; \
	docker images -q --filter label=io.switchyard.managed --filter 'reference=switchyard-worker-soak*' | xargs -r docker rmi -f >/dev/null; \
	exit $$status

# --- Fuzzing and dependency audit --------------------------------------------
# Tools these targets need are installed, pinned, into target/tools.
TOOLS_DIR          ?= target/tools
CARGO_FUZZ_VERSION := 0.13.2
CARGO_DENY_VERSION := 0.20.2
FUZZ_SECONDS       ?= 60
FUZZ_TARGETS       := v2_json binary_tensor config

.PHONY: fuzz fuzz-replay audit

$(TOOLS_DIR)/bin/cargo-fuzz:
	$(CARGO) install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked --root $(TOOLS_DIR)

$(TOOLS_DIR)/bin/cargo-deny:
	$(CARGO) install cargo-deny --version $(CARGO_DENY_VERSION) --locked --root $(TOOLS_DIR)

# Each target for FUZZ_SECONDS under libFuzzer (needs the nightly toolchain).
# New inputs go to target/fuzz-corpus/<target>; the committed seeds in
# fuzz/corpus/<target> are read, never written. Crashes land in
# fuzz/artifacts/<target>. Without nightly, the stable replay runs instead.
fuzz: setup
	@if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then \
	  $(MAKE) --no-print-directory $(TOOLS_DIR)/bin/cargo-fuzz && \
	  for target in $(FUZZ_TARGETS); do \
	    mkdir -p target/fuzz-corpus/$$target && \
	    PATH="$(CURDIR)/$(TOOLS_DIR)/bin:$$PATH" $(CARGO) +nightly fuzz run --fuzz-dir fuzz $$target \
	      target/fuzz-corpus/$$target fuzz/corpus/$$target -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	  done; \
	else \
	  echo "no nightly toolchain: cargo fuzz cannot run; replaying the targets on stable instead"; \
	  $(MAKE) --no-print-directory fuzz-replay; \
	fi

# The same targets on stable: seeds plus FUZZ_ITERATIONS seeded mutations.
fuzz-replay: setup
	$(CARGO) test --profile suite --locked --workspace --test fuzz_corpus

# Licences, bans and sources always; advisories when the RustSec database
# (fetched from GitHub) can be reached or is already cached.
audit: $(TOOLS_DIR)/bin/cargo-deny
	PATH="$(CURDIR)/$(TOOLS_DIR)/bin:$$PATH" $(CARGO) deny check licenses bans sources
	@if PATH="$(CURDIR)/$(TOOLS_DIR)/bin:$$PATH" $(CARGO) deny check advisories; then :; else \
	  if timeout 20 git ls-remote https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then exit 1; fi; \
	  echo "advisories not checked: the RustSec advisory database (github.com/rustsec/advisory-db) cannot be fetched from here"; \
	fi

# The StraightLine paper's experiments scaled to this machine: its ramp
# against local-only, container-only, Lambda-only, straightline and adaptive
# placements for xception and fashion_cnn, live through the gateway (Docker
# worker containers and the Lambda emulator), beside the simulator's replay
# at full scale; writes bench/results/paper.{md,json} and SVG plots. About
# 10 minutes; `make bench-paper PAPER_ARGS=--quick` takes under one. The
# bench removes its containers and images itself; the images are removed
# here again whatever the outcome.
# A bench's containers (scope $(1)) and images (switchyard-worker-$(1)*),
# removed whatever the bench's outcome, if the Docker engine answers.
remove_bench_scope = if docker info >/dev/null 2>&1; then \
	  docker ps -aq --filter label=io.switchyard.managed --filter label=io.switchyard.scope=$(1) | xargs -r docker rm -f >/dev/null; \
	  docker images -q --filter label=io.switchyard.managed --filter 'reference=switchyard-worker-$(1)*' | xargs -r docker rmi -f >/dev/null; \
	fi

.PHONY: bench-paper
bench-paper: bench-build
	target/release/switchyard-bench paper $(PAPER_ARGS); status=$$?; \
	$(call remove_bench_scope,paper); exit $$status

# What the gateway adds in front of each backend (local, container, Lambda)
# against going direct in the same run, nginx in front of the same worker
# container beside it, at 200 and 2,000 requests/s; container and Lambda cold
# starts; issue 4's targets met or not. Writes bench/results/overhead.{md,json}.
# About 5 minutes; `make bench-overhead OVERHEAD_ARGS=--quick` takes under
# one. The bench removes its containers and images itself; they are removed
# here again whatever the outcome.
.PHONY: bench-overhead
bench-overhead: bench-build
	target/release/switchyard-bench overhead $(OVERHEAD_ARGS); status=$$?; \
	$(call remove_bench_scope,overhead); exit $$status

# The five placements of bench-paper through Poisson bursts of xception
# requests, live (the rates and durations scaled to this machine) and in the
# simulator at full scale: bench/results/burst.{md,json}. About 5 minutes;
# `make bench-burst BURST_ARGS=--quick` takes under one.
.PHONY: bench-burst
bench-burst: bench-build
	target/release/switchyard-bench burst $(BURST_ARGS); status=$$?; \
	$(call remove_bench_scope,burst); exit $$status

# What reading a request body costs (the protocol decoder against a generic
# serde_json parse of the same body), by model, batch and encoding, in one
# process: bench/results/codec.{md,json}. About 25 s.
.PHONY: bench-codec
bench-codec:
	$(CARGO) build --release --locked $(BENCH_BUILD)
	target/release/switchyard-bench codec

# The placement policies side by side with the single-tier baselines in the
# simulator (switchyard sim), and the simulator's speed: bench/results/sim.md.
.PHONY: bench-sim bench-profile
bench-sim:
	$(CARGO) build --release --locked $(BENCH_BUILD)
	target/release/switchyard-bench sim

# Switchyard against Flask + gunicorn, MLServer and Ray Serve (each with ONNX
# Runtime) and the raw ONNX Runtime loop: bench/results/peers.{md,json,svg}.
# The bench makes its own virtualenvs (bench/.venv-peers, bench/.venv-peers-ray)
# from bench/peers/requirements*.txt on first use. About 7 minutes;
# `make bench-peers PEERS_ARGS=--quick` runs a one-minute version.
.PHONY: bench-peers
bench-peers: bench-build
	target/release/switchyard-bench peers --no-build $(PEERS_ARGS)

# Measures the local tier through the gateway and writes a simulator
# profile: bench/results/profile.toml (use with `switchyard sim --profile`).
bench-profile: bench-build
	target/release/switchyard-bench profile
