#!/usr/bin/env bash
# Coverage-guided fuzzing on the stable toolchain: libFuzzer (from the
# libfuzzer-sys crate) drives the targets in fuzz/src/lib.rs, built with
# LLVM's sanitizer-coverage passes through flags stable rustc accepts
# (-Cpasses=sancov-module and -Cllvm-args), plus debug assertions and
# overflow checks so silent wrap-arounds become findings. No AddressSanitizer
# (that needs nightly's -Zsanitizer); the code under test is safe Rust but
# for the few `unsafe` blocks the unit tests cover.
#
#   bash fuzz/run.sh build                    # -> target/fuzz/.../release/fuzz
#   bash fuzz/run.sh run NAME SECONDS [JOBS]  # fuzz NAME for SECONDS with JOBS workers
#   bash fuzz/run.sh all SECONDS [JOBS]       # every target in turn
#
# New inputs go to target/fuzz/corpus/NAME (seeded from fuzz/corpus/NAME);
# crashes to target/fuzz/artifacts/NAME/. Replay one with
# `FUZZ_TARGET=NAME target/fuzz/x86_64-unknown-linux-gnu/release/fuzz FILE`.
# FUZZ_BIN overrides the binary (a copy carried to another machine).
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV 2>/dev/null | sed -n 's/^host: //p' || true)
bin=${FUZZ_BIN:-target/fuzz/${host:-x86_64-unknown-linux-gnu}/release/fuzz}
work=${FUZZ_WORK:-target/fuzz}

build() {
  RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks --cfg fuzzing" \
    cargo build --release -p tensor-wasm-fuzz --features libfuzzer --bin fuzz \
      --target "$host" --target-dir target/fuzz
  echo "built $bin"
}

run() {
  local name=$1 seconds=$2 jobs=${3:-1}
  mkdir -p "$work/corpus/$name" "$work/artifacts/$name"
  local flags=(-max_total_time="$seconds" -artifact_prefix="$work/artifacts/$name/" -max_len=65536 -timeout=10 -rss_limit_mb=4096 -print_final_stats=1)
  if [ "$jobs" -gt 1 ]; then
    flags+=(-fork="$jobs" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  fi
  FUZZ_TARGET=$name "$bin" "${flags[@]}" "$work/corpus/$name" "fuzz/corpus/$name"
}

case "${1:-}" in
  build) build ;;
  run) run "$2" "$3" "${4:-1}" ;;
  all)
    for name in $(ls fuzz/corpus); do
      echo "== $name"
      run "$name" "$2" "${3:-1}"
    done ;;
  *) sed -n '2,19p' "$0"; exit 2 ;;
esac
