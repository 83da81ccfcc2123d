"""Guest-issued wasi:tensor matmul vs numpy, alternating; see run.sh."""
import argparse, json, os, platform, statistics, subprocess, sys, time, urllib.request

import numpy as np

PAUSE = 0.5  # seconds between the two sides' turns


def start(binary, component):
    proc = subprocess.Popen(
        [binary, "serve", component, "--listen", "127.0.0.1:0", "--admin-listen", "off",
         "--tensor-memory", "8GiB", "--request-timeout", "600s", "--no-cache"],
        stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "serving on http://" in line:
            return proc, line.split("serving on http://")[1].split()[0]
    raise SystemExit("server did not start")


def guest(addr, path):
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=900) as r:
        return json.load(r)


def numpy_gflops(n, reps):
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32) - 0.5
    b = rng.random((n, n), dtype=np.float32) - 0.5
    a @ b
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        out.append(2 * n**3 / (time.perf_counter() - t) / 1e9)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tensor-wasm", required=True)
    p.add_argument("--component", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    proc, addr = start(args.tensor_wasm, args.component)
    try:
        rows = []
        for n in (1024, 2048, 4096):
            ours, theirs = [], []
            for _ in range(args.rounds):
                # Each side's worker threads spin for a while after a product
                # (OpenBLAS ~0.1 s); pause so neither runs beside the other's.
                time.sleep(PAUSE)
                ours += guest(addr, f"/bench/matmul?n={n}&reps={args.reps}")["gflops"]
                time.sleep(PAUSE)
                theirs += numpy_gflops(n, args.reps)
            rows.append((n, statistics.median(ours), statistics.median(theirs)))
        over = [guest(addr, "/bench/overhead?reps=20000") for _ in range(args.rounds)]
    finally:
        proc.terminate()
        proc.wait()
    print(f"machine: {platform.node()} {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
          f"numpy {np.__version__}; rounds {args.rounds} x {args.reps} reps, medians")
    print(f"{'n':>6} {'tensor-wasm GFLOP/s':>20} {'numpy GFLOP/s':>14} {'ratio':>6}")
    for n, o, t in rows:
        print(f"{n:>6} {o:>20.1f} {t:>14.1f} {o / t:>6.2f}")
    q = statistics.median(x["query_us"] for x in over)
    op = statistics.median(x["op_us"] for x in over)
    print(f"guest→host call: {q:.3f} µs (tensor.shape), {op:.3f} µs (scale of a 1-element tensor, incl. handle create/drop)")


if __name__ == "__main__":
    sys.exit(main())
