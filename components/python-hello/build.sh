#!/usr/bin/env bash
# Builds components/python-hello with a second toolchain: componentize-py
# (from PyPI, pinned), into the component file given as $1.
#
#   bash components/python-hello/build.sh OUT.wasm
#
# The toolchain is installed once into a virtual environment
# ($TW_PYTHON_TOOLS, default target/componentize-py); python3 with venv comes
# from Debian when missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$(realpath -m "$1")"
tools="${TW_PYTHON_TOOLS:-$root/target/componentize-py}"
version=0.25.1

if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
fi
if ! "$tools/bin/componentize-py" --version 2>/dev/null | grep -q "$version"; then
  rm -rf "$tools"
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q --disable-pip-version-check "componentize-py==$version"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/wit"
cp "$here/wit/world.wit" "$work/wit/"
cp -r "$root/wit/deps" "$work/wit/deps"
cp "$here/app.py" "$work/"
cd "$work"
"$tools/bin/componentize-py" -q -d wit -w app componentize app -o "$out"
