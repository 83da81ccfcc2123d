//! Pre-initialization of components at deploy time, with wasmtime's Wizer.
//!
//! A component that exports `wizer-initialize: func()` (Wizer's convention)
//! is instantiated once when its deployment loads, under that deployment's
//! grants (its model folders, config and weights), and the function runs.
//! The component is then replaced by a snapshot of its memories and globals
//! so every per-request instance starts
//! from the initialized state: a tokenizer already built, a table already
//! parsed. Instances stay fresh per request; they only start further along.
//! (The function stays exported; a composed world does not re-export it.)
//!
//! What does not survive the snapshot is host state: handles to files,
//! tensors, weights or streams opened during initialization are gone in the
//! next instance, so the function must close what it opens (and reset
//! wasi-libc's preopen cache, `__wasilibc_reset_preopens`, after file
//! reads). Its randomness is seeded deterministically, so the same inputs give
//! the same snapshot, which the artifact cache then compiles once.

use crate::assembly::capabilities::{DeploymentCapabilities, InstanceEnv, InstanceState};
use crate::assembly::spec::Limits;
use crate::platform::cache::ArtifactCache;
use anyhow::{Context, Result, anyhow};
use std::time::Instant;
use wasmtime::component::{Component, Instance, Linker, WasmList};
use wasmtime::{Engine, Store};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

/// The seed of `wasi:random` while a component pre-initializes.
const INIT_SEED: u64 = 0x7465_6e73_6f72_7761;

/// The export a component names to be pre-initialized.
pub const INIT_EXPORT: &str = "wizer-initialize";

/// Whether `bytes` is a component exporting [`INIT_EXPORT`] at its top level.
pub fn wants_init(bytes: &[u8]) -> bool {
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(wasmparser::Payload::ModuleSection { .. })
            | Ok(wasmparser::Payload::ComponentSection { .. }) => depth += 1,
            Ok(wasmparser::Payload::End(_)) => depth = depth.saturating_sub(1),
            Ok(wasmparser::Payload::ComponentExportSection(exports)) if depth == 0 => {
                let found = exports
                    .into_iter()
                    .flatten()
                    .any(|e| e.name.name == INIT_EXPORT);
                if found {
                    return true;
                }
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// What pre-initialization needs from the deployment being loaded.
pub struct Preinit<'a> {
    /// The engine the deployment runs on.
    pub engine: &'a Engine,
    /// The host's linker.
    pub linker: &'a Linker<InstanceState>,
    /// Compiles the instrumented component once per distinct input.
    pub cache: &'a ArtifactCache,
    /// The deployment's capabilities, as its requests see them.
    pub caps: &'a DeploymentCapabilities,
    /// The deployment's limits: its memory cap and time budget apply.
    pub limits: &'a Limits,
}

impl Preinit<'_> {
    /// `bytes` pre-initialized when it asks to be ([`wants_init`]), else
    /// unchanged. `name` names the component in errors.
    pub fn apply(&self, name: &str, bytes: Vec<u8>) -> Result<Vec<u8>> {
        if !wants_init(&bytes) {
            return Ok(bytes);
        }
        let started = Instant::now();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a runtime for pre-initialization")?;
        let out = runtime
            .block_on(self.run(&bytes))
            .map_err(|e| anyhow!("{name}: pre-initialization (`{INIT_EXPORT}`) failed: {e:#}"))?;
        tracing::info!(
            "{name}: pre-initialized in {:?} ({} KiB snapshot)",
            started.elapsed(),
            out.len() / 1024
        );
        Ok(out)
    }

    async fn run(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        let mut wizer = Wizer::new();
        // Removing the export breaks wit-bindgen components in wizer 48 (the
        // core export goes, the component's lift of it stays); composed
        // worlds do not re-export it anyway.
        wizer.keep_init_func(true);
        let (cx, instrumented) = wizer
            .instrument_component(bytes)
            .map_err(anyhow::Error::from)?;
        let (component, _) = self.cache.load(self.engine, &instrumented)?;
        let (mut store, instance) = self.initialize(&component).await?;
        // Wizer's state readers that follow are short and host-written.
        crate::platform::engine::set_wall_deadline(&mut store, None);
        let mut access = Access {
            store: &mut store,
            instance,
            failed: None,
        };
        let snapshot = wizer
            .snapshot_component(&cx, &mut access)
            .await
            .map_err(anyhow::Error::from)?;
        match access.failed {
            Some(e) => Err(e.context("reading the initialized state")),
            None => Ok(snapshot),
        }
    }

    /// Instantiates the instrumented `component` under the deployment's
    /// capabilities and limits and runs its initializer.
    async fn initialize(&self, component: &Component) -> Result<(Store<InstanceState>, Instance)> {
        let env = InstanceEnv {
            started: Instant::now(),
            budget: None,
            random_seed: Some(INIT_SEED),
            slot: None,
        };
        let state = InstanceState::new(self.caps, self.limits.memory, &env)?;
        let mut store = Store::new(self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let deadline = Instant::now() + self.limits.timeout;
        crate::platform::engine::set_wall_deadline(&mut store, Some(deadline));
        let instance = self
            .linker
            .instantiate_async(&mut store, component)
            .await
            .map_err(anyhow::Error::from)
            .context("instantiating")?;
        let init = instance
            .get_typed_func::<(), ()>(&mut store, INIT_EXPORT)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("`{INIT_EXPORT}` must have type `func()`"))?;
        let ran = tokio::time::timeout(self.limits.timeout, init.call_async(&mut store, ())).await;
        self.verdict(ran, store.data().limiter.hit)?;
        Ok((store, instance))
    }

    /// How the initializer's run ended, as a one-line error.
    fn verdict(
        &self,
        ran: Result<wasmtime::Result<()>, tokio::time::error::Elapsed>,
        memory_hit: bool,
    ) -> Result<()> {
        let timeout = || {
            anyhow!(
                "it ran past the deployment's timeout ({})",
                humantime::format_duration(self.limits.timeout)
            )
        };
        match ran {
            Err(_) => Err(timeout()),
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) if memory_hit => Err(anyhow!(
                "it grew past the deployment's memory cap ({})",
                crate::platform::units::format_size(self.limits.memory)
            )),
            Ok(Err(e))
                if matches!(
                    e.downcast_ref::<wasmtime::Trap>(),
                    Some(wasmtime::Trap::Interrupt)
                ) =>
            {
                Err(timeout())
            }
            Ok(Err(e)) => {
                // The innermost cause names the fault; the outer layers (a
                // wasm backtrace) only say that wasm was running.
                let cause = e.root_cause().to_string();
                let cause = cause.lines().next().unwrap_or_default();
                Err(anyhow!("the initializer trapped: {cause}"))
            }
        }
    }
}

