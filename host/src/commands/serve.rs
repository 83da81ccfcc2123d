//! `tensor-wasm serve`: from a path and flags to deployment specs, then the
//! assembly builds each deployment and the server listens.

use super::args::ServeArgs;
use crate::assembly::spec::{self, DeploymentSpec, Instances, Limits, Route, Source};
use crate::assembly::{Assembly, Options, default_world, signed};
use crate::jobs::Jobs;
use crate::live::history::History;
use crate::live::{self, Live, Resolve, Started, Waiting};
use crate::platform::dirs;
use crate::platform::engine::EngineOptions;
use crate::platform::load::{self, Kind};
use crate::serving::admin_tokens::AdminTokens;
use crate::serving::connections;
use crate::serving::deployment::Deployment;
use crate::serving::listener::{Listen, Server};
use crate::serving::router::Router;
use crate::serving::tls::{Tls, TlsFiles};
use crate::tensor::device::DeviceSpec;
use anyhow::{Result, anyhow, bail};
use registry::Registry;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Runs `tensor-wasm serve`.
pub fn run(args: ServeArgs) -> Result<()> {
    let data_dir = dirs::data_dir(args.data_dir.as_ref())?;
    let listen = listen(&args)?;
    let seeds = specs(&args, &data_dir)?;
    let history = History::new(&data_dir);
    let recorded = history.load()?;
    let planned = live::plan(&seeds, &recorded, &defaults(&args));
    let registry = Registry::open(&data_dir)?;
    let policy = signed::policy(&registry, &args.trust_key, args.require_signed)?;
    if policy.active() {
        tracing::info!(
            "trust policy: only artifacts signed by one of {} trusted key(s) run",
            policy.trusted.len()
        );
    }
    let models_dir = planned
        .iter()
        .any(|p| !p.spec.grants.models.is_empty())
        .then(|| dirs::models_dir(args.models_dir.as_ref()).ok())
        .flatten();
    let options = options(&args, &planned, data_dir.clone(), policy.clone());
    let max_memory = options.engine.max_memory;
    let assembly = Arc::new(Assembly::new(options)?);
    let (deployments, waiting) = build(
        &args,
        planned,
        &assembly,
        &registry,
        &policy,
        models_dir.as_deref(),
    )?;
    let admin_tokens = admin_tokens(&listen, &data_dir)?;
    let started = Started {
        router: Router::new(deployments)?,
        seeds: seeds.into_iter().map(|s| (s.name.clone(), s)).collect(),
        revisions: recorded,
        reread: {
            let (args, data_dir) = (args.clone(), data_dir.clone());
            Box::new(move || specs(&args, &data_dir))
        },
        waiting,
    };
    let resolve = Resolve {
        registry,
        policy,
        // A live deployment may grant models no start-up spec did: its
        // folders are checked against the policy like the others.
        models_dir: models_dir.or_else(|| dirs::models_dir(args.models_dir.as_ref()).ok()),
        defaults: defaults(&args),
        max_memory,
    };
    let engine = assembly.engine().clone();
    let metrics = assembly.metrics().clone();
    let live = Arc::new(Live::new(assembly, started, resolve, history));
    let jobs = listen
        .admin
        .is_some()
        .then(|| Jobs::start(live.clone(), &data_dir, args.max_jobs))
        .transpose()?;
    Server::new(engine, live, metrics, admin_tokens, jobs).run(&listen)
}

/// The admin API's tokens (none without an admin listener).
fn admin_tokens(listen: &Listen, data_dir: &Path) -> Result<AdminTokens> {
    if listen.admin.is_none() {
        return Ok(AdminTokens::default());
    }
    let (tokens, file) = AdminTokens::load(data_dir)?;
    tracing::info!("admin API token: {}", file.display());
    Ok(tokens)
}

