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
LAMBDA_STAMP := $(VENV)/.lambda-installed
LAMBDA_EMULATOR_PORT ?= 9000

.PHONY: help setup build run test test-rust test-models lint fmt bench-local bench-container \
	bench-lambda lambda-emulator lambda-package clean-models clean-docker

help:
	@echo "make run    set up, build and start the gateway on 127.0.0.1:8000"
	@echo "make test   set up, then run every test, clippy and the format check"
	@echo "make setup  only the set-up (virtualenv, ONNX Runtime, models)"
	@echo "make bench-local   gateway vs raw ONNX Runtime benchmark (bench/)"

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

build: setup
	$(CARGO) build --release --locked -p switchyard

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

# The suite removes its containers itself; the images it built are removed
# here whatever the outcome.
test-rust: setup
	$(CARGO) build --release --locked --workspace --bins
	$(CARGO) test --release --locked --workspace; status=$$?; \
	if docker info >/dev/null 2>&1; then \
	  docker images -q --filter label=io.switchyard.managed --filter 'reference=switchyard-worker-test*' | xargs -r docker rmi -f >/dev/null; \
	  docker images -q --filter label=io.switchyard.managed --filter 'reference=switchyard-worker-bench*' | xargs -r docker rmi -f >/dev/null; \
	fi; exit $$status

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench-local: setup
	$(CARGO) run --release --locked -p switchyard-bench -- local

bench-container: build
	$(CARGO) run --release --locked -p switchyard-backend-container --bin container-bench

bench-lambda: setup
	$(CARGO) build --release --locked -p switchyard -p switchyard-lambda-function -p switchyard-backend-lambda
	target/release/lambda-bench

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
