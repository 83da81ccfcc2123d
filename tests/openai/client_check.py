"""Drives a running TensorWasm server with the official `openai` client and
prints what it saw as JSON, for tests/e2e/openai.rs to check.

    python client_check.py embeddings BASE_URL KEY REFERENCE.json SENTENCES.json
    python client_check.py generation BASE_URL KEY REFERENCE.json PROMPTS.json MAX_TOKENS
    python client_check.py sampling BASE_URL KEY
    python client_check.py tls BASE_URL KEY

With TENSOR_WASM_TEST_CA set, the client trusts only that CA file (HTTPS).
"""

import json
import os
import ssl
import sys

import numpy as np
from openai import DefaultHttpxClient, OpenAI

EMBEDDER = "all-minilm-l6-v2"
GENERATOR = "smollm2-135m-instruct"


def cosine(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def embeddings(client, ref_path, sentences_path):
    ref = json.load(open(ref_path))
    sentences = json.load(open(sentences_path))
    out = {"models": sorted(m.id for m in client.models.list())}
    # The client asks for base64 unless told otherwise; try every input form.
    for name, kwargs in {
        "base64": {"input": sentences},
        "float": {"input": sentences, "encoding_format": "float"},
        "tokens": {"input": ref["tokens"]},
    }.items():
        res = client.embeddings.create(model=EMBEDDER, **kwargs)
        out[name] = {
            "count": len(res.data),
            "indexes": [d.index for d in res.data],
            "dimensions": len(res.data[0].embedding),
            "min_cosine": min(cosine(d.embedding, v) for d, v in zip(res.data, ref["vectors"])),
            "prompt_tokens": res.usage.prompt_tokens,
        }
    one = client.embeddings.create(model=EMBEDDER, input=sentences[0], encoding_format="float")
    out["single_cosine"] = cosine(one.data[0].embedding, ref["vectors"][0])
    out["reference_tokens"] = sum(len(t) for t in ref["tokens"])
    return out


def generation(client, ref_path, prompts_path, max_tokens):
    ref = json.load(open(ref_path))
    prompts = json.load(open(prompts_path))
    results = []
    for prompt, want in zip(prompts, ref):
        common = {"model": GENERATOR, "max_tokens": max_tokens, "temperature": 0}
        if "messages" in prompt:
            res = client.chat.completions.create(messages=prompt["messages"], **common)
            text, finish = res.choices[0].message.content, res.choices[0].finish_reason
            stream = client.chat.completions.create(
                messages=prompt["messages"], stream=True, stream_options={"include_usage": True}, **common)
            pieces, finishes, usage, role = [], [], None, None
            for chunk in stream:
                if chunk.usage:
                    usage = chunk.usage.completion_tokens
                for c in chunk.choices:
                    role = role or c.delta.role
                    if c.delta.content:
                        pieces.append(c.delta.content)
                    if c.finish_reason:
                        finishes.append(c.finish_reason)
        else:
            res = client.completions.create(prompt=prompt["text"], **common)
            text, finish = res.choices[0].text, res.choices[0].finish_reason
            stream = client.completions.create(prompt=prompt["text"], stream=True, **common)
            pieces, finishes, usage, role = [], [], None, "n/a"
            for chunk in stream:
                for c in chunk.choices:
                    if c.text:
                        pieces.append(c.text)
                    if c.finish_reason:
                        finishes.append(c.finish_reason)
        results.append({
            "text": text,
            "reference_text": want["text"],
            "completion_tokens": res.usage.completion_tokens,
            "reference_tokens": len(want["tokens"]),
            "prompt_tokens": res.usage.prompt_tokens,
            "reference_prompt_tokens": want["prompt_tokens"],
            "finish_reason": finish,
            "reference_finish_reason": want["finish_reason"],
            "streamed_text": "".join(pieces),
            "stream_chunks": len(pieces),
            "stream_finishes": finishes,
            "stream_usage": usage,
            "stream_role": role,
        })
    return results


def sampling(client):
    messages = [{"role": "user", "content": "Tell me a short story about a robot."}]

    def run(seed, **kw):
        res = client.chat.completions.create(
            model=GENERATOR, messages=messages, max_tokens=24, temperature=1.0, seed=seed, **kw)
        return res.choices[0].message.content

    greedy = client.chat.completions.create(
        model=GENERATOR, messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=32, temperature=0)
    stopped = client.chat.completions.create(
        model=GENERATOR, messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=32, temperature=0, stop=["Paris", "Berlin"])
    return {
        "seed_1": run(1),
        "seed_1_again": run(1),
        "seed_2": run(2),
        "seed_3": run(3),
        "nucleus_tiny": run(5, top_p=1e-6),
        "greedy_story": client.chat.completions.create(
            model=GENERATOR, messages=messages, max_tokens=24, temperature=0).choices[0].message.content,
        "greedy": greedy.choices[0].message.content,
        "stopped": stopped.choices[0].message.content,
        "stopped_finish": stopped.choices[0].finish_reason,
        "length_finish": client.completions.create(
            model=GENERATOR, prompt="Once upon a time", max_tokens=3, temperature=0).choices[0].finish_reason,
    }


def over_tls(client):
    one = client.embeddings.create(model=EMBEDDER, input="Hello world", encoding_format="float")
    greedy = client.chat.completions.create(
        model=GENERATOR, messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=32, temperature=0)
    return {
        "models": sorted(m.id for m in client.models.list()),
        "dimensions": len(one.data[0].embedding),
        "greedy": greedy.choices[0].message.content,
    }


def main():
    command, base_url, key = sys.argv[1:4]
    http_client = None
    if os.environ.get("TENSOR_WASM_TEST_CA"):
        context = ssl.create_default_context(cafile=os.environ["TENSOR_WASM_TEST_CA"])
        http_client = DefaultHttpxClient(verify=context, timeout=300)
    client = OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=300, http_client=http_client)
    if command == "embeddings":
        out = embeddings(client, sys.argv[4], sys.argv[5])
    elif command == "generation":
        out = generation(client, sys.argv[4], sys.argv[5], int(sys.argv[6]))
    elif command == "sampling":
        out = sampling(client)
    elif command == "tls":
        out = over_tls(client)
    else:
        raise SystemExit(f"unknown command {command}")
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