/// Assembles what the server starts with: a start-up spec that fails stops
/// the server; a recorded revision that fails is logged and left out. The
/// default world's OpenAI API is not built here: it waits for its models.
fn build(
    args: &ServeArgs,
    planned: Vec<live::Planned>,
    assembly: &Assembly,
    registry: &Registry,
    policy: &registry::Policy,
    models_dir: Option<&Path>,
) -> Result<(Vec<Arc<Deployment>>, Vec<Waiting>)> {
    let (mut deployments, mut waiting) = (Vec::new(), Vec::new());
    let _sharing = assembly.sharing_components();
    for mut p in planned {
        let name = p.spec.name.clone();
        if args.path.is_none() && !p.recorded && name == default_world::OPENAI.0 {
            match models_dir {
                Some(dir) => {
                    let w = Waiting::new(p.spec, dir.to_path_buf());
                    tracing::info!("default world: {}", w.message());
                    waiting.push(w);
                }
                None => tracing::warn!(
                    "default world: no models directory (pass --models-dir), so no OpenAI API at {}",
                    default_world::OPENAI.1
                ),
            }
            continue;
        }
        let built = signed::resolve(&mut p.spec, registry, policy, models_dir)
            .and_then(|()| assembly.for_deployment(p.spec));
        match built {
            Ok(mut d) => {
                d.revision = p.revision;
                deployments.push(Arc::new(d));
            }
            Err(e) if p.recorded => tracing::error!(
                "deployment `{name}` (revision {} from the admin API): not serving it: {}",
                p.revision,
                load::first_line(&e)
            ),
            Err(e) => return Err(startup_error(args, &name, e)),
        }
    }
    Ok((deployments, waiting))
}

/// A start-up deployment's error, naming the deployment file when there is one.
fn startup_error(args: &ServeArgs, name: &str, e: anyhow::Error) -> anyhow::Error {
    match args
        .path
        .as_ref()
        .filter(|p| matches!(load::kind_of(p), Ok(Kind::Deployments)))
    {
        Some(file) => anyhow!(
            "{}: deployment `{name}`: {}",
            file.display(),
            load::first_line(&e)
        ),
        None => e,
    }
}

/// The flags' limits: every deployment's defaults.
fn defaults(args: &ServeArgs) -> Limits {
    Limits {
        timeout: args.request_timeout,
        memory: args.engine.max_memory,
        concurrency: args.concurrency,
        body: args.max_body_size,
        tensor_memory: args.tensor_memory,
    }
}

/// The deployments `args` asks for, with the flags' limits as defaults.
fn specs(args: &ServeArgs, data_dir: &Path) -> Result<Vec<DeploymentSpec>> {
    let defaults = defaults(args);
    let instances = instances(args)?;
    let Some(path) = &args.path else {
        let mut spec = single("default", Source::Embedded("default"), &defaults);
        // The operator's own world reuses its instances unless told not to.
        spec.instances.reuse = args
            .max_instance_reuse_count
            .unwrap_or(default_world::REUSE);
        let (grants, token_file) = default_world::grants(data_dir)?;
        spec.grants = grants;
        tracing::info!(
            "default world: the bearer token for /echo is in {}",
            token_file.display()
        );
        spec.instances.idle = instances.idle;
        let (name, path) = default_world::OPENAI;
        let mut openai = single(name, Source::Embedded(name), &defaults);
        openai.route.path = Some(path.into());
        openai.grants = default_world::openai_grants(&spec.grants);
        openai.instances = spec.instances;
        openai.limits.timeout = openai.limits.timeout.max(default_world::OPENAI_TIMEOUT);
        return Ok(vec![spec, openai]);
    };
    let deps: BTreeMap<String, PathBuf> = args.deps.iter().cloned().collect();
    if let Some(reference) = path.to_str().and_then(|p| p.strip_prefix(signed::PREFIX)) {
        let mut spec = from_registry(reference, path, deps, data_dir, &defaults)?;
        spec.instances = instances;
        return Ok(vec![spec]);
    }
    let mut specs = match load::kind_of(path)? {
        Kind::Deployments => {
            if args.max_instance_reuse_count.is_some() || args.idle_instance_timeout.is_some() {
                anyhow::bail!(
                    "{}: instance reuse is chosen per deployment in a deployment file (`instances = {{ reuse = N, idle = \"10s\" }}`), not by --max-instance-reuse-count or --idle-instance-timeout",
                    path.display()
                );
            }
            return spec::load(path, &defaults);
        }
        Kind::World => vec![single(
            &stem(path),
            Source::World(path.clone(), deps),
            &defaults,
        )],
        Kind::Component | Kind::Artifact => vec![single(
            &stem(path),
            Source::Component(path.clone()),
            &defaults,
        )],
    };
    specs[0].instances = instances;
    Ok(specs)
}

