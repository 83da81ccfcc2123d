"""A/B of two tensor-wasm binaries (say, before and after a change) on the
gateway bench's deployments: both serve the same deployment file side by
side, wrk alternates between them (order flipping each pair), medians and
per-pair ratios are printed. Server CPU per request is read from /proc.

    python3 benches/gateway/ab.py BEFORE AFTER KINDS PAIRS SECONDS CONCURRENCY [REUSE]
    e.g. ... /tmp/before/tensor-wasm target/release/tensor-wasm "bare,gateway" 8 3 16 1000

REUSE: requests per instance for every deployment (default 1: fresh).

KINDS are bench.py's: bare, "4 no-op components", "1-component floor", gateway,
gateway+audit-all. Needs the guests and benches/gateway/noop built, plain and
with feature `floor` (benches/gateway/run.sh does).
"""
import os, sys, signal, subprocess, tempfile, time, statistics
import importlib.util
HERE = os.path.dirname(os.path.abspath(__file__))
R = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(R, "benches", "http"))
spec = importlib.util.spec_from_file_location("gwb", os.path.join(HERE, "bench.py"))
gwb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gwb)
from bench import cpu_seconds, free_port, parse_wrk  # noqa: E402
hello = f"{R}/target/guests/wasm32-wasip2/release/hello.wasm"
noop = f"{R}/benches/gateway/noop/target/wasm32-wasip2/release/noop_middleware.wasm"
floor = f"{R}/benches/gateway/noop/target/floor/wasm32-wasip2/release/noop_middleware.wasm"
bins = {"before": sys.argv[1], "after": sys.argv[2]}
kinds = sys.argv[3].split(",")
pairs, secs, conc = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
reuse = int(sys.argv[7]) if len(sys.argv) > 7 else 1
res = {(w, k): [] for w in ("before", "after") for k in kinds}
with tempfile.TemporaryDirectory() as d:
    procs = {}
    for who in ("before", "after"):
        sub = os.path.join(d, who); os.makedirs(sub)
        port = free_port()
        p = subprocess.Popen([bins[who], "serve", gwb.deployment_file(sub, hello, f"{R}/worlds/gateway.wac", noop, floor, reuse),
            "--listen", f"127.0.0.1:{port}", "--admin-listen", "off", "--cache-dir", os.path.join(sub, "cache"),
            "--data-dir", os.path.join(sub, "data")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        gwb.wait_ready(port, p, "/hello", {"Host": "bare.test"}, timeout=120); procs[who] = (port, p)
    try:
        for who in procs:
            for k in kinds: gwb.wrk(procs[who][0], k, conc, 2, latency=False)
        for i in range(pairs):
            for k in kinds:
                order = ("before", "after") if i % 2 == 0 else ("after", "before")
                for who in order:
                    port, p = procs[who]
                    c0 = cpu_seconds(p.pid)
                    r = parse_wrk(gwb.wrk(port, k, conc, secs))
                    r["cpu"] = (cpu_seconds(p.pid) - c0) / (r["rps"] * secs) * 1e6
                    res[(who, k)].append(r); time.sleep(0.3)
    finally:
        for port, p in procs.values(): p.send_signal(signal.SIGINT); p.wait()
print(f"c={conc}, {pairs} pairs x {secs}s, alternating; medians")
for k in kinds:
    b, a = res[("before", k)], res[("after", k)]
    ratios = [x["rps"] / y["rps"] for x, y in zip(a, b)]
    print(f"{k:20} before {statistics.median(x['rps'] for x in b):8.0f} req/s {statistics.median(x['cpu'] for x in b):5.0f} us  "
          f"after {statistics.median(x['rps'] for x in a):8.0f} req/s {statistics.median(x['cpu'] for x in a):5.0f} us  "
          f"median per-pair ratio {statistics.median(ratios):.3f}  ({' '.join(f'{r:.2f}' for r in ratios)})")
