#!/usr/bin/env bash
# The GPU proof, run on the lent GPU machine from the repository root after
# scripts/gpu-pack.sh filled .gpu/ here. Builds nothing. Runs:
#   1. start-up on --device cuda (device line, NVRTC kernels compiled);
#   2. every wasi:tensor and wasi:cuda e2e test (each op vs an f64
#      reference, edge shapes, bad arguments, quotas, hostile guests; guest
#      kernel launches and their misuse) with every host on the GPU and
#      device outputs poisoned with NaN before each op writes them;
#   3. the GPU placement tests on `--device cuda:all` (gpus::: placement
#      by quota, per-GPU metrics, a faulted context contained; and
#      live::undeploying…: a tenant's reservation returned on undeploy);
#   4. benches/gpu/bench.py (skipped with SKIP_BENCH=1) (matmul, block chain and copy bandwidth vs
#      PyTorch; wasi:cuda launch overhead vs native cudarc).
# Logs go to $OUT; a short table is printed last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
G=$PWD/.gpu
# gpu-pack.sh gzips the large binaries to fit one call's 64 MiB.
find "$G" -name "*.gz" -exec gunzip -f {} + 2>/dev/null; chmod -R u+x "$G" 2>/dev/null
[ -x "$G/tensor-wasm" ] || { echo "no .gpu/: run scripts/gpu-pack.sh first and carry .gpu"; exit 2; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"

"$G/tensor-wasm" serve "$G/guests/hello.wasm" --device cuda --listen 127.0.0.1:0 \
  --admin-listen off --cache-dir /tmp/tw-cache > "$OUT/startup.log" 2>&1 &
pid=$!; sleep 8; kill $pid 2>/dev/null; wait $pid 2>/dev/null
startup=$(grep -o 'tensor backend: .*' "$OUT/startup.log" | head -1)
echo "$startup"

export TENSOR_WASM_TEST_BIN=$G/tensor-wasm TENSOR_WASM_TEST_GUESTS=$G/guests \
  TENSOR_WASM_TEST_ROOT=$PWD TENSOR_WASM_TEST_TMP=/tmp/tw-tests \
  TENSOR_WASM_TEST_DEVICE=cuda TENSOR_WASM_GPU_POISON=1
"$G/e2e" tensor_ cuda_ --skip batching:: --test-threads 4 > "$OUT/e2e-gpu.log" 2>&1
e2e_rc=$?
grep -E "^test |panicked|test result" "$OUT/e2e-gpu.log" | tail -40
unset TENSOR_WASM_GPU_POISON

TENSOR_WASM_TEST_DEVICE=cuda:all "$G/e2e" gpus:: live::undeploying --test-threads 1 --nocapture > "$OUT/e2e-gpus.log" 2>&1
gpus_rc=$?
grep -E "^test |panicked|test result" "$OUT/e2e-gpus.log" | tail -10

if [ -z "${SKIP_BENCH:-}" ]; then
  PYTHONUNBUFFERED=1 python3 benches/gpu/bench.py --tensor-wasm "$G/tensor-wasm" \
    --component "$G/guests/tensor_probe.wasm" --native-launch "$G/cuda_launch" \
    > "$OUT/bench.log" 2> "$OUT/bench-server.log"
else
  echo "bench skipped (SKIP_BENCH)" > "$OUT/bench.log"
fi

echo
echo "== summary"
echo "device:   $(cat "$OUT/device.txt")"
echo "startup:  ${startup:-FAILED (see startup.log)}"
echo "e2e:      $(grep 'test result' "$OUT/e2e-gpu.log" | tail -1) (rc $e2e_rc)"
echo "gpus:     $(grep 'test result' "$OUT/e2e-gpus.log" | tail -1) (rc $gpus_rc)"
cat "$OUT/bench.log"
