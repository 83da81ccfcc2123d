//! SmolLM2-135M's Llama decoder as `wasi:tensor` ops, with a KV cache held
//! as host (device) tensors across decode steps.

use std::cell::OnceCell;
use tensorwasm_sdk::{
    RopeLayout, Step, Tensor, Weights, attention, concat, decode_attention_update,
};

/// Hyper-parameters read from the GGUF metadata.
#[allow(missing_docs)]
pub struct Config {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    pub context: usize,
}

struct Layer {
    attn_norm: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    /// `q`, `k` and `v` stacked [hq·d + 2·hk·d, hidden], made by the first
    /// [`Model::decode`]: one product per layer instead of three (the
    /// batched decode step is bound by issuing calls at few sequences). A
    /// copy in the instance's tensor memory (66 MB in f32 for SmolLM2-135M),
    /// so only the long-lived batching instance makes it.
    qkv: OnceCell<Tensor>,
    o: Tensor,
    ffn_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

/// The model's weights (shared host tensors, loaded once by the host).
pub struct Model {
    pub config: Config,
    embed: Tensor,
    layers: Vec<Layer>,
    out_norm: Tensor,
    /// The output projection ([vocab, hidden]; the embedding when tied).
    lm_head: Tensor,
}

/// Keys and values of every layer for the positions read so far, each
/// [1, kv_heads, len, head_dim].
pub struct Cache {
    pub layers: Vec<Option<(Tensor, Tensor)>>,
    /// Positions held.
    pub len: usize,
}

fn integer(w: &Weights, key: &str) -> Result<usize, String> {
    match w.metadata(key) {
        Some(tensorwasm_sdk::MetadataValue::Integer(v)) if v > 0 => Ok(v as usize),
        _ => Err(format!("the GGUF file has no positive integer `{key}`")),
    }
}

fn float(w: &Weights, key: &str) -> Result<f32, String> {
    match w.metadata(key) {
        Some(tensorwasm_sdk::MetadataValue::Float(v)) => Ok(v as f32),
        _ => Err(format!("the GGUF file has no number `{key}`")),
    }
}

impl Model {
    /// The model in `w` (a llama-architecture GGUF file).
    pub fn open(w: &Weights) -> Result<Self, String> {
        let config = Config {
            layers: integer(w, "llama.block_count")?,
            hidden: integer(w, "llama.embedding_length")?,
            heads: integer(w, "llama.attention.head_count")?,
            kv_heads: integer(w, "llama.attention.head_count_kv")?,
            rms_eps: float(w, "llama.attention.layer_norm_rms_epsilon")?,
            rope_theta: float(w, "llama.rope.freq_base")?,
            context: integer(w, "llama.context_length")?,
        };
        if !config.hidden.is_multiple_of(config.heads)
            || !config.heads.is_multiple_of(config.kv_heads)
        {
            return Err("the GGUF file's head counts do not divide its width".into());
        }
        let get = |name: &str| w.get(name).map_err(|e| format!("tensor `{name}`: {e}"));
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let t = |part: &str| get(&format!("blk.{i}.{part}.weight"));
            layers.push(Layer {
                attn_norm: t("attn_norm")?,
                q: t("attn_q")?,
                k: t("attn_k")?,
                v: t("attn_v")?,
                qkv: OnceCell::new(),
                o: t("attn_output")?,
                ffn_norm: t("ffn_norm")?,
                gate: t("ffn_gate")?,
                up: t("ffn_up")?,
                down: t("ffn_down")?,
            });
        }
        let embed = get("token_embd.weight")?;
        let lm_head = match w.get("output.weight") {
            Ok(t) => t,
            Err(_) => get("token_embd.weight")?,
        };
        Ok(Self {
            embed,
            layers,
            out_norm: get("output_norm.weight")?,
            lm_head,
            config,
        })
    }

    /// An empty cache.
    pub fn cache(&self) -> Cache {
        Cache {
            layers: (0..self.config.layers).map(|_| None).collect(),
            len: 0,
        }
    }

