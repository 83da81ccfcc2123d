"""Runs wrk against tensor-wasm and wasmtime serve, alternating, and prints medians.

Two modes: `fresh` (each server's default: a fresh instance per request) and
`reuse` (both with `--max-instance-reuse-count 1000`: warm instances).

CPU pinning (this module's `pin`, used by the other HTTP benches too): with
`BENCH_SERVER_CPUS` and `BENCH_LOAD_CPUS` set (e.g. `0-1` and `2-3`) servers
and wrk run on those CPUs only, so the load generator does not share the
server's cores; unset, everything shares the machine.
"""

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request

PATH = "/hello"


def cpus(role):
    """The CPUs in $BENCH_<ROLE>_CPUS (`0-1,4`), or None when unset."""
    spec = os.environ.get(f"BENCH_{role}_CPUS", "").strip()
    if not spec:
        return None
    out = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def pin(role):
    """A `preexec_fn` pinning a child process to `cpus(role)` (no-op if unset)."""
    chosen = cpus(role)
    return (lambda: os.sched_setaffinity(0, chosen)) if chosen else None


def pinning():
    """How this run is pinned, for the table's caption."""
    s, l = os.environ.get("BENCH_SERVER_CPUS"), os.environ.get("BENCH_LOAD_CPUS")
    return f"servers on CPUs {s}, wrk on {l}" if s and l else "servers and wrk share every CPU"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, proc, path=None, headers=None, timeout=60):
    """Waits until GET `path` (default PATH) with `headers` answers 200."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path or PATH}",
                                         headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not become ready")


REUSE = ["--max-instance-reuse-count", "1000"]


#: Our server with busy-polling off (`--also-no-busy-poll`), beside its default.
NO_POLL = "tw-no-busy-poll"
#: Other builds of our server (`--baseline BIN`, e.g. the previous commit's):
#: tw-baseline, then tw-baseline2, ... in the order given.
BASELINE = "tw-baseline"


def baseline_kinds(args):
    """The names of the `--baseline` builds, each mapped to its binary."""
    return {BASELINE + (str(i + 1) if i else ""): b for i, b in enumerate(args.baseline)}


def server_cmd(kind, mode, args, port, cache):
    reuse = REUSE if mode == "reuse" else []
    baselines = baseline_kinds(args)
    if kind in ("tensor-wasm", NO_POLL) or kind in baselines:
        poll = ["--busy-poll", "off"] if kind == NO_POLL else []
        binary = baselines.get(kind, args.tensor_wasm)
        return [binary, "serve", args.component, "--listen", f"127.0.0.1:{port}",
                "--admin-listen", "off", "--cache-dir", cache] + reuse + poll
    return [args.wasmtime, "serve", "-S", "cli", "--addr", f"127.0.0.1:{port}"] + reuse + [args.component]


def parse_wrk(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def lat(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": lat(50), "p99": lat(99), "non2xx": int(errors.group(1)) if errors else 0}


def cpu_split(pid):
    """The process's (user, system) CPU seconds so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid):
    """The process's CPU seconds so far."""
    return sum(cpu_split(pid))


def timed(pid, seconds, run_wrk):
    """Runs `run_wrk()` (wrk's output) and parses it, adding the server's CPU
    microseconds per request (`cpu_us`, from /proc) and the system time's
    part of them (`sys_us`)."""
    user0, sys0 = cpu_split(pid)
    r = parse_wrk(run_wrk())
    total = r["rps"] * seconds
    user1, sys1 = cpu_split(pid)
    per = 1e6 / total if total else float("nan")
    r["cpu_us"] = (user1 - user0 + sys1 - sys0) * per
    r["sys_us"] = (sys1 - sys0) * per
    return r


def describe(r):
    """One measurement as a log line's tail."""
    return (f"{r['rps']:9.0f} req/s  p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} ms  "
            f"{r['cpu_us']:.0f} µs CPU/req  non-2xx {r['non2xx']}")


