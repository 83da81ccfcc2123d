#!/usr/bin/env bash
# Gateway benchmark: bare hello vs four do-nothing middlewares, vs one component
# making only the host calls a gateway cannot skip, and vs the full gateway
# chain in front of hello, on one server, same run.
#
#   bash benches/gateway/run.sh [ROUNDS] [SECONDS] [CONCURRENCIES] [REUSE]
#
# REUSE: requests per instance for every deployment (default 1000, warm
# instances); a list such as 1,1000 measures each on its own server.
# Installs wrk (Debian) if missing and prints a table of medians.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release
(cd benches/gateway/noop && cargo build --release --target wasm32-wasip2 && cargo build --release --target wasm32-wasip2 --features floor --target-dir target/floor)
if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk
fi
python3 benches/gateway/bench.py \
  --tensor-wasm target/release/tensor-wasm \
  --hello "$PWD/target/guests/wasm32-wasip2/release/hello.wasm" \
  --world "$PWD/worlds/gateway.wac" \
  --noop "$PWD/benches/gateway/noop/target/wasm32-wasip2/release/noop_middleware.wasm" \
  --floor "$PWD/benches/gateway/noop/target/floor/wasm32-wasip2/release/noop_middleware.wasm" \
  --rounds "${1:-3}" --seconds "${2:-10}" --concurrency "${3:-16,64}" --reuse "${4:-1000}"
