#!/usr/bin/env bash
# Per-op issue cost on the lent GPU, A/B: tensor-probe's `/bench/ops` (the
# kinds of op a batched decode step issues, µs per op issued back to back)
# on .gpu/tensor-wasm and on a baseline binary, alternating, ROUNDS rounds,
# at 1 and 64 rows. Builds nothing; run from the repository root after
# scripts/gpu-pack.sh, with the baseline at .gpu/old/tensor-wasm.
# Logs go to $OUT; a table of medians is printed last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-ops}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
G=$PWD/.gpu
# gpu-pack.sh gzips the large binaries to fit one call's 64 MiB.
find "$G" -name "*.gz" -exec gunzip -f {} + 2>/dev/null; chmod -R u+x "$G" 2>/dev/null
[ -x "$G/tensor-wasm" ] && [ -x "$G/old/tensor-wasm" ] || { echo "need .gpu/tensor-wasm and .gpu/old/tensor-wasm"; exit 2; }
ROUNDS=${ROUNDS:-5}
for r in $(seq 1 "$ROUNDS"); do
  for side in new old; do
    bin=$G/tensor-wasm; [ $side = old ] && bin=$G/old/tensor-wasm
    port=$((20000 + RANDOM % 10000))
    "$bin" serve "$G/guests/tensor_probe.wasm" --device cuda --listen 127.0.0.1:$port \
      --admin-listen off --cache-dir /tmp/tw-ops-cache > "$OUT/server-$side-$r.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/cuda" && break; sleep 0.1; done
    for rows in 1 64; do
      curl -s "http://127.0.0.1:$port/bench/ops?reps=3000&rows=$rows" > "$OUT/ops-$side-$rows-$r.json"
    done
    kill $pid; wait $pid 2>/dev/null
  done
done
python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
print("| op | rows | issue µs new | issue µs old | new / old |")
print("|---|---|---|---|---|")
for rows in (1, 64):
    runs = {s: [json.load(open(f"{out}/ops-{s}-{rows}-{r}.json"))["ops"] for r in range(1, rounds + 1)]
            for s in ("new", "old")}
    for op in runs["new"][0]:
        med = {s: statistics.median(x[op]["issue_us"] for x in runs[s]) for s in runs}
        ratio = statistics.median(a[op]["issue_us"] / b[op]["issue_us"] for a, b in zip(runs["new"], runs["old"]))
        print(f"| {op} | {rows} | {med['new']:.2f} | {med['old']:.2f} | {ratio:.2f}x |")
PY
