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
    pub fn embed(
        &self,
        sequences: &[Vec<u32>],
        chunking: Chunking,
    ) -> tensorwasm_sdk::Result<Vec<Vec<f32>>> {
        // Shortest first, so each chunk pads to a length close to its own.
        let mut order: Vec<usize> = (0..sequences.len()).collect();
        order.sort_by_key(|&i| sequences[i].len());
        let lengths: Vec<usize> = order.iter().map(|&i| sequences[i].len().max(1)).collect();
        let mut out = vec![Vec::new(); sequences.len()];
        for (start, end) in chunking.split(&lengths) {
            let chunk: Vec<&[u32]> = order[start..end]
                .iter()
                .map(|&i| sequences[i].as_slice())
                .collect();
            let vectors = self.embed_chunk(&chunk)?;
            for (k, v) in vectors.chunks(HIDDEN).enumerate() {
                out[order[start + k]] = v.to_vec();
            }
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

/// How a batch, sorted by length, is cut into padded chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunking {
    /// As few chunks as [`CHUNK_TOKENS`] allows: on a GPU each chunk costs
    /// its ops' launches whatever its size, and padding is nearly free.
    Fewest,
    /// Chunks that pad little: on a CPU every padded token costs its share
    /// of the arithmetic, and a chunk's fixed cost is small ([`CPU_CHUNK_COST`]).
    LeastPadding,
}

/// A chunk's fixed cost on a CPU in padded tokens' worth of work (its ~140
/// ops' dispatch against ~0.3 ms of arithmetic per token on the dev machine).
const CPU_CHUNK_COST: usize = 32;
/// Most sequences in one chunk considered by the padding search.
const MAX_CHUNK_ROWS: usize = 256;

impl Chunking {
    /// The policy for `wasi:tensor` computing on `device` (`cpu`, `cuda:0`).
    pub fn for_device(device: &str) -> Self {
        if device == "cpu" {
            Chunking::LeastPadding
        } else {
            Chunking::Fewest
        }
    }

    /// Half-open ranges of `lengths` (sorted ascending) forming the chunks,
    /// each within [`CHUNK_TOKENS`] padded tokens (a longer single sequence
    /// is a chunk of its own).
    pub fn split(self, lengths: &[usize]) -> Vec<(usize, usize)> {
        let fits = |start: usize, end: usize| (end - start) * lengths[end - 1] <= CHUNK_TOKENS;
        match self {
            Chunking::Fewest => {
                let mut out = Vec::new();
                let mut start = 0;
                while start < lengths.len() {
                    let mut end = start + 1;
                    while end < lengths.len() && fits(start, end + 1) {
                        end += 1;
                    }
                    out.push((start, end));
                    start = end;
                }
                out
            }
            Chunking::LeastPadding => {
                // best[e]: least cost of chunking lengths[..e]; from[e]: where
                // its last chunk starts. Cost: padded tokens + CPU_CHUNK_COST.
                let n = lengths.len();
                let mut best = vec![usize::MAX; n + 1];
                let mut from = vec![0; n + 1];
                best[0] = 0;
                for end in 1..=n {
                    let lowest = end.saturating_sub(MAX_CHUNK_ROWS);
                    for start in (lowest..end).rev() {
                        if start + 1 < end && !fits(start, end) {
                            break;
                        }
                        let cost = best[start] + (end - start) * lengths[end - 1] + CPU_CHUNK_COST;
                        if cost < best[end] {
                            best[end] = cost;
                            from[end] = start;
                        }
                    }
                }
                let mut out = Vec::new();
                let mut end = n;
                while end > 0 {
                    out.push((from[end], end));
                    end = from[end];
                }
                out.reverse();
                out
            }
        }
    }
}

/// `x · weightᵀ + bias` for a PyTorch `Linear` ([out, in] weight).
fn linear(x: &Tensor, (weight, bias): &(Tensor, Tensor)) -> tensorwasm_sdk::Result<Tensor> {
    x.matmul_t(weight)?.add(bias)
}
