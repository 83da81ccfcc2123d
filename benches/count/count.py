"""Instructions per request, counted by valgrind's callgrind: a figure that
does not drift with the machine as time does, so a change to a hot path
shows at once. Two comparisons:

- `traces`: the gateway world (as benches/traces serves it) with traces off
  and sampled at 1 % and 100 % (exporting to a collector of this script's);
- `chain`: bare hello, four no-op middlewares in front of it, one
  component making only the host calls a gateway cannot skip (the
  one-component floor) and the gateway world (as benches/gateway serves
  them), all with warm instances;
- `http`: hello with warm instances under `tensor-wasm serve` and under
  `wasmtime serve --max-instance-reuse-count 1000` (benches/http's reuse
  mode; wasmtime's own allocator, so its count includes its malloc);
- `peer-chain`: `wasmtime serve` (one or more builds, `--wasmtime A,B`)
  with warm instances on hello and on the four no-op middlewares in front
  of it composed into one component (`tensor-wasm compose`): what a hop
  costs in that wasmtime, without this host.

Each server runs alone under callgrind; after a warm-up the counters are
zeroed, wrk drives it, and the instructions the server executed (user
space, every thread) are divided by the requests served. It says nothing
of system time or cache misses (the timed benches measure those). Servers
run with TENSOR_WASM_NO_POOL=1 (valgrind cannot map the instance pool),
which compiles guests with explicit bounds checks: compare counts with
counts.
"""

import argparse
import http.server
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading

BENCHES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(BENCHES, "http"))
from bench import free_port, parse_wrk, stop, wait_ready  # noqa: E402


