#!/usr/bin/env bash
# Builds (here, where Rust is) everything scripts/gpu-check.sh runs on the lent
# GPU machine and puts it, stripped, in .gpu/ (ignored by git; carried by the
# device tool: `carry: [".gpu"]`).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.gpu/' >> .git/info/exclude; }
cargo build --release
e2e=$(cargo test --release --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "e2e" and m.get("executable"):
        print(m["executable"])')
launch=$(cargo bench --no-run --bench cuda_launch --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cuda_launch" and m.get("executable"):
        print(m["executable"])')
oracle=$(cargo test --release --no-run --test oracle --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "oracle" and m.get("executable"):
        print(m["executable"])')
rm -rf .gpu && mkdir -p .gpu/guests
cp target/release/tensor-wasm .gpu/ && cp "$e2e" .gpu/e2e && cp "$launch" .gpu/cuda_launch
cp "$oracle" .gpu/oracle
cp target/guests/wasm32-wasip2/release/*.wasm .gpu/guests/
strip .gpu/tensor-wasm .gpu/e2e .gpu/cuda_launch .gpu/oracle
# A device call carries 64 MiB in all: the two large binaries travel gzipped
# (the GPU scripts unpack them).
gzip -9 .gpu/tensor-wasm .gpu/e2e
# The libFuzzer binary (scripts/gpu-fuzz.sh), when fuzz/run.sh built it.
fuzz=target/fuzz/$(rustc -vV | sed -n 's/^host: //p')/release/fuzz
# Left out unless FUZZ=1 (with it .gpu is over one call's 64 MiB: carry it
# for scripts/gpu-fuzz.sh alone).
if [ -n "${FUZZ:-}" ] && [ -x "$fuzz" ]; then cp "$fuzz" .gpu/fuzz && strip .gpu/fuzz; fi
du -sh .gpu
