#!/usr/bin/env bash
# Re-signs the built-in vetted kernel set (docs/KERNELS.md): for every
# kernels/vetted/NAME.cu, writes kernels/vetted/NAME.record.json — its
# registry record (name tensorwasm/NAME:VERSION, kind kernel, digest,
# signature) signed with KEY — and copies KEY.pub to
# kernels/vetted/tensorwasm-kernels.pub. Run after changing a built-in
# module or rotating the key; rebuild afterwards.
#   bash scripts/sign-builtin-kernels.sh KEY [VERSION]
set -euo pipefail
key=${1:?usage: sign-builtin-kernels.sh SECRET-KEY [VERSION]}
version=${2:-0.1.0}
cd "$(dirname "$0")/.."
bin=${TENSOR_WASM:-target/release/tensor-wasm}
[ -x "$bin" ] || cargo build --release --bin tensor-wasm
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
cp "$key.pub" kernels/vetted/tensorwasm-kernels.pub
for src in kernels/vetted/*.cu; do
  name=$(basename "$src" .cu)
  "$bin" kernel publish "$src" --name "tensorwasm/$name:$version" --sign "$key" --data-dir "$data"
  python3 - "$data/registry/index.json" "tensorwasm/$name:$version" \
    > "kernels/vetted/$name.record.json" <<'PY'
import json, sys
print(json.dumps(json.load(open(sys.argv[1]))[sys.argv[2]], indent=2))
PY
done
echo "signed $(ls kernels/vetted/*.cu | wc -l) module(s) with key $(cut -d' ' -f1 "$key.pub")"
