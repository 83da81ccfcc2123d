#!/usr/bin/env bash
# CPU matmul benchmark: f32 square products (1024, 2048, 4096) computed by
# the host's wasi:tensor CPU backend, issued from a guest (tensor-probe's
# /bench/matmul, timed inside the guest), against numpy on this machine,
# alternating, in the same run. Also reports the cost of one host call.
#
#   bash benches/tensor/run.sh [ROUNDS] [REPS]
#
# Installs numpy once into ~/.cache/tensor-wasm-bench/venv (from PyPI) and
# prints a table of medians.
set -euo pipefail
cd "$(dirname "$0")/../.."
tools="${TW_BENCH_TOOLS:-$HOME/.cache/tensor-wasm-bench}"

cargo build --release
if [ ! -x "$tools/venv/bin/python" ]; then
  python3 -m venv "$tools/venv"
fi
"$tools/venv/bin/python" -c "import numpy" 2>/dev/null || "$tools/venv/bin/pip" install -q numpy
"$tools/venv/bin/python" benches/tensor/bench.py \
  --tensor-wasm target/release/tensor-wasm \
  --component target/guests/wasm32-wasip2/release/tensor_probe.wasm \
  --rounds "${1:-3}" --reps "${2:-5}"