    /// Reads `ids` at the positions after the cache's and returns the logits
    /// [1, vocab] of the last one; the cache grows by `ids.len()`.
    pub fn forward(&self, ids: &[u32], cache: &mut Cache) -> tensorwasm_sdk::Result<Tensor> {
        let c = &self.config;
        let s = ids.len() as u32;
        let head_dim = (c.hidden / c.heads) as u32;
        let (h, kvh) = (c.heads as u32, c.kv_heads as u32);
        let offset = cache.len as u32;
        let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
        let ids = Tensor::from_i64(&ids, &[s])?;
        let mut x = self.embed.embedding(&ids)?; // [s, hidden]
        let scale = 1.0 / (head_dim as f32).sqrt();
        for (layer, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let n = x.rms_norm(Some(&layer.attn_norm), c.rms_eps)?;
            let split = |t: Tensor, heads: u32| -> tensorwasm_sdk::Result<Tensor> {
                t.reshape(&[1, s, heads, head_dim])?
                    .permute(&[0, 2, 1, 3])?
                    .rope(offset, c.rope_theta, RopeLayout::Interleaved)
            };
            let q = split(n.matmul_t(&layer.q)?, h)?;
            let k = split(n.matmul_t(&layer.k)?, kvh)?;
            let v = n
                .matmul_t(&layer.v)?
                .reshape(&[1, s, kvh, head_dim])?
                .permute(&[0, 2, 1, 3])?;
            let (k, v) = match slot.take() {
                Some((pk, pv)) => (concat(&[&pk, &k], 2)?, concat(&[&pv, &v], 2)?),
                None => (k, v),
            };
            let attended = attention(&q, &k, &v, None, scale, true)?
                .permute(&[0, 2, 1, 3])?
                .reshape(&[s, c.hidden as u32])?;
            *slot = Some((k, v));
            x = self.feed_forward(layer, &x, &attended.matmul_t(&layer.o)?)?;
        }
        cache.len += ids.element_count() as usize;
        x.narrow(0, s - 1, 1)?
            .rms_norm(Some(&self.out_norm), c.rms_eps)?
            .matmul_t(&self.lm_head)
    }

    /// Reads several prompts at once from position 0 (right-padded to the
    /// longest; causal attention keeps each real token from seeing the
    /// padding after it): per layer the keys and values [n, kv_heads, len,
    /// head_dim] with zeros past each prompt, and the logits [n, vocab] of
    /// each prompt's last token.
    pub fn prefill(
        &self,
        prompts: &[&[u32]],
    ) -> tensorwasm_sdk::Result<(Vec<(Tensor, Tensor)>, Tensor)> {
        let c = &self.config;
        let (n, hd) = (prompts.len() as u32, self.head_dim() as u32);
        let (h, kvh) = (c.heads as u32, c.kv_heads as u32);
        let len = prompts.iter().map(|p| p.len()).max().unwrap_or(0) as u32;
        let mut ids = vec![0i64; (n * len) as usize];
        let mut valid = vec![0.0f32; (n * len) as usize];
        let mut last = Vec::with_capacity(prompts.len());
        for (r, p) in prompts.iter().enumerate() {
            let row = r * len as usize;
            for (t, &id) in p.iter().enumerate() {
                ids[row + t] = i64::from(id);
                valid[row + t] = 1.0;
            }
            last.push((row + p.len() - 1) as i64);
        }
        let valid = Tensor::from_f32(&valid, &[n, 1, len, 1])?;
        let mut x = self.embed.embedding(&Tensor::from_i64(&ids, &[n * len])?)?; // [n·len, hidden]
        let scale = 1.0 / (hd as f32).sqrt();
        let mut layers = Vec::with_capacity(c.layers);
        for layer in &self.layers {
            let nrm = x.rms_norm(Some(&layer.attn_norm), c.rms_eps)?;
            let split = |t: Tensor, heads: u32| -> tensorwasm_sdk::Result<Tensor> {
                t.reshape(&[n, len, heads, hd])?.permute(&[0, 2, 1, 3])
            };
            let q = split(nrm.matmul_t(&layer.q)?, h)?.rope(
                0,
                c.rope_theta,
                RopeLayout::Interleaved,
            )?;
            let k = split(nrm.matmul_t(&layer.k)?, kvh)?
                .rope(0, c.rope_theta, RopeLayout::Interleaved)?
                .mul(&valid)?;
            let v = split(nrm.matmul_t(&layer.v)?, kvh)?.mul(&valid)?;
            let attended = attention(&q, &k, &v, None, scale, true)?
                .permute(&[0, 2, 1, 3])?
                .reshape(&[n * len, c.hidden as u32])?;
            layers.push((k, v));
            x = self.feed_forward(layer, &x, &attended.matmul_t(&layer.o)?)?;
        }
        let last = x.embedding(&Tensor::from_i64(&last, &[n])?)?; // [n, hidden]
        let logits = last
            .rms_norm(Some(&self.out_norm), c.rms_eps)?
            .matmul_t(&self.lm_head)?;
        Ok((layers, logits))
    }

