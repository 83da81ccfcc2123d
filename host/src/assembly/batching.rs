//! A deployment's model components for batching across requests
//! (`[deployment.inference]`): found, pre-initialized and compiled as a
//! world's packages are, checked against the world's imports, then started
//! as long-lived instances under the deployment's capabilities
//! (`crate::inference`).

use super::Assembly;
use super::capabilities::DeploymentCapabilities;
use super::spec::{DeploymentSpec, Inference, ModelSource, Source};
use crate::assembly::capabilities::InstanceState;
use crate::inference::BatchSeries;
use crate::inference::Batchers;
use crate::inference::bindings::embedder::BatchEmbeddingModel;
use crate::inference::bindings::generator::BatchGenerationModel;
use crate::inference::embed::{Batching, Embedder};
use crate::inference::generate::Generator;
use crate::inference::model::{Exports, Recipe};
use crate::platform::compose::PackageSources;
use crate::platform::load;
use crate::platform::metrics::{BatchLabels, DeploymentLabel};
use anyhow::{Context, Result, anyhow, bail};
use std::sync::Arc;
use wasmtime::component::{Component, InstancePre};

/// A model thread's name: `embed-NAME`, with `-SLOT` on several GPUs.
fn thread_name(kind: &str, name: &str, slot: usize, slots: usize) -> String {
    match slots {
        1 => format!("{kind}-{name}"),
        _ => format!("{kind}-{name}-{slot}"),
    }
}

/// The imports a batching deployment's world leaves to the host.
const EMBEDDINGS: &str = "tensorwasm:inference/embeddings@0.1.0";
const GENERATION: &str = "tensorwasm:inference/generation@0.1.0";

impl Assembly {
    /// Checks that `component` imports exactly the model interfaces the
    /// spec names components for.
    pub(super) fn check_inference(
        &self,
        spec: &DeploymentSpec,
        component: &Component,
    ) -> Result<()> {
        let imports: Vec<String> = component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let inference = spec.inference.as_ref();
        for (import, named, key) in [
            (
                EMBEDDINGS,
                inference.is_some_and(|i| i.embeddings.is_some()),
                "embeddings",
            ),
            (
                GENERATION,
                inference.is_some_and(|i| i.generation.is_some()),
                "generation",
            ),
        ] {
            match (imports.iter().any(|i| i == import), named) {
                (true, false) => bail!(
                    "deployment `{}`: the world imports {import}; compose a model component into it, or name one in `inference.{key}` to batch across requests (docs/OPENAI.md)",
                    spec.name
                ),
                (false, true) => bail!(
                    "deployment `{}`: `inference.{key}` is set, but the world does not import {import} (its model is composed in); leave the import open (worlds/openai-batched.wac)",
                    spec.name
                ),
                _ => {}
            }
        }
        Ok(())
    }

    /// Starts the spec's model components (`inference` is the spec's).
    pub(super) fn batchers(
        &self,
        spec: &DeploymentSpec,
        inference: &Inference,
        caps: &Arc<DeploymentCapabilities>,
    ) -> Result<Batchers> {
        let series = |kind| {
            let labels = BatchLabels {
                tenant: spec.tenant.clone(),
                deployment: spec.name.clone(),
                kind,
            };
            BatchSeries {
                sizes: self.metrics.batch_size.get_or_create(&labels).clone(),
                seconds: self.metrics.batch_seconds.get_or_create(&labels).clone(),
            }
        };
        let max_batch = inference.max_batch as usize;
        let placement = caps.tensor.placement().clone();
        let slots = placement.len();
        let mut embedders = Vec::new();
        if let Some(source) = &inference.embeddings {
            let recipe = self.recipe::<BatchEmbeddingModel>(spec, source, caps)?;
            for slot in 0..slots {
                embedders.push(
                    Embedder::start(
                        thread_name("embed", &spec.name, slot, slots),
                        recipe.on_slot(slot),
                        Batching {
                            max_batch,
                            window: inference.window,
                            series: series("embeddings"),
                        },
                    )
                    .with_context(|| format!("deployment `{}`: inference.embeddings", spec.name))?,
                );
            }
        }
        let mut generators = Vec::new();
        if let Some(source) = &inference.generation {
            let recipe = self.recipe::<BatchGenerationModel>(spec, source, caps)?;
            for slot in 0..slots {
                generators.push(
                    Generator::start(
                        thread_name("generate", &spec.name, slot, slots),
                        recipe.on_slot(slot),
                        max_batch,
                        (
                            series("generation"),
                            self.metrics
                                .batch_sequences
                                .get_or_create(&DeploymentLabel::new(&spec.tenant, &spec.name))
                                .clone(),
                        ),
                    )
                    .with_context(|| format!("deployment `{}`: inference.generation", spec.name))?,
                );
            }
        }
        Ok(Batchers {
            embedders,
            generators,
            placement,
        })
    }

    /// The model component `source`, pre-initialized under the
    /// deployment's capabilities, compiled and type-checked against its
    /// model world.
    fn recipe<E: Exports>(
        &self,
        spec: &DeploymentSpec,
        source: &ModelSource,
        caps: &Arc<DeploymentCapabilities>,
    ) -> Result<Recipe<E>> {
        let at = |what: &str| format!("deployment `{}`: model component {what}", spec.name);
        let (name, bytes) = match source {
            ModelSource::Package(name) => {
                let sources = match &spec.source {
                    Source::World(path, deps) => PackageSources {
                        deps: deps.clone(),
                        base_dir: path.parent().map(|p| p.to_path_buf()),
                    },
                    _ => PackageSources::default(),
                };
                let bytes = sources.find(name)?.ok_or_else(|| {
                    anyhow!(
                        "{}: no such package (name a built-in one such as `tensorwasm:minilm`, one in the deployment's `deps`, or a .wasm path)",
                        at(&format!("`{name}`"))
                    )
                })?;
                (name.clone(), bytes)
            }
            ModelSource::Path(path) => {
                let bytes = std::fs::read(path)
                    .with_context(|| at(&format!("cannot read {}", path.display())))?;
                (path.display().to_string(), bytes)
            }
        };
        let bytes = self.preinit(spec, caps).apply(&name, bytes)?;
        let component = load::compile(&self.engine, &self.cache, &name, &bytes)?;
        let pre: InstancePre<InstanceState> = self
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| at(&format!("`{name}` cannot be linked")))?;
        Ok(Recipe {
            engine: self.engine.clone(),
            pre: E::pre(pre).with_context(|| {
                at(&format!(
                    "`{name}` does not export the batched model interface of tensorwasm:inference@0.2.0"
                ))
            })?,
            caps: Arc::downgrade(caps),
            memory: spec.limits.memory,
            timeout: spec.limits.timeout,
            slot: 0,
        })
    }
}
