#!/usr/bin/env bash
# The cost of shared state (issue 24): the gateway world with its state in
# the server vs in Redis, one replica direct vs two behind HAProxy, and
# audit-all on redb vs Redis. See benches/replicas/bench.py and
# docs/PERFORMANCE.md ("Replicas").
#
#   bash benches/replicas/run.sh [ROUNDS] [SECONDS] [CONCURRENCY]
#
# Installs wrk, redis-server and haproxy (Debian) if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release
for pkg in wrk redis-server haproxy; do
  if ! command -v "$pkg" >/dev/null && [ ! -x "/usr/sbin/$pkg" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg"
  fi
done
python3 benches/replicas/bench.py --tensor-wasm target/release/tensor-wasm \
  --world "$PWD/worlds/gateway.wac" \
  --rounds "${1:-3}" --seconds "${2:-10}" --concurrency "${3:-32}"
