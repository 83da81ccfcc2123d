"""Reference greedy generation for SmolLM2-135M-Instruct, in numpy (float64).

    python3 scripts/reference_generation.py MODEL.gguf PROMPTS.json TOKENS > OUT.json

PROMPTS.json is a list of {"text": "..."} (continued as is) or
{"messages": [{"role", "content"}]} (rendered with the GGUF's own chat
template by jinja2, add_generation_prompt). Independently of the `smollm`
component: the GGUF is read and dequantized by llama.cpp's `gguf` Python
package, the tokenizer is built by Hugging Face `tokenizers` from the GGUF's
vocabulary and merges, and the Llama decoder is written out here. Prints, per
prompt, {"prompt_tokens", "tokens", "text", "finish_reason"}: greedy, at most
TOKENS new tokens, ending early at <|endoftext|> or <|im_end|>.
"""

import json
import sys

import jinja2
import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers


def field(reader, key):
    return reader.fields[key].contents()


def load(path):
    reader = GGUFReader(path)
    weights = {}
    for t in reader.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float64)
        weights[t.name] = w.reshape([int(d) for d in reversed(t.shape)])
    cfg = {k: field(reader, f"llama.{k}") for k in (
        "block_count", "embedding_length", "attention.head_count", "attention.head_count_kv",
        "attention.layer_norm_rms_epsilon", "rope.freq_base")}
    tokens = field(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    types = field(reader, "tokenizer.ggml.token_type")
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True) for t, ty in zip(tokens, types) if ty == 3])
    return weights, cfg, tok, field(reader, "tokenizer.chat_template")


def rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope(x, pos, theta):
    # Adjacent pairs (x[2i], x[2i+1]): the GGUF's q/k rows are permuted for it.
    d = x.shape[-1]
    inv = theta ** (-np.arange(0, d, 2) / d)
    ang = pos[:, None] * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = a * cos - b * sin
    out[..., 1::2] = a * sin + b * cos
    return out


class Llama:
    def __init__(self, w, cfg):
        self.w, self.cfg = w, cfg
        self.layers = cfg["block_count"]
        self.h, self.kvh = cfg["attention.head_count"], cfg["attention.head_count_kv"]
        self.d = cfg["embedding_length"] // self.h
        self.eps, self.theta = cfg["attention.layer_norm_rms_epsilon"], cfg["rope.freq_base"]
        self.head = w.get("output.weight", w["token_embd.weight"])

    def forward(self, ids, cache):
        w, s, start = self.w, len(ids), cache["len"]
        pos = np.arange(start, start + s, dtype=np.float64)
        x = w["token_embd.weight"][ids]
        for i in range(self.layers):
            p = f"blk.{i}."
            n = rms_norm(x, w[p + "attn_norm.weight"], self.eps)
            q = (n @ w[p + "attn_q.weight"].T).reshape(s, self.h, self.d).transpose(1, 0, 2)
            k = (n @ w[p + "attn_k.weight"].T).reshape(s, self.kvh, self.d).transpose(1, 0, 2)
            v = (n @ w[p + "attn_v.weight"].T).reshape(s, self.kvh, self.d).transpose(1, 0, 2)
            q, k = rope(q, pos, self.theta), rope(k, pos, self.theta)
            if i in cache:
                k = np.concatenate([cache[i][0], k], 1)
                v = np.concatenate([cache[i][1], v], 1)
            cache[i] = (k, v)
            group = self.h // self.kvh
            kk, vv = np.repeat(k, group, 0), np.repeat(v, group, 0)
            scores = q @ kk.transpose(0, 2, 1) / np.sqrt(self.d)
            total = kk.shape[1]
            mask = np.arange(total)[None, :] > (np.arange(s)[:, None] + total - s)
            scores = np.where(mask, -np.inf, scores)
            scores -= scores.max(-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(-1, keepdims=True)
            ctx = (probs @ vv).transpose(1, 0, 2).reshape(s, -1)
            x = x + ctx @ w[p + "attn_output.weight"].T
            n = rms_norm(x, w[p + "ffn_norm.weight"], self.eps)
            g = n @ w[p + "ffn_gate.weight"].T
            u = n @ w[p + "ffn_up.weight"].T
            x = x + ((g / (1 + np.exp(-g))) * u) @ w[p + "ffn_down.weight"].T
        cache["len"] = start + s
        return rms_norm(x[-1], w["output_norm.weight"], self.eps) @ self.head.T


def main():
    path, prompts_path, max_new = sys.argv[1], sys.argv[2], int(sys.argv[3])
    weights, cfg, tok, template = load(path)
    model = Llama(weights, cfg)
    end = {tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|im_end|>")}
    env = jinja2.Environment()
    out = []
    for prompt in json.load(open(prompts_path)):
        if "messages" in prompt:
            text = env.from_string(template).render(messages=prompt["messages"], add_generation_prompt=True)
        else:
            text = prompt["text"]
        ids = tok.encode(text, add_special_tokens=False).ids
        cache = {"len": 0}
        logits = model.forward(ids, cache)
        new, finish = [], "length"
        while len(new) < max_new:
            nxt = int(np.argmax(logits))
            if nxt in end:
                finish = "stop"
                break
            new.append(nxt)
            if len(new) < max_new:
                logits = model.forward([nxt], cache)
        out.append({"prompt_tokens": len(ids), "tokens": new,
                    "text": tok.decode(new, skip_special_tokens=True), "finish_reason": finish})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
