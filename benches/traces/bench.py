"""What traces cost: the gateway world (GET /hello with a token; router ->
auth -> ratelimit -> audit -> hello, warm instances) with traces off, sampled
at 1 % and at 100 %, one server each, driven in turn by wrk (order
alternating per round); and the time of one /metrics scrape with 100
deployments.

The traced servers export over OTLP/HTTP to a collector on 127.0.0.1 (this
script's own: it answers every POST /v1/traces with 200 and counts the
bytes), so export costs what it costs against a live collector. The
collector shares the machine: server CPU per request (from /proc) is the
steadier figure.
"""

import argparse
import hashlib
import http.server
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "http"))
from bench import cpus, describe, free_port, pin, pinning, stop, timed, wait_ready  # noqa: E402

TOKEN = "bench-token-0123456789"
MODES = {"off": None, "1%": "0.01", "100%": "1.0"}


class Collector(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received = [0, 0]  # exports, bytes

    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        self.rfile.read(n)
        Collector.received[0] += 1
        Collector.received[1] += n
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def gateway_file(d, world, reuse):
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    path = os.path.join(d, "gateway.toml")
    with open(path, "w") as f:
        f.write(f'''
[[deployment]]
name = "gateway"
tenant = "bench"
world = "{world}"
instances = {{ reuse = {reuse} }}
[deployment.grants.config]
"router.routes" = "GET,HEAD =/ welcome; * /hello app"
"auth.tokens" = "bench sha256:{digest} admin"
"ratelimit.default" = "1000000/1000000"
''')
    return path


def hundred_file(d, hello):
    path = os.path.join(d, "hundred.toml")
    with open(path, "w") as f:
        for i in range(100):
            f.write(f'[[deployment]]\nname = "d{i}"\ntenant = "t{i % 10}"\ncomponent = "{hello}"\n'
                    f'route = {{ host = "d{i}.test" }}\n\n')
    return path


def start(args, d, spec, name, env_extra, admin=False):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RUST_BACKTRACE", "RUST_LIB_BACKTRACE") and not k.startswith("OTEL_")}
    env.update(env_extra)
    port = free_port()
    admin_port = free_port() if admin else None
    proc = subprocess.Popen(
        [args.tensor_wasm, "serve", spec, "--listen", f"127.0.0.1:{port}",
         "--admin-listen", f"127.0.0.1:{admin_port}" if admin else "off",
         "--cache-dir", os.path.join(d, "cache"), "--data-dir", os.path.join(d, f"data-{name}"),
         *getattr(args, "server_args", "").split()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, preexec_fn=pin("SERVER"))
    return proc, port, admin_port


def wrk(port, conc, seconds, latency=True):
    cmd = ["wrk", "-t1", f"-c{conc}", f"-d{seconds}s", "-H", f"Authorization: Bearer {TOKEN}"]
    if latency:
        cmd.append("--latency")
    cmd.append(f"http://127.0.0.1:{port}/hello")
    return subprocess.run(cmd, capture_output=True, text=True, check=True,
                          preexec_fn=pin("LOAD")).stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tensor-wasm", required=True)
    ap.add_argument("--hello", required=True)
    ap.add_argument("--world", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--reuse", type=int, default=1000)
    ap.add_argument("--server-args", default="",
                    help="more flags for every server, e.g. '--busy-poll off'")
    args = ap.parse_args()

    if cpus("COLLECTOR"):  # this thread and the collector's threads made after it
        os.sched_setaffinity(0, cpus("COLLECTOR"))
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"

    results = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as d:
        spec = gateway_file(d, args.world, args.reuse)
        servers = {}
        try:
            for mode, ratio in MODES.items():
                env = {} if ratio is None else {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                    "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": ratio}
                proc, port, _ = start(args, d, spec, mode.strip("%"), env)
                servers[mode] = (proc, port)
            for mode, (proc, port) in servers.items():
                wait_ready(port, proc, "/hello", {"Authorization": f"Bearer {TOKEN}"}, timeout=120)
                wrk(port, args.concurrency, 2, latency=False)  # warm-up
            for rnd in range(args.rounds):
                order = list(MODES) if rnd % 2 == 0 else list(MODES)[::-1]
                for mode in order:
                    proc, port = servers[mode]
                    r = timed(proc.pid, args.seconds, lambda: wrk(port, args.concurrency, args.seconds))
                    results[mode].append(r)
                    print(f"round {rnd + 1} traces {mode:<5} {describe(r)}", flush=True)
                    time.sleep(0.5)
        finally:
            for proc, _ in servers.values():
                stop(proc, 30)
        print(f"collector: {Collector.received[0]} exports, {Collector.received[1] / 1e6:.1f} MB")

        # One /metrics scrape with 100 deployments (10 tenants), each served once.
        proc, port, admin = start(args, d, hundred_file(d, args.hello), "hundred", {}, admin=True)
        try:
            wait_ready(port, proc, "/hello", {"Host": "d99.test"}, timeout=120)
            for i in range(100):
                urllib.request.urlopen(urllib.request.Request(
                    f"http://127.0.0.1:{port}/hello", headers={"Host": f"d{i}.test"})).read()
            scrapes, size = [], 0
            for _ in range(50):
                t0 = time.perf_counter()
                size = len(urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics").read())
                scrapes.append((time.perf_counter() - t0) * 1e3)
        finally:
            stop(proc, 30)

    print()
    print(f"Medians of {args.rounds} rounds x {args.seconds}s, wrk -t1 -c{args.concurrency}, "
          f"gateway world, GET /hello with a token, instances reused up to {args.reuse}"
          + (f", servers with `{args.server_args}`" if args.server_args else "") + f"; {pinning()}"
          + (f", collector on {sorted(cpus('COLLECTOR'))}" if cpus("COLLECTOR") else ""))
    print("| traces | req/s | p50 ms | p99 ms | server CPU µs/req | of it system | req/s vs off "
          "| CPU/req vs off | paired: req/s vs off | paired: CPU/req vs off |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    base = statistics.median(r["rps"] for r in results["off"])
    base_cpu = statistics.median(r["cpu_us"] for r in results["off"])

    def paired(rs, key):
        # The median of each round's ratio to the same round's `off`: the
        # machine's drift over a run (it is shared) cancels out.
        return statistics.median(r[key] / o[key] for r, o in zip(rs, results["off"]))

    for mode, rs in results.items():
        rps = statistics.median(r["rps"] for r in rs)
        cpu = statistics.median(r["cpu_us"] for r in rs)
        print(f"| {mode} | {rps:.0f} | {statistics.median(r['p50'] for r in rs):.3f} | "
              f"{statistics.median(r['p99'] for r in rs):.3f} | {cpu:.0f} | "
              f"{statistics.median(r['sys_us'] for r in rs):.0f} | {rps / base:.2f}x | {cpu / base_cpu:.2f}x "
              f"| {paired(rs, 'rps'):.2f}x | {paired(rs, 'cpu_us'):.2f}x |")
    print()
    print(f"/metrics with 100 deployments: median {statistics.median(scrapes):.2f} ms, "
          f"p90 {sorted(scrapes)[44]:.2f} ms over 50 scrapes, {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
