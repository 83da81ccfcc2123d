//! `tensorwasm:inference/batch-embeddings@0.2.0`: the inputs of every request
//! the host's batcher gathered, encoded in one pass (the same chunks, sorted
//! by length, as one request's many inputs). Each request is checked and
//! tokenized on its own, so a bad one fails alone.

use crate::bindings::exports::tensorwasm::inference0_2_0::batch_embeddings::{
    EmbedRequest, EmbeddingBatch, Guest, Input,
};
use crate::bindings::tensorwasm::inference0_1_0::types as v1;
use crate::bindings::tensorwasm::inference0_2_0::types::{
    ContextOverflow, Error, ModelInfo, ModelKind,
};
use crate::{Component, bert, check, tensor_device, with_encoder};

impl Guest for Component {
    fn models() -> Vec<ModelInfo> {
        <Component as crate::Guest>::models()
            .into_iter()
            .map(|m| ModelInfo {
                id: m.id,
                owned_by: m.owned_by,
                kind: match m.kind {
                    v1::ModelKind::Embedding => ModelKind::Embedding,
                    v1::ModelKind::Generation => ModelKind::Generation,
                },
                context_length: m.context_length,
                dimensions: m.dimensions,
            })
            .collect()
    }

    fn embed_batch(requests: Vec<EmbedRequest>) -> Vec<Result<EmbeddingBatch, Error>> {
        // Each request's token ids, or its error.
        let checked: Vec<Result<Vec<Vec<u32>>, Error>> = requests
            .into_iter()
            .map(|r| {
                let inputs: Vec<crate::Input> = r.inputs.into_iter().map(to_v1).collect();
                check(&r.model, &inputs).map_err(from_v1)
            })
            .collect();
        let all: Vec<Vec<u32>> = checked
            .iter()
            .filter_map(|c| c.as_ref().ok())
            .flatten()
            .cloned()
            .collect();
        let mut vectors = if all.is_empty() {
            Ok(Vec::new().into_iter())
        } else {
            with_encoder(|e| {
                e.embed(&all, bert::Chunking::for_device(&tensor_device()))
                    .map_err(|e| v1::Error::Backend(e.to_string()))
            })
            .map(Vec::into_iter)
            .map_err(from_v1)
        };
        checked
            .into_iter()
            .map(|c| {
                let sequences = c?;
                let vectors = match &mut vectors {
                    Ok(all) => all.by_ref().take(sequences.len()).collect(),
                    Err(e) => return Err(e.clone()),
                };
                Ok(EmbeddingBatch {
                    vectors,
                    prompt_tokens: sequences.iter().map(|s| s.len() as u32).sum(),
                })
            })
            .collect()
    }
}

fn to_v1(input: Input) -> crate::Input {
    match input {
        Input::Text(t) => crate::Input::Text(t),
        Input::Tokens(t) => crate::Input::Tokens(t),
    }
}

fn from_v1(e: v1::Error) -> Error {
    match e {
        v1::Error::InvalidRequest(m) => Error::InvalidRequest(m),
        v1::Error::UnknownModel(m) => Error::UnknownModel(m),
        v1::Error::ContextLengthExceeded(o) => Error::ContextLengthExceeded(ContextOverflow {
            requested: o.requested,
            maximum: o.maximum,
        }),
        v1::Error::ModelUnavailable(m) => Error::ModelUnavailable(m),
        v1::Error::Backend(m) => Error::Backend(m),
    }
}
