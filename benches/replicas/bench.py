"""The cost of shared state: the gateway world with its state in the server
(redb + memory) vs in Redis, one replica direct vs two behind HAProxy.

Redis (appendfsync always) and two tensor-wasm replicas start once, each
replica serving the same four deployments, told apart by Host header:
  local.test        worlds/gateway.wac, state in the replica (rate-limit
                    counters in memory; nothing audited on GET)
  redis.test        the same, every bucket in Redis (one Lua call per
                    request for the rate limit)
  local-audit.test  audit.policy = "all": one durable record per request (redb)
  redis-audit.test  the same in Redis
HAProxy balances round-robin over both replicas. wrk drives each case in
turn (order alternating per round); medians are printed, with the CPU per
request of the replicas, Redis and HAProxy from /proc.
"""

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "http"))
from bench import cpu_seconds, free_port, parse_wrk, stop, wait_ready  # noqa: E402

TOKEN = "bench-token-0123456789"
# (case, Host, through the balancer?)
CASES = [
    ("local state, 1 replica", "local.test", False),
    ("Redis state, 1 replica", "redis.test", False),
    ("local state, 2 replicas + HAProxy", "local.test", True),
    ("Redis state, 2 replicas + HAProxy", "redis.test", True),
    ("audit-all redb, 1 replica", "local-audit.test", False),
    ("audit-all Redis, 1 replica", "redis-audit.test", False),
]


def deployment_file(d, world, redis_url, reuse):
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    out = []
    for name, host, redis, audit in [("local", "local.test", False, False),
                                     ("redis", "redis.test", True, False),
                                     ("local-audit", "local-audit.test", False, True),
                                     ("redis-audit", "redis-audit.test", True, True)]:
        out.append(f'''
[[deployment]]
name = "{name}"
tenant = "bench-{name}"
world = "{world}"
route = {{ host = "{host}" }}
instances = {{ reuse = {reuse} }}
[deployment.grants.config]
"router.routes" = "GET,HEAD =/ welcome; * /hello app"
"auth.tokens" = "bench sha256:{digest} admin"
"ratelimit.default" = "1000000/1000000"
{'"audit.policy" = "all"' if audit else ''}
''')
        if redis:
            out.append(f'[deployment.keyvalue]\nbackend = "{redis_url}"\n')
    path = os.path.join(d, "deploy.toml")
    with open(path, "w") as f:
        f.write("".join(out))
    return path


def haproxy_cfg(d, port, replicas):
    lines = ["global", "  maxconn 4096", "defaults", "  mode http", "  timeout connect 1s",
             "  timeout client 30s", "  timeout server 30s", "frontend fe", f"  bind 127.0.0.1:{port}",
             "  default_backend be", "backend be", "  balance roundrobin"]
    lines += [f"  server r{i} 127.0.0.1:{p}" for i, p in enumerate(replicas)]
    path = os.path.join(d, "haproxy.cfg")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def daemon(name):
    for d in ("/usr/bin", "/usr/sbin"):
        if os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    return name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tensor-wasm", required=True)
    ap.add_argument("--world", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--reuse", type=int, default=1000)
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("RUST_BACKTRACE", "RUST_LIB_BACKTRACE")}
    procs = []
    results = {c[0]: [] for c in CASES}
    with tempfile.TemporaryDirectory() as d:
        try:
            redis_port = free_port()
            redis = subprocess.Popen(
                [daemon("redis-server"), "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", d,
                 "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(redis)
            file = deployment_file(d, args.world, f"redis://127.0.0.1:{redis_port}/0", args.reuse)
            ports, replicas = [], []
            # One audit-key for both replicas: they extend one audit chain in Redis.
            key = os.urandom(32).hex()
            for n in (1, 2):
                os.makedirs(os.path.join(d, f"data-{n}"), exist_ok=True)
                with open(os.path.join(d, f"data-{n}", "audit-key"), "w") as f:
                    f.write(key)
                os.chmod(os.path.join(d, f"data-{n}", "audit-key"), 0o600)
            for n in (1, 2):
                port = free_port()
                p = subprocess.Popen(
                    [args.tensor_wasm, "serve", file, "--listen", f"127.0.0.1:{port}", "--admin-listen", "off",
                     "--cache-dir", os.path.join(d, f"cache-{n}"), "--data-dir", os.path.join(d, f"data-{n}")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
                procs.append(p)
                replicas.append(p)
                wait_ready(port, p, "/", {"Host": "local.test"}, timeout=120)
                ports.append(port)
            lb_port = free_port()
            lb = subprocess.Popen([daemon("haproxy"), "-f", haproxy_cfg(d, lb_port, ports), "-db"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(lb)
            wait_ready(lb_port, lb, "/", {"Host": "local.test"})

            def wrk(port, host, seconds):
                return subprocess.run(
                    ["wrk", "-t1", f"-c{args.concurrency}", f"-d{seconds}s", "--latency", "-H", f"Host: {host}",
                     "-H", f"Authorization: Bearer {TOKEN}", f"http://127.0.0.1:{port}/hello"],
                    capture_output=True, text=True, check=True).stdout

            for _, host, via in CASES:
                wrk(lb_port if via else ports[0], host, 2)  # warm-up
            for rnd in range(args.rounds):
                order = CASES if rnd % 2 == 0 else CASES[::-1]
                for case, host, via in order:
                    watched = {"replicas": replicas if via else replicas[:1], "redis": [redis], "haproxy": [lb]}
                    before = {k: sum(cpu_seconds(p.pid) for p in ps) for k, ps in watched.items()}
                    r = parse_wrk(wrk(lb_port if via else ports[0], host, args.seconds))
                    n = r["rps"] * args.seconds
                    for k, ps in watched.items():
                        used = sum(cpu_seconds(p.pid) for p in ps) - before[k]
                        r[k] = used / n * 1e6 if n else float("nan")
                    results[case].append(r)
                    print(f"round {rnd + 1} {case:<36} {r['rps']:8.0f} req/s  p50 {r['p50']:.3f} ms  "
                          f"p99 {r['p99']:.3f} ms  CPU µs/req: replicas {r['replicas']:.0f} "
                          f"redis {r['redis']:.0f} haproxy {r['haproxy']:.0f}  non-2xx {r['non2xx']}",
                          flush=True)
                    time.sleep(0.5)
        finally:
            for p in reversed(procs):
                stop(p, 30)
    print()
    print(f"Medians of {args.rounds} rounds x {args.seconds}s, wrk -t1 -c{args.concurrency}, "
          f"GET /hello with a bearer token, instances reused up to {args.reuse}")
    print("| case | req/s | p50 ms | p99 ms | CPU µs/req: replicas | Redis | HAProxy | req/s vs local, 1 replica |")
    print("|---|---|---|---|---|---|---|---|")
    base = statistics.median(r["rps"] for r in results[CASES[0][0]])
    for case, _, _ in CASES:
        rs = results[case]
        med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
        print(f"| {case} | {med('rps'):.0f} | {med('p50'):.3f} | {med('p99'):.3f} | {med('replicas'):.0f} | "
              f"{med('redis'):.0f} | {med('haproxy'):.0f} | {med('rps') / base:.2f}x |")


if __name__ == "__main__":
    main()
