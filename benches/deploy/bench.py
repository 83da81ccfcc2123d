"""Live deployment swaps: time from `PUT /v1/deployments/{name}` to the first
request the new revision serves, and requests lost while wrk keeps the
deployment busy (c=16), for hello and for the OpenAI world, warm artifact
cache (each spec deployed once before the timed rounds).

    python3 benches/deploy/bench.py --tensor-wasm BIN --guests DIR [--models DIR] [--rounds N]

Prints a table of medians; the load generator's totals say how many requests
failed (non-2xx or socket errors) during all the swaps of a row.
"""
import argparse, hashlib, http.client, json, os, re, socket, statistics, subprocess, tempfile, time

TOKEN = "bench-deploy-token"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(admin, method, path, token, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=600)
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    if r.status >= 300:
        raise RuntimeError(f"{method} {path}: {r.status} {data[:300]!r}")
    return json.loads(data)


def first_served(port, path, headers, is_new, deadline=600):
    """Polls `path` on one keep-alive connection until `is_new(status, body)`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    t_end = time.time() + deadline
    while time.time() < t_end:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        body = r.read()
        if is_new(r.status, body):
            conn.close()
            return
    raise RuntimeError(f"the new revision never served {path}")


def swaps(args, port, admin, token, name, specs, path, headers, is_new, rounds):
    """`rounds` PUTs alternating `specs` under wrk at c=16: per PUT (ms to
    acknowledge, ms to the first request on the new revision); wrk's totals."""
    for spec in specs:  # warm the artifact cache
        call(admin, "PUT", f"/v1/deployments/{name}", token, spec)
    seconds = rounds * 3 + 4
    hdr = sum((["-H", f"{k}: {v}"] for k, v in headers.items()), [])
    wrk = subprocess.Popen(["wrk", "-t2", "-c16", f"-d{seconds}s", *hdr, f"http://127.0.0.1:{port}{path}"],
                           stdout=subprocess.PIPE, text=True)
    time.sleep(1.5)
    put, first = [], []
    for i in range(rounds):
        spec = specs[i % len(specs)]
        t0 = time.perf_counter()
        reply = call(admin, "PUT", f"/v1/deployments/{name}", token, spec)
        put.append((time.perf_counter() - t0) * 1e3)
        first_served(port, path, headers, lambda s, b, i=i: is_new(i, s, b))
        first.append((time.perf_counter() - t0) * 1e3)
        time.sleep(max(0.0, 2.5 - (time.perf_counter() - t0)))
    out = wrk.communicate()[0]
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = int((re.search(r"Non-2xx or 3xx responses: (\d+)", out) or [0, 0])[1])
    sock = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return put, first, total, non2xx + sock, reply["revision"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tensor-wasm", required=True)
    ap.add_argument("--guests", required=True)
    ap.add_argument("--models")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="tw-deploy-bench-")
    port, admin = free_port(), free_port()
    cmd = [args.tensor_wasm, "serve", os.path.join(args.guests, "hello.wasm"), "--listen", f"127.0.0.1:{port}",
           "--admin-listen", f"127.0.0.1:{admin}", "--data-dir", os.path.join(d, "data"),
           "--cache-dir", os.path.join(d, "cache"), "--max-memory", "1GiB"]
    if args.models:
        cmd += ["--models-dir", args.models]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "server.log"), "w"))
    try:
        for _ in range(300):
            try:
                token = open(os.path.join(d, "data", "admin-token")).read().strip()
                call(admin, "GET", "/v1/deployments", token)
                break
            except (OSError, RuntimeError):
                time.sleep(0.1)
        rows = [hello_row(args, port, admin, token)]
        if args.models:
            rows.append(openai_row(args, port, admin, token))
    finally:
        proc.terminate()
        proc.wait()
    print(f"\nswap under wrk -t2 -c16, {args.rounds} PUTs per row, warm cache; medians (min-max)")
    print("| deployment | PUT acknowledged, ms | first request on the new revision, ms | requests during the swaps | failed |")
    print("|---|---|---|---|---|")
    for name, put, first, total, failed in rows:
        fmt = lambda v: f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})"
        print(f"| {name} | {fmt(put)} | {fmt(first)} | {total} | {failed} |")


def hello_row(args, port, admin, token):
    hello = {"tenant": "default", "component": os.path.join(args.guests, "hello.wasm")}
    probe = {"tenant": "default", "component": os.path.join(args.guests, "init_probe.wasm")}
    # Alternate: even rounds deploy the probe, odd ones hello.
    is_new = lambda i, s, b: s == 200 and b.startswith(b"initialized=" if i % 2 == 0 else b"Welcome")
    put, first, total, failed, _ = swaps(args, port, admin, token, "hello", [probe, hello], "/", {}, is_new, args.rounds)
    return "hello (component)", put, first, total, failed


def openai_row(args, port, admin, token):
    world = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "worlds", "openai.wac"))
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    spec = {"tenant": "bench", "world": world, "route": {"path": "/v1"},
            "limits": {"timeout": "600s", "tensor-memory": "4GiB"},
            "grants": {"models": ["all-minilm-l6-v2", "smollm2-135m-instruct"],
                       "config": {"router.routes": "* /v1 app", "ratelimit.default": "off"},
                       "secrets": {"auth.tokens": f"bench sha256:{digest} read write"}}}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    t0 = time.perf_counter()
    call(admin, "PUT", "/v1/deployments/openai", token, spec)
    first_served(port, "/v1/models", headers, lambda s, b: s == 200)
    print(f"openai world, first deploy (cold compile): {(time.perf_counter() - t0) * 1e3:.0f} ms")
    # Each PUT is a new revision of the same spec. The table is swapped before
    # the PUT is answered, so a request sent after that is the new revision's.
    is_new = lambda i, s, b: s == 200
    put, first, total, failed, _ = swaps(args, port, admin, token, "openai", [spec], "/v1/models", headers, is_new, args.rounds)
    return "OpenAI world (router, auth, ratelimit, audit, openai, two models)", put, first, total, failed


if __name__ == "__main__":
    main()
