"""The soak behind benches/soak/run.sh: one server, a mix of clients for a
duration, samples every 10 s, and a summary of what grew and what failed.

The mix (each a thread looping with keep-alive connections):
  gateway   GET /hello with a good token (200, or 429 past its 50/s rate),
            a bad token and none (401), POST /echo (200; every request is
            audited, a durable keyvalue write)
  hostile   /ok, /slow, /panic, /loop (deadline), /oom (memory cap): each
            its expected status, in a reused-instance deployment
  tensor    POST /mlp to tensor-service (wasi:tensor on the CPU backend)
  notes     PUT, GET, POST incr, DELETE over 500 keys (durable keyvalue)
  embed     POST /v1/embeddings through the OpenAI world (when models exist)
  deploy    every 30 s: PUT a deployment through the admin API, call it,
            DELETE it
Samples: RSS, open files, threads (from /proc), the data directory's size,
requests and unexpected answers per client, panics in the server's log.
"""

import argparse
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import threading
import time

TOKEN = "soak-token-1"
EXPECTED = {
    "gateway": {200, 429, 401},
    "hostile": {200, 500, 504},
    "tensor": {200},
    "notes": {200, 204, 404},
    "embed": {200},
    "deploy": {200, 201},
}


def duration_s(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text.strip())
    if not m:
        raise SystemExit(f"bad duration {text!r} (try 1h, 20m, 90s)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """Keep-alive HTTP/1.1 to one port; reconnects after an error."""

    def __init__(self, port):
        self.port, self.conn = port, None

    def call(self, method, path, headers=None, body=None, timeout=30):
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
                self.conn.request(method, path, body=body, headers=headers or {})
                r = self.conn.getresponse()
                data = r.read()
                if r.getheader("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, data
            except (OSError, http.client.HTTPException):
                if self.conn:
                    self.conn.close()
                self.conn = None
                if attempt == 1:
                    return 0, b""
        return 0, b""


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.unexpected = {}

    def record(self, client, what, status):
        with self.lock:
            key = f"{client}:{status}"
            self.counts[key] = self.counts.get(key, 0) + 1
            if status not in EXPECTED[client]:
                k = f"{client} {what} -> {status}"
                self.unexpected[k] = self.unexpected.get(k, 0) + 1


def deployment_file(path, guests, world_dir, models):
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    text = f"""
[[deployment]]
name = "gw"
tenant = "acme"
world = "{world_dir}/gateway.wac"
route = {{ host = "gw.soak" }}
instances = {{ reuse = 1000 }}
[deployment.grants]
config = {{ "router.routes" = "GET,HEAD =/ welcome; * /hello app; POST /echo app", "ratelimit.default" = "50/100", "audit.policy" = "all" }}
secrets = {{ "auth.tokens" = "soak sha256:{digest} read write" }}

[[deployment]]
name = "hostile"
tenant = "evil"
component = "{guests}/hostile.wasm"
route = {{ host = "evil.soak" }}
limits = {{ timeout = "2s", memory = "64MiB" }}
instances = {{ reuse = 100 }}

[[deployment]]
name = "tensor"
tenant = "math"
component = "{guests}/tensor_service.wasm"
route = {{ host = "tensor.soak" }}

[[deployment]]
name = "notes"
tenant = "notes"
component = "{guests}/notes.wasm"
route = {{ host = "notes.soak" }}
"""
    if models:
        text += f"""
[[deployment]]
name = "openai"
tenant = "ai"
world = "{world_dir}/openai.wac"
route = {{ host = "ai.soak" }}
instances = {{ reuse = 1000 }}
limits = {{ timeout = "60s" }}
[deployment.grants]
models = ["all-minilm-l6-v2", "smollm2-135m-instruct"]
config = {{ "router.routes" = "GET,HEAD =/ welcome; * /v1 app", "ratelimit.default" = "off" }}
secrets = {{ "auth.tokens" = "soak sha256:{digest} read write" }}
"""
    with open(path, "w") as f:
        f.write(text)


def loop(stop, fn):
    while not stop.is_set():
        fn()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", default="1h")
    ap.add_argument("--out", default="target/soak")
    ap.add_argument("--tensor-wasm", required=True)
    ap.add_argument("--guests", required=True)
    ap.add_argument("--models", default="")
    args = ap.parse_args()
    total = duration_s(args.duration)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    data = os.path.join(out, "data")
    subprocess.run(["rm", "-rf", data], check=True)
    models = args.models if args.models and os.path.isdir(os.path.join(args.models, "all-minilm-l6-v2")) else ""
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
    spec = os.path.join(out, "soak.toml")
    deployment_file(spec, os.path.abspath(args.guests), os.path.join(root, "worlds"), models)
    port, admin = free_port(), free_port()
    cmd = [os.path.abspath(args.tensor_wasm), "serve", spec, "--listen", f"127.0.0.1:{port}",
           "--admin-listen", f"127.0.0.1:{admin}", "--data-dir", data,
           "--cache-dir", os.path.join(out, "cache")]
    if models:
        cmd += ["--models-dir", os.path.abspath(models)]
    log = open(os.path.join(out, "server.log"), "w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    probe = Client(port)
    until = time.time() + 300
    while probe.call("GET", "/hello", {"Host": "gw.soak", "Authorization": f"Bearer {TOKEN}"})[0] != 200:
        if time.time() > until or server.poll() is not None:
            raise SystemExit(f"the server did not start; see {out}/server.log")
        time.sleep(0.5)
    admin_token = open(os.path.join(data, "admin-token")).read().strip()
    print(f"soak: serving on {port}, admin {admin}; {total:.0f} s; embeddings {'on' if models else 'off (no models)'}",
          flush=True)

    stats, stop = Stats(), threading.Event()
    good = {"Host": "gw.soak", "Authorization": f"Bearer {TOKEN}"}

    def gateway():
        c = Client(port)
        for what, headers, method, body in [
            ("hello", good, "GET", None),
            ("hello", good, "GET", None),
            ("echo", good, "POST", b"soak"),
            ("bad-token", {"Host": "gw.soak", "Authorization": "Bearer nope"}, "GET", None),
            ("no-token", {"Host": "gw.soak"}, "GET", None),
        ]:
            path = "/echo" if what == "echo" else "/hello"
            stats.record("gateway", what, c.call(method, path, headers, body)[0])

    def hostile():
        c = Client(port)
        for path, want in [("/ok", 200), ("/slow?ms=50", 200), ("/panic", 500), ("/ok", 200),
                           ("/loop", 504), ("/oom", 500)]:
            status = c.call("GET", path, {"Host": "evil.soak"})[0]
            stats.record("hostile", path, status if status == want else -status)
            time.sleep(0.2)

    mlp = json.dumps({"input": [[0.5, -1.0, 2.0, 0.25]] * 8,
                      "layers": [{"weight": [[0.1] * 16] * 4, "bias": [0.0] * 16, "activation": "gelu"},
                                 {"weight": [[0.2] * 4] * 16, "bias": [0.1] * 4, "activation": "none"}]}).encode()

    def tensor():
        c = Client(port)
        stats.record("tensor", "/mlp", c.call("POST", "/mlp", {"Host": "tensor.soak"}, mlp)[0])

    counter = {"n": 0}

    def notes():
        c = Client(port)
        counter["n"] += 1
        k = f"k{counter['n'] % 500}"
        h = {"Host": "notes.soak"}
        stats.record("notes", "put", c.call("PUT", f"/notes/{k}", h, b"x" * 256)[0])
        stats.record("notes", "get", c.call("GET", f"/notes/{k}", h)[0])
        stats.record("notes", "incr", c.call("POST", f"/notes/c{counter['n'] % 50}/incr", h)[0])
        if counter["n"] % 3 == 0:
            stats.record("notes", "delete", c.call("DELETE", f"/notes/{k}", h)[0])

    sentences = json.dumps({"model": "all-minilm-l6-v2",
                            "input": ["The quick brown fox.", "Soak tests find slow leaks."]}).encode()

    def embed():
        c = Client(port)
        h = {"Host": "ai.soak", "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        stats.record("embed", "/v1/embeddings", c.call("POST", "/v1/embeddings", h, sentences, timeout=120)[0])

    def deploy():
        c = Client(admin)
        h = {"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"}
        spec = json.dumps({"tenant": "extra", "component": os.path.abspath(os.path.join(args.guests, "hello.wasm")),
                           "route": {"host": "extra.soak"}}).encode()
        stats.record("deploy", "put", c.call("PUT", "/v1/deployments/extra", h, spec)[0])
        time.sleep(1)
        status = Client(port).call("GET", "/hello", {"Host": "extra.soak"})[0]
        stats.record("deploy", "call", 200 if status == 200 else -status)
        stats.record("deploy", "delete", c.call("DELETE", "/v1/deployments/extra", h)[0])
        for _ in range(29):
            if stop.is_set():
                return
            time.sleep(1)

    EXPECTED["hostile"] |= {200, 500, 504}
    workers = [gateway, gateway, hostile, tensor, notes, deploy] + ([embed] if models else [])
    threads = [threading.Thread(target=loop, args=(stop, w), daemon=True) for w in workers]
    for t in threads:
        t.start()

    samples, started = [], time.time()
    csv = open(os.path.join(out, "samples.csv"), "w")
    csv.write("t_s,rss_mib,fds,threads,data_mib,requests,unexpected,panics\n")

    def du(path):
        size = 0
        for d, _, files in os.walk(path):
            for f in files:
                try:
                    size += os.path.getsize(os.path.join(d, f))
                except OSError:
                    pass
        return size

    def sample():
        status = open(f"/proc/{server.pid}/status").read()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
        thr = int(re.search(r"Threads:\s+(\d+)", status).group(1))
        fds = len(os.listdir(f"/proc/{server.pid}/fd"))
        with stats.lock:
            reqs = sum(stats.counts.values())
            bad = sum(stats.unexpected.values())
        panics = len(re.findall(r"panicked", open(os.path.join(out, "server.log"), errors="replace").read()))
        s = {"t": time.time() - started, "rss": rss, "fds": fds, "threads": thr,
             "data": du(data) / 2**20, "requests": reqs, "unexpected": bad, "panics": panics}
        samples.append(s)
        csv.write(f"{s['t']:.0f},{rss:.1f},{fds},{thr},{s['data']:.1f},{reqs},{bad},{panics}\n")
        csv.flush()
        return s

    try:
        while time.time() - started < total:
            if server.poll() is not None:
                raise SystemExit(f"the server exited ({server.returncode}); see {out}/server.log")
            s = sample()
            print(f"  {s['t']:6.0f}s rss {s['rss']:7.1f} MiB fds {s['fds']:4} threads {s['threads']:3} "
                  f"data {s['data']:6.1f} MiB requests {s['requests']:8} unexpected {s['unexpected']} "
                  f"panics {s['panics']}", flush=True)
            time.sleep(10)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        final = sample() if server.poll() is None else None
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()

    warm = min(600.0, total / 6)
    after = [s for s in samples if s["t"] >= warm]
    if len(after) < 6:
        after = samples
    base, end = after[:3], after[-3:]

    def growth(key):
        b = statistics.median(x[key] for x in base)
        e = statistics.median(x[key] for x in end)
        return b, e, (e - b) / b * 100 if b else 0.0

    rows = {k: growth(k) for k in ["rss", "fds", "threads"]}
    summary = {
        "duration_s": round(samples[-1]["t"]),
        "warm_up_s": warm,
        "requests": stats.counts,
        "unexpected": stats.unexpected,
        "panics": samples[-1]["panics"],
        "data_mib": [round(samples[0]["data"], 1), round(samples[-1]["data"], 1)],
        "growth": {k: {"after_warm_up": round(b, 1), "end": round(e, 1), "percent": round(p, 1)}
                   for k, (b, e, p) in rows.items()},
        "server_exit": server.returncode,
    }
    flat = all(p <= 5.0 for _, _, p in rows.values())
    summary["pass"] = flat and not stats.unexpected and summary["panics"] == 0 and final is not None
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print("\n| measure | after warm-up | end | growth |\n|---|---|---|---|")
    for k, (b, e, p) in rows.items():
        print(f"| {k} | {b:.1f} | {e:.1f} | {p:+.1f}% |")
    print(f"| data dir MiB | {samples[0]['data']:.1f} (start) | {samples[-1]['data']:.1f} | |")
    total_reqs = sum(stats.counts.values())
    print(f"\nrequests: {total_reqs}; unexpected: {sum(stats.unexpected.values())} {stats.unexpected or ''}; "
          f"panics: {summary['panics']}; exit: {server.returncode}")
    print(f"soak: {'PASS' if summary['pass'] else 'FAIL'} (summary in {out}/summary.json)")
    raise SystemExit(0 if summary["pass"] else 1)


if __name__ == "__main__":
    main()
