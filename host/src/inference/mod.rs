//! Batching across requests: `tensorwasm:inference@0.1.0` served by the
//! host. A deployment that opts in (`[deployment.inference]`, docs/OPENAI.md)
//! leaves its world's `embeddings` and `generation` imports to the host and
//! names the model components that serve them; each runs as one long-lived
//! instance on a thread of its own ([`model`]), exporting the batched
//! interfaces of `tensorwasm:inference@0.2.0`. The per-request instances
//! call the same 0.1.0 interfaces as before; the batchers ([`embed`],
//! [`generate`]) merge the work of concurrent requests into one model call
//! and hand each request its own slice.
//!
//! Isolation: a deployment's batchers serve that deployment only (one
//! tenant). Its requests share the model instance (its memory, and the
//! tensors of every sequence in the batch); each sees only its own results.
//!
//! Lifecycle (`crate::assembly::capabilities`): an [`InferenceCtx`] per
//! deployment, filled by the assembly once the model instances are up, and
//! shared by its instances.

#[allow(missing_docs)]
pub mod bindings;
pub mod embed;
pub mod generate;
pub mod model;
mod types_impl;

use crate::assembly::capabilities::{
    Capability, DeploymentEnv, InstanceEnv, InstanceState, ServerEnv,
};
use prometheus_client::metrics::histogram::Histogram;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use wasmtime::component::{HasData, Linker, ResourceTable};

/// A batcher's series: requests or sequences per model call, and each
/// call's wall time (`tensorwasm_inference_batch_size`, `_batch_seconds`).
#[derive(Clone)]
pub struct BatchSeries {
    /// Requests (embeddings) or sequences (generation) per call.
    pub sizes: Histogram,
    /// Wall time of each call, seconds.
    pub seconds: Histogram,
}

impl BatchSeries {
    /// Records a call of `n` requests or sequences that started at `since`.
    pub fn observe(&self, n: usize, since: Instant) {
        self.sizes.observe(n as f64);
        self.seconds.observe(since.elapsed().as_secs_f64());
    }
}

/// The inference capability (no server-wide state).
pub struct Inference;

/// A deployment's batchers, once its model instances run: one per GPU of
/// its placement (each with its model instance there), used in turn.
pub struct Batchers {
    /// The embedding model's, if the deployment names one.
    pub embedders: Vec<embed::Embedder>,
    /// The generative model's, if the deployment names one.
    pub generators: Vec<generate::Generator>,
    /// Where the deployment computes (picks the next working GPU).
    pub placement: Arc<crate::tensor::device::Placement>,
}

impl Batchers {
    fn next<'a, T>(&self, list: &'a [T]) -> Option<&'a T> {
        match list.len() {
            0 => None,
            1 => list.first(),
            n => list.get(self.placement.pick() % n),
        }
    }

    /// The embedder a request goes to.
    pub fn embedder(&self) -> Option<&embed::Embedder> {
        self.next(&self.embedders)
    }

    /// The generator a new sequence goes to (it stays there).
    pub fn generator(&self) -> Option<&generate::Generator> {
        self.next(&self.generators)
    }
}

/// A deployment's handle on its batchers (empty unless it opts in).
#[derive(Clone, Default)]
pub struct InferenceCtx(Arc<OnceLock<Batchers>>);

impl InferenceCtx {
    /// Hands the deployment its batchers (once).
    pub fn set(&self, batchers: Batchers) {
        let _ = self.0.set(batchers);
    }

    fn get(&self) -> Option<&Batchers> {
        self.0.get()
    }
}

impl Capability for Inference {
    type Deployment = InferenceCtx;
    type Instance = InferenceCtx;

    fn new(_: &ServerEnv) -> anyhow::Result<Self> {
        Ok(Inference)
    }

    fn add_to_linker(linker: &mut Linker<InstanceState>) -> anyhow::Result<()> {
        bindings::serve::InferenceImports::add_to_linker::<InstanceState, HasInference>(
            linker,
            |s| InferenceView {
                ctx: &s.caps.inference,
                table: &mut s.table,
            },
        )
        .map_err(anyhow::Error::from)
    }

    fn deployment(&self, _: &DeploymentEnv) -> anyhow::Result<InferenceCtx> {
        Ok(InferenceCtx::default())
    }

    fn instance(ctx: &InferenceCtx, _: &InstanceEnv) -> anyhow::Result<InferenceCtx> {
        Ok(ctx.clone())
    }

    /// A completion still held after its request keeps its sequence in the
    /// batch: drop the instance (which releases it) rather than reuse it.
    fn left_behind(table: &mut ResourceTable) -> bool {
        table
            .iter_mut()
            .any(|entry| entry.is::<generate::Completion>())
    }
}

/// What the host's `tensorwasm:inference` functions see of an instance.
pub struct InferenceView<'a> {
    ctx: &'a InferenceCtx,
    table: &'a mut ResourceTable,
}

struct HasInference;

impl HasData for HasInference {
    type Data<'a> = InferenceView<'a>;
}
