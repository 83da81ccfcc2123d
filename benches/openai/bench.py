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
asks, decoded to numpy like sentence-transformers returns); generation at batch 1: time to first token and decode tokens/s. Prints
medians of the rounds and the ratios; a markdown table last.

--profile adds, before the tables, where one request's time goes on the
server: per batch size the client's latency, the instance's lifetime, the
wall time inside `wasi:tensor` ops and read-backs, and the op count (from the
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


def start_server(args, d):
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    deploy = os.path.join(d, "deploy.toml")
    world = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "worlds", "openai.wac")
    with open(deploy, "w") as f:
        f.write(f'''
[[deployment]]
name = "openai"
tenant = "bench"
world = "{os.path.abspath(world)}"
limits = {{ timeout = "600s", tensor-memory = "16GiB", body = "64MiB" }}
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
        [args.tensor_wasm, "serve", deploy, "--listen", f"127.0.0.1:{port}", "--admin-listen", "off",
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


def time_calls(fn, rounds, reps):
    """Median seconds per call over `rounds` rounds of `reps` calls."""
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append((time.perf_counter() - t0) / reps)
    return statistics.median(times)


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
    print("| request | client ms | instance lifetime ms | in tensor ops ms | in read-backs ms | ops |")
    print("|---|---|---|---|---|---|")
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
              f"{med('op_ms'):.2f} | {med('read_ms'):.2f} | {med('ops'):.0f} |", flush=True)
    print()


def ours_generation(port, rounds):
    ttft, rate, counts = [], [], []
    for _ in range(rounds + 1):
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
        ttft.append(stamps[0] - t0)
        rate.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
        counts.append(len(stamps))
    return statistics.median(ttft[1:]), statistics.median(rate[1:]), counts[-1]


def peer(args, batches, corpus):
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForCausalLM, AutoTokenizer
    dev = "cuda" if args.device.startswith("cuda") else "cpu"
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    st = SentenceTransformer(os.path.join(args.models, EMBEDDER), device=dev)
    emb = {}
    for b in batches:
        batch = corpus[:b]

        def call():
            st.encode(batch, batch_size=b, convert_to_numpy=True)
            sync()
        emb[b] = b / time_calls(call, args.rounds, max(1, 64 // b))
    gdir = os.path.join(args.models, GENERATOR)
    tok = AutoTokenizer.from_pretrained(gdir, gguf_file="model.gguf")
    model = AutoModelForCausalLM.from_pretrained(gdir, gguf_file="model.gguf", torch_dtype=torch.float32).to(dev)
    ids = tok(GEN_PROMPT, return_tensors="pt").input_ids.to(dev)

    def gen(n):
        with torch.no_grad():
            model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        sync()
    t1 = time_calls(lambda: gen(1), args.rounds, 1)
    tn = time_calls(lambda: gen(GEN_TOKENS), args.rounds, 1)
    return emb, t1, (GEN_TOKENS - 1) / (tn - t1)


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
    args = ap.parse_args()
    batches = [1, 32, 128]
    corpus = sentences(128)
    with tempfile.TemporaryDirectory() as d:
        proc, port = start_server(args, d)
        try:
            checks = check(port, args)
            print("correctness:", json.dumps(checks), flush=True)
            ours = {}
            for b in batches:
                batch = corpus[:b]
                # base64: what the official `openai` client asks for by default.
                ours[b] = b / time_calls(lambda: embed_base64(port, batch),
                                         args.rounds, max(1, 64 // b))
                print(f"tensorwasm embeddings batch {b}: {ours[b]:.1f}/s", flush=True)
            ttft, rate, n = ours_generation(port, args.rounds)
            print(f"tensorwasm generation: ttft {ttft * 1000:.1f} ms, decode {rate:.1f} tok/s ({n} tokens)", flush=True)
            if args.profile:
                profile(port, os.path.join(d, "server.log"), corpus)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print()
    print(f"device {args.device}; medians of {args.rounds} rounds; float32 on both sides")
    if args.no_peer:
        print("| what | TensorWasm |")
        print("|---|---|")
        for b in batches:
            print(f"| embeddings/s, batch {b} | {ours[b]:.1f} |")
        print(f"| time to first token (ms) | {ttft * 1000:.1f} |")
        print(f"| decode tokens/s | {rate:.1f} |")
        return
    emb, t1, prate = peer(args, batches, corpus)
    print("| what | TensorWasm | PyTorch | ratio (≥ 1 is TensorWasm faster) |")
    print("|---|---|---|---|")
    for b in batches:
        print(f"| embeddings/s, batch {b} | {ours[b]:.1f} | {emb[b]:.1f} | {ours[b] / emb[b]:.2f}x |")
    print(f"| time to first token (ms) | {ttft * 1000:.1f} | {t1 * 1000:.1f} | {t1 / ttft:.2f}x |")
    print(f"| decode tokens/s | {rate:.1f} | {prate:.1f} | {rate / prate:.2f}x |")


if __name__ == "__main__":
    sys.exit(main())
