#!/usr/bin/env bash
# The differential oracle on the lent GPU machine (after scripts/gpu-pack.sh
# put the oracle test binary in .gpu/): tests/oracle.rs's generated cases run
# on the CUDA backend and the CPU backend, each compared with the float64
# reference and the GPU with the CPU. Builds nothing; logs to $OUT; a short
# table last. CASES (default 400) cases per property.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-oracle}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
G=$PWD/.gpu
# gpu-pack.sh gzips the large binaries to fit one call's 64 MiB.
find "$G" -name "*.gz" -exec gunzip -f {} + 2>/dev/null; chmod -R u+x "$G" 2>/dev/null
[ -x "$G/oracle" ] || { echo "no .gpu/oracle: run scripts/gpu-pack.sh first and carry .gpu"; exit 2; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt"
start=$(date +%s)
TENSOR_WASM_ORACLE_DEVICE=cuda PROPTEST_CASES=${CASES:-400} "$G/oracle" --test-threads 4 \
  > "$OUT/oracle.log" 2>&1
rc=$?
echo
echo "| property | cuda vs f64 reference and vs cpu |"
echo "|---|---|"
grep -E "^test " "$OUT/oracle.log" | sed -E 's/^test ([a-z0-9_]+) \.\.\. (.*)/| \1 | \2 |/'
grep -E "Test failed|minimal failing input" -A1 "$OUT/oracle.log" | head -20
echo "cases per property: ${CASES:-400}; $(( $(date +%s) - start )) s; rc=$rc"
exit $rc
