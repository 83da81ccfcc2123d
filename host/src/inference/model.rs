//! A model component's long-lived instance, on a thread of its own: one
//! per deployment and model component, instantiated at deploy time under
//! the deployment's own capabilities (tenant, grants, quotas), renewed after
//! a trap. Its batcher ([`super::embed`], [`super::generate`]) is the only
//! caller, one call at a time.

use super::InferenceCtx;
use crate::assembly::capabilities::{DeploymentCapabilities, InstanceEnv, InstanceState};
use anyhow::{Context, Result};
use std::future::Future;
use std::sync::Weak;
use std::time::{Duration, Instant};
use wasmtime::Store;
use wasmtime::component::InstancePre;

/// A model world's exports (generated bindings).
pub trait Exports: Sized + 'static {
    /// Its pre-instantiated form.
    type Pre: Clone + Send + 'static;
    /// What it says of each model it serves.
    type Info: Send + 'static;
    /// Type-checks the component against the world.
    fn pre(pre: InstancePre<InstanceState>) -> Result<Self::Pre>;
    /// Instantiates it in `store`.
    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<InstanceState>,
    ) -> impl Future<Output = Result<Self>>;
    /// The models it serves.
    fn models(
        &self,
        store: &mut Store<InstanceState>,
    ) -> impl Future<Output = wasmtime::Result<Vec<Self::Info>>>;
}

/// What a model instance is made from.
pub struct Recipe<E: Exports> {
    /// The engine.
    pub engine: wasmtime::Engine,
    /// The component, pre-instantiated.
    pub pre: E::Pre,
    /// The deployment's capabilities (weak: the deployment owns them, and
    /// through them this instance's batcher).
    pub caps: Weak<DeploymentCapabilities>,
    /// Linear-memory cap.
    pub memory: u64,
    /// Wall-clock budget of one call.
    pub timeout: Duration,
    /// The deployment's GPU the instance computes on.
    pub slot: usize,
}

impl<E: Exports> Recipe<E> {
    /// The same recipe, for an instance on the deployment's GPU `slot`.
    pub fn on_slot(&self, slot: usize) -> Self {
        Self {
            engine: self.engine.clone(),
            pre: self.pre.clone(),
            caps: self.caps.clone(),
            memory: self.memory,
            timeout: self.timeout,
            slot,
        }
    }
}

/// A running model instance.
pub struct Model<E: Exports> {
    recipe: Recipe<E>,
    store: Store<InstanceState>,
    exports: E,
}

impl<E: Exports> Model<E> {
    /// Instantiates the recipe.
    pub async fn new(recipe: Recipe<E>) -> Result<Self> {
        let (store, exports) = Self::instantiate(&recipe).await?;
        Ok(Self {
            recipe,
            store,
            exports,
        })
    }

    async fn instantiate(recipe: &Recipe<E>) -> Result<(Store<InstanceState>, E)> {
        let caps = recipe.caps.upgrade().context("the deployment is gone")?;
        let env = InstanceEnv {
            started: Instant::now(),
            budget: None,
            random_seed: None,
            slot: Some(recipe.slot),
        };
        let mut state = InstanceState::new(&caps, recipe.memory, &env)?;
        // A model does not call models: no handle back to its own batcher.
        state.caps.inference = InferenceCtx::default();
        let mut store = Store::new(&recipe.engine, state);
        store.limiter(|s| &mut s.limiter);
        crate::platform::engine::set_wall_deadline(
            &mut store,
            Some(Instant::now() + recipe.timeout),
        );
        let exports = E::instantiate(&recipe.pre, &mut store).await?;
        Ok((store, exports))
    }

    /// The exports and the store, armed with a fresh per-call deadline.
    /// (The `wasi:tensor` work of the previous call is reported to the
    /// deployment's counters now.)
    pub fn call(&mut self) -> (&E, &mut Store<InstanceState>) {
        self.store.data_mut().caps.tensor.report();
        let deadline = Instant::now() + self.recipe.timeout;
        crate::platform::engine::set_wall_deadline(&mut self.store, Some(deadline));
        (&self.exports, &mut self.store)
    }

    /// Replaces a trapped instance with a new one (its host objects —
    /// tensors, every sequence's cache — are freed with the old store).
    pub async fn renew(&mut self) -> Result<()> {
        let (store, exports) = Self::instantiate(&self.recipe).await?;
        self.store = store;
        self.exports = exports;
        Ok(())
    }
}

/// Starts `recipe`'s instance on a thread of its own (with its own
/// single-threaded runtime), lists its models, then hands it to `serve`
/// there; returns the models once the instance is up, or why it is not.
pub fn start<E, F, Fut>(name: String, recipe: Recipe<E>, serve: F) -> Result<Vec<E::Info>>
where
    E: Exports,
    Recipe<E>: Send,
    F: FnOnce(Model<E>) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return drop(ready_tx.send(Err(e.into()))),
            };
            rt.block_on(async move {
                let up = async {
                    let mut model = Model::new(recipe).await?;
                    let (exports, store) = model.call();
                    let models = exports
                        .models(store)
                        .await
                        .map_err(anyhow::Error::from)
                        .context("listing the component's models")?;
                    anyhow::Ok((model, models))
                };
                match up.await {
                    Ok((model, models)) => {
                        let _ = ready_tx.send(Ok(models));
                        serve(model).await;
                    }
                    Err(e) => drop(ready_tx.send(Err(e))),
                }
            });
        })
        .context("cannot start a model thread")?;
    ready_rx
        .recv()
        .context("the model thread ended before its instance was ready")?
}
