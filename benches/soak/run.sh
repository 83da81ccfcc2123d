#!/usr/bin/env bash
# A soak: one `tensor-wasm serve` driven by a mix of traffic for DURATION
# (default 1h), sampled every 10 s. The summary says whether memory, open
# files and threads stayed flat after warm-up (<= 5% growth), and lists any
# unexpected error or panic. See docs/PERFORMANCE.md ("Soak").
#
#   bash benches/soak/run.sh [DURATION] [OUT_DIR]
#
# DURATION: e.g. 1h, 20m, 90s. Needs target/release/tensor-wasm and the
# guest components (cargo build --release); CPU embeddings join the mix when
# the models are present (TENSOR_WASM_TEST_MODELS or target/tmp/openai-models,
# from `bash tests/openai/setup.sh`).
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-1h}
out=${2:-target/soak}
mkdir -p "$out"
exec python3 benches/soak/soak.py --duration "$duration" --out "$out" \
  --tensor-wasm target/release/tensor-wasm \
  --guests target/guests/wasm32-wasip2/release \
  --models "${TENSOR_WASM_TEST_MODELS:-target/tmp/openai-models}"
