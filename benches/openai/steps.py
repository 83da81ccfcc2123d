"""Where a generation step's time goes: the batched OpenAI world
(worlds/openai-batched.wac) serving N concurrent greedy 64-token streams,
with the host's own series read from /metrics before and after each N:

    python3 benches/openai/steps.py --tensor-wasm BIN --models DIR [--device cuda]
        [--clients 1,8,32,64] [--generator SMOLLM.wasm]

Per generation step (one token for every sequence in the batch), medians
are not needed: the figures are totals over the N streams divided by the
number of steps. `step ms` is `tensorwasm_inference_batch_seconds`; `ops`
and `in ops ms` are `tensorwasm_tensor_ops_total` and `_op_seconds_total`
(the host time inside `wasi:tensor` calls that queue work; on a GPU an op
returns once its kernels are queued), `in read-backs ms` is
`_read_seconds_total` (waiting for the GPU to finish, then copying back),
`calls` and `in calls ms` the other `wasi:tensor` calls (uploads, shapes,
reshapes, handle drops: `tensorwasm_tensor_calls_total`,
`_call_seconds_total`; 0 from a host older than those series, whose rest
then holds them); `rest ms` is what is left: the guest's own code, its
other host calls and the call into the model. The counters
cover every instance of the deployment, so the openai component's own
calls count too (it issues no tensor ops). A second table splits the ops
by op (the series' `op` label): per step, how many and the host time in
them, and the mean per op.
"""

import argparse
import concurrent.futures as cf
import os
import re
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import concurrency  # noqa: E402


def scrape(admin):
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10).read().decode()
    want = {
        "steps": r'tensorwasm_inference_batch_seconds_count\{[^}]*kind="generation"[^}]*\} (\S+)',
        "step_s": r'tensorwasm_inference_batch_seconds_sum\{[^}]*kind="generation"[^}]*\} (\S+)',
        "seqs": r'tensorwasm_inference_batch_size_sum\{[^}]*kind="generation"[^}]*\} (\S+)',
        "ops": r'tensorwasm_tensor_ops_total\{[^}]*\} (\S+)',
        "op_s": r'tensorwasm_tensor_op_seconds_total\{[^}]*\} (\S+)',
        "reads": r'tensorwasm_tensor_reads_total\{[^}]*\} (\S+)',
        "read_s": r'tensorwasm_tensor_read_seconds_total\{[^}]*\} (\S+)',
        "calls": r'tensorwasm_tensor_calls_total\{[^}]*\} (\S+)',
        "call_s": r'tensorwasm_tensor_call_seconds_total\{[^}]*\} (\S+)',
    }
    out = {k: sum(float(v) for v in re.findall(p, text)) for k, p in want.items()}
    for kind, series in (("n", "ops_total"), ("s", "op_seconds_total")):
        for op, v in re.findall(rf'tensorwasm_tensor_{series}\{{[^}}]*op="([^"]+)"[^}}]*\}} (\S+)', text):
            key = f"{kind}:{op}"
            out[key] = out.get(key, 0.0) + float(v)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tensor-wasm", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--clients", default="1,8,32,64")
    ap.add_argument("--generator", metavar="WASM", help="another smollm build as the generation model")
    args = ap.parse_args()
    args.profile = False
    rows = []
    with tempfile.TemporaryDirectory() as d:
        admin = bench.free_port()
        proc, port = bench.start_server(args, d, 1000, batched=True, generator=args.generator, admin=admin)
        try:
            concurrency.ours_chat(port, 1)  # warm-up: the model instance, the caches
            for n in [int(c) for c in args.clients.split(",")]:
                before = scrape(admin)
                t0 = time.perf_counter()
                tps, _, _ = concurrency.ours_chat(port, n)
                wall = time.perf_counter() - t0
                time.sleep(0.2)  # the step after the last token
                after = scrape(admin)
                delta = {k: after[k] - before.get(k, 0.0) for k in after}
                steps = max(delta["steps"], 1)
                rows.append((n, tps, wall, delta, steps))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print(f"device {args.device}; one run per N; per generation step (totals / steps)")
    print("| N | tokens/s | steps | sequences per step | step ms | ops | in ops ms | read-backs "
          "| in read-backs ms | calls | in calls ms | rest ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n, tps, wall, dl, steps in rows:
        step = dl["step_s"] / steps * 1e3
        ops, reads = dl["op_s"] / steps * 1e3, dl["read_s"] / steps * 1e3
        calls = dl["call_s"] / steps * 1e3
        print(f"| {n} | {tps:.0f} | {steps:.0f} | {dl['seqs'] / steps:.1f} | {step:.2f} | {dl['ops'] / steps:.0f} "
              f"| {ops:.2f} | {dl['reads'] / steps:.1f} | {reads:.2f} | {dl['calls'] / steps:.0f} | {calls:.2f} "
              f"| {step - ops - reads - calls:.2f} |")
    print()
    print("by op, per step: count / ms in them / us per op")
    names = sorted({k[2:] for _, _, _, dl, _ in rows for k in dl if k.startswith("n:")})
    print("| op | " + " | ".join(f"N={n}" for n, *_ in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for op in names:
        cells = []
        for _, _, _, dl, steps in rows:
            count, secs = dl.get(f"n:{op}", 0.0), dl.get(f"s:{op}", 0.0)
            per = secs / count * 1e6 if count else 0.0
            cells.append(f"{count / steps:.1f} / {secs / steps * 1e3:.3f} / {per:.1f}")
        print(f"| {op} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
