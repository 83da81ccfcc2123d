#!/usr/bin/env bash
# Runs TensorWasm's whole test suite on a machine with only rustup/cargo.
# The pinned toolchain (rust-toolchain.toml) and the wasm32-wasip2 target are
# installed here if missing; the host's build script builds the guest
# components from components/ before the tests run against them.
set -euo pipefail
cd "$(dirname "$0")/.."

toolchain=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
if ! rustup run "$toolchain" cargo fmt --version >/dev/null 2>&1 \
   || ! rustup run "$toolchain" cargo clippy --version >/dev/null 2>&1; then
  rustup toolchain install "$toolchain" --profile minimal --component rustfmt,clippy
fi
if ! rustup target list --toolchain "$toolchain" --installed | grep -qx wasm32-wasip2; then
  rustup target add --toolchain "$toolchain" wasm32-wasip2
fi

# A real OCI registry for the registry tests (distribution 2.8, from Debian).
if ! command -v docker-registry >/dev/null && [ ! -x /usr/bin/docker-registry ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq docker-registry >/dev/null; } \
    || echo "warning: could not install docker-registry; the OCI tests will fail saying so"
fi

# curl, the TLS tests' client (most machines have it already).
if ! command -v curl >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq curl >/dev/null; } \
    || echo "warning: could not install curl; the TLS tests will fail saying so"
fi

# A real Redis and a real load balancer (HAProxy) for the replica tests
# (from Debian). The tests start their own on free ports; the packages'
# services are stopped so they hold no port.
for pkg in redis-server:redis-server haproxy:haproxy; do
  bin=${pkg%%:*} name=${pkg#*:}
  if ! command -v "$bin" >/dev/null && [ ! -x "/usr/sbin/$bin" ] && [ ! -x "/usr/bin/$bin" ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    { $sudo apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$name" >/dev/null; } \
      || echo "warning: could not install $name; the replica tests will fail saying so"
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$name" 2>/dev/null; then
      $sudo systemctl disable --now "$name" >/dev/null 2>&1 || true
    fi
  fi
done

# A real Prometheus (and promtool) for the observability tests (from Debian).
# The tests start their own on a free port; the package's service is stopped
# so that it does not hold port 9090 (tensor-wasm's default admin port).
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  { $sudo apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
    || echo "warning: could not install prometheus; the observability tests will fail saying so"
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

echo "== format"
cargo fmt --all --check
(cd components && cargo fmt --all --check)

echo "== lint (host and guests)"
cargo clippy --release --all-targets -- -D warnings
(cd components && cargo clippy --release -- -D warnings)

echo "== supply chain (cargo deny: licenses, bans, sources; deny.toml)"
if ! cargo deny --version >/dev/null 2>&1; then
  cargo install cargo-deny --locked --version 0.20.2 --quiet
fi
cargo deny --log-level error check licenses bans sources
cargo deny --log-level error --manifest-path components/Cargo.toml check licenses bans sources
if timeout 120 cargo deny fetch >/dev/null 2>&1; then
  cargo deny --log-level error check advisories
else
  echo "advisories: skipped (the RustSec advisory database could not be fetched from here)"
fi

# NVRTC from PyPI (nvidia-cuda-nvrtc; no GPU needed): with it on the library
# path the tests compile the CUDA kernels (tensor::cuda::kernels), and
# TENSOR_WASM_REQUIRE_NVRTC makes that test fail rather than skip without it.
nvrtc=target/tmp/nvrtc-venv
if [ ! -e "$nvrtc/.nvrtc-13.5.37" ]; then
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  rm -rf "$nvrtc" && python3 -m venv "$nvrtc"
  "$nvrtc/bin/pip" install -q --disable-pip-version-check nvidia-cuda-nvrtc==13.5.37
  touch "$nvrtc/.nvrtc-13.5.37"
fi
nvrtc_lib=$(echo "$PWD/$nvrtc"/lib/python3*/site-packages/nvidia/cu13/lib)

echo "== tests (release host: guests compile 20-70x faster than under a debug host;"
echo "   the fuzz targets' smoke over their corpora is fuzz/tests/smoke.rs;"
echo "   the CUDA kernels are compiled by NVRTC, no GPU needed)"
log=$(mktemp)
LD_LIBRARY_PATH="$nvrtc_lib:${LD_LIBRARY_PATH:-}" TENSOR_WASM_REQUIRE_NVRTC=1 \
  cargo test --release 2>&1 | tee "$log"
echo "== guest crates' native tests (the wordpiece tokenizer against Hugging Face tokenizers, openai's base64, the BPE tokenizer's vocabulary checks)"
host=$(rustc -vV | sed -n 's/^host: //p')
(cd components && cargo test --release -p wordpiece -p openai -p bpe --target "$host") 2>&1 | tee -a "$log"
echo "== GPU tests: skipped (no NVIDIA GPU on this machine; GPU runs are recorded in docs/GPU-RESULTS.md)"
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "\ntests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
rm -f "$log"

