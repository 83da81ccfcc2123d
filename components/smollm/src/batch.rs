//! `tensorwasm:inference/batch-generation@0.2.0`: continuous batching in one
//! long-lived instance. `admit` reads a prompt on its own (prefill) and
//! parks the sequence with its KV cache and logits; each `step` picks one
//! token for every sequence, drops those that ended, moves newly admitted
//! ones into the batch's cache, and decodes all the rest with one pass of
//! the model ([`llama::Model::decode`]), whatever their lengths.

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

/// A sequence of the batch.
struct Sequence {
    id: u32,
    text: Text,
    /// Positions read into the cache (prompt and fed tokens).
    position: usize,
    /// Its prefill's cache and logits, until it joins the batch's cache.
    joining: Option<(llama::Cache, Tensor)>,
    /// Released by the host: leaves at the next step, unreported.
    gone: bool,
}

/// The batch: the model, its sequences (the first `cache.rows` in the
/// cache's rows, in order; joining ones after) and the last decode's logits.
struct Batch {
    model: llama::Model,
    sequences: Vec<Sequence>,
    cache: Option<llama::BatchCache>,
    logits: Option<Tensor>,
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
                    cache: None,
                    logits: None,
                    next_id: 0,
                });
            }
            let batch = slot.as_mut().expect("made above");
            if model != crate::MODEL_ID {
                return Err(from_v1(crate::unknown_model(&model)));
            }
            let (ids, text) =
                prepare(&batch.model, prompt_v1(prompt), sampling_v1(options)).map_err(from_v1)?;
            let mut cache = batch.model.cache();
            let logits = batch
                .model
                .forward(&ids, &mut cache)
                .map_err(|e| Error::Backend(e.to_string()))?;
            let id = batch.next_id;
            batch.next_id = batch.next_id.wrapping_add(1);
            batch.sequences.push(Sequence {
                id,
                text,
                position: ids.len(),
                joining: Some((cache, logits)),
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
        let picks = self.pick()?;
        let mut events = Vec::with_capacity(picks.len());
        for (s, id) in self.sequences.iter_mut().zip(picks) {
            if s.gone {
                continue;
            }
            let text = s.text.push(id).unwrap_or_default();
            events.push(v2::TokenEvent {
                sequence: s.id,
                text,
                finish: s.text.finish.map(|f| match f {
                    FinishReason::Stop => v2::FinishReason::Stop,
                    FinishReason::Length => v2::FinishReason::Length,
                }),
                usage: {
                    let u = s.text.usage();
                    v2::Usage {
                        prompt_tokens: u.prompt_tokens,
                        completion_tokens: u.completion_tokens,
                    }
                },
            });
        }
        self.regroup()?;
        self.decode()?;
        Ok(events)
    }

    /// One token per sequence: greedy rows of the batch with one `argmax`,
    /// the others from their own row or their prefill's logits.
    fn pick(&mut self) -> tensorwasm_sdk::Result<Vec<u32>> {
        let rows = self.cache.as_ref().map_or(0, |c| c.rows);
        let greedy_rows = match &self.logits {
            Some(l) if rows > 0 => {
                let bytes = l.argmax(-1)?.to_bytes()?;
                bytes
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as u32)
                    .collect()
            }
            _ => Vec::new(),
        };
        let mut picks = Vec::with_capacity(self.sequences.len());
        for (r, s) in self.sequences.iter_mut().enumerate() {
            let id = if let Some((_, logits)) = &s.joining {
                s.text.sampler.pick(logits)?
            } else if s.text.sampler.greedy() {
                greedy_rows[r]
            } else {
                let row = self.logits.as_ref().expect("rows have logits");
                s.text.sampler.pick(&row.narrow(0, r as u32, 1)?)?
            };
            picks.push(id);
        }
        Ok(picks)
    }

    /// Drops ended and released sequences from the batch and moves the
    /// newly admitted ones into its cache (growing its capacity if needed).
    fn regroup(&mut self) -> tensorwasm_sdk::Result<()> {
        let rows = self.cache.as_ref().map_or(0, |c| c.rows);
        let keep: Vec<bool> = self
            .sequences
            .iter()
            .map(|s| !s.gone && s.text.finish.is_none())
            .collect();
        let changed = keep.iter().any(|k| !k) || self.sequences.len() > rows;
        if !changed {
            return self.grow();
        }
        let need = self
            .sequences
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(s, _)| s.position + 1)
            .max()
            .unwrap_or(0);
        let old = self.cache.take();
        let capacity = old
            .as_ref()
            .map_or(0, |c| c.capacity)
            .max(need.div_ceil(CAPACITY_STEP) * CAPACITY_STEP);
        let mut parts: Vec<Vec<(Tensor, Tensor)>> = Vec::new();
        if let Some(old) = &old {
            for (start, len) in runs(&keep[..rows]) {
                parts.push(
                    old.layers
                        .iter()
                        .map(|(k, v)| Ok((k.narrow(0, start, len)?, v.narrow(0, start, len)?)))
                        .collect::<tensorwasm_sdk::Result<_>>()?,
                );
            }
        }
        for (s, k) in self.sequences.iter_mut().zip(&keep).skip(rows) {
            if let (true, Some((cache, _))) = (*k, s.joining.take()) {
                parts.push(
                    cache
                        .layers
                        .into_iter()
                        .map(|l| l.expect("prefilled"))
                        .collect(),
                );
            }
        }
        let mut sequences = std::mem::take(&mut self.sequences);
        let mut i = 0;
        sequences.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        for s in &mut sequences {
            s.joining = None;
        }
        self.sequences = sequences;
        self.logits = None;
        self.cache = match parts.is_empty() {
            true => None,
            false => Some(self.join(parts, capacity)?),
        };
        Ok(())
    }

    /// One cache from per-layer pieces (each [rows, kv_heads, len,
    /// head_dim]), padded to `capacity` positions and stacked by rows.
    fn join(
        &self,
        parts: Vec<Vec<(Tensor, Tensor)>>,
        capacity: usize,
    ) -> tensorwasm_sdk::Result<llama::BatchCache> {
        let layers = self.model.config.layers;
        let mut per_layer: Vec<(Vec<Tensor>, Vec<Tensor>)> =
            (0..layers).map(|_| (Vec::new(), Vec::new())).collect();
        let mut rows = 0;
        for part in parts {
            rows += part.first().map_or(0, |(k, _)| k.shape()[0] as usize);
            for ((k, v), (ks, vs)) in part.into_iter().zip(per_layer.iter_mut()) {
                ks.push(pad(k, capacity)?);
                vs.push(pad(v, capacity)?);
            }
        }
        let layers = per_layer
            .into_iter()
            .map(|(ks, vs)| Ok((stack(ks)?, stack(vs)?)))
            .collect::<tensorwasm_sdk::Result<_>>()?;
        Ok(llama::BatchCache {
            layers,
            rows,
            capacity,
        })
    }

    /// Grows the cache when a row's next position would not fit.
    fn grow(&mut self) -> tensorwasm_sdk::Result<()> {
        let need = self
            .sequences
            .iter()
            .map(|s| s.position + 1)
            .max()
            .unwrap_or(0);
        let Some(cache) = self.cache.take() else {
            return Ok(());
        };
        if need <= cache.capacity {
            self.cache = Some(cache);
            return Ok(());
        }
        let capacity = need.div_ceil(CAPACITY_STEP) * CAPACITY_STEP;
        let parts = vec![cache.layers];
        self.cache = Some(self.join(parts, capacity)?);
        Ok(())
    }

    /// Feeds every sequence its last token: one decode for the batch.
    fn decode(&mut self) -> tensorwasm_sdk::Result<()> {
        let Some(cache) = self.cache.as_mut() else {
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
        self.logits = Some(self.model.decode(&ids, &positions, cache)?);
        for s in &mut self.sequences {
            s.position += 1;
        }
        Ok(())
    }
}

/// `t` [rows, kv_heads, len, head_dim] with zeros up to `capacity` positions.
fn pad(t: Tensor, capacity: usize) -> tensorwasm_sdk::Result<Tensor> {
    let shape = t.shape();
    let len = shape[2] as usize;
    if len >= capacity {
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
