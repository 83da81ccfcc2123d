"""The gateway chain's cost: bare hello vs router -> auth -> ratelimit -> audit -> hello.

One tensor-wasm server holds five deployments, told apart by Host header:
  bare.test       hello.wasm alone
  noop.test       benches/gateway/noop-chain.wac: four middlewares that only
                  forward (benches/gateway/noop, no_std) in front of hello --
                  the floor of any 4-component chain with a fresh world per request
  floor.test      benches/gateway/floor.wac: one component (the no-op built with
                  feature `floor`) making only the host calls the gateway's work
                  cannot skip, in front of hello -- the floor of a one-component gateway
  gw.test         worlds/gateway.wac (GET /hello: router, auth, a rate-limit
                  increment per request (volatile), audit forwards)
  gw-audit.test   the same world with audit.policy = "all" (also one durable
                  audit record per request)
wrk drives each in turn (order alternating per round); medians are printed.
With --reuse N every deployment reuses its instances for up to N requests
(`instances = { reuse = N }`); a list (1,1000) runs one server per value.
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
from bench import describe, free_port, pin, pinning, stop, timed, wait_ready  # noqa: E402

TOKEN = "bench-token-0123456789"
KINDS = ["bare", "4 no-op components", "1-component floor", "gateway", "gateway+audit-all"]
HOSTS = {"bare": "bare.test", "4 no-op components": "noop.test", "1-component floor": "floor.test",
         "gateway": "gw.test", "gateway+audit-all": "gw-audit.test"}


def deployment_file(d, hello, world, noop, floor, reuse):
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    common = f'''
[deployment.grants.config]
"router.routes" = "GET,HEAD =/ welcome; * /hello app"
"auth.tokens" = "bench sha256:{digest} admin"
"ratelimit.default" = "1000000/1000000"
'''
    text = f'''
[[deployment]]
name = "bare"
tenant = "bench"
component = "{hello}"
route = {{ host = "bare.test" }}

[[deployment]]
name = "noop"
tenant = "bench"
world = "{os.path.join(os.path.dirname(os.path.abspath(__file__)), "noop-chain.wac")}"
route = {{ host = "noop.test" }}
[deployment.deps]
"tensorwasm:noop" = "{noop}"

[[deployment]]
name = "floor"
tenant = "bench"
world = "{os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor.wac")}"
route = {{ host = "floor.test" }}
[deployment.deps]
"tensorwasm:noop" = "{floor}"

[[deployment]]
name = "gateway"
tenant = "bench"
world = "{world}"
route = {{ host = "gw.test" }}
{common}
[[deployment]]
name = "gateway-audit-all"
tenant = "bench"
world = "{world}"
route = {{ host = "gw-audit.test" }}
{common}"audit.policy" = "all"
'''
    text = text.replace("[[deployment]]\n", f"[[deployment]]\ninstances = {{ reuse = {reuse} }}\n")
    path = os.path.join(d, f"deploy-{reuse}.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def wrk(port, kind, conc, seconds, latency=True):
    cmd = ["wrk", "-t1", f"-c{conc}", f"-d{seconds}s", "-H", f"Host: {HOSTS[kind]}",
           "-H", f"Authorization: Bearer {TOKEN}"]
    if latency:
        cmd.append("--latency")
    cmd.append(f"http://127.0.0.1:{port}/hello")
    return subprocess.run(cmd, capture_output=True, text=True, check=True,
                          preexec_fn=pin("LOAD")).stdout


def measure(args, d, reuse, concs, results):
    """Runs one server with every deployment reusing up to `reuse` times."""
    env = {k: v for k, v in os.environ.items() if k not in ("RUST_BACKTRACE", "RUST_LIB_BACKTRACE")}
    port = free_port()
    proc = subprocess.Popen(
        [args.tensor_wasm, "serve", deployment_file(d, args.hello, args.world, args.noop, args.floor, reuse),
         "--listen", f"127.0.0.1:{port}", "--admin-listen", "off",
         "--cache-dir", os.path.join(d, "cache"), "--data-dir", os.path.join(d, f"data-{reuse}")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, preexec_fn=pin("SERVER"))
    try:
        wait_ready(port, proc, "/hello", {"Host": "bare.test"}, timeout=120)
        for kind in KINDS:
            wrk(port, kind, 16, 2, latency=False)  # warm-up
        for rnd in range(args.rounds):
            for conc in concs:
                order = KINDS if rnd % 2 == 0 else KINDS[::-1]
                for kind in order:
                    r = timed(proc.pid, args.seconds, lambda: wrk(port, kind, conc, args.seconds))
                    results[(reuse, kind, conc)].append(r)
                    print(f"reuse {reuse} round {rnd + 1} c={conc:<3} {kind:<18} {describe(r)}", flush=True)
                    time.sleep(0.5)
    finally:
        stop(proc, 30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tensor-wasm", required=True)
    ap.add_argument("--hello", required=True)
    ap.add_argument("--world", required=True)
    ap.add_argument("--noop", required=True, help="benches/gateway/noop's component")
    ap.add_argument("--floor", required=True, help="the same built with feature `floor`")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--concurrency", default="16,64")
    ap.add_argument("--reuse", default="1000", help="requests per instance; a list runs each")
    args = ap.parse_args()
    concs = [int(c) for c in args.concurrency.split(",")]
    reuses = [int(r) for r in args.reuse.split(",")]
    results = {(n, k, c): [] for n in reuses for k in KINDS for c in concs}
    with tempfile.TemporaryDirectory() as d:
        for reuse in reuses:
            measure(args, d, reuse, concs, results)
    print()
    print(f"Medians of {args.rounds} rounds x {args.seconds}s, wrk -t1, GET /hello with a bearer token; "
          f"{pinning()}")
    print("| instances reused up to | concurrency | chain | req/s | p50 ms | p99 ms | server CPU µs/req | req/s vs bare | throughput cost |")
    print("|---|---|---|---|---|---|---|---|---|")
    for reuse in reuses:
        for conc in concs:
            base = statistics.median(r["rps"] for r in results[(reuse, "bare", conc)])
            for kind in KINDS:
                rs = results[(reuse, kind, conc)]
                rps = statistics.median(r["rps"] for r in rs)
                print(f"| {reuse} | {conc} | {kind} | {rps:.0f} | {statistics.median(r['p50'] for r in rs):.3f} | "
                      f"{statistics.median(r['p99'] for r in rs):.3f} | "
                      f"{statistics.median(r['cpu_us'] for r in rs):.0f} | {rps / base:.2f}x | "
                      f"{(1 - rps / base) * 100:.0f}% |")


if __name__ == "__main__":
    main()
