#!/usr/bin/env bash
# The serving benchmarks (benches/traces, benches/gateway, benches/http) on the
# lent GPU machine's CPUs, where the server, the load generator and the trace
# collector each get cores of their own (on the 2-vCPU development VM all three
# share two cores). Builds nothing: run `bash scripts/gpu-serving-pack.sh` here
# first, then on the lent machine (carry [".gpu-serving"]):
#
#   bash scripts/gpu-serving.sh traces,gateway   # ~7 min
#   bash scripts/gpu-serving.sh http             # ~5 min
#
# HTTP_ROUNDS, HTTP_MODES (reuse,fresh) and HTTP_ARGS (more flags for
# benches/http/bench.py, e.g. --also-no-busy-poll) shape the http bench;
# TRACES_ROUNDS and TRACES_ARGS (flags for every traced server, e.g.
# "--busy-poll off") the traces bench. Baseline builds packed with
# BASELINE_BIN (gpu-serving-pack.sh) join the http bench's rounds.
#
# Every server runs on two physical cores (like the development VM), wrk on
# two others, the collector on a fifth; hyperthread siblings stay idle. Logs
# and each bench's table go to $OUT (or /tmp/gpu-serving).
set -euo pipefail
cd "$(dirname "$0")/.."
g=$PWD/.gpu-serving
out=${OUT:-/tmp/gpu-serving}
mkdir -p "$out"
# The packed binaries (gpu-serving-pack.sh), unpacked next to their .xz.
for packed in "$g"/*.xz; do
  [ -x "${packed%.xz}" ] || python3 -c 'import lzma, shutil, sys
shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$packed" "${packed%.xz}"
  chmod +x "${packed%.xz}"
done
baseline=()
for bin in "$g"/tensor-wasm-baseline[0-9]; do
  [ ! -x "$bin" ] || baseline+=(--baseline "$bin")
done
chmod +x "$g"/bin/*
export PATH="$g/bin:$PATH"

# One CPU per physical core, in order; siblings left out.
mapfile -t core_cpus < <(python3 - <<'EOF'
import glob, os
seen, cpus = set(), []
for path in sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*"), key=lambda p: int(p.rsplit("cpu", 1)[1])):
    n = int(path.rsplit("cpu", 1)[1])
    if n not in os.sched_getaffinity(0):
        continue
    try:
        key = (open(f"{path}/topology/physical_package_id").read().strip(),
               open(f"{path}/topology/core_id").read().strip())
    except OSError:
        key = (None, n)
    if key not in seen:
        seen.add(key)
        cpus.append(n)
print("\n".join(map(str, cpus)))
EOF
)
if [ "${#core_cpus[@]}" -lt 5 ]; then
  echo "gpu-serving: needs 5 physical cores, found ${#core_cpus[@]}" >&2
  exit 1
fi
export BENCH_SERVER_CPUS="${core_cpus[0]},${core_cpus[1]}"
export BENCH_LOAD_CPUS="${core_cpus[2]},${core_cpus[3]}"
export BENCH_COLLECTOR_CPUS="${core_cpus[4]}"
{ nproc; lscpu | grep -E "Model name|Thread|Core|Socket|MHz"; uname -r
  echo "server CPUs $BENCH_SERVER_CPUS, wrk $BENCH_LOAD_CPUS, collector $BENCH_COLLECTOR_CPUS"
  wrk --version 2>&1 | head -1 || true; } | tee "$out/machine.txt"

for bench in ${1//,/ }; do
  case "$bench" in
    traces)
      python3 benches/traces/bench.py --tensor-wasm "$g/tensor-wasm" --hello "$g/hello.wasm" \
        --world "$PWD/worlds/gateway.wac" --rounds "${TRACES_ROUNDS:-9}" --seconds 8 --concurrency 16 \
        ${TRACES_ARGS:+--server-args "$TRACES_ARGS"} ;;
    gateway)
      python3 benches/gateway/bench.py --tensor-wasm "$g/tensor-wasm" --hello "$g/hello.wasm" \
        --world "$PWD/worlds/gateway.wac" --noop "$g/noop_middleware.wasm" --floor "$g/floor_middleware.wasm" \
        --rounds "${GATEWAY_ROUNDS:-3}" --seconds 6 --concurrency 16,64 --reuse 1000 ;;
    http)
      python3 benches/http/bench.py --tensor-wasm "$g/tensor-wasm" --wasmtime "$g/wasmtime" \
        --component "$g/hello.wasm" --rounds "${HTTP_ROUNDS:-5}" --seconds 6 --modes "${HTTP_MODES:-reuse}" \
        "${baseline[@]}" ${HTTP_ARGS:-} ;;
    *) echo "gpu-serving: unknown bench '$bench' (traces, gateway, http)" >&2; exit 2 ;;
  esac 2>&1 | tee "$out/$bench.log"
done
for bench in ${1//,/ }; do
  echo "== $bench"; sed -n '/^Medians/,$p' "$out/$bench.log"
done