    /// The rest of a layer after attention: `x` + `attended` (the residual,
    /// added together with the RMS norm after it), plus the SwiGLU
    /// feed-forward of that norm.
    fn feed_forward(
        &self,
        layer: &Layer,
        x: &Tensor,
        attended: &Tensor,
    ) -> tensorwasm_sdk::Result<Tensor> {
        let (x, n) = x.add_rms_norm(attended, Some(&layer.ffn_norm), self.config.rms_eps)?;
        x.add(&mlp(layer, &n)?)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.config.hidden / self.config.heads
    }

    /// Decodes one token per row: `ids[r]` at position `positions[r]` (below
    /// the caches' capacity), writing its key and value there in `layers`
    /// (per layer [rows, kv_heads, capacity, head_dim], zeros past each
    /// row's position); returns the logits [rows, vocab]. The same math as
    /// [`Model::forward`] in fewer calls: one product for the query, key and
    /// value ([`Layer::qkv`]); each layer's rotation, cache write and
    /// attention in one fused call for the whole batch, which takes the
    /// caches over and writes the new rows into them; each residual add
    /// together with the normalization after it; all but the embedding
    /// issued as one recorded step ([`Step`], keyed by the row count). On
    /// an error `layers` is left incomplete.
    pub fn decode(
        &self,
        ids: &[u32],
        positions: &[usize],
        layers: &mut Vec<(Tensor, Tensor)>,
    ) -> tensorwasm_sdk::Result<Tensor> {
        let c = &self.config;
        let b = ids.len() as u32;
        let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
        let positions: Vec<u32> = positions.iter().map(|&p| p as u32).collect();
        let mut x = self.embed.embedding(&Tensor::from_i64(&ids, &[b])?)?; // [b, hidden]
        // The rest of the step goes to the device as one recorded step (its
        // ids were uploaded and checked above: that waits for the device).
        let step = Step::record(u64::from(b))?;
        let first = self.layers.first().map_or(&self.out_norm, |l| &l.attn_norm);
        let mut n = x.rms_norm(Some(first), c.rms_eps)?;
        let scale = 1.0 / (self.head_dim() as f32).sqrt();
        let caches = std::mem::take(layers);
        for (i, (layer, (kc, vc))) in self.layers.iter().zip(caches).enumerate() {
            let (attended, keys, values) = decode_attention_update(
                &n.matmul_t(self.qkv(layer)?)?,
                kc,
                vc,
                &positions,
                c.rope_theta,
                RopeLayout::Interleaved,
                scale,
            )?;
            layers.push((keys, values));
            let attended = attended.matmul_t(&layer.o)?;
            let (sum, normed) = x.add_rms_norm(&attended, Some(&layer.ffn_norm), c.rms_eps)?;
            let next = self
                .layers
                .get(i + 1)
                .map_or(&self.out_norm, |l| &l.attn_norm);
            (x, n) = sum.add_rms_norm(&mlp(layer, &normed)?, Some(next), c.rms_eps)?;
        }
        let logits = n.matmul_t(&self.lm_head)?;
        step.run()?;
        Ok(logits)
    }

    /// The layer's stacked query, key and value projections, made once.
    fn qkv<'a>(&self, layer: &'a Layer) -> tensorwasm_sdk::Result<&'a Tensor> {
        if let Some(stacked) = layer.qkv.get() {
            return Ok(stacked);
        }
        let stacked = concat(&[&layer.q, &layer.k, &layer.v], 0)?;
        Ok(layer.qkv.get_or_init(|| stacked))
    }
}

/// The layer's SwiGLU feed-forward of the normalized `n`.
fn mlp(layer: &Layer, n: &Tensor) -> tensorwasm_sdk::Result<Tensor> {
    n.matmul_t(&layer.gate)?
        .swiglu(&n.matmul_t(&layer.up)?)?
        .matmul_t(&layer.down)
}
