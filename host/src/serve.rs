//! The `serve`, `compile` and `inspect` commands: from paths and flags to a
//! running host.

use crate::cache::{self, ArtifactCache};
use crate::cli::{EngineArgs, ServeArgs};
use crate::compose;
use crate::deploy::{self, DeploymentSpec, Limits, Route, Source};
use crate::deployment::Deployment;
use crate::engine::{self, EngineOptions, EpochTicker};
use crate::load::{self, Kind};
use crate::metrics::Metrics;
use crate::preinit::Preinit;
use crate::router::Router;
use crate::server::{self, Host};
use crate::state::GrantSet;
use crate::tensor::TensorHost;
use crate::tensor::device::Device;
use anyhow::{Context, Result, anyhow};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use wasmtime::component::types::ComponentItem;

/// Runs `tensor-wasm serve`.
pub fn run(args: ServeArgs) -> Result<()> {
    let defaults = Limits {
        timeout: args.request_timeout,
        memory: args.engine.max_memory,
        concurrency: args.concurrency,
        body: args.max_body_size,
        tensor_memory: args.tensor_memory,
    };
    let deps: BTreeMap<String, PathBuf> = args.deps.iter().cloned().collect();
    let from_file = args
        .path
        .as_ref()
        .filter(|p| matches!(load::kind_of(p), Ok(Kind::Deployments)));
    let data_dir = crate::cli::data_dir(args.data_dir.as_ref())?;
    // Opened when the first deployment that imports wasi:keyvalue loads, so
    // servers without one do not claim the data directory.
    let mut keyvalue: Option<Arc<crate::keyvalue::Store>> = None;
    let volatile = Arc::new(crate::keyvalue::Volatile::default());
    let specs = match &args.path {
        None => {
            let mut spec = single("default", Source::Default, &defaults);
            let (grants, token_file) = crate::default_world::grants(&data_dir)?;
            spec.grants = grants;
            tracing::info!(
                "default world: the bearer token for /echo is in {}",
                token_file.display()
            );
            vec![spec]
        }
        Some(path) => match load::kind_of(path)? {
            Kind::Deployments => deploy::load(path, &defaults)?,
            Kind::World => vec![single(
                &stem(path),
                Source::World(path.clone(), deps.clone()),
                &defaults,
            )],
            Kind::Component | Kind::Artifact => vec![single(
                &stem(path),
                Source::Component(path.clone()),
                &defaults,
            )],
        },
    };
    let mut specs = specs;
    if specs.iter().any(|s| !s.grants.models.is_empty()) {
        let models_dir = crate::models::models_dir(args.models_dir.as_ref())?;
        for spec in &mut specs {
            crate::models::grant(&mut spec.grants, &models_dir, &spec.name);
        }
    }
    let max_memory = specs
        .iter()
        .map(|s| s.limits.memory)
        .max()
        .unwrap_or(defaults.memory);
    let engine = engine::build(&EngineOptions {
        max_memory,
        max_instances: args.engine.max_instances,
    })?;
    let cache = ArtifactCache::new(if args.no_cache {
        None
    } else {
        args.cache_dir.clone().or_else(ArtifactCache::default_dir)
    });
    let linker = load::linker(&engine)?;
    let metrics = Arc::new(Metrics::new());
    let kernel_cache = (!args.no_cache)
        .then(|| args.cache_dir.clone().or_else(ArtifactCache::default_dir))
        .flatten();
    let device = Device::open(args.device.device, kernel_cache, args.device.tf32)?;
    let tensor_host = TensorHost::new(device, metrics.tensor_bytes.clone());
    tracing::info!("tensor backend: {}", tensor_host.backend_name());

    // Started before the deployments load: pre-initializers run under deadlines.
    let _ticker = EpochTicker::start(&engine);
    let mut deployments = Vec::new();
    for spec in specs {
        let context = |e: anyhow::Error| match from_file {
            Some(file) => anyhow!(
                "{}: deployment `{}`: {}",
                file.display(),
                spec.name,
                load::first_line(&e)
            ),
            None => e,
        };
        let tensors = tensor_host
            .tenant(
                &spec.tenant,
                spec.limits.tensor_memory,
                &spec.grants.weights,
            )
            .map_err(context)?;
        let init_grants = GrantSet::new(
            spec.grants.clone(),
            tensors.clone(),
            crate::keyvalue::KeyvalueCtx::new(
                keyvalue.clone(),
                volatile.clone(),
                spec.tenant.as_str().into(),
            ),
            &spec.name,
        );
        let preinit = Preinit {
            engine: &engine,
            linker: &linker,
            cache: &cache,
            grants: &init_grants,
            limits: &spec.limits,
        };
        let prepare = |name: &str, bytes: Vec<u8>| preinit.apply(name, bytes);
        let (origin, loaded) = match &spec.source {
            Source::Default => {
                let bytes = compose::compose(
                    "embedded default world",
                    compose::DEFAULT_WORLD,
                    &compose::PackageSources::default(),
                    &prepare,
                )?;
                (
                    "embedded default world".to_string(),
                    load::compile(&engine, &cache, "embedded default world", &bytes)?,
                )
            }
            Source::World(p, d) => (
                p.display().to_string(),
                load::load_path(&engine, &cache, p, d, &prepare).map_err(context)?,
            ),
            Source::Component(p) => (
                p.display().to_string(),
                load::load_path(&engine, &cache, p, &BTreeMap::new(), &prepare).map_err(context)?,
            ),
        };
        let pre = load::prepare(&engine, &linker, &origin, &loaded).map_err(context)?;
        let uses_keyvalue = loaded
            .component_type()
            .imports(&engine)
            .any(|(name, _)| name.starts_with("wasi:keyvalue/"));
        if uses_keyvalue && keyvalue.is_none() {
            let store = crate::keyvalue::Store::open(&data_dir)?;
            tracing::info!("keyvalue store: {}", store.path().display());
            keyvalue = Some(Arc::new(store));
        }
        tracing::info!(
            "deployment `{}` (tenant `{}`): {} on {}{}",
            spec.name,
            spec.tenant,
            origin,
            spec.route.host.as_deref().unwrap_or("*"),
            spec.route.path.as_deref().unwrap_or("/")
        );
        let kv = crate::keyvalue::KeyvalueCtx::new(
            keyvalue.clone(),
            volatile.clone(),
            spec.tenant.as_str().into(),
        );
        deployments.push(Arc::new(Deployment::new(
            spec,
            pre,
            metrics.clone(),
            tensors,
            kv,
        )));
    }
    let router = Router::new(deployments)?;

    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let listeners = server::bind_shared(args.listen, threads)?;
    let admin = match args.admin_listen.as_str() {
        "off" | "none" => None,
        a => {
            let addr = a.parse().map_err(|_| {
                anyhow!("--admin-listen: `{a}` is not an address like 127.0.0.1:9090 (or `off`)")
            })?;
            Some(
                server::bind_shared(addr, 1)
                    .context("--admin-listen")?
                    .remove(0),
            )
        }
    };
    let host = Arc::new(Host {
        engine,
        router,
        metrics,
        draining: AtomicBool::new(false),
    });
    tracing::info!(
        "serving on http://{} ({threads} threads)",
        listeners[0].local_addr()?
    );
    let admin_addr = admin.as_ref().map(|a| a.local_addr()).transpose()?;
    if let Some(addr) = admin_addr {
        tracing::info!("admin on http://{addr}");
    }

    // One single-threaded runtime per serving thread, each accepting on its
    // own SO_REUSEPORT listener: a request stays on one thread from accept
    // to response, with no cross-thread hand-offs.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let host = host.clone();
        let mut stop = stop_rx.clone();
        let grace = args.shutdown_grace;
        let worker = std::thread::Builder::new()
            .name(format!("serve-{i}"))
            .spawn(move || -> Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    let stopped = async move {
                        let _ = stop.wait_for(|s| *s).await;
                    };
                    server::serve(host, listener, grace, stopped).await;
                    Ok(())
                })
            })
            .context("cannot start a serving thread")?;
        workers.push(worker);
    }

    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    control.block_on(async {
        if let Some(admin) = admin {
            let admin = tokio::net::TcpListener::from_std(admin)?;
            tokio::spawn(server::serve_admin(host.clone(), admin));
        }
        server::shutdown_signal().await;
        host.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            "shutting down: no new connections; waiting up to {} for in-flight requests",
            humantime::format_duration(args.shutdown_grace)
        );
        let _ = stop_tx.send(true);
        anyhow::Ok(())
    })?;
    for worker in workers {
        match worker.join() {
            Ok(r) => r?,
            Err(_) => anyhow::bail!("a serving thread panicked"),
        }
    }
    tracing::info!("stopped");
    Ok(())
}

