#!/usr/bin/env bash
# Two replicas of one server behind HAProxy, sharing their keyvalue buckets
# through Redis, all on 127.0.0.1 — the layout of docs/SCALING.md, to copy.
#
#   bash scripts/replicas.sh FILE.toml [PORT]
#
# FILE.toml is a deployment file whose deployments keep their buckets in
# Redis (`[deployment.keyvalue] backend = "redis://127.0.0.1:6379/0"`;
# REDIS_PORT changes the port). Clients use http://127.0.0.1:PORT (default
# 8080); the replicas listen on PORT+1 and PORT+2, their admin listeners
# on PORT+1001 and PORT+1002 (/readyz is HAProxy's health check). State goes
# to target/replicas/. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
file=${1:?usage: bash scripts/replicas.sh FILE.toml [PORT]}
port=${2:-8080}
redis_port=${REDIS_PORT:-6379}
bin=${TENSOR_WASM:-target/release/tensor-wasm}
work=target/replicas
daemon() { for d in /usr/bin /usr/sbin; do [ -x "$d/$1" ] && { echo "$d/$1"; return; }; done; echo "$1"; }
for need in redis-server haproxy; do
  command -v "$(daemon $need)" >/dev/null \
    || { echo "$need is missing: apt-get install $need (bash scripts/test.sh installs both)"; exit 1; }
done
[ -x "$bin" ] || { echo "$bin is missing: cargo build --release"; exit 1; }
mkdir -p "$work/redis"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT INT TERM

# Redis, every acknowledged write fsynced to its append-only file.
"$(daemon redis-server)" --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" \
  --save "" --appendonly yes --appendfsync always > "$work/redis.log" 2>&1 &
pids+=($!)

# One audit-key for both: they extend one audit chain in Redis
# (docs/GATEWAY.md, "Audit records"); made once, kept across runs.
mkdir -p "$work/data-1" "$work/data-2"
if [ ! -s "$work/data-1/audit-key" ]; then
  (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$work/data-1/audit-key")
fi
install -m 600 "$work/data-1/audit-key" "$work/data-2/audit-key"

backends=""
for n in 1 2; do
  "$bin" serve "$file" --listen "127.0.0.1:$((port + n))" \
    --admin-listen "127.0.0.1:$((port + 1000 + n))" \
    --data-dir "$work/data-$n" > "$work/replica-$n.log" 2>&1 &
  pids+=($!)
  backends+="  server r$n 127.0.0.1:$((port + n)) check port $((port + 1000 + n)) inter 500ms fall 2 rise 1"$'\n'
done

cat > "$work/haproxy.cfg" <<EOF
global
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  retries 3
  option redispatch
frontend tensor_wasm
  bind 127.0.0.1:$port
  default_backend replicas
backend replicas
  balance roundrobin
  option httpchk GET /readyz
$backends
EOF
"$(daemon haproxy)" -f "$work/haproxy.cfg" -db > "$work/haproxy.log" 2>&1 &
pids+=($!)

echo "serving http://127.0.0.1:$port (replicas on $((port + 1)) and $((port + 2)), Redis on $redis_port); logs in $work/"
wait -n "${pids[@]}"
echo "a process stopped; see $work/*.log"
