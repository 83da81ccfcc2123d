//! The BERT encoder of all-MiniLM-L6-v2 as `wasi:tensor` ops, with mean
//! pooling and L2 normalization.

use tensorwasm_sdk::{Tensor, Weights, attention};

/// Hidden width.
pub const HIDDEN: usize = 384;
/// Vocabulary size.
pub const VOCAB: usize = 30522;
const LAYERS: usize = 6;
const HEADS: usize = 12;
const HEAD_DIM: usize = HIDDEN / HEADS;
const LAYER_NORM_EPS: f32 = 1e-12;
/// Padded tokens per chunk (batch × longest sequence): bounds the
/// attention scores a chunk holds (heads × batch × seq² floats).
const CHUNK_TOKENS: usize = 8192;
/// A score that softmax turns into 0 (added at padded keys).
const MASKED: f32 = -1e9;

/// Why the model could not be opened.
pub enum OpenError {
    /// The weights are not granted or a tensor is absent.
    Missing(String),
    /// Another tensor error.
    Tensor(tensorwasm_sdk::Error),
}

struct Layer {
    query: (Tensor, Tensor),
    key: (Tensor, Tensor),
    value: (Tensor, Tensor),
    attn_out: (Tensor, Tensor),
    attn_norm: (Tensor, Tensor),
    up: (Tensor, Tensor),
    down: (Tensor, Tensor),
    out_norm: (Tensor, Tensor),
}

/// The encoder's weights (shared host tensors; opening them copies nothing).
pub struct Encoder {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: (Tensor, Tensor),
    layers: Vec<Layer>,
}

impl Encoder {
    /// Opens the weights granted as `grant`.
    pub fn open(grant: &str) -> Result<Self, OpenError> {
        let weights = Weights::open(grant).map_err(|e| match e.kind() {
            "not-granted" | "not-found" => OpenError::Missing(format!("weights `{grant}`: {e}")),
            _ => OpenError::Tensor(e),
        })?;
        let get = |name: &str| {
            weights.get(name).map_err(|e| match e.kind() {
                "not-found" => OpenError::Missing(format!("`{grant}` has no tensor `{name}`")),
                _ => OpenError::Tensor(e),
            })
        };
        let pair = |prefix: &str, a: &str, b: &str| -> Result<(Tensor, Tensor), OpenError> {
            Ok((
                get(&format!("{prefix}.{a}"))?,
                get(&format!("{prefix}.{b}"))?,
            ))
        };
        let linear = |prefix: &str| pair(prefix, "weight", "bias");
        let mut layers = Vec::with_capacity(LAYERS);
        for i in 0..LAYERS {
            let p = format!("encoder.layer.{i}");
            layers.push(Layer {
                query: linear(&format!("{p}.attention.self.query"))?,
                key: linear(&format!("{p}.attention.self.key"))?,
                value: linear(&format!("{p}.attention.self.value"))?,
                attn_out: linear(&format!("{p}.attention.output.dense"))?,
                attn_norm: linear(&format!("{p}.attention.output.LayerNorm"))?,
                up: linear(&format!("{p}.intermediate.dense"))?,
                down: linear(&format!("{p}.output.dense"))?,
                out_norm: linear(&format!("{p}.output.LayerNorm"))?,
            });
        }
        Ok(Self {
            word: get("embeddings.word_embeddings.weight")?,
            position: get("embeddings.position_embeddings.weight")?,
            token_type: get("embeddings.token_type_embeddings.weight")?,
            norm: linear("embeddings.LayerNorm")?,
            layers,
        })
    }

