//! `tensorwasm:inference/batch-generation@0.2.0`: continuous batching in one
//! long-lived instance. `admit` checks and tokenizes a prompt and parks it;
//! each `step` reads every parked prompt together ([`llama::Model::prefill`]),
//! picks one token for every sequence, drops those that ended or were
//! released, and decodes all the rest with one pass of the model
//! ([`llama::Model::decode`]), whatever their lengths.

use crate::bindings::exports::tensorwasm::inference0_1_0::generation as v1;
use crate::bindings::exports::tensorwasm::inference0_2_0::batch_generation as v2;
use crate::bindings::tensorwasm::inference0_1_0::types as t1;
use crate::bindings::tensorwasm::inference0_2_0::types::{
    ContextOverflow, Error, ModelInfo, ModelKind,
};
use crate::{Component, FinishReason, Text, llama, open, prepare};
use std::cell::RefCell;
use tensorwasm_sdk::{Dtype, Tensor, concat};

/// Cache positions are allocated in steps of this many.
const CAPACITY_STEP: usize = 128;
/// Padded prompt tokens read in one prefill pass, at most (a longer prompt
/// goes alone).
const PREFILL_TOKENS: usize = 4096;

/// A sequence of the batch.
struct Sequence {
    id: u32,
    text: Text,
    /// Positions read into its cache (prompt and fed tokens).
    position: usize,
    /// Its prompt, until a step reads it.
    prompt: Option<Vec<u32>>,
    /// Released by the host: leaves at the next step, unreported.
    gone: bool,
}

/// Consecutive sequences' keys and values (per layer [count, kv_heads, len,
/// head_dim], zeros past each row's position) and, until picked from, the
/// logits [count, vocab] of each row's next token.
struct Rows {
    layers: Vec<(Tensor, Tensor)>,
    logits: Option<Tensor>,
    count: usize,
}

/// The batch: the model and its sequences, the first `rows.count` of them
/// in the cache's rows, in order; newly admitted ones after.
struct Batch {
    model: llama::Model,
    sequences: Vec<Sequence>,
    rows: Option<Rows>,
    next_id: u32,
}

thread_local! {
    static BATCH: RefCell<Option<Batch>> = const { RefCell::new(None) };
}

impl v2::Guest for Component {
    fn models() -> Vec<ModelInfo> {
        <Component as crate::Guest>::models()
            .into_iter()
            .map(|m| ModelInfo {
                id: m.id,
                owned_by: m.owned_by,
                kind: match m.kind {
                    t1::ModelKind::Embedding => ModelKind::Embedding,
                    t1::ModelKind::Generation => ModelKind::Generation,
                },
                context_length: m.context_length,
                dimensions: m.dimensions,
            })
            .collect()
    }

    fn admit(model: String, prompt: v2::Prompt, options: v2::Sampling) -> Result<u32, Error> {
        BATCH.with_borrow_mut(|slot| {
            if slot.is_none() {
                *slot = Some(Batch {
                    model: open(&model).map_err(from_v1)?,
                    sequences: Vec::new(),
                    rows: None,
                    next_id: 0,
                });
            }
            let batch = slot.as_mut().expect("made above");
            if model != crate::MODEL_ID {
                return Err(from_v1(crate::unknown_model(&model)));
            }
            let (ids, text) =
                prepare(&batch.model, prompt_v1(prompt), sampling_v1(options)).map_err(from_v1)?;
            let id = batch.next_id;
            batch.next_id = batch.next_id.wrapping_add(1);
            batch.sequences.push(Sequence {
                id,
                text,
                position: 0,
                prompt: Some(ids),
                gone: false,
            });
            Ok(id)
        })
    }

    fn step() -> Result<Vec<v2::TokenEvent>, Error> {
        BATCH.with_borrow_mut(|slot| {
            let Some(batch) = slot.as_mut() else {
                return Ok(Vec::new());
            };
            let stepped = batch.step().map_err(|e| Error::Backend(e.to_string()));
            if stepped.is_err() {
                // The batch's tensors may be half-updated: start over.
                *slot = None;
            }
            stepped
        })
    }

    fn release(sequence: u32) {
        BATCH.with_borrow_mut(|slot| {
            if let Some(batch) = slot.as_mut()
                && let Some(s) = batch.sequences.iter_mut().find(|s| s.id == sequence)
            {
                s.gone = true;
            }
        });
    }
}

