#!/usr/bin/env bash
# The OpenAI API's models on TensorWasm vs the same models on PyTorch, on this
# machine, same run (docs/PERFORMANCE.md): builds the release host, makes a
# virtual environment with the PyTorch peer (benches/openai/requirements.txt,
# from PyPI) and fetches the models once, then runs bench.py.
#
#   bash benches/openai/run.sh [ROUNDS] [DEVICE] [EXTRA]   # defaults: 7 cpu
#
# EXTRA goes to bench.py: `--reuse 1000` serves the world with warm
# instances; `--fresh-vs-reuse` measures only embeddings at batch 1, fresh
# instances vs warm ones.
# VENV defaults to target/openai-bench-venv; the models go where
# `tensor-wasm serve` looks ($TENSOR_WASM_MODELS_DIR or
# ~/.cache/tensor-wasm/models). On the lent GPU machine (no network) use
# scripts/gpu-pack-openai.sh and scripts/gpu-openai.sh instead.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${VENV:-$PWD/target/openai-bench-venv}"
models="${TENSOR_WASM_MODELS_DIR:-$HOME/.cache/tensor-wasm/models}"
cargo build --release
bash tests/openai/setup.sh "$venv" "$models" benches/openai/requirements.txt
"$venv/bin/python" benches/openai/bench.py --tensor-wasm target/release/tensor-wasm \
  --models "$models" --device "${2:-cpu}" --rounds "${1:-7}" ${3:-}
