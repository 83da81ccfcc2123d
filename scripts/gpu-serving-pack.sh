#!/usr/bin/env bash
# Builds (here) what scripts/gpu-serving.sh runs on the lent GPU machine and
# puts it in .gpu-serving/ (ignored by git; carried by the device tool): the
# server, the hello and no-op middleware components, `wasmtime` 48.0.8 (the
# http bench's peer) and wrk from Debian with the libraries it links.
# BASELINE_BIN=PATH[,PATH...] (tensor-wasm builds from other commits) are
# packed too, and the http bench then measures them in the same rounds (an
# A/B, or A/B/C).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gpu-serving/' .git/info/exclude 2>/dev/null ||
  { mkdir -p .git/info; echo '/.gpu-serving/' >> .git/info/exclude; }
tools="${TW_BENCH_TOOLS:-$HOME/.cache/tensor-wasm-bench}"
cargo build --release
(cd benches/gateway/noop && cargo build --release --target wasm32-wasip2 && cargo build --release --target wasm32-wasip2 --features floor --target-dir target/floor)
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
command -v xz >/dev/null || { apt-get update -qq && apt-get install -y -qq xz-utils; }
[ -x "$tools/bin/wasmtime" ] || cargo install wasmtime-cli --version 48.0.8 --locked --root "$tools"

g=.gpu-serving
rm -rf "$g" && mkdir -p "$g/bin" "$g/lib"
# Binaries travel stripped and xz-compressed (three builds and the peer fit
# the device tool's 64 MiB); gpu-serving.sh unpacks them with Python's lzma.
pack() { cp "$1" "$g/$2" && strip "$g/$2" && xz -6 -T2 "$g/$2"; }
pack target/release/tensor-wasm tensor-wasm
pack "$tools/bin/wasmtime" wasmtime
n=0
for bin in ${BASELINE_BIN:+${BASELINE_BIN//,/ }}; do
  n=$((n + 1))
  pack "$bin" "tensor-wasm-baseline$n"
done
cp target/guests/wasm32-wasip2/release/hello.wasm "$g/"
cp benches/gateway/noop/target/wasm32-wasip2/release/noop_middleware.wasm "$g/"
cp benches/gateway/noop/target/floor/wasm32-wasip2/release/noop_middleware.wasm "$g/floor_middleware.wasm"
# wrk and the shared libraries it links beyond glibc, behind a wrapper.
cp "$(command -v wrk)" "$g/lib/wrk"
ldd "$(command -v wrk)" | awk '/=> \// {print $3}' | grep -E 'luajit|libssl|libcrypto' |
  xargs -I{} cp -L {} "$g/lib/"
cat > "$g/bin/wrk" <<'EOF'
#!/bin/sh
d=$(dirname "$0")/../lib
LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$d/wrk" "$@"
EOF
chmod +x "$g/bin/wrk"
du -sh "$g"
