"""The OpenAI API's models on TensorWasm vs the same models on PyTorch, same
machine, same run (and, first, correctness on this machine's backend).

    python3 benches/openai/bench.py --tensor-wasm BIN --models DIR --device cuda|cpu
        [--reference-embeddings REF.json --sentences S.json]
        [--reference-generation REF.json --prompts P.json] [--rounds 5] [--no-peer] [--profile]

TensorWasm: `tensor-wasm serve` of worlds/openai.wac (router, auth, ratelimit,
audit, openai, minilm, smollm: a fresh instance of all of them per request),
driven over HTTP on 127.0.0.1 with urllib. PyTorch: sentence-transformers
(`SentenceTransformer(DIR/all-minilm-l6-v2)`, float32) and transformers
(`AutoModelForCausalLM` from the same GGUF, float32, greedy `generate`).

Measured: embeddings/s at batch 1, 32 and 128 (tokenization included on both
sides; ours over HTTP with `encoding_format: base64`, as the official client
asks, decoded to numpy like sentence-transformers returns); generation at
batch 1: time to first token and decode tokens/s. The two sides run in
interleaved rounds (which goes first alternates), so a noisy machine slows
both alike; prints each round, then medians and the median of the per-round
ratios in a markdown table last.

--profile adds, before the tables, where one request's time goes on the
server: per batch size the client's latency, the instance's lifetime, the
wall time inside `wasi:tensor` ops, read-backs and other tensor calls
(uploads, reshapes, drops, weights look-ups), and their counts (from the
host's `tensor use of one instance` debug lines).
"""

import argparse
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

TOKEN = "bench-openai-token"
EMBEDDER, GENERATOR = "all-minilm-l6-v2", "smollm2-135m-instruct"
GEN_PROMPT = "The history of the Roman Empire began"
GEN_TOKENS = 64

WORDS = ("the model runs inside a WebAssembly component while its heavy math runs on the "
         "host's tensor backend which is a GPU when one is present and a CPU otherwise so that "
         "every request gets a fresh isolated instance yet weights stay loaded once").split()


def sentences(n):
    """n sentences of 4 to 40 words, deterministic."""
    out = []
    for i in range(n):
        k = 4 + (i * 7) % 37
        out.append(" ".join(WORDS[(i + j * 3) % len(WORDS)] for j in range(k)).capitalize() + ".")
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port, path, body, stream=False):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    r = urllib.request.urlopen(req, timeout=600)
    if stream:
        return r
    return json.loads(r.read())


BATCHED = ('inference = { embeddings = "tensorwasm:minilm", generation = "tensorwasm:smollm", '
           'max-batch = 64 }')


def batched_inference(generator=None):
    """The `[deployment.inference]` line of the batched world."""
    return BATCHED.replace('"tensorwasm:smollm"', json.dumps(os.path.abspath(generator))) if generator else BATCHED


