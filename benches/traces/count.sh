#!/usr/bin/env bash
# What traces cost in instructions per request (valgrind's callgrind: off vs
# 100 %, gateway world): a count that does not drift with the machine, for
# changes to the span path. Installs wrk and valgrind (Debian) if missing.
#
#   bash benches/traces/count.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release
for tool in wrk valgrind; do
  if ! command -v "$tool" >/dev/null; then
    apt-get update -qq && apt-get install -y -qq "$tool"
  fi
done
python3 benches/traces/count.py --tensor-wasm target/release/tensor-wasm \
  --world "$PWD/worlds/gateway.wac" --seconds "${1:-20}"
