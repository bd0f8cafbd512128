#!/usr/bin/env bash
# Builds the release gateway, target/release/switchyard, with profile-guided
# optimisation (PGO). `make build` (and so `make run` and `make test`) runs
# this; `make build PGO=0` builds without it.
#
#   1. An instrumented gateway and load generator (target/pgo/gen).
#   2. A training run (scheduler/pgo/train.sh): the instrumented gateway
#      serves a fixed load on loopback, and writes its profile when it exits.
#   3. The profile merged by llvm-profdata of the LLVM that rustc is built on.
#   4. The gateway built with the profile (target/pgo/use) and put in place
#      at target/release/switchyard; the container tier's worker image is
#      built from that binary too.
#
# Each step is skipped when its inputs have not changed: cargo decides for
# the builds; the training reruns when the instrumented binary is newer than
# the profile. Where llvm-profdata cannot be had (apt-get needs root) or the
# training run fails, the gateway is built without PGO and the reason is
# printed: PGO makes the gateway faster, never the build fail.
set -euo pipefail
cd "$(dirname "$0")/../.."

CARGO=${CARGO:-cargo}
ROOT=$PWD
OUT=target/pgo
PROFILE=$ROOT/$OUT/merged.profdata
BINARY=target/release/switchyard

plain_build() {
    echo "pgo: $1; building the gateway without profile-guided optimisation" >&2
    exec "$CARGO" build --release --locked -p switchyard
}

RUSTC_VERSION=$(rustc -vV)
HOST=$(sed -n 's/^host: //p' <<<"$RUSTC_VERSION")
LLVM_MAJOR=$(sed -n 's/^LLVM version: \([0-9]*\).*/\1/p' <<<"$RUSTC_VERSION")
[ -n "$HOST" ] && [ -n "$LLVM_MAJOR" ] || plain_build "cannot read the host or LLVM version from \`rustc -vV\`"

# llvm-profdata must be of rustc's LLVM major version: the raw profile
# format changes between majors. Debian packages it as llvm-N.
PROFDATA=${LLVM_PROFDATA:-llvm-profdata-$LLVM_MAJOR}
if ! command -v "$PROFDATA" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "pgo: $PROFDATA is missing: apt-get install -y llvm-$LLVM_MAJOR" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq "llvm-$LLVM_MAJOR" >/dev/null ||
            { apt-get update -qq >/dev/null && apt-get install -y -qq "llvm-$LLVM_MAJOR" >/dev/null; } || true
    fi
    command -v "$PROFDATA" >/dev/null 2>&1 ||
        plain_build "$PROFDATA is not installed (install the Debian package llvm-$LLVM_MAJOR, or set LLVM_PROFDATA)"
fi

# --target keeps the flags off build scripts and procedural macros, which
# run on the build machine and need no profile.
echo "pgo: 1/4 instrumented build (target/pgo/gen)" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$ROOT/$OUT/gen-unused" "$CARGO" build --release --locked \
    --target "$HOST" --target-dir "$OUT/gen" -p switchyard -p switchyard-loadgen
GEN_BINARY=$OUT/gen/$HOST/release/switchyard

if [ ! -f "$PROFILE" ] || [ "$GEN_BINARY" -nt "$PROFILE" ]; then
    echo "pgo: 2/4 training run" >&2
    rm -rf "$OUT/raw"
    mkdir -p "$OUT/raw"
    scheduler/pgo/train.sh "$GEN_BINARY" "$OUT/gen/$HOST/release/switchyard-loadgen" "$ROOT/$OUT/raw" ||
        plain_build "the training run failed (its output is above)"
    echo "pgo: 3/4 merging the profile" >&2
    "$PROFDATA" merge -o "$PROFILE.tmp" "$OUT"/raw/*.profraw ||
        plain_build "llvm-profdata could not merge the training run's profile"
    mv "$PROFILE.tmp" "$PROFILE"
fi

# rustc records the profile in each crate's dependency info, so a new
# profile rebuilds what it optimises.
echo "pgo: 4/4 optimised build (target/pgo/use)" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$PROFILE" "$CARGO" build --release --locked \
    --target "$HOST" --target-dir "$OUT/use" -p switchyard

# A rename, not a copy over the file: a gateway may be running from it.
mkdir -p "$(dirname "$BINARY")"
if ! cmp -s "$OUT/use/$HOST/release/switchyard" "$BINARY"; then
    cp "$OUT/use/$HOST/release/switchyard" "$BINARY.pgo-tmp"
    mv "$BINARY.pgo-tmp" "$BINARY"
fi
echo "pgo: $BINARY is built with the profile of the training run" >&2
