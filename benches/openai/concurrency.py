"""Many users at once: aggregate throughput of the OpenAI world with N
concurrent clients, batched across requests ([deployment.inference],
worlds/openai-batched.wac) and not (worlds/openai.wac, warm instances), vs
PyTorch batching the same work, same machine, interleaved rounds.

    python3 benches/openai/concurrency.py --tensor-wasm BIN --models DIR
        [--device cuda|cpu] [--clients 1,8,32,64] [--rounds 3] [--no-peer] [--no-unbatched]
        [--span cuda:all]

Chat: N clients each stream one greedy `/v1/completions` of 64 tokens with
a prompt of its own (all started together); aggregate tokens/s = tokens of
all streams / wall time from the first request to the last token; time to
first token per stream (p50, p99). Peer: transformers `generate` of the same
N prompts as one batch (left-padded, greedy, 64 new tokens each).
Embeddings: N client processes each sending batch-1 requests (one
sentence, base64, keep-alive) for `--seconds`; embeddings/s of all. Anchor:
one client sending batches of N; peer: sentence-transformers encoding N
sentences per batch.
GPU utilization (nvidia-smi, sampled every 100 ms, mean over the GPUs) is
reported per side. --span DEVICES (with --device cuda:all on a host with
several GPUs) adds the batched world spread over DEVICES (`device =
"cuda:all"`: its models on every GPU) beside the batched world pinned to
cuda:0, and a table of the two (docs/SCALING.md).
Prints each round, then a markdown table of medians.
"""

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

SUBJECTS = ("Roman Empire", "printing press", "steam engine", "Silk Road", "Renaissance", "Moon landing",
            "internet", "French Revolution", "Ming dynasty", "Industrial Revolution", "telescope",
            "Byzantine Empire", "Aztec Empire", "electricity", "vaccination", "railway", "Inca Empire",
            "Viking Age", "Ottoman Empire", "radio", "Olympic Games", "compass", "paper money", "calculus",
            "Great Wall", "Magna Carta", "telephone", "airplane", "antibiotics", "transistor", "Mongol Empire",
            "Gold Rush")
TOKENS = 64


def prompts(n):
    return [f"The history of the {SUBJECTS[i % len(SUBJECTS)]} began" + (f" (part {i // len(SUBJECTS) + 1})"
            if i >= len(SUBJECTS) else "") for i in range(n)]


class GpuUse:
    """Mean GPU utilization while in the `with` block (None without nvidia-smi)."""

    def __enter__(self):
        self.samples, self.proc = [], None
        try:
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            threading.Thread(target=self._read, daemon=True).start()
        except OSError:
            self.proc = None
        return self

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.samples.append(float(line.split(",")[0]))
            except ValueError:
                pass

    def __exit__(self, *_):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()
        self.mean = statistics.mean(self.samples) if self.samples else None


def stream_one(port, prompt, t0):
    """(time to first token, time of last token, completion tokens) of one streamed completion."""
    r = bench.post(port, "/v1/completions", {
        "model": bench.GENERATOR, "prompt": prompt, "max_tokens": TOKENS, "temperature": 0,
        "stream": True, "stream_options": {"include_usage": True}}, stream=True)
    first = last = None
    tokens = 0
    for line in r:
        line = line.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        if chunk["choices"] and chunk["choices"][0].get("text"):
            last = time.perf_counter()
            first = first or last
    return first - t0, last, tokens


def ours_chat(port, n):
    """(aggregate tokens/s, TTFTs in ms, GPU use) for n concurrent streams."""
    ps = prompts(n)
    with GpuUse() as gpu, cf.ThreadPoolExecutor(n) as ex:
        t0 = time.perf_counter()
        got = list(ex.map(lambda p: stream_one(port, p, t0), ps))
    end = max(g[1] for g in got)
    return sum(g[2] for g in got) / (end - t0), [g[0] * 1000 for g in got], gpu.mean


def embed_client(job):
    """One client process: batches of `batch` sentences over one keep-alive
    connection from `start` for `seconds`; returns the embeddings received."""
    port, i, stride, batch, start, seconds, corpus = job
    import base64
    import http.client
    import numpy as np
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    headers = {"Authorization": f"Bearer {bench.TOKEN}", "Content-Type": "application/json"}
    time.sleep(max(0.0, start - time.time()))
    done, k = 0, i * batch
    while time.time() < start + seconds:
        texts = [corpus[(k + j) % len(corpus)] for j in range(batch)]
        conn.request("POST", "/v1/embeddings", json.dumps(
            {"model": bench.EMBEDDER, "input": texts, "encoding_format": "base64"}), headers)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"embeddings: {r.status} {body[:200]!r}")
        for d in json.loads(body)["data"]:
            np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4")
        done += batch
        k += stride * batch
    return done