fn single(name: &str, source: Source, defaults: &Limits) -> DeploymentSpec {
    DeploymentSpec {
        name: name.to_string(),
        tenant: "default".into(),
        source,
        route: Route::default(),
        limits: defaults.clone(),
        grants: Default::default(),
    }
}

fn stem(path: &Path) -> String {
    let s: String = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "main".into() } else { s }
}

/// Loads `path` (and its `deps`) as written, not pre-initialized, on an
/// engine with `opts` and no artifact cache: what `compile` and `inspect` see.
fn load_unchanged(
    opts: &EngineOptions,
    path: &Path,
    deps: &BTreeMap<String, PathBuf>,
) -> Result<(wasmtime::Engine, wasmtime::component::Component)> {
    let engine = engine::build(opts)?;
    let loaded = load::load_path(
        &engine,
        &ArtifactCache::new(None),
        path,
        deps,
        &compose::unchanged,
    )?;
    Ok((engine, loaded))
}

/// Runs `tensor-wasm compile`.
pub fn compile(
    input: &Path,
    output: &Path,
    deps: &BTreeMap<String, PathBuf>,
    args: &EngineArgs,
) -> Result<()> {
    let (_, loaded) = load_unchanged(
        &EngineOptions {
            max_memory: args.max_memory,
            max_instances: args.max_instances,
        },
        input,
        deps,
    )?;
    cache::write_artifact(&loaded, None, output)?;
    eprintln!("compiled {} into {}", input.display(), output.display());
    Ok(())
}

/// Runs `tensor-wasm inspect`.
pub fn inspect(path: &Path, deps: &BTreeMap<String, PathBuf>) -> Result<()> {
    let (engine, loaded) = load_unchanged(
        &EngineOptions {
            max_memory: 256 << 20,
            max_instances: 1,
        },
        path,
        deps,
    )?;
    let ty = loaded.component_type();
    println!("{}", path.display());
    println!("imports:");
    for (name, ext) in ty.imports(&engine) {
        println!("  {name} ({})", describe(&ext.ty));
    }
    println!("exports:");
    for (name, ext) in ty.exports(&engine) {
        println!("  {name} ({})", describe(&ext.ty));
    }
    Ok(())
}

fn describe(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "function",
        ComponentItem::CoreFunc(_) => "core function",
        ComponentItem::Module(_) => "core module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "instance",
        ComponentItem::Type(_) => "type",
        _ => "resource",
    }
}