impl Batch {
    fn step(&mut self) -> tensorwasm_sdk::Result<Vec<v2::TokenEvent>> {
        let cached = self.rows.as_ref().map_or(0, |r| r.count);
        // Released before their prompt was read: nothing to free.
        let mut i = 0;
        self.sequences.retain(|s| {
            i += 1;
            i <= cached || !s.gone
        });
        let mut parts: Vec<Rows> = self.rows.take().into_iter().collect();
        parts.extend(self.prefill(cached)?);
        let mut events = Vec::with_capacity(self.sequences.len());
        let mut first = 0;
        for part in &mut parts {
            let sequences = &mut self.sequences[first..first + part.count];
            first += part.count;
            let picks = pick(part, sequences)?;
            for (s, id) in sequences.iter_mut().zip(picks) {
                if !s.gone {
                    events.push(event(s, id));
                }
            }
        }
        self.regroup(parts)?;
        self.decode()?;
        Ok(events)
    }

    /// Reads the prompts of the sequences after the first `cached`, in
    /// passes of at most [`PREFILL_TOKENS`] padded tokens.
    fn prefill(&mut self, cached: usize) -> tensorwasm_sdk::Result<Vec<Rows>> {
        let mut parts = Vec::new();
        let mut start = cached;
        while start < self.sequences.len() {
            let mut end = start + 1;
            let mut longest = self.sequences[start].prompt.as_ref().map_or(0, Vec::len);
            while end < self.sequences.len() {
                let len = self.sequences[end].prompt.as_ref().map_or(0, Vec::len);
                if (end + 1 - start) * longest.max(len) > PREFILL_TOKENS {
                    break;
                }
                longest = longest.max(len);
                end += 1;
            }
            let prompts: Vec<Vec<u32>> = self.sequences[start..end]
                .iter_mut()
                .map(|s| s.prompt.take().unwrap_or_default())
                .collect();
            let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
            let (layers, logits) = self.model.prefill(&refs)?;
            for (s, p) in self.sequences[start..end].iter_mut().zip(&prompts) {
                s.position = p.len();
            }
            parts.push(Rows {
                layers,
                logits: Some(logits),
                count: end - start,
            });
            start = end;
        }
        Ok(parts)
    }

    /// Keeps the rows of sequences that go on (dropping those that ended or
    /// were released), fitted to one capacity, as the batch's cache.
    fn regroup(&mut self, parts: Vec<Rows>) -> tensorwasm_sdk::Result<()> {
        let keep: Vec<bool> = self
            .sequences
            .iter()
            .map(|s| !s.gone && s.text.finish.is_none())
            .collect();
        let need = self
            .sequences
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(s, _)| s.position + 1)
            .max()
            .unwrap_or(0);
        let capacity = need.div_ceil(CAPACITY_STEP) * CAPACITY_STEP;
        let layers = self.model.config.layers;
        let mut per_layer: Vec<(Vec<Tensor>, Vec<Tensor>)> =
            (0..layers).map(|_| (Vec::new(), Vec::new())).collect();
        let mut first = 0;
        for part in parts {
            let kept = &keep[first..first + part.count];
            first += part.count;
            let whole = kept.iter().all(|k| *k);
            for ((k, v), (ks, vs)) in part.layers.into_iter().zip(per_layer.iter_mut()) {
                if whole {
                    ks.push(fit(k, capacity)?);
                    vs.push(fit(v, capacity)?);
                    continue;
                }
                for (at, len) in runs(kept) {
                    ks.push(fit(k.narrow(0, at, len)?, capacity)?);
                    vs.push(fit(v.narrow(0, at, len)?, capacity)?);
                }
            }
        }
        let mut i = 0;
        self.sequences.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        self.rows = match self.sequences.is_empty() {
            true => None,
            false => Some(Rows {
                layers: per_layer
                    .into_iter()
                    .map(|(ks, vs)| Ok((stack(ks)?, stack(vs)?)))
                    .collect::<tensorwasm_sdk::Result<_>>()?,
                logits: None,
                count: self.sequences.len(),
            }),
        };
        Ok(())
    }

    /// Feeds every sequence its last token: one decode for the batch.
    fn decode(&mut self) -> tensorwasm_sdk::Result<()> {
        let Some(rows) = self.rows.as_mut() else {
            return Ok(());
        };
        let ids: Vec<u32> = self
            .sequences
            .iter()
            .map(|s| {
                *s.text
                    .generated
                    .last()
                    .expect("a kept sequence has a token")
            })
            .collect();
        let positions: Vec<usize> = self.sequences.iter().map(|s| s.position).collect();
        rows.logits = Some(self.model.decode(&ids, &positions, &mut rows.layers)?);
        for s in &mut self.sequences {
            s.position += 1;
        }
        Ok(())
    }
}