def load(name):
    """benches/NAME/bench.py under a name of its own (`bench` is the HTTP one)."""
    spec = importlib.util.spec_from_file_location(f"{name}_bench", os.path.join(BENCHES, name, "bench.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


traces, gateway = load("traces"), load("gateway")
TOKEN = traces.TOKEN


def total(path):
    """The `Ir` total of a callgrind output file."""
    text = subprocess.run(["callgrind_annotate", "--auto=no", path], capture_output=True,
                          text=True, check=True).stdout
    return int(re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", text).group(1).replace(",", ""))


def ours(args, d, spec, name):
    """A `tensor-wasm serve SPEC` command line, given its port. Busy-polling
    is off: what it spins between requests depends on how fast the load
    generator answers (on a busy machine, thousands of instructions a
    request), not on the request's own work."""
    return lambda port: [
        args.tensor_wasm, "serve", spec, "--listen", f"127.0.0.1:{port}", "--admin-listen", "off",
        "--cache-dir", os.path.join(d, "cache"), "--data-dir", os.path.join(d, f"data-{name}"),
        "--busy-poll", "off"]


def count(args, d, server, name, env_extra, host=None):
    """Instructions per request of the server `server(port)` starts
    (requests to `host`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(env_extra, TENSOR_WASM_NO_POOL="1")
    port = free_port()
    out = os.path.join(d, f"callgrind.{name}")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--smc-check=all-non-file", f"--callgrind-out-file={out}"]
        + server(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    headers = {"Authorization": f"Bearer {TOKEN}"} | ({"Host": host} if host else {})
    flags = [x for k, v in headers.items() for x in ("-H", f"{k}: {v}")]
    url = f"http://127.0.0.1:{port}/hello"
    try:
        wait_ready(port, proc, "/hello", headers, timeout=600)
        subprocess.run(["wrk", "-t1", "-c4", "-d5s"] + flags + [url], capture_output=True, check=True)
        subprocess.run(["callgrind_control", "--zero", str(proc.pid)], capture_output=True, check=True)
        r = parse_wrk(subprocess.run(["wrk", "-t1", "-c4", f"-d{args.seconds}s", "--latency"] + flags + [url],
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
    ap.add_argument("what", choices=["traces", "chain", "http", "peer-chain"])
    ap.add_argument("--tensor-wasm", required=True)
    ap.add_argument("--world", required=True, help="worlds/gateway.wac")
    ap.add_argument("--hello", help="hello.wasm (chain)")
    ap.add_argument("--noop", help="the no-op middleware (chain)")
    ap.add_argument("--floor", help="the no-op middleware built with feature `floor` (chain)")
    ap.add_argument("--wasmtime", help="`wasmtime` 48.0.8 (http); builds to compare, A,B (peer-chain)")
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--keep", help="a folder to copy the profiles to (for callgrind_annotate)")
    args = ap.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as d:
        if args.what == "traces":
            collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), traces.Collector)
            threading.Thread(target=collector.serve_forever, daemon=True).start()
            endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
            spec = traces.gateway_file(d, args.world, 1000)

            def sampled(ratio):
                return {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_TRACES_SAMPLER": "traceidratio",
                        "OTEL_TRACES_SAMPLER_ARG": ratio}

            runs = [("traces off", {}, None), ("traces 1%", sampled("0.01"), None),
                    ("traces 100%", sampled("1.0"), None)]
            runs = [(name, ours(args, d, spec, str(i)), env, host)
                    for i, (name, env, host) in enumerate(runs)]
        elif args.what == "chain":
            if not (args.hello and args.noop and args.floor):
                ap.error("chain needs --hello, --noop and --floor")
            spec = gateway.deployment_file(d, args.hello, args.world, args.noop, args.floor, 1000)
            runs = [(kind, ours(args, d, spec, str(i)), {}, gateway.HOSTS[kind])
                    for i, kind in enumerate(gateway.KINDS[:4])]
        elif args.what == "peer-chain":
            if not (args.hello and args.noop and args.wasmtime):
                ap.error("peer-chain needs --hello, --noop and --wasmtime")
            chain = os.path.join(d, "noop-chain.wasm")
            subprocess.run([args.tensor_wasm, "compose", os.path.join(BENCHES, "gateway", "noop-chain.wac"),
                            "-o", chain, "--dep", f"tensorwasm:noop={args.noop}",
                            "--dep", f"tensorwasm:hello={args.hello}"], check=True, capture_output=True)
            runs = []
            for build in args.wasmtime.split(","):
                version = subprocess.run([build, "--version"], capture_output=True, text=True,
                                         check=True).stdout.split()[1]
                for name, component in (("hello", args.hello), ("4 no-op components", chain)):
                    runs.append((f"wasmtime {version} {name}",
                                 lambda port, build=build, component=component: [
                                     build, "serve", "-S", "cli", "--addr", f"127.0.0.1:{port}",
                                     "--max-instance-reuse-count", "1000", component], {}, None))
        else:
            if not (args.hello and args.wasmtime):
                ap.error("http needs --hello and --wasmtime")
            reuse = ["--max-instance-reuse-count", "1000"]
            mine = ours(args, d, args.hello, "0")
            runs = [("tensor-wasm", lambda port: mine(port) + reuse, {}, None),
                    ("wasmtime serve", lambda port: [args.wasmtime, "serve", "-S", "cli", "--addr",
                                                     f"127.0.0.1:{port}"] + reuse + [args.hello], {}, None)]
        for i, (name, server, env, host) in enumerate(runs):
            rows[name] = count(args, d, server, str(i), env, host)
            print(f"{name:<20} {rows[name][0]:10.0f} instructions/request ({rows[name][1]} requests)",
                  flush=True)
            if args.keep:
                os.makedirs(args.keep, exist_ok=True)
                for f in os.listdir(d):
                    if f.startswith(f"callgrind.{i}."):
                        shutil.copy(os.path.join(d, f), os.path.join(args.keep, f"{name.replace(' ', '-')}.callgrind"))
    first = next(iter(rows.values()))[0]
    print()
    print(f"callgrind, wrk -t1 -c4 -d{args.seconds}s after a 5 s warm-up, warm instances")
    print("| server | instructions per request | vs first row |")
    print("|---|---|---|")
    for name, (ir, _) in rows.items():
        print(f"| {name} | {ir:,.0f} | {ir - first:+,.0f} ({ir / first:.3f}x) |")


if __name__ == "__main__":
    main()
