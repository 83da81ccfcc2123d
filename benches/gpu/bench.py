"""wasi:tensor on the GPU (issued from a guest) vs PyTorch on the same GPU.

Run by scripts/gpu-check.sh on the lent GPU machine (PyTorch is there):
matmul 4096³ in f32, f32-as-TF32 and bf16 (TFLOP/s: REPS products back to
back, then one element read back; median over ROUNDS, alternating sides), and
guest memory → device copy bandwidth vs PyTorch's pageable host→device copy
(GiB/s, each copy up to reading one element back), and a 12-layer
attention+MLP block chain (seq 128, dim 768, 12 heads) issued op by op
from a guest vs the same chain in PyTorch eager (ms per forward pass), and
the launch of a small kernel (vector_add on 256 elements, and the
argument-less `empty`) from a guest through wasi:cuda vs the same launch from
native Rust cudarc (benches/gpu/cuda_launch.rs; µs per launch including the
final wait), with the plain guest->host call cost on that machine.
"""
import argparse, json, statistics, subprocess, sys, time, urllib.request

import torch


def start(binary, component, extra):
    proc = subprocess.Popen(
        [binary, "serve", component, "--listen", "127.0.0.1:0", "--admin-listen", "off",
         "--tensor-memory", "16GiB", "--max-memory", "1GiB", "--request-timeout", "600s",
         "--device", "cuda", *extra],
        stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        sys.stderr.write(line)
        if "serving on http://" in line:
            return proc, line.split("serving on http://")[1].split()[0]
    raise SystemExit("server did not start")


def guest(addr, path):
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=900) as r:
        return json.load(r)


def torch_tflops(n, reps, dtype, tf32):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a = torch.rand(n, n, device="cuda", dtype=dtype) - 0.5
    b = torch.rand(n, n, device="cuda", dtype=dtype) - 0.5
    (a @ b)[0, 0].item()
    t = time.perf_counter()
    for _ in range(reps):
        c = a @ b
    c[0, 0].item()
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def torch_blocks(layers, seq, dim, heads, reps, dtype):
    """The guest's /bench/blocks chain in PyTorch eager: ms per forward pass."""
    import torch.nn.functional as F
    torch.backends.cuda.matmul.allow_tf32 = False
    g = torch.Generator(device="cuda").manual_seed(0)
    w = lambda r, c: ((torch.rand(r, c, device="cuda", generator=g) - 0.5) * 0.05).to(dtype)
    net = [dict(wq=w(dim, dim), wk=w(dim, dim), wv=w(dim, dim), wo=w(dim, dim),
                w1=w(dim, 4 * dim), w2=w(4 * dim, dim)) for _ in range(layers)]
    ones = torch.ones(dim, device="cuda", dtype=dtype)
    zeros = torch.zeros(dim, device="cuda", dtype=dtype)
    x0 = w(seq, dim).reshape(1, seq, dim)
    hd = dim // heads
    split = lambda t: t.reshape(1, seq, heads, hd).permute(0, 2, 1, 3)

    def forward():
        x = x0
        for l in net:
            h = F.layer_norm(x, (dim,), ones, zeros, 1e-5)
            q, k, v = split(h @ l["wq"]), split(h @ l["wk"]), split(h @ l["wv"])
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + a.permute(0, 2, 1, 3).reshape(1, seq, dim) @ l["wo"]
            h = F.layer_norm(x, (dim,), ones, zeros, 1e-5)
            x = x + F.gelu(h @ l["w1"]) @ l["w2"]
        x[0, 0, 0].item()

    with torch.no_grad():
        forward()
        out = []
        for _ in range(reps):
            t = time.perf_counter()
            forward()
            out.append((time.perf_counter() - t) * 1e3)
    return out


