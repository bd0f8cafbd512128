#!/usr/bin/env bash
# Packages the Switchyard function for AWS Lambda (runtime provided.al2023,
# x86_64): `cargo lambda build --release` makes `bootstrap`, then one zip
# holds bootstrap, the ONNX Runtime library where the model core finds it
# (`.cache/onnxruntime/` beside the executable) and the models under
# `models/` (the function's default repository: $LAMBDA_TASK_ROOT/models).
#
#   backends/lambda/package.sh [MODEL...]     default: digits fashion_cnn
#
# Writes target/lambda/switchyard-lambda/switchyard-lambda.zip and checks
# it. Deploy steps: backends/lambda-function/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
CARGO_LAMBDA=.venv/bin/cargo-lambda
# cargo lambda finds the Zig toolchain (from the ziglang wheel) through the
# virtualenv's python.
export PATH="$PWD/.venv/bin:$PATH"
ORT_LIB=.cache/onnxruntime/libonnxruntime.so.1.32.0
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=$TARGET_DIR/lambda/switchyard-lambda
MODELS=("$@")
[ ${#MODELS[@]} -gt 0 ] || MODELS=(digits fashion_cnn)

for need in "$CARGO_LAMBDA" "$ORT_LIB"; do
  [ -e "$need" ] || { echo "package: $need is missing; run \`make setup\`" >&2; exit 1; }
done
for model in "${MODELS[@]}"; do
  [ -f "models/repository/$model/config.toml" ] ||
    { echo "package: no model $model in models/repository" >&2; exit 1; }
done

"$CARGO_LAMBDA" lambda build --release --locked -p switchyard-lambda-function \
  --bin switchyard-lambda --lambda-dir "$TARGET_DIR/lambda"
[ -x "$OUT/bootstrap" ] || { echo "package: $OUT/bootstrap was not produced" >&2; exit 1; }

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
cp "$OUT/bootstrap" "$STAGE/bootstrap"
mkdir -p "$STAGE/.cache/onnxruntime" "$STAGE/models"
cp "$ORT_LIB" "$STAGE/.cache/onnxruntime/"
for model in "${MODELS[@]}"; do
  mkdir -p "$STAGE/models/$model"
  cp "models/repository/$model/config.toml" "$STAGE/models/$model/"
  for version in models/repository/$model/[0-9]*; do
    mkdir -p "$STAGE/models/$model/$(basename "$version")"
    cp "$version/model.onnx" "$STAGE/models/$model/$(basename "$version")/"
  done
done
ZIP=$(realpath -m "$OUT/switchyard-lambda.zip")
rm -f "$ZIP"
(cd "$STAGE" && zip -q -r -X "$ZIP" bootstrap .cache models)

# The check: the zip has an executable bootstrap, the library and a model,
# and stays under Lambda's 50 MB direct-upload limit (250 MB unzipped).
LISTING=$(unzip -Z1 "$ZIP")
for entry in bootstrap .cache/onnxruntime/libonnxruntime.so.1.32.0 "models/${MODELS[0]}/config.toml"; do
  grep -qx "$entry" <<<"$LISTING" || { echo "package: $entry missing from $ZIP" >&2; exit 1; }
done
unzip -Z "$ZIP" bootstrap | grep -q '^-rwx' || { echo "package: bootstrap is not executable" >&2; exit 1; }
SIZE=$(stat -c %s "$ZIP")
UNZIPPED=$(unzip -Zt "$ZIP" | awk '{print $3}')
echo "package: $ZIP ($((SIZE / 1024 / 1024)) MiB zipped, $((UNZIPPED / 1024 / 1024)) MiB unzipped; models: ${MODELS[*]})"
[ "$SIZE" -lt $((50 * 1024 * 1024)) ] || echo "package: over 50 MB: upload through S3 (aws lambda update-function-code --s3-bucket ...)" >&2
[ "$UNZIPPED" -lt $((250 * 1024 * 1024)) ] || { echo "package: over Lambda's 250 MB unzipped limit; package fewer models" >&2; exit 1; }
