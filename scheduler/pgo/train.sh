#!/usr/bin/env bash
# The training run of the PGO build (scheduler/pgo/build.sh): an
# instrumented gateway serves a fixed load on loopback, and each gateway
# process writes its profile to RAW_DIR when it exits.
#
#   train.sh GATEWAY LOADGEN RAW_DIR
#
# What the profile should stand for is what a gateway does in service:
#   - the local tier (config/local-only.toml): each model at a steady rate
#     with binary and with JSON tensors, batches of several rows, and a
#     closed loop that makes the dynamic batcher form full batches;
#   - the container tier (config/container-only.toml, scope `pgo-PID`, its
#     own image built from the instrumented binary) with the same load, when the
#     Docker engine answers; the pool scales up under the closed loop;
#   - metadata, health, stats and metrics reads, and refused requests.
# The Lambda tier is left out: its emulator builds and starts the function
# first, which would double the training time. Measured side by side, a
# gateway trained without it still serves the Lambda tier faster than one
# built without PGO (bench/README.md, "PGO": p50 0.96x, CPU per request
# 0.90x at 200 requests/s).
#
# Bounded: every load run has a fixed duration, every other request a
# timeout, and a gateway must be ready within 2 minutes: the local one or
# the run fails; the container one or its part is left out.
# The run's containers and image are removed at the end, whatever happened,
# and those of an earlier run that crashed at its start.
set -euo pipefail
cd "$(dirname "$0")/../.."

GATEWAY=$1
LOADGEN=$2
RAW=$3
WORK=$(mktemp -d)
PIDS=()
# Scope and image are this run's own, so that two trainings on one machine
# (two checkouts building at once) never remove each other's containers.
SCOPE=pgo-$$
IMAGE=switchyard-worker-$SCOPE

# Whether the training run of SCOPE left what should go: its process is
# gone (SCOPE=pgo-PID; /proc tells, whichever user runs it), or it is this
# run's own and MODE is `all`. Scopes that are not a training run's stay.
leftover() {
    local scope=$1 mode=$2
    case $scope in pgo-*) ;; *) return 1 ;; esac
    [ "$mode" = all ] && [ "$scope" = "$SCOPE" ] || [ ! -d "/proc/${scope#pgo-}" ]
}

# Removes the containers and images of training runs that crashed; with
# `all`, this run's too. Never fails: what it cannot remove now, the next
# run or `make clean-docker` will.
remove_training_leftovers() {
    docker info >/dev/null 2>&1 || return 0
    local mode=${1:-} ref scope
    docker ps -a --filter label=io.switchyard.managed --format '{{.ID}} {{.Label "io.switchyard.scope"}}' 2>/dev/null |
        while read -r ref scope; do
            if leftover "$scope" "$mode"; then docker rm -f "$ref" >/dev/null 2>&1 || true; fi
        done || true
    docker images --filter label=io.switchyard.managed --format '{{.Repository}}:{{.Tag}}' 2>/dev/null |
        while read -r ref; do
            scope=${ref%%:*}
            if leftover "${scope#switchyard-worker-}" "$mode"; then docker rmi -f "$ref" >/dev/null 2>&1 || true; fi
        done || true
    return 0
}

cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    remove_training_leftovers all
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
remove_training_leftovers

# Starts a gateway on CONFIG, on a free loopback port, and sets URL once it
# is ready.
start_gateway() {
    local config=$1 log=$2 address=""
    LLVM_PROFILE_FILE="$RAW/gateway-%p-%m.profraw" \
        "$GATEWAY" serve --config "$config" --listen 127.0.0.1:0 >"$log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 600); do
        address=$(sed -n 's|^Switchyard is serving on http://||p' "$log" | head -n 1)
        if [ -n "$address" ] && curl -sf -m 5 -o /dev/null "http://$address/v2/health/ready"; then
            URL="http://$address"
            return 0
        fi
        kill -0 "${PIDS[-1]}" 2>/dev/null || break
        sleep 0.2
    done
    echo "pgo: the instrumented gateway did not become ready on $config; its log:" >&2
    cat "$log" >&2
    return 1
}

load() {
    "$LOADGEN" --url "$URL" -q --max-duration 30s "$@" >/dev/null
}

train() {
    for model in digits fashion_cnn; do
        load --model "$model" --rate 200 --duration 3s --binary --binary-output
        load --model "$model" --rate 100 --duration 2s
        load --model "$model" --batch 1:4,8:1 --rate 100 --duration 2s --binary
        load --model "$model" --concurrency 64 --duration 2s --binary --binary-output
    done
    load --model xception --rate 2 --duration 2s --binary --binary-output
    for path in /v2 /v2/health/live /v2/health/ready /v2/models/digits /v2/models/digits/ready \
        /v2/repository/index /v2/switchyard/stats /metrics /v2/models/no-such-model; do
        for _ in 1 2 3; do curl -s -m 10 -o /dev/null "$URL$path"; done
    done
    for _ in 1 2 3; do
        curl -s -m 10 -o /dev/null -X POST "$URL/v2/models/digits/infer" \
            -d '{"inputs":[{"name":"input","shape":[1,2],"datatype":"FP32","data":[1,2]}]}'
        curl -s -m 10 -o /dev/null -X POST "$URL/v2/models/digits/infer" -d '{"inputs":'
    done
}

stop_gateway() {
    local pid=${PIDS[-1]}
    kill -TERM "$pid"
    wait "$pid" || { echo "pgo: the instrumented gateway exited with an error" >&2; return 1; }
    unset 'PIDS[-1]'
}

start_gateway config/local-only.toml "$WORK/local.log"
train
stop_gateway

if docker info >/dev/null 2>&1; then
    sed -e "s|^scope = .*|scope = \"$SCOPE\"|" \
        -e "s|^image = .*|image = \"$IMAGE\"|" \
        -e "s|^worker_binary = .*|worker_binary = \"$GATEWAY\"|" \
        -e 's|^max_containers = .*|max_containers = 2|' \
        config/container-only.toml >"$WORK/container.toml"
    # The local tier's profile is enough for a build: a container tier
    # that does not come up (an engine that cannot build the image, say)
    # costs the profile that part, not the build.
    if start_gateway "$WORK/container.toml" "$WORK/container.log"; then
        train
        stop_gateway
    else
        echo "pgo: the container tier is left out of the training" >&2
    fi
else
    echo "pgo: no Docker engine answers; the container tier is left out of the training" >&2
fi

ls "$RAW"/*.profraw >/dev/null 2>&1 || { echo "pgo: the training run wrote no profile" >&2; exit 1; }
