#!/usr/bin/env bash
# Push/pull throughput through a local OCI registry (docs/PERFORMANCE.md,
# "Push and pull through a local OCI registry"): `tensor-wasm push --to
# oci://` and `tensor-wasm pull oci://` of a SIZE-MiB artifact vs curl's
# plain blob upload (POST, then one PUT ?digest=) and download (GET) of the
# same bytes, against Debian's docker-registry on 127.0.0.1; medians of
# ROUNDS, fresh random bytes each round.
#   bash benches/registry/run.sh [ROUNDS] [SIZE_MIB]
set -euo pipefail
rounds=${1:-5}
mib=${2:-64}
cd "$(dirname "$0")/../.."
bin=${TENSOR_WASM:-target/release/tensor-wasm}
[ -x "$bin" ] || cargo build --release --bin tensor-wasm
reg=$(command -v docker-registry || echo /usr/bin/docker-registry)
[ -x "$reg" ] || { echo "docker-registry is missing (apt-get install docker-registry)"; exit 2; }
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/storage
http:
  addr: 127.0.0.1:$port
YML
"$reg" serve "$work/registry.yml" >/dev/null 2>&1 &
regpid=$!
trap 'kill $regpid 2>/dev/null; rm -rf "$work"' EXIT
until curl -sf "http://127.0.0.1:$port/v2/" >/dev/null; do sleep 0.1; done
url=http://127.0.0.1:$port/v2/bench/curl
now() { date +%s.%N; }
: > "$work/times"
for i in $(seq 1 "$rounds"); do
  head -c $((mib << 20)) /dev/urandom > "$work/blob"
  t0=$(now)
  "$bin" push "$work/blob" --kind model --name "bench/blob:$i" --data-dir "$work/data-push" \
    --to "oci://127.0.0.1:$port/bench/blob:$i" >/dev/null
  t1=$(now)
  "$bin" pull "oci://127.0.0.1:$port/bench/blob:$i" --data-dir "$work/data-pull-$i" >/dev/null
  t2=$(now)
  # curl: the same bytes as a plain blob (a fresh digest: one byte changed).
  printf 'x' | dd of="$work/blob" bs=1 seek=0 conv=notrunc 2>/dev/null
  t3=$(now)
  digest=sha256:$(openssl dgst -sha256 -r "$work/blob" | cut -d' ' -f1)
  loc=$(curl -sf -D - -o /dev/null -X POST "$url/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  case $loc in http*) ;; *) loc=http://127.0.0.1:$port$loc ;; esac
  sep='?'; case $loc in *\?*) sep='&' ;; esac
  curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$work/blob" \
    "$loc${sep}digest=$digest" -o /dev/null
  t4=$(now)
  curl -sf "$url/blobs/$digest" -o "$work/got"
  [ "sha256:$(openssl dgst -sha256 -r "$work/got" | cut -d' ' -f1)" = "$digest" ] \
    || { echo "curl download does not match its digest"; exit 1; }
  t5=$(now)
  rm -rf "$work/data-pull-$i"
  echo "$t0 $t1 $t2 $t3 $t4 $t5" >> "$work/times"
done
python3 - "$work/times" "$mib" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
mib = int(sys.argv[2])
med = lambda k: statistics.median(r[k + 1] - r[k] for r in rows)
push, pull, cput, cget = med(0), med(1), med(3), med(4)
print(f"| | tensor-wasm | curl | ratio (curl time / ours) |")
print(f"|---|---|---|---|")
print(f"| push {mib} MiB | {push:.2f} s ({mib/push:.0f} MiB/s) | {cput:.2f} s ({mib/cput:.0f} MiB/s) | {cput/push:.2f}x |")
print(f"| pull {mib} MiB | {pull:.2f} s ({mib/pull:.0f} MiB/s) | {cget:.2f} s ({mib/cget:.0f} MiB/s) | {cget/pull:.2f}x |")
PY
