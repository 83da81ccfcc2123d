#!/usr/bin/env bash
# The OpenAI API's GPU check and benchmark, run on the lent GPU machine from
# the repository root once scripts/gpu-pack-openai.sh's .gpu/ and every
# .xfer/part-* chunk are there. Builds nothing. Runs:
#   1. the models folder reassembled from the chunks (digests checked);
#   2. benches/openai/bench.py on --device cuda: embeddings vs the numpy
#      float64 reference (cosine) and greedy generation vs the reference
#      (token for token), then embeddings/s at batch 1/32/128 and generation
#      (time to first token, decode tokens/s) vs sentence-transformers and
#      transformers on PyTorch, same GPU;
#   3. the same on --device cpu vs PyTorch on this machine's CPU
#      (DEVICES="cuda" skips it).
# BENCH=concurrency runs instead, on the GPU: the wasi:tensor and
# wasi:tensor-fused reference checks (e2e `tensor_ops`), bench.py's
# correctness checks and single-stream figures with the host's batchers
# (--batched, no peer), then benches/openai/concurrency.py (N concurrent
# clients, batched vs unbatched vs PyTorch batching the same work; with
# .gpu/baseline-smollm.wasm also that generation model, as "baseline";
# CONCURRENCY_ARGS are passed on, e.g. "--no-unbatched"), then
# benches/openai/steps.py (a generation step's time split from the host's
# metrics) for the generation model, the baseline one and the baseline host
# (.gpu/old/tensor-wasm), when carried, STEPS_ROUNDS (1) rounds of each,
# interleaved; BENCH=steps runs only that (CHECKS=1: the reference checks
# before it).
# BENCH=ab runs instead, on the GPU: single-stream figures of the batched
# world (bench.py --batched, no peer) for .gpu/tensor-wasm and a baseline
# host build at .gpu/old/tensor-wasm, alternating, ROUNDS (6) rounds each.
# Logs go to $OUT; the tables are printed last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-openai}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
G=$PWD/.gpu
# gpu-pack.sh gzips the large binaries to fit one call's 64 MiB.
find "$G" -name "*.gz" -exec gunzip -f {} + 2>/dev/null; chmod -R u+x "$G" 2>/dev/null
[ -x "$G/tensor-wasm" ] || { echo "no .gpu/: run scripts/gpu-pack-openai.sh first and carry .gpu"; exit 2; }
# Each device call replaces .xfer/ with what it carries, so the earlier calls
# copied their chunk to /tmp/xfer (kept while the machine stays warm):
#   carry [".xfer/part-00"], command "mkdir -p /tmp/xfer && cp .xfer/part-* /tmp/xfer/", ...
mkdir -p .xfer && for f in /tmp/xfer/part-*; do [ -e "$f" ] && [ ! -e ".xfer/${f##*/}" ] && cp "$f" .xfer/; done
(cd .xfer && sha256sum -c --quiet SHA256SUMS) || { echo "model chunks missing or damaged: $(ls .xfer)"; exit 2; }
models=/tmp/tw-models
rm -rf "$models" && mkdir -p "$models"
cat .xfer/part-* | tar -C "$models" -xf - || exit 2
python3 -m pip install -q --no-index --no-deps --target /tmp/site "$G"/whl/*.whl && export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"
refs=(--reference-embeddings "$G/ref/embeddings.json" --sentences "$G/ref/sentences.json"
      --reference-generation "$G/ref/generation.json" --prompts "$G/ref/prompts.json")
# benches/openai/steps.py for the generation model and, when carried, the
# baseline model and the baseline host.
steps() {
  for r in $(seq 1 "${STEPS_ROUNDS:-1}"); do
    for side in new baseline old-host; do
      gen=(); bin=$G/tensor-wasm
      case $side in
        baseline) [ -f "$G/baseline-smollm.wasm" ] || continue; gen=(--generator "$G/baseline-smollm.wasm") ;;
        old-host) [ -x "$G/old/tensor-wasm" ] || continue; bin=$G/old/tensor-wasm ;;
      esac
      PYTHONUNBUFFERED=1 timeout 120 python3 benches/openai/steps.py --tensor-wasm "$bin" --models "$models" \
        --device cuda --clients "${CLIENTS:-1,8,32,64}" "${gen[@]}" > "$OUT/steps-$side-$r.log" 2>&1
      echo "== where a step's time goes: $side, round $r (rc $?)"
      grep -E "Error|error|Traceback" "$OUT/steps-$side-$r.log" | head -4
      sed -n '/^| N /,$p' "$OUT/steps-$side-$r.log"
    done
  done
}
# The reference checks first: e2e `tensor_ops` on the GPU (outputs
# NaN-poisoned), then bench.py's single-stream run of the batched world
# against the numpy references (cosine, greedy token for token).
checks() {
  TENSOR_WASM_TEST_BIN=$G/tensor-wasm TENSOR_WASM_TEST_GUESTS=$G/guests TENSOR_WASM_TEST_ROOT=$PWD \
    TENSOR_WASM_TEST_TMP=/tmp/tw-tests TENSOR_WASM_TEST_DEVICE=cuda TENSOR_WASM_GPU_POISON=1 \
    timeout 120 "$G/e2e" tensor_ops --test-threads 3 > "$OUT/e2e-tensor-ops.log" 2>&1
  echo "== e2e tensor_ops on the GPU (rc $?)"
  grep -E "^test |panicked|test result" "$OUT/e2e-tensor-ops.log" | tail -8
  PYTHONUNBUFFERED=1 timeout 120 python3 benches/openai/bench.py --tensor-wasm "$G/tensor-wasm" --models "$models" \
    --device cuda --rounds 1 --no-peer --batched --reuse 1000 "${refs[@]}" > "$OUT/bench-batched.log" 2>&1
  echo "== batched, single stream (rc $?)"
  grep -E "correctness|differs|Error|error" "$OUT/bench-batched.log" | head -8
  sed -n '/^| what /,$p' "$OUT/bench-batched.log"
}
if [ "${BENCH:-}" = steps ]; then
  [ -n "${CHECKS:-}" ] && checks
  steps
  exit 0
fi
if [ "${BENCH:-}" = ab ]; then
  for r in $(seq 1 "${ROUNDS:-6}"); do
    for side in old new; do
      bin=$G/tensor-wasm; [ $side = old ] && bin=$G/old/tensor-wasm
      PYTHONUNBUFFERED=1 timeout 100 python3 benches/openai/bench.py --tensor-wasm "$bin" --models "$models" \
        --device cuda --rounds 1 --no-peer --batched --reuse 1000 > "$OUT/ab-$side-$r.log" 2>&1
      echo "$side $r $(grep '^round 1' "$OUT/ab-$side-$r.log")"
    done
  done
  exit 0
fi
if [ "${BENCH:-}" = concurrency ]; then
  checks
  baseline=()
  [ -f "$G/baseline-smollm.wasm" ] && baseline=(--baseline-generator "$G/baseline-smollm.wasm")
  PYTHONUNBUFFERED=1 timeout "${BENCH_TIMEOUT:-420}" python3 benches/openai/concurrency.py --tensor-wasm "$G/tensor-wasm" \
    --models "$models" --device cuda --rounds "${ROUNDS:-2}" --seconds "${SECONDS_EACH:-3}" \
    --clients "${CLIENTS:-1,8,32,64}" "${baseline[@]}" ${CONCURRENCY_ARGS:-} > "$OUT/concurrency.log" 2>&1
  echo "== concurrency (rc $?)"
  grep -E "Error|error|Traceback" "$OUT/concurrency.log" | head -8
  sed -n '/^device /,$p' "$OUT/concurrency.log"
  steps
  exit 0
fi
for dev in ${DEVICES:-cuda cpu}; do
  PYTHONUNBUFFERED=1 timeout "${BENCH_TIMEOUT:-270}" python3 benches/openai/bench.py --tensor-wasm "$G/tensor-wasm" \
    --models "$models" --device "$dev" --rounds "${ROUNDS:-5}" --profile "${refs[@]}" > "$OUT/bench-$dev.log" 2>&1
  echo "== $dev (rc $?)"
  grep -E "correctness|differs|Error|error" "$OUT/bench-$dev.log" | head -8
done
echo
echo "== summary"
echo "device: $(cat "$OUT/device.txt")"
for dev in ${DEVICES:-cuda cpu}; do echo "-- $dev"; sed -n '/^| request /,$p' "$OUT/bench-$dev.log"; done
