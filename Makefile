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

.PHONY: help setup build run test test-rust test-models lint fmt bench-local clean-models

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

$(MODEL_STAMP): $(VENV_STAMP) models/gen/make_models.py models/checksums.sha256
	$(VENV_PY) models/gen/make_models.py --out models/repository
	touch $@

setup: $(ORT_LIB) $(MODEL_STAMP)

build: setup
	$(CARGO) build --release --locked -p switchyard

run: build
	$(BINARY) serve

test: setup test-models test-rust lint

test-models: setup
	$(VENV_PY) models/gen/test_models.py

test-rust: setup
	$(CARGO) test --release --locked --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench-local: setup
	$(CARGO) run --release --locked -p switchyard-bench -- local

clean-models:
	rm -rf models/repository/*/[0-9]* models/repository/*/testdata $(MODEL_STAMP)
