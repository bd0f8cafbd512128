#!/usr/bin/env bash
# Starts the local Lambda emulator (`cargo lambda watch`, from the pinned
# cargo-lambda wheel in .venv) on 127.0.0.1:${LAMBDA_EMULATOR_PORT:-9000},
# serving the Switchyard function `switchyard-lambda`. The gateway invokes
# it at http://127.0.0.1:PORT/2015-03-31/functions/switchyard-lambda/invocations
# (config/lambda-only.toml). Instances start lazily on the first invoke,
# through `cargo run --release` (built ahead here, so the first invoke pays
# only a real cold start, not a compile). Stop with Ctrl-C.
#
# Environment: LAMBDA_EMULATOR_PORT (9000), LAMBDA_EMULATOR_CONCURRENCY
# (instances at most, 4), LAMBDA_MEMORY_MB (reported memory size, 1024),
# SWITCHYARD_LAMBDA_MODELS (models each instance loads, "all").
set -euo pipefail
cd "$(dirname "$0")/../.."
CARGO_LAMBDA=.venv/bin/cargo-lambda
PORT=${LAMBDA_EMULATOR_PORT:-9000}
[ -x "$CARGO_LAMBDA" ] || { echo "lambda-emulator: $CARGO_LAMBDA is missing; run \`make setup\`" >&2; exit 1; }
# The build runs in a process group of its own so that a stop (Ctrl-C, or
# the SIGTERM `make run` sends when the gateway exits, perhaps during a
# first build) ends cargo and its compiler processes with it instead of
# leaving them to run on.
set -m
${CARGO:-cargo} build --release --locked -p switchyard-lambda-function --bin switchyard-lambda &
BUILD=$!
set +m
trap 'kill -TERM -- "-$BUILD" 2>/dev/null; exit 143' TERM
trap 'kill -TERM -- "-$BUILD" 2>/dev/null; exit 130' INT
wait "$BUILD"
trap - TERM INT
echo "lambda-emulator: serving switchyard-lambda on http://127.0.0.1:$PORT" >&2
# --manifest-path: the workspace's default-members would hide the binary
# from the emulator's `cargo run --bin switchyard-lambda`.
exec "$CARGO_LAMBDA" lambda watch --release --ignore-changes \
  --manifest-path backends/lambda-function/Cargo.toml \
  -A 127.0.0.1 -P "$PORT" \
  --concurrency "${LAMBDA_EMULATOR_CONCURRENCY:-4}" \
  --env-var "SWITCHYARD_MODEL_REPOSITORY=$PWD/models/repository" \
  --env-var "ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.cache/onnxruntime/libonnxruntime.so.1.32.0}" \
  --env-var "SWITCHYARD_LAMBDA_MODELS=${SWITCHYARD_LAMBDA_MODELS:-all}" \
  --env-var "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=${LAMBDA_MEMORY_MB:-1024}"