/// The deployment for `serve registry:REFERENCE` (`path`), named after the
/// repository's last segment; a world when the registry says so.
fn from_registry(
    reference: &str,
    path: &Path,
    deps: BTreeMap<String, PathBuf>,
    data_dir: &Path,
    defaults: &Limits,
) -> Result<DeploymentSpec> {
    let record = Registry::open(data_dir)?.record(reference)?;
    let name = reference
        .rsplit_once(':')
        .and_then(|(repo, _)| repo.rsplit('/').next())
        .filter(|_| !reference.starts_with("blake3:"))
        .unwrap_or("artifact");
    let source = match record.map(|r| r.kind) {
        Some(registry::Kind::World) => Source::World(path.to_path_buf(), deps),
        _ => Source::Component(path.to_path_buf()),
    };
    Ok(single(name, source, defaults))
}

/// The instance lifetime the flags ask for (a fresh instance per request
/// unless `--max-instance-reuse-count` says more).
fn instances(args: &ServeArgs) -> Result<Instances> {
    let reuse = args.max_instance_reuse_count.unwrap_or(1);
    if reuse == 0 {
        anyhow::bail!(
            "--max-instance-reuse-count must be at least 1 (1: a fresh instance per request)"
        );
    }
    let idle = args
        .idle_instance_timeout
        .unwrap_or(Instances::DEFAULT_IDLE);
    if idle.is_zero() {
        anyhow::bail!("--idle-instance-timeout must be longer than 0s");
    }
    Ok(Instances { reuse, idle })
}

/// The assembly's options: the engine sized for the largest memory cap.
fn options(
    args: &ServeArgs,
    planned: &[live::Planned],
    data_dir: PathBuf,
    policy: registry::Policy,
) -> Options {
    let max_memory = planned
        .iter()
        .map(|p| p.spec.limits.memory)
        .max()
        .unwrap_or(args.engine.max_memory);
    Options {
        engine: EngineOptions {
            max_memory,
            max_instances: args.engine.max_instances,
        },
        cache_dir: (!args.no_cache)
            .then(|| dirs::cache_dir(args.cache_dir.as_ref()))
            .flatten(),
        data_dir: Some(data_dir),
        models_dir: args.models_dir.clone(),
        device: args.device.device.clone(),
        tf32: args.device.tf32,
        policy,
    }
}

/// The connection limits `serve`'s flags ask for, checked.
fn connection_limits(args: &ServeArgs) -> Result<connections::Limits> {
    let fds = connections::raise_fd_limit();
    let max = match args.max_connections {
        Some(0) => bail!("--max-connections must be at least 1"),
        Some(n) => {
            if n as u64 >= fds {
                tracing::warn!(
                    "--max-connections {n} is not below the open-file limit ({fds}): \
                     accepting may fail for want of descriptors before the limit is reached"
                );
            }
            n
        }
        None => connections::default_max_connections(fds),
    };
    if args.max_connections_per_client == Some(0) {
        bail!("--max-connections-per-client must be at least 1");
    }
    for (flag, d) in [
        ("--header-read-timeout", args.header_read_timeout),
        ("--idle-connection-timeout", args.idle_connection_timeout),
    ] {
        if d.is_zero() {
            bail!("{flag} must be more than 0");
        }
    }
    Ok(connections::Limits {
        max,
        per_client: args.max_connections_per_client,
        header_timeout: args.header_read_timeout,
        idle_timeout: args.idle_connection_timeout,
    })
}

fn listen(args: &ServeArgs) -> Result<Listen> {
    let admin = match args.admin_listen.as_str() {
        "off" | "none" => None,
        a => Some(a.parse().map_err(|_| {
            anyhow!("--admin-listen: `{a}` is not an address like 127.0.0.1:9090 (or `off`)")
        })?),
    };
    Ok(Listen {
        addr: args.listen,
        admin,
        threads: args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        grace: args.shutdown_grace,
        busy_poll: args.busy_poll,
        limits: connection_limits(args)?,
        tls: tls(args)?,
    })
}

/// The listeners' TLS, if `--tls-cert` asks for it.
fn tls(args: &ServeArgs) -> Result<Option<Arc<Tls>>> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        if args.tls_client_ca.is_some() {
            bail!("--tls-client-ca needs --tls-cert and --tls-key");
        }
        return Ok(None);
    };
    let tls = Tls::load(TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: args.tls_client_ca.clone(),
        client_auth: args.tls_client_auth,
    })?;
    Ok(Some(tls))
}

fn single(name: &str, source: Source, defaults: &Limits) -> DeploymentSpec {
    DeploymentSpec {
        name: name.to_string(),
        tenant: "default".into(),
        source,
        route: Route::default(),
        limits: defaults.clone(),
        instances: Instances::FRESH,
        inference: None,
        keyvalue: None,
        require_signed: false,
        device: DeviceSpec::Auto,
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