def stop(proc, timeout):
    """SIGINT (graceful shutdown), then SIGKILL after `timeout` seconds."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


def measure(kind, mode, args, conc, cache):
    port = free_port()
    # Both servers run without RUST_BACKTRACE: with it, every error value
    # wasmtime makes on a hot path walks the stack.
    env = {k: v for k, v in os.environ.items() if k not in ("RUST_BACKTRACE", "RUST_LIB_BACKTRACE")}
    proc = subprocess.Popen(server_cmd(kind, mode, args, port, cache), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, preexec_fn=pin("SERVER"))
    try:
        wait_ready(port, proc)
        subprocess.run(["wrk", "-t1", f"-c{conc}", "-d2s", f"http://127.0.0.1:{port}{PATH}"],
                       capture_output=True, check=True, preexec_fn=pin("LOAD"))  # warm-up
        return timed(proc.pid, args.seconds, lambda: subprocess.run(
            ["wrk", "-t1", f"-c{conc}", f"-d{args.seconds}s", "--latency", f"http://127.0.0.1:{port}{PATH}"],
            capture_output=True, text=True, check=True, preexec_fn=pin("LOAD")).stdout)
    finally:
        stop(proc, 10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tensor-wasm", required=True)
    ap.add_argument("--wasmtime", required=True)
    ap.add_argument("--component", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--modes", default="fresh,reuse")
    ap.add_argument("--also-no-busy-poll", action="store_true",
                    help="also measure our server with --busy-poll off, in the same rounds")
    ap.add_argument("--baseline", metavar="BIN", action="append", default=[],
                    help="also measure another tensor-wasm build (e.g. the previous commit's), in the "
                         "same rounds; repeat for more (tw-baseline, tw-baseline2, ...)")
    args = ap.parse_args()
    kinds = (["tensor-wasm", "wasmtime"] + ([NO_POLL] if args.also_no_busy_poll else [])
             + list(baseline_kinds(args)))
    modes = args.modes.split(",")
    concs = (1, 16, 64)
    results = {(m, k, c): [] for m in modes for k in kinds for c in concs}
    with tempfile.TemporaryDirectory() as cache:
        for rnd in range(args.rounds):
            for mode in modes:
                for conc in concs:
                    order = kinds if rnd % 2 == 0 else kinds[::-1]
                    for kind in order:
                        r = measure(kind, mode, args, conc, cache)
                        results[(mode, kind, conc)].append(r)
                        print(f"round {rnd + 1} {mode:<5} c={conc:<3} {kind:<12} {describe(r)}", flush=True)
    print()
    print(f"Medians of {args.rounds} rounds x {args.seconds}s, wrk -t1, GET {PATH}; {pinning()}")
    print("| instances | concurrency | server | req/s | p50 ms | p99 ms | server CPU µs/req "
          "| req/s vs wasmtime | CPU/req vs wasmtime | paired: req/s vs wasmtime |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    med = statistics.median
    for mode in modes:
        for conc in concs:
            peer = results[(mode, "wasmtime", conc)]
            base, base_cpu = med(r["rps"] for r in peer), med(r["cpu_us"] for r in peer)
            for kind in kinds:
                rs = results[(mode, kind, conc)]
                rps, cpu = med(r["rps"] for r in rs), med(r["cpu_us"] for r in rs)
                # The median of each round's ratio: steadier than the ratio
                # of medians where the machine's speed drifts between rounds.
                paired = med(r["rps"] / p["rps"] for r, p in zip(rs, peer))
                print(f"| {mode} | {conc} | {kind} | {rps:.0f} | {med(r['p50'] for r in rs):.3f} | "
                      f"{med(r['p99'] for r in rs):.3f} | {cpu:.0f} | {rps / base:.2f}x | "
                      f"{cpu / base_cpu:.2f}x | {paired:.2f}x |")


if __name__ == "__main__":
    main()
