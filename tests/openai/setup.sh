#!/usr/bin/env bash
# Prepares what the OpenAI API tests need, once: the models (scripts/fetch-models.sh
# into MODELS_DIR) and a virtual environment VENV with tests/openai/requirements.txt
# (the official `openai` client, numpy and the reference's readers), from PyPI.
# REQUIREMENTS replaces that list (benches/openai/run.sh: the PyTorch peer's).
#
#   bash tests/openai/setup.sh VENV MODELS_DIR [REQUIREMENTS]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$1"
models="$2"
requirements="${3:-$here/requirements.txt}"
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
fi
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
  echo "$want" >"$stamp"
fi
bash "$root/scripts/fetch-models.sh" --models-dir "$models" >&2