def start_server(args, d, reuse=1, batched=False, generator=None, device=None, admin=None):
    """The OpenAI world on `args.device`; `batched`: worlds/openai-batched.wac
    with the models behind the host's batchers ([deployment.inference]),
    the generation model from `generator` (a .wasm) when given; `device`:
    the deployment's `device` (e.g. `cuda:0`, `cuda:all`); `admin`: a port
    for the admin listener (/metrics), off without."""
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    deploy = os.path.join(d, "deploy.toml")
    world = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "worlds",
                         "openai-batched.wac" if batched else "openai.wac")
    with open(deploy, "w") as f:
        f.write(f'''
[[deployment]]
name = "openai"
tenant = "bench"
{f'device = "{device}"' if device else ""}
world = "{os.path.abspath(world)}"
limits = {{ timeout = "600s", tensor-memory = "16GiB", body = "64MiB" }}
instances = {{ reuse = {reuse} }}
{batched_inference(generator) if batched else ""}
[deployment.grants]
models = ["{EMBEDDER}", "{GENERATOR}"]
config = {{ "router.routes" = "GET,HEAD =/ welcome; * /v1 app", "ratelimit.default" = "off" }}
secrets = {{ "auth.tokens" = "bench sha256:{digest} read write" }}
''')
    port = free_port()
    log = open(os.path.join(d, "server.log"), "w")
    env = dict(os.environ)
    if args.profile:
        env["TENSOR_WASM_LOG"] = "info,tensor_wasm::tensor=debug"
    proc = subprocess.Popen(
        [args.tensor_wasm, "serve", deploy, "--listen", f"127.0.0.1:{port}",
         "--admin-listen", f"127.0.0.1:{admin}" if admin else "off",
         "--device", args.device, "--models-dir", args.models, "--cache-dir", os.path.join(d, "cache"),
         "--data-dir", os.path.join(d, "data"), "--max-memory", "1GiB"],
        stdout=subprocess.DEVNULL, stderr=log, env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}); see {d}/server.log")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
            return proc, port
        except (OSError, urllib.error.URLError):
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def check(port, args):
    """Correctness on this backend against the carried references."""
    import numpy as np
    out = {}
    if args.reference_embeddings:
        ref = json.load(open(args.reference_embeddings))
        sent = json.load(open(args.sentences))
        got = post(port, "/v1/embeddings", {"model": EMBEDDER, "input": sent})
        cos = []
        for d, v in zip(got["data"], ref["vectors"]):
            a, b = np.array(d["embedding"]), np.array(v)
            cos.append(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
        out["embeddings_min_cosine"] = min(cos)
        out["embeddings_tokens_equal"] = got["usage"]["prompt_tokens"] == sum(len(t) for t in ref["tokens"])
    if args.reference_generation:
        ref = json.load(open(args.reference_generation))
        prompts = json.load(open(args.prompts))
        same = 0
        for p, r in zip(prompts, ref):
            if "messages" in p:
                g = post(port, "/v1/chat/completions", {"model": GENERATOR, "messages": p["messages"],
                                                        "max_tokens": 32, "temperature": 0})
                text = g["choices"][0]["message"]["content"]
            else:
                g = post(port, "/v1/completions", {"model": GENERATOR, "prompt": p["text"],
                                                   "max_tokens": 32, "temperature": 0})
                text = g["choices"][0]["text"]
            ok = text == r["text"] and g["usage"]["completion_tokens"] == len(r["tokens"])
            same += ok
            if not ok:
                print(f"  generation differs: {text!r} vs {r['text']!r}", flush=True)
        out["generation_same"] = f"{same}/{len(ref)}"
    return out


def time_call(fn, reps):
    """Mean seconds per call over `reps` calls."""
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def embed_base64(port, batch):
    """Embeds `batch` as the official client does (base64) and decodes the vectors."""
    import numpy as np
    r = post(port, "/v1/embeddings", {"model": EMBEDDER, "input": batch, "encoding_format": "base64"})
    return [np.frombuffer(__import__("base64").b64decode(d["embedding"]), dtype="<f4") for d in r["data"]]


def usage_lines(log_path, skip):
    """The host's per-instance tensor usage lines after the first `skip`."""
    import re
    lines = [l for l in open(log_path, encoding="utf-8", errors="replace") if "tensor use of one instance" in l]
    out = []
    for l in lines[skip:]:
        out.append({k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", l)})
    return out, len(lines)


def profile(port, log_path, corpus, reps=7):
    """Where a request's time goes on the server, per batch size (medians)."""
    print("| request | client ms | instance lifetime ms | in tensor ops ms | in read-backs ms | in other tensor calls ms | ops | other calls |")
    print("|---|---|---|---|---|---|---|---|")
    _, seen = usage_lines(log_path, 0)
    cases = [(f"embeddings batch {b}", lambda b=b: embed_base64(port, corpus[:b])) for b in (1, 32, 128)]
    cases.append(("embeddings batch 128 as token ids", lambda: post(port, "/v1/embeddings", {
        "model": EMBEDDER, "input": [[101] + [2000 + (i * 7 + j) % 5000 for j in range(4 + (i * 7) % 37)] + [102]
                                     for i in range(128)]})))
    cases.append(("completion, 1 token", lambda: post(port, "/v1/completions", {
        "model": GENERATOR, "prompt": GEN_PROMPT, "max_tokens": 1, "temperature": 0})))
    for name, call in cases:
        call()
        client = []
        for _ in range(reps):
            t0 = time.perf_counter()
            call()
            client.append(time.perf_counter() - t0)
        time.sleep(0.3)  # the store (and its usage line) ends after the response
        rows, seen2 = usage_lines(log_path, seen)
        seen = seen2
        rows = rows[-reps:]
        med = lambda k: statistics.median(r.get(k, 0.0) for r in rows) if rows else float("nan")
        print(f"| {name} | {statistics.median(client) * 1000:.2f} | {med('lifetime_ms'):.2f} | "
              f"{med('op_ms'):.2f} | {med('read_ms'):.2f} | {med('call_ms'):.2f} | {med('ops'):.0f} | "
              f"{med('calls'):.0f} |", flush=True)
    print()


def ours_generation(port):
    """One streamed greedy completion: (time to first token, decode tokens/s)."""
    t0 = time.perf_counter()
    r = post(port, "/v1/completions", {"model": GENERATOR, "prompt": GEN_PROMPT,
                                       "max_tokens": GEN_TOKENS, "temperature": 0, "stream": True}, stream=True)
    stamps = []
    for line in r:
        line = line.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if chunk["choices"] and chunk["choices"][0].get("text"):
            stamps.append(time.perf_counter())
    return stamps[0] - t0, (len(stamps) - 1) / (stamps[-1] - stamps[0])


class Peer:
    """The same models on PyTorch: sentence-transformers and transformers."""

    def __init__(self, args):
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers import AutoModelForCausalLM, AutoTokenizer
        self.torch = torch
        dev = "cuda" if args.device.startswith("cuda") else "cpu"
        self.sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
        self.st = SentenceTransformer(os.path.join(args.models, EMBEDDER), device=dev)
        gdir = os.path.join(args.models, GENERATOR)
        tok = AutoTokenizer.from_pretrained(gdir, gguf_file="model.gguf")
        self.model = AutoModelForCausalLM.from_pretrained(
            gdir, gguf_file="model.gguf", dtype=torch.float32).to(dev)
        self.ids = tok(GEN_PROMPT, return_tensors="pt").input_ids.to(dev)

    def embed(self, batch):
        self.st.encode(batch, batch_size=len(batch), convert_to_numpy=True)
        self.sync()

    def generate(self, n):
        with self.torch.no_grad():
            self.model.generate(self.ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        self.sync()

    def generation(self):
        """(time to first token, decode tokens/s) from generate(1) and generate(N)."""
        t1 = time_call(lambda: self.generate(1), 1)
        tn = time_call(lambda: self.generate(GEN_TOKENS), 1)
        return t1, (GEN_TOKENS - 1) / (tn - t1)


def rounds(args, port, peer, batches, corpus):
    """Interleaved rounds (the order of the two sides alternating): for each
    measure, one (ours, theirs) pair per round; theirs is None without a peer."""
    rows = {f"embeddings/s, batch {b}": [] for b in batches}
    rows["time to first token (ms)"] = []
    rows["decode tokens/s"] = []
    calls = {b: (lambda b=b: embed_base64(port, corpus[:b]),
                 (lambda b=b: peer.embed(corpus[:b])) if peer else None) for b in batches}
    for ours, theirs in calls.values():  # warm both up
        ours()
        if theirs:
            theirs()
    ours_generation(port)
    if peer:
        peer.generation()
    for r in range(args.rounds):
        sides = [0, 1] if r % 2 == 0 else [1, 0]
        for b in batches:
            reps = max(1, 64 // b)
            got = [None, None]
            for side in sides:
                fn = calls[b][side]
                if fn:
                    got[side] = b / time_call(fn, reps)
            rows[f"embeddings/s, batch {b}"].append(tuple(got))
        gen = [None, None]
        for side in sides:
            if side == 0:
                gen[0] = ours_generation(port)
            elif peer:
                gen[1] = peer.generation()
        rows["time to first token (ms)"].append(
            (gen[0][0] * 1000, gen[1][0] * 1000 if gen[1] else None))
        rows["decode tokens/s"].append((gen[0][1], gen[1][1] if gen[1] else None))
        print(f"round {r + 1}: " + "; ".join(
            f"{k} {v[-1][0]:.1f}" + (f" vs {v[-1][1]:.1f}" if v[-1][1] else "") for k, v in rows.items()),
            flush=True)
    return rows


def fresh_vs_reuse(args, corpus, reps=64):
    """Embeddings at batch 1, requests/s from one client: the world with a
    fresh instance per request vs warm instances (up to 1000 requests each),
    two servers measured in alternation."""
    modes = {"fresh": 1, "reuse 1000": 1000}
    rows = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as d:
        servers = {}
        try:
            for m, n in modes.items():
                os.makedirs(os.path.join(d, str(n)))
                servers[m] = start_server(args, os.path.join(d, str(n)), reuse=n)
            call = {m: (lambda port=port: embed_base64(port, corpus[:1])) for m, (_, port) in servers.items()}
            for fn in call.values():
                time_call(fn, 8)  # warm-up
            for r in range(args.rounds):
                for m in (list(modes) if r % 2 == 0 else list(modes)[::-1]):
                    rows[m].append(1 / time_call(call[m], reps))
                print(f"round {r + 1}: " + "; ".join(f"{m} {v[-1]:.1f} req/s" for m, v in rows.items()),
                      flush=True)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=60)
    med = statistics.median
    print()
    print(f"device {args.device}; {args.rounds} interleaved rounds x {reps} requests, medians; "
          "POST /v1/embeddings, 1 sentence, base64, one client")
    print("| instances | requests/s | vs fresh (median of per-round ratios) |")
    print("|---|---|---|")
    for m in modes:
        ratio = med(a / b for a, b in zip(rows[m], rows["fresh"]))
        print(f"| {m} | {med(rows[m]):.1f} | {ratio:.2f}x |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tensor-wasm", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reference-embeddings")
    ap.add_argument("--sentences")
    ap.add_argument("--reference-generation")
    ap.add_argument("--prompts")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--fresh-vs-reuse", action="store_true",
                    help="only embeddings at batch 1: fresh instances vs warm ones")
    ap.add_argument("--reuse", type=int, default=1, help="requests per instance (instances.reuse)")
    ap.add_argument("--batched", action="store_true",
                    help="serve worlds/openai-batched.wac with the host's batchers ([deployment.inference])")
    args = ap.parse_args()
    batches = [1, 32, 128]
    corpus = sentences(128)
    if args.fresh_vs_reuse:
        return fresh_vs_reuse(args, corpus)
    peer = None if args.no_peer else Peer(args)
    with tempfile.TemporaryDirectory() as d:
        proc, port = start_server(args, d, args.reuse, batched=args.batched)
        try:
            checks = check(port, args)
            print("correctness:", json.dumps(checks), flush=True)
            rows = rounds(args, port, peer, batches, corpus)
            if args.profile:
                profile(port, os.path.join(d, "server.log"), corpus)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print()
    print(f"device {args.device}; {args.rounds} interleaved rounds, medians; float32 on both sides")
    med = statistics.median
    if not peer:
        print("| what | TensorWasm |")
        print("|---|---|")
        for k, v in rows.items():
            print(f"| {k} | {med(o for o, _ in v):.1f} |")
        return
    print("| what | TensorWasm | PyTorch | ratio (≥ 1 is TensorWasm faster; median of per-round ratios) |")
    print("|---|---|---|---|")
    for k, v in rows.items():
        ours, theirs = med(o for o, _ in v), med(t for _, t in v)
        # Time to first token: lower is better, so the ratio is theirs / ours.
        ratio = med((t / o) if k.startswith("time") else (o / t) for o, t in v)
        print(f"| {k} | {ours:.1f} | {theirs:.1f} | {ratio:.2f}x |")


if __name__ == "__main__":
    sys.exit(main())
