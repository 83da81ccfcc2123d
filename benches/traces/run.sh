#!/usr/bin/env bash
# What traces cost (off / sampled 1 % / 100 %, gateway world, c=16) and the
# time of a /metrics scrape with 100 deployments.
#
#   bash benches/traces/run.sh [ROUNDS] [SECONDS] [CONCURRENCY]
#
# Installs wrk (Debian) if missing and prints a table of medians.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release
if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk
fi
python3 benches/traces/bench.py \
  --tensor-wasm target/release/tensor-wasm \
  --hello "$PWD/target/guests/wasm32-wasip2/release/hello.wasm" \
  --world "$PWD/worlds/gateway.wac" \
  --rounds "${1:-3}" --seconds "${2:-10}" --concurrency "${3:-16}"