/// One token for each of `part`'s sequences: the greedy ones with one
/// `argmax` over the part's logits, the others from their own row.
fn pick(part: &Rows, sequences: &mut [Sequence]) -> tensorwasm_sdk::Result<Vec<u32>> {
    let logits = part
        .logits
        .as_ref()
        .expect("every part has logits to pick from");
    let greedy: Vec<u32> = if sequences.iter().any(|s| s.text.sampler.greedy()) {
        logits
            .argmax(-1)?
            .to_bytes()?
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as u32)
            .collect()
    } else {
        Vec::new()
    };
    let mut picks = Vec::with_capacity(sequences.len());
    for (r, s) in sequences.iter_mut().enumerate() {
        picks.push(match s.text.sampler.greedy() {
            true => greedy[r],
            false => s.text.sampler.pick(&logits.narrow(0, r as u32, 1)?)?,
        });
    }
    Ok(picks)
}

/// What a sequence reports after taking the token `id`.
fn event(s: &mut Sequence, id: u32) -> v2::TokenEvent {
    let text = s.text.push(id).unwrap_or_default();
    let usage = s.text.usage();
    v2::TokenEvent {
        sequence: s.id,
        text,
        finish: s.text.finish.map(|f| match f {
            FinishReason::Stop => v2::FinishReason::Stop,
            FinishReason::Length => v2::FinishReason::Length,
        }),
        usage: v2::Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        },
    }
}

/// `t` [rows, kv_heads, len, head_dim] with `capacity` positions: zeros
/// added, or positions past every row's cut.
fn fit(t: Tensor, capacity: usize) -> tensorwasm_sdk::Result<Tensor> {
    let shape = t.shape();
    let len = shape[2] as usize;
    if len > capacity {
        return t.narrow(2, 0, capacity as u32);
    }
    if len == capacity {
        return Ok(t);
    }
    let zeros = Tensor::full(
        &[shape[0], shape[1], (capacity - len) as u32, shape[3]],
        Dtype::F32,
        0.0,
    )?;
    concat(&[&t, &zeros], 2)
}

/// `ts` joined along rows (the one tensor itself when there is one).
fn stack(mut ts: Vec<Tensor>) -> tensorwasm_sdk::Result<Tensor> {
    if ts.len() == 1 {
        return Ok(ts.remove(0));
    }
    concat(&ts.iter().collect::<Vec<_>>(), 0)
}

/// Runs of `true` in `keep`, as (start, length).
fn runs(keep: &[bool]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &k) in keep.iter().chain([&false]).enumerate() {
        match (k, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s as u32, (i - s) as u32));
                start = None;
            }
            _ => {}
        }
    }
    out
}

fn prompt_v1(p: v2::Prompt) -> v1::Prompt {
    match p {
        v2::Prompt::Text(t) => v1::Prompt::Text(t),
        v2::Prompt::Chat(m) => v1::Prompt::Chat(
            m.into_iter()
                .map(|m| v1::Message {
                    role: m.role,
                    content: m.content,
                })
                .collect(),
        ),
    }
}

fn sampling_v1(o: v2::Sampling) -> v1::Sampling {
    v1::Sampling {
        max_tokens: o.max_tokens,
        temperature: o.temperature,
        top_p: o.top_p,
        seed: o.seed,
        stop: o.stop,
    }
}

fn from_v1(e: t1::Error) -> Error {
    match e {
        t1::Error::InvalidRequest(m) => Error::InvalidRequest(m),
        t1::Error::UnknownModel(m) => Error::UnknownModel(m),
        t1::Error::ContextLengthExceeded(o) => Error::ContextLengthExceeded(ContextOverflow {
            requested: o.requested,
            maximum: o.maximum,
        }),
        t1::Error::ModelUnavailable(m) => Error::ModelUnavailable(m),
        t1::Error::Backend(m) => Error::Backend(m),
    }
}
