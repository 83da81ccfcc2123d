#!/usr/bin/env bash
# HTTP serving benchmark: the same hello component under `tensor-wasm serve`
# and `wasmtime serve` (48.0.8, the wasmtime our host embeds), alternating,
# at concurrency 1, 16 and 64, with wrk as the load generator, in two modes:
# each server's default (a fresh instance per request) and warm instances
# (both with --max-instance-reuse-count 1000).
#
#   bash benches/http/run.sh [ROUNDS] [SECONDS] [MODES]   # MODES: fresh,reuse
#
# Installs what it needs once (wrk from Debian, wasmtime-cli from crates.io
# into ~/.cache/tensor-wasm-bench) and prints a table of medians.
set -euo pipefail
cd "$(dirname "$0")/../.."
tools="${TW_BENCH_TOOLS:-$HOME/.cache/tensor-wasm-bench}"

cargo build --release
if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk
fi
if [ ! -x "$tools/bin/wasmtime" ]; then
  cargo install wasmtime-cli --version 48.0.8 --locked --root "$tools"
fi
python3 benches/http/bench.py \
  --tensor-wasm target/release/tensor-wasm \
  --wasmtime "$tools/bin/wasmtime" \
  --component target/guests/wasm32-wasip2/release/hello.wasm \
  --rounds "${1:-3}" --seconds "${2:-10}" --modes "${3:-fresh,reuse}"