    /// One unit vector per sequence, in input order.
    pub fn embed(&self, sequences: &[Vec<u32>]) -> tensorwasm_sdk::Result<Vec<Vec<f32>>> {
        // Shortest first, so each chunk pads to a length close to its own.
        let mut order: Vec<usize> = (0..sequences.len()).collect();
        order.sort_by_key(|&i| sequences[i].len());
        let mut out = vec![Vec::new(); sequences.len()];
        let mut start = 0;
        while start < order.len() {
            let mut end = start + 1;
            while end < order.len()
                && (end + 1 - start) * sequences[order[end]].len() <= CHUNK_TOKENS
            {
                end += 1;
            }
            let chunk: Vec<&[u32]> = order[start..end]
                .iter()
                .map(|&i| sequences[i].as_slice())
                .collect();
            let vectors = self.embed_chunk(&chunk)?;
            for (k, v) in vectors.chunks(HIDDEN).enumerate() {
                out[order[start + k]] = v.to_vec();
            }
            start = end;
        }
        Ok(out)
    }

    /// The vectors of one padded batch, flattened [batch, HIDDEN].
    fn embed_chunk(&self, chunk: &[&[u32]]) -> tensorwasm_sdk::Result<Vec<f32>> {
        let batch = chunk.len();
        let seq = chunk.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0i64; batch * seq];
        let mut keep = vec![0f32; batch * seq];
        for (b, s) in chunk.iter().enumerate() {
            for (t, &id) in s.iter().enumerate() {
                ids[b * seq + t] = i64::from(id);
                keep[b * seq + t] = 1.0;
            }
        }
        let (b32, s32) = (batch as u32, seq as u32);
        let ids = Tensor::from_i64(&ids, &[b32, s32])?;
        let positions: Vec<i64> = (0..seq as i64).collect();
        let positions = Tensor::from_i64(&positions, &[s32])?;
        let keep_mask = Tensor::from_f32(&keep, &[b32, s32])?;
        let additive: Vec<f32> = keep
            .iter()
            .map(|&k| if k > 0.0 { 0.0 } else { MASKED })
            .collect();
        let additive = Tensor::from_f32(&additive, &[b32, 1, 1, s32])?;

        let mut x = self
            .word
            .embedding(&ids)?
            .add(&self.position.embedding(&positions)?)?
            .add(&self.token_type.narrow(0, 0, 1)?)?
            .layer_norm(Some(&self.norm.0), Some(&self.norm.1), LAYER_NORM_EPS)?;
        let heads = |t: Tensor| -> tensorwasm_sdk::Result<Tensor> {
            t.reshape(&[b32, s32, HEADS as u32, HEAD_DIM as u32])?
                .permute(&[0, 2, 1, 3])
        };
        let scale = 1.0 / (HEAD_DIM as f32).sqrt();
        for layer in &self.layers {
            let q = heads(linear(&x, &layer.query)?)?;
            let k = heads(linear(&x, &layer.key)?)?;
            let v = heads(linear(&x, &layer.value)?)?;
            let context = attention(&q, &k, &v, Some(&additive), scale, false)?
                .permute(&[0, 2, 1, 3])?
                .reshape(&[b32, s32, HIDDEN as u32])?;
            let attended = linear(&context, &layer.attn_out)?;
            x = x.add(&attended)?.layer_norm(
                Some(&layer.attn_norm.0),
                Some(&layer.attn_norm.1),
                LAYER_NORM_EPS,
            )?;
            let hidden = linear(&x, &layer.up)?.gelu()?;
            let mlp = linear(&hidden, &layer.down)?;
            x = x.add(&mlp)?.layer_norm(
                Some(&layer.out_norm.0),
                Some(&layer.out_norm.1),
                LAYER_NORM_EPS,
            )?;
        }
        x.mean(1, Some(&keep_mask))?
            .l2_normalize(-1, 1e-12)?
            .to_f32()
    }
}

/// `x · weightᵀ + bias` for a PyTorch `Linear` ([out, in] weight).
fn linear(x: &Tensor, (weight, bias): &(Tensor, Tensor)) -> tensorwasm_sdk::Result<Tensor> {
    x.matmul_t(weight)?.add(bias)
}
