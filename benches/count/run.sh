#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind (a figure that
# does not drift with the machine, for changes to hot paths):
#   traces  the gateway world with traces off vs sampled at 1 % and 100 %
#   chain   bare hello vs four no-op middlewares vs the one-component floor
#           (benches/gateway/floor.wac) vs the gateway world
#   http    hello with warm instances: tensor-wasm serve vs wasmtime serve
#   peer-chain  wasmtime serve alone: hello vs the four no-op middlewares
#           composed in front of it (WASMTIME_BUILDS=A,B compares builds;
#           default the 48.0.8 the http bench uses)
#
#   bash benches/count/run.sh traces|chain|http|peer-chain [SECONDS] [--keep DIR]
#
# --keep DIR copies each server's profile to DIR (callgrind_annotate reads it).
# Installs wrk and valgrind (Debian) if missing; prints a table.
set -euo pipefail
cd "$(dirname "$0")/../.."
what="${1:?usage: benches/count/run.sh traces|chain|http|peer-chain [SECONDS] [--keep DIR]}"
tools="${TW_BENCH_TOOLS:-$HOME/.cache/tensor-wasm-bench}"
cargo build --release
(cd benches/gateway/noop && cargo build --release --target wasm32-wasip2 && cargo build --release --target wasm32-wasip2 --features floor --target-dir target/floor)
for tool in wrk valgrind; do
  if ! command -v "$tool" >/dev/null; then
    apt-get update -qq && apt-get install -y -qq "$tool"
  fi
done
if [ "$what" = http ] || [ "$what" = peer-chain ] && [ ! -x "$tools/bin/wasmtime" ]; then
  cargo install wasmtime-cli --version 48.0.8 --locked --root "$tools"
fi
python3 benches/count/count.py "$what" --tensor-wasm target/release/tensor-wasm \
  --world "$PWD/worlds/gateway.wac" \
  --hello "$PWD/target/guests/wasm32-wasip2/release/hello.wasm" \
  --noop "$PWD/benches/gateway/noop/target/wasm32-wasip2/release/noop_middleware.wasm" \
  --floor "$PWD/benches/gateway/noop/target/floor/wasm32-wasip2/release/noop_middleware.wasm" \
  --wasmtime "${WASMTIME_BUILDS:-$tools/bin/wasmtime}" \
  --seconds "${2:-20}" "${@:3}"
