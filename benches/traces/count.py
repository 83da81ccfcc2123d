"""What traces cost in instructions: the gateway world (as bench.py serves it)
under `valgrind --tool=callgrind`, traces off and sampled at 100 %, one
server at a time; after a warm-up the counters are zeroed, wrk drives it for
a while, and the instructions the server executed (user space, every thread)
are divided by the requests served. Counting does not drift with the
machine as time does, so a change to the span path shows at once; it says
nothing of system time or cache misses (bench.py measures those).

The server runs with TENSOR_WASM_NO_POOL=1 (valgrind cannot map the
instance pool), which compiles guests with explicit bounds checks: compare
counts with counts, not with bench.py's figures.
"""

import argparse
import http.server
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "http"))
from bench import free_port, parse_wrk, stop, wait_ready  # noqa: E402

# This directory's bench.py (the gateway file, token and collector), loaded
# under a name of its own: `bench` is the HTTP one.
_spec = importlib.util.spec_from_file_location(
    "traces_bench", os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench.py"))
traces = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(traces)
TOKEN, Collector, gateway_file = traces.TOKEN, traces.Collector, traces.gateway_file


def total(path):
    """The `Ir` total of a callgrind output file."""
    text = subprocess.run(["callgrind_annotate", "--auto=no", path], capture_output=True,
                          text=True, check=True).stdout
    return int(re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", text).group(1).replace(",", ""))


def count(args, d, spec, name, env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(env_extra, TENSOR_WASM_NO_POOL="1")
    port = free_port()
    out = os.path.join(d, f"callgrind.{name}")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--smc-check=all-non-file", f"--callgrind-out-file={out}",
         args.tensor_wasm, "serve", spec, "--listen", f"127.0.0.1:{port}", "--admin-listen", "off",
         "--cache-dir", os.path.join(d, "cache"), "--data-dir", os.path.join(d, f"data-{name}")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wrk = ["wrk", "-t1", "-c4", "-H", f"Authorization: Bearer {TOKEN}", f"http://127.0.0.1:{port}/hello"]
    try:
        wait_ready(port, proc, "/hello", {"Authorization": f"Bearer {TOKEN}"}, timeout=600)
        subprocess.run(wrk[:3] + ["-d5s"] + wrk[3:], capture_output=True, check=True)
        subprocess.run(["callgrind_control", "--zero", str(proc.pid)], capture_output=True, check=True)
        r = parse_wrk(subprocess.run(wrk[:3] + [f"-d{args.seconds}s", "--latency"] + wrk[3:],
                                     capture_output=True, text=True, check=True).stdout)
        subprocess.run(["callgrind_control", "--dump", str(proc.pid)], capture_output=True, check=True)
        if r["non2xx"]:
            raise RuntimeError(f"{name}: {r['non2xx']} answers were not 2xx")
        requests = round(r["rps"] * args.seconds)
        dumps = [f for f in os.listdir(d) if f.startswith(f"callgrind.{name}.")]
        if len(dumps) != 1:
            raise RuntimeError(f"{name}: expected one callgrind dump, found {dumps}")
        return total(os.path.join(d, dumps[0])) / requests, requests
    finally:
        stop(proc, 60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tensor-wasm", required=True)
    ap.add_argument("--world", required=True)
    ap.add_argument("--seconds", type=int, default=20)
    args = ap.parse_args()
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    rows = {}
    with tempfile.TemporaryDirectory() as d:
        spec = gateway_file(d, args.world, 1000)
        for name, env in (("off", {}), ("100%", {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                                                 "OTEL_TRACES_SAMPLER": "always_on"})):
            rows[name] = count(args, d, spec, name.strip("%"), env)
            print(f"traces {name:<5} {rows[name][0]:10.0f} instructions/request "
                  f"({rows[name][1]} requests)", flush=True)
    off = rows["off"][0]
    print()
    print(f"callgrind, gateway world, wrk -t1 -c4 -d{args.seconds}s after a 5 s warm-up")
    print("| traces | instructions per request | vs off |")
    print("|---|---|---|")
    for name, (ir, _) in rows.items():
        print(f"| {name} | {ir:,.0f} | {ir - off:+,.0f} ({ir / off:.3f}x) |")


if __name__ == "__main__":
    main()
