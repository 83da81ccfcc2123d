#!/usr/bin/env bash
# Live deployment swaps (docs/PERFORMANCE.md): PUT -> first request on the new
# revision, and requests lost under wrk -c16, for hello and (when the models
# are there: bash scripts/fetch-models.sh) the OpenAI world.
#
#   bash benches/deploy/run.sh [ROUNDS] [MODELS_DIR]
#
# Installs wrk (Debian) if missing and prints a table of medians.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release
if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk
fi
models=()
if [ -n "${2:-}" ]; then models=(--models "$2"); fi
python3 benches/deploy/bench.py \
  --tensor-wasm target/release/tensor-wasm \
  --guests "$PWD/target/guests/wasm32-wasip2/release" \
  --rounds "${1:-7}" "${models[@]}"