def embed_clients(port, clients, batch, seconds, corpus):
    """Embeddings/s of `clients` processes each sending batches of `batch`
    (processes, so the load generator is not one Python interpreter)."""
    start = time.time() + 1.0
    jobs = [(port, i, clients, batch, start, seconds, corpus) for i in range(clients)]
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        done = pool.map(embed_client, jobs)
    return sum(done) / seconds


def ours_embeddings(port, n, seconds, corpus):
    """(embeddings/s, GPU use) of n clients each sending batch-1 requests for `seconds`."""
    with GpuUse() as gpu:
        eps = embed_clients(port, n, 1, seconds, corpus)
    return eps, gpu.mean


def batches_of(n, corpus):
    """Batches of n sentences, walking the corpus as the n clients do."""
    k = 0
    while True:
        yield [corpus[(k + i) % len(corpus)] for i in range(n)]
        k += n


def one_client_batches(port, n, seconds, corpus):
    """Embeddings/s of one client sending batches of n (the same sentences)."""
    return embed_clients(port, 1, n, seconds, corpus)


class Peer(bench.Peer):
    """transformers `generate` on N prompts at once; sentence-transformers in batches of N."""

    def __init__(self, args):
        super().__init__(args)
        from transformers import AutoTokenizer
        gdir = os.path.join(args.models, bench.GENERATOR)
        self.tok = AutoTokenizer.from_pretrained(gdir, gguf_file="model.gguf")
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.dev = "cuda" if args.device.startswith("cuda") else "cpu"

    def chat(self, n):
        batch = self.tok(prompts(n), return_tensors="pt", padding=True).to(self.dev)
        with GpuUse() as gpu:
            t0 = time.perf_counter()
            with self.torch.no_grad():
                self.model.generate(**batch, max_new_tokens=TOKENS, min_new_tokens=TOKENS, do_sample=False,
                                    pad_token_id=self.tok.pad_token_id)
            self.sync()
            dt = time.perf_counter() - t0
        return n * TOKENS / dt, gpu.mean

    def embeddings(self, n, seconds, corpus):
        stop, done = time.perf_counter() + seconds, 0
        with GpuUse() as gpu:
            t0 = time.perf_counter()
            for batch in batches_of(n, corpus):
                if time.perf_counter() >= stop:
                    break
                self.embed(batch)
                done += n
            dt = time.perf_counter() - t0
        return done / dt, gpu.mean


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tensor-wasm", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--clients", default="1,8,32,64")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0, help="per embeddings measurement")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--no-unbatched", action="store_true", help="skip the world without batching")
    ap.add_argument("--span", metavar="DEVICES", help="also the batched world on DEVICES (e.g. cuda:all)")
    ap.add_argument("--baseline-generator", metavar="WASM",
                    help="a smollm component (e.g. an earlier build) served as one more batched "
                         "side, 'baseline', for an A/B of the generation model in the same run")
    ap.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    corpus = bench.sentences(128)
    peer = None if args.no_peer else Peer(args)
    sides = (["batched"] + (["span"] if args.span else []) + (["baseline"] if args.baseline_generator else [])
             + ([] if args.no_unbatched else ["unbatched"]))
    rows = {}  # (what, n) -> side -> list of values
    ttft = {}  # n -> list of ttft lists (batched)
    util = {}  # (what, n, side) -> list of GPU use
    with tempfile.TemporaryDirectory() as d:
        servers = {}
        try:
            for side in sides:
                os.makedirs(os.path.join(d, side))
                device = (args.span if side == "span" else "cuda:0") if args.span else None
                servers[side] = bench.start_server(
                    args, os.path.join(d, side), reuse=1000, batched=side != "unbatched",
                    generator=args.baseline_generator if side == "baseline" else None, device=device)
            ports = {side: port for side, (_, port) in servers.items()}
            for side, port in ports.items():  # warm up
                ours_chat(port, 2)
                ours_embeddings(port, 2, 1, corpus)
            if peer:
                peer.chat(2)
                peer.embeddings(2, 1, corpus)
            for r in range(args.rounds):
                order = (sides + ["peer"]) if r % 2 == 0 else (["peer"] + sides[::-1])
                for n in clients:
                    for side in order:
                        if side == "peer":
                            if not peer:
                                continue
                            tps, g1 = peer.chat(n)
                            eps, g2 = peer.embeddings(n, args.seconds, corpus)
                        else:
                            tps, ttfts, g1 = ours_chat(ports[side], n)
                            eps, g2 = ours_embeddings(ports[side], n, args.seconds, corpus)
                            if side == "batched":
                                ttft.setdefault(n, []).extend(ttfts)
                        rows.setdefault(("chat tokens/s", n), {}).setdefault(side, []).append(tps)
                        rows.setdefault(("embeddings/s", n), {}).setdefault(side, []).append(eps)
                        util.setdefault(("chat", n, side), []).append(g1)
                        util.setdefault(("embeddings", n, side), []).append(g2)
                    anchor = one_client_batches(ports["batched"], n, args.seconds, corpus)
                    rows[("embeddings/s", n)].setdefault("one client, batches of N", []).append(anchor)
                    print(f"round {r + 1}, N={n}: " + "; ".join(
                        f"{w} {side} {vals[-1]:.0f}" for (w, m), by in rows.items() if m == n
                        for side, vals in by.items()), flush=True)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=60)
    report(args, rows, ttft, util, peer is not None)


