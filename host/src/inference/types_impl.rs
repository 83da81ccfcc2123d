//! The host's `tensorwasm:inference@0.1.0` functions: each call goes to the
//! deployment's batcher; the 0.1.0 types are converted to and from the
//! 0.2.0 ones the model components speak.

use super::InferenceView;
use super::bindings::embedder::exports::tensorwasm::inference::batch_embeddings as e2;
use super::bindings::embedder::tensorwasm::inference::types as te;
use super::bindings::generator::exports::tensorwasm::inference::batch_generation as g2;
use super::bindings::generator::tensorwasm::inference::types as t2;
use super::bindings::serve::tensorwasm::inference::{
    embeddings as e1, generation as g1, types as t1,
};
use super::generate::Completion;
use wasmtime::component::Resource;

impl t1::Host for InferenceView<'_> {}

impl e1::Host for InferenceView<'_> {
    async fn models(&mut self) -> wasmtime::Result<Vec<t1::ModelInfo>> {
        let Some(e) = self.ctx.get().and_then(|b| b.embedder()) else {
            return Ok(Vec::new());
        };
        Ok(e.models().iter().map(model_info_e).collect())
    }

    async fn embed(
        &mut self,
        model: String,
        inputs: Vec<e1::Input>,
    ) -> wasmtime::Result<Result<e1::EmbeddingBatch, t1::Error>> {
        let Some(e) = self.ctx.get().and_then(|b| b.embedder()) else {
            return Ok(Err(not_served("embeddings")));
        };
        let inputs = inputs
            .into_iter()
            .map(|i| match i {
                e1::Input::Text(t) => e2::Input::Text(t),
                e1::Input::Tokens(t) => e2::Input::Tokens(t),
            })
            .collect();
        Ok(match e.embed(e2::EmbedRequest { model, inputs }).await {
            Ok(b) => Ok(e1::EmbeddingBatch {
                vectors: b.vectors,
                prompt_tokens: b.prompt_tokens,
            }),
            Err(err) => Err(error_e(err)),
        })
    }
}

impl g1::Host for InferenceView<'_> {
    async fn models(&mut self) -> wasmtime::Result<Vec<t1::ModelInfo>> {
        let Some(g) = self.ctx.get().and_then(|b| b.generator()) else {
            return Ok(Vec::new());
        };
        Ok(g.models().iter().map(model_info_g).collect())
    }

    async fn start(
        &mut self,
        model: String,
        prompt: g1::Prompt,
        options: g1::Sampling,
    ) -> wasmtime::Result<Result<Resource<Completion>, t1::Error>> {
        let Some(g) = self.ctx.get().and_then(|b| b.generator()) else {
            return Ok(Err(not_served("generation")));
        };
        let prompt = match prompt {
            g1::Prompt::Text(t) => g2::Prompt::Text(t),
            g1::Prompt::Chat(m) => g2::Prompt::Chat(
                m.into_iter()
                    .map(|m| g2::Message {
                        role: m.role,
                        content: m.content,
                    })
                    .collect(),
            ),
        };
        let options = g2::Sampling {
            max_tokens: options.max_tokens,
            temperature: options.temperature,
            top_p: options.top_p,
            seed: options.seed,
            stop: options.stop,
        };
        match g.start_completion(model, prompt, options).await {
            Ok(c) => Ok(Ok(self.table.push(c)?)),
            Err(e) => Ok(Err(error_g(e))),
        }
    }
}

impl g1::HostCompletion for InferenceView<'_> {
    async fn next(
        &mut self,
        c: Resource<Completion>,
    ) -> wasmtime::Result<Result<Option<String>, t1::Error>> {
        let c = self.table.get_mut(&c)?;
        Ok(c.next().await.map_err(error_g))
    }

    async fn finish_reason(
        &mut self,
        c: Resource<Completion>,
    ) -> wasmtime::Result<Option<g1::FinishReason>> {
        Ok(self.table.get(&c)?.finish.map(|f| match f {
            g2::FinishReason::Stop => g1::FinishReason::Stop,
            g2::FinishReason::Length => g1::FinishReason::Length,
        }))
    }

    async fn usage(&mut self, c: Resource<Completion>) -> wasmtime::Result<g1::Usage> {
        let u = self.table.get(&c)?.usage;
        Ok(g1::Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        })
    }

    async fn drop(&mut self, c: Resource<Completion>) -> wasmtime::Result<()> {
        self.table.delete(c)?;
        Ok(())
    }
}

fn not_served(what: &str) -> t1::Error {
    t1::Error::ModelUnavailable(format!(
        "this deployment names no {what} model: set `inference.{what}` in its deployment file (docs/OPENAI.md)"
    ))
}

/// The 0.2.0 types, generated once per model world: the same WIT, so one
/// conversion each, written for both.
macro_rules! from_v2 {
    ($info:ident, $error:ident, $t:ident) => {
        fn $info(m: &$t::ModelInfo) -> t1::ModelInfo {
            t1::ModelInfo {
                id: m.id.clone(),
                owned_by: m.owned_by.clone(),
                kind: match m.kind {
                    $t::ModelKind::Embedding => t1::ModelKind::Embedding,
                    $t::ModelKind::Generation => t1::ModelKind::Generation,
                },
                context_length: m.context_length,
                dimensions: m.dimensions,
            }
        }

        fn $error(e: $t::Error) -> t1::Error {
            match e {
                $t::Error::InvalidRequest(m) => t1::Error::InvalidRequest(m),
                $t::Error::UnknownModel(m) => t1::Error::UnknownModel(m),
                $t::Error::ContextLengthExceeded(o) => {
                    t1::Error::ContextLengthExceeded(t1::ContextOverflow {
                        requested: o.requested,
                        maximum: o.maximum,
                    })
                }
                $t::Error::ModelUnavailable(m) => t1::Error::ModelUnavailable(m),
                $t::Error::Backend(m) => t1::Error::Backend(m),
            }
        }
    };
}

from_v2!(model_info_e, error_e, te);
from_v2!(model_info_g, error_g, t2);
