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
use crate::router::Router;
use crate::server::{self, Host};
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
    };
    let deps: BTreeMap<String, PathBuf> = args.deps.iter().cloned().collect();
    let from_file = args
        .path
        .as_ref()
        .filter(|p| matches!(load::kind_of(p), Ok(Kind::Deployments)));
    let specs = match &args.path {
        None => vec![single("default", Source::Default, &defaults)],
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
        let (origin, loaded) = match &spec.source {
            Source::Default => {
                let bytes = compose::compose(
                    "embedded default world",
                    compose::DEFAULT_WORLD,
                    &compose::PackageSources::default(),
                )?;
                (
                    "embedded default world".to_string(),
                    load::compile(&engine, &cache, "embedded default world", &bytes)?,
                )
            }
            Source::World(p, d) => (
                p.display().to_string(),
                load::load_path(&engine, &cache, p, d).map_err(context)?,
            ),
            Source::Component(p) => (
                p.display().to_string(),
                load::load_path(&engine, &cache, p, &BTreeMap::new()).map_err(context)?,
            ),
        };
        let pre = load::prepare(&engine, &linker, &origin, &loaded).map_err(context)?;
        tracing::info!(
            "deployment `{}` (tenant `{}`): {} on {}{}",
            spec.name,
            spec.tenant,
            origin,
            spec.route.host.as_deref().unwrap_or("*"),
            spec.route.path.as_deref().unwrap_or("/")
        );
        deployments.push(Arc::new(Deployment::new(spec, pre, metrics.clone())));
    }
    let router = Router::new(deployments)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let _ticker = EpochTicker::start(&engine);
        let listener = server::bind(args.listen, "--listen").await?;
        let admin = match args.admin_listen.as_str() {
            "off" | "none" => None,
            a => {
                let addr = a.parse().map_err(|_| {
                    anyhow!(
                        "--admin-listen: `{a}` is not an address like 127.0.0.1:9090 (or `off`)"
                    )
                })?;
                Some(server::bind(addr, "--admin-listen").await?)
            }
        };
        let host = Arc::new(Host {
            engine,
            router,
            metrics,
            draining: AtomicBool::new(false),
        });
        tracing::info!("serving on http://{}", listener.local_addr()?);
        if let Some(admin) = admin {
            tracing::info!("admin on http://{}", admin.local_addr()?);
            tokio::spawn(server::serve_admin(host.clone(), admin));
        }
        server::serve(
            host,
            listener,
            args.shutdown_grace,
            server::shutdown_signal(),
        )
        .await;
        Ok(())
    })
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

/// Runs `tensor-wasm compile`.
pub fn compile(
    input: &Path,
    output: &Path,
    deps: &BTreeMap<String, PathBuf>,
    args: &EngineArgs,
) -> Result<()> {
    let engine = engine::build(&EngineOptions {
        max_memory: args.max_memory,
        max_instances: args.max_instances,
    })?;
    let loaded = load::load_path(&engine, &ArtifactCache::new(None), input, deps)?;
    cache::write_artifact(&loaded, None, output)?;
    eprintln!("compiled {} into {}", input.display(), output.display());
    Ok(())
}

/// Runs `tensor-wasm inspect`.
pub fn inspect(path: &Path, deps: &BTreeMap<String, PathBuf>) -> Result<()> {
    let engine = engine::build(&EngineOptions {
        max_memory: 256 << 20,
        max_instances: 1,
    })?;
    let loaded = load::load_path(&engine, &ArtifactCache::new(None), path, deps)?;
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
