#!/usr/bin/env bash
# Prepares (here, where Rust, PyPI and the models are) what
# scripts/gpu-openai.sh runs on the lent GPU machine, which has no network:
#   .gpu/          the stripped host binary, the numpy references computed
#                  here (embeddings, greedy generation), the `gguf` wheel
#                  (transformers reads the GGUF with it)
#   .xfer/part-*   the models folder as a tar split into chunks of at most
#                  CHUNK_MB (default 60) MiB: one device call carries at most
#                  64 MiB, so they travel in consecutive calls to a warm machine
#
#   bash scripts/gpu-pack-openai.sh MODELS_DIR PYTHON [BASELINE_SMOLLM_WASM]
# PYTHON has numpy, gguf, tokenizers and jinja2 (tests/openai/setup.sh makes one).
# BASELINE_SMOLLM_WASM (optional): an earlier smollm build, carried as
# .gpu/baseline-smollm.wasm for BENCH=concurrency's A/B of the generation model.
# BASELINE_HOST=PATH (optional): an earlier host build (stripped, may be
# gzipped), carried as .gpu/old/tensor-wasm for BENCH=ab and for steps.py's
# A/B of the host.
# .gpu/ also holds what scripts/gpu-pack.sh packs (the e2e test binary and
# the guests), for the wasi:tensor reference checks on the GPU before the
# benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
models="$1"
python="$2"
for p in /.gpu/ /.xfer/; do
  grep -qx "$p" .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo "$p" >> .git/info/exclude; }
done
# The host, the e2e binary and the guests, stripped (what gpu-check.sh runs).
bash scripts/gpu-pack.sh
rm -rf .gpu/ref .gpu/whl .xfer && mkdir -p .gpu/ref .xfer
[ -n "${3:-}" ] && cp "$3" .gpu/baseline-smollm.wasm
if [ -n "${BASELINE_HOST:-}" ]; then
  mkdir -p .gpu/old
  case "$BASELINE_HOST" in
    *.gz) cp "$BASELINE_HOST" .gpu/old/tensor-wasm.gz ;;
    *) cp "$BASELINE_HOST" .gpu/old/tensor-wasm && gzip -9 .gpu/old/tensor-wasm ;;
  esac
fi
"$python" -m pip download -q --no-deps gguf==0.19.0 -d .gpu/whl
cat > .gpu/ref/sentences.json <<'EOF'
["Hello world", "The quick brown fox jumps over the lazy dog.", "Café naïve façade — résumé!",
 "TensorWasm runs GPU work as WebAssembly components.", "東京は日本の首都です。", "a",
 "  Multiple   spaces,\ttabs\nand newlines?! (parentheses) [brackets] 3.14159 $100 50% email@example.com",
 "Emoji 🙂 and symbols ∑∫√ ≠ ≤"]
EOF
cat > .gpu/ref/prompts.json <<'EOF'
[{"messages": [{"role": "user", "content": "What is the capital of France?"}]},
 {"messages": [{"role": "system", "content": "You are a terse assistant."}, {"role": "user", "content": "Name three primary colors."}]},
 {"messages": [{"role": "user", "content": "Write a haiku about GPUs."}]},
 {"text": "The quick brown fox"},
 {"text": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"},
 {"text": "In 1969, the first humans landed on"},
 {"text": "Water boils at a temperature of"},
 {"text": "Here is a list of the planets in the solar system:"}]
EOF
"$python" scripts/reference_embeddings.py "$models/all-minilm-l6-v2" .gpu/ref/sentences.json > .gpu/ref/embeddings.json
"$python" scripts/reference_generation.py "$models/smollm2-135m-instruct/model.gguf" .gpu/ref/prompts.json 32 > .gpu/ref/generation.json
tar -C "$models" -cf - all-minilm-l6-v2 smollm2-135m-instruct | split -b "${CHUNK_MB:-60}M" -d - .xfer/part-
(cd .xfer && sha256sum part-* > SHA256SUMS)
du -sh .gpu .xfer/part-*