def torch_upload(mib, reps):
    host = torch.full(((mib << 20),), 7, dtype=torch.uint8)
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        d = host.to("cuda")
        d[0].item()
        out.append((mib << 20) / (time.perf_counter() - t) / (1 << 30))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tensor-wasm", required=True)
    p.add_argument("--component", required=True)
    p.add_argument("--native-launch", help="the cuda_launch bench binary")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args()
    n = 4096
    rows, notes = [], []
    for label, flags, dtype, tdtype, tf32 in [
        ("f32", [], "f32", torch.float32, False),
        ("f32 (TF32)", ["--tf32"], "f32", torch.float32, True),
        ("bf16", [], "bf16", torch.bfloat16, False),
    ]:
        proc, addr = start(args.tensor_wasm, args.component, flags)
        try:
            ours, theirs = [], []
            for _ in range(args.rounds):
                g = guest(addr, f"/bench/matmul?n={n}&reps={args.reps}&dtype={dtype}&sync=end")
                ours += [x / 1000 for x in g["gflops"]]
                theirs.append(torch_tflops(n, args.reps, tdtype, tf32))
            rows.append((f"matmul {n}³ {label} TFLOP/s", statistics.median(ours), statistics.median(theirs)))
            if label in ("f32", "bf16"):
                ours, theirs = [], []
                for _ in range(args.rounds):
                    g = guest(addr, f"/bench/blocks?layers=12&seq=128&dim=768&heads=12&reps=5&dtype={dtype}")
                    ours += g["ms"]
                    theirs += torch_blocks(12, 128, 768, 12, 5, tdtype)
                # Lower is better: the ratio column is PyTorch time / ours.
                rows.append((f"12 blocks s=128 d=768 {label} ms", statistics.median(ours), statistics.median(theirs)))
            if label == "f32":
                ours, theirs = [], []
                for _ in range(args.rounds):
                    ours += guest(addr, f"/bench/upload?mib=64&reps={args.reps}")["gib_per_s"]
                    theirs += torch_upload(64, args.reps)
                rows.append(("guest→device copy 64 MiB GiB/s", statistics.median(ours), statistics.median(theirs)))
        finally:
            proc.terminate()
            proc.wait()
    if args.native_launch:
        proc, addr = start(args.tensor_wasm, args.component, [])
        try:
            reps = 20000
            for kernel, label in [("vector_add", "vector_add, 4 args"), ("empty", "empty, 0 args")]:
                ours, native = [], []
                for _ in range(args.rounds):
                    g = guest(addr, f"/bench/launch?reps={reps}&n=256&kernel={kernel}")
                    out = subprocess.run([args.native_launch, str(reps), "1", "256", kernel],
                                         check=True, capture_output=True, text=True).stdout
                    ours.append(g["total_us"])
                    native.append(json.loads(out.strip().splitlines()[-1])["total_us"])
                o, t = statistics.median(ours), statistics.median(native)
                rows.append((f"wasi:cuda launch ({label}) us", o, t))
                notes.append(f"launch {label}: guest {o:.2f} us vs native {t:.2f} us = "
                             f"native + {o - t:.2f} us (target <= native + 2 us)")
            calls = [guest(addr, "/bench/overhead?reps=50000")["query_us"] for _ in range(args.rounds)]
            notes.append(f"guest->host call (tensor.shape): {statistics.median(calls):.2f} us")
        finally:
            proc.terminate()
            proc.wait()
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; "
          f"{args.rounds} rounds x {args.reps} reps, medians")
    print(f"{'benchmark':<36} {'tensor-wasm':>12} {'pytorch':>10} {'ratio':>6}")
    for name, o, t in rows:
        ratio = t / o if name.endswith((" ms", " us")) else o / t
        print(f"{name:<36} {o:>12.2f} {t:>10.2f} {ratio:>6.2f}")
    print("ratio: tensor-wasm / PyTorch throughput (for ms rows: PyTorch ms / ours; > 1 = faster);")
    print("       launch rows compare with native Rust cudarc, not PyTorch (native us / ours)")
    for line in notes:
        print(line)


if __name__ == "__main__":
    sys.exit(main())