def report(args, rows, ttft, util, has_peer):
    med = statistics.median

    def gpu(what, n, side):
        vals = [v for v in util.get((what, n, side), []) if v is not None]
        return f"{med(vals):.0f}%" if vals else "-"

    print()
    print(f"device {args.device}; {args.rounds} interleaved rounds, medians; float32; chat: greedy "
          f"/v1/completions, {TOKENS} tokens, one prompt per client; embeddings: batch-1 requests")
    print("| what | N | batched | unbatched | PyTorch batched | batched / PyTorch | GPU use batched / PyTorch |")
    print("|---|---|---|---|---|---|---|")
    for (what, n), by in rows.items():
        b = by.get("batched", [])
        u = by.get("unbatched", [])
        p = by.get("peer", [])
        ratio = f"{med(x / y for x, y in zip(b, p)):.2f}x" if p else "-"
        kind = "chat" if what.startswith("chat") else "embeddings"
        print(f"| {what} | {n} | {med(b):.0f} | {med(u):.0f} | " if u else f"| {what} | {n} | {med(b):.0f} | - | ",
              end="")
        print(f"{med(p):.0f} | {ratio} | {gpu(kind, n, 'batched')} / {gpu(kind, n, 'peer')} |" if p
              else f"- | - | {gpu(kind, n, 'batched')} / - |")
    if args.span:
        print()
        print(f"One GPU (cuda:0) vs the same world on {args.span}")
        print("| what | N | one GPU | spread | spread / one | GPU use one / spread |")
        print("|---|---|---|---|---|---|")
        for (what, n), by in rows.items():
            one, spread = by.get("batched", []), by.get("span", [])
            if one and spread:
                kind = "chat" if what.startswith("chat") else "embeddings"
                print(f"| {what} | {n} | {med(one):.0f} | {med(spread):.0f} | "
                      f"{med(x / y for x, y in zip(spread, one)):.2f}x | "
                      f"{gpu(kind, n, 'batched')} / {gpu(kind, n, 'span')} |")
    if args.baseline_generator:
        print()
        print(f"A/B of the generation model: baseline {args.baseline_generator}")
        print("| N | chat tokens/s batched | baseline | batched / baseline | GPU use batched / baseline |")
        print("|---|---|---|---|---|")
        for (what, n), by in rows.items():
            if what.startswith("chat"):
                b, a = by["batched"], by["baseline"]
                print(f"| {n} | {med(b):.0f} | {med(a):.0f} | {med(x / y for x, y in zip(b, a)):.2f}x | "
                      f"{gpu('chat', n, 'batched')} / {gpu('chat', n, 'baseline')} |")
    print()
    print("| N | embeddings/s, N clients of batch 1 (batched) | one client, batches of N | ratio |")
    print("|---|---|---|---|")
    for (what, n), by in rows.items():
        if what == "embeddings/s":
            a, b = by["one client, batches of N"], by["batched"]
            print(f"| {n} | {med(b):.0f} | {med(a):.0f} | {med(x / y for x, y in zip(b, a)):.2f}x |")
    print()
    print("| N | time to first token p50 (ms) | p99 (ms) |")
    print("|---|---|---|")
    for n, xs in ttft.items():
        print(f"| {n} | {pct(xs, 0.5):.0f} | {pct(xs, 0.99):.0f} |")


if __name__ == "__main__":
    sys.exit(main())
