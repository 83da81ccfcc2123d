#!/usr/bin/env bash
# Gateway benchmark: bare hello vs the full gateway chain in front of hello,
# on one server, same run.
#
#   bash benches/gateway/run.sh [ROUNDS] [SECONDS] [CONCURRENCIES]
#
# Installs wrk (Debian) if missing and prints a table of medians.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release
if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk
fi
python3 benches/gateway/bench.py \
  --tensor-wasm target/release/tensor-wasm \
  --hello "$PWD/target/guests/wasm32-wasip2/release/hello.wasm" \
  --world "$PWD/worlds/gateway.wac" \
  --rounds "${1:-3}" --seconds "${2:-10}" --concurrency "${3:-16,64}"