/// Wizer's view of the initialized instance: the state-reading functions its
/// instrumentation exported. Wizer's trait cannot return errors, so the
/// first one is kept here (and a default value returned) for [`Preinit`] to
/// report once the snapshot is taken.
struct Access<'a> {
    store: &'a mut Store<InstanceState>,
    instance: Instance,
    failed: Option<anyhow::Error>,
}

impl Access<'_> {
    /// Calls the instrumentation's `instance#func` (a state reader).
    async fn call<R: wasmtime::component::Lift + Default + Send + Sync + 'static>(
        &mut self,
        instance: &str,
        func: &str,
    ) -> R {
        match self.try_call(instance, func).await {
            Ok(r) => r,
            Err(e) => {
                self.failed.get_or_insert(e);
                R::default()
            }
        }
    }

    async fn try_call<R: wasmtime::component::Lift + Send + Sync + 'static>(
        &mut self,
        instance: &str,
        func: &str,
    ) -> Result<R> {
        let missing = || anyhow!("the instrumented component has no `{instance}#{func}`");
        let (_, outer) = self
            .instance
            .get_export(&mut *self.store, None, instance)
            .ok_or_else(missing)?;
        let (_, index) = self
            .instance
            .get_export(&mut *self.store, Some(&outer), func)
            .ok_or_else(missing)?;
        let f = self
            .instance
            .get_typed_func::<(), (R,)>(&mut *self.store, index)
            .map_err(anyhow::Error::from)?;
        let (r,) = f
            .call_async(&mut *self.store, ())
            .await
            .map_err(anyhow::Error::from)?;
        Ok(r)
    }
}

impl ComponentInstanceState for Access<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        match self.try_call::<WasmList<u8>>(instance, func).await {
            Ok(list) => contents(list.as_le_slice(&*self.store)),
            Err(e) => {
                self.failed.get_or_insert(e);
                contents(&[]);
            }
        }
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func).await
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func).await
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call::<f32>(instance, func).await.to_bits()
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call::<f64>(instance, func).await.to_bits()
    }
}
