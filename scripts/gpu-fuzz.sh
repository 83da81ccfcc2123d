#!/usr/bin/env bash
# Long fuzzing campaigns on the lent machine's CPU cores (its GPU is not
# used): every target in fuzz/corpus at once for SECONDS, the libFuzzer
# binary from .gpu/fuzz (`FUZZ=1 bash scripts/gpu-pack.sh`; built by `fuzz/run.sh build`).
# EXTRA names targets that get more workers this run (to spread spare
# cores): NAME for two, NAME=N for N. New corpus entries and crashes go to
# $OUT/corpus.tgz and $OUT/artifacts.tgz; a table last.
#   bash scripts/gpu-fuzz.sh SECONDS [EXTRA...]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-fuzz}
seconds=${1:?SECONDS}; shift
export FUZZ_BIN=$PWD/.gpu/fuzz FUZZ_WORK=$OUT/fuzz
[ -x "$FUZZ_BIN" ] || { echo "no .gpu/fuzz: run fuzz/run.sh build and scripts/gpu-pack.sh"; exit 2; }
mkdir -p "$OUT/logs"
# Start from what earlier runs found (the $OUT/corpus.tgz of the last run,
# carried as .gpu/fuzz-corpus.tgz).
mkdir -p "$FUZZ_WORK"
[ -f .gpu/fuzz-corpus.tgz ] && tar xzf .gpu/fuzz-corpus.tgz -C "$FUZZ_WORK"
workers() {
  local n=1 e
  for e in "${@:2}"; do
    [ "$e" = "$1" ] && n=2
    [ "${e%%=*}" = "$1" ] && [ "$e" != "$1" ] && n=${e#*=}
  done
  echo "$n"
}
for name in $(ls fuzz/corpus); do
  jobs=$(workers "$name" "$@")
  bash fuzz/run.sh run "$name" "$seconds" "$jobs" > "$OUT/logs/$name.log" 2>&1 &
done
wait
# What this run found, to continue from next time and to replay crashes.
tar czf "$OUT/corpus.tgz" -C "$FUZZ_WORK" corpus
tar czf "$OUT/artifacts.tgz" -C "$FUZZ_WORK" artifacts
echo "| target | workers·s | execs | coverage | corpus | crashes |"
echo "|---|---|---|---|---|---|"
for name in $(ls fuzz/corpus); do
  log=$OUT/logs/$name.log
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{s+=$2} END {print s+0}')
  [ "$execs" = 0 ] && execs=$(grep -oE '#[0-9]+' "$log" | tail -1 | tr -d '#')
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}')
  corpus=$(ls "$FUZZ_WORK/corpus/$name" 2>/dev/null | wc -l)
  crashes=$(ls "$FUZZ_WORK/artifacts/$name" 2>/dev/null | wc -l)
  w=$(workers "$name" "$@")
  echo "| $name | $((w * seconds)) | ${execs:-?} | ${cov:-?} | $corpus | $crashes |"
done
