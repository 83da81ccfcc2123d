//! Deployment files: one server, many deployments, each for one tenant.
//!
//! ```toml
//! [[deployment]]
//! name = "shop"
//! tenant = "acme"
//! world = "worlds/shop.wac"          # or: component = "shop.wasm" / "shop.cwasm"
//! route = { host = "shop.example", path = "/api" }
//! limits = { timeout = "10s", memory = "64MiB", concurrency = 16, body = "1MiB" }
//! instances = { reuse = 1000, idle = "10s" }   # default: a fresh instance per request
//! deps = { "acme:shop" = "build/shop.wasm" }
//!
//! [deployment.grants]
//! dirs = [{ host = "data", guest = "/data", writable = false }]
//! outgoing-hosts = ["api.example.com"]
//! config = { greeting = "hello" }
//! secrets = { api-key = { env = "SHOP_API_KEY" }, db-pass = { file = "db.pass" } }
//! env = { LOG_LEVEL = "info" }
//! ```
//!
//! Relative paths are relative to the deployment file. Nothing is granted by
//! default. See `docs/DEPLOYMENTS.md`.

use crate::platform::units::{parse_duration, parse_size};
use crate::tensor::device::DeviceSpec;
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Config keys the host sets for every deployment (the config capability); a
/// deployment cannot set them.
pub const RESERVED_CONFIG_PREFIX: &str = "tensorwasm.";

/// Whether `name` may name a model (a folder name, nothing more).
pub fn valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

/// A parsed deployment file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    deployment: Vec<RawDeployment>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeployment {
    name: String,
    tenant: String,
    component: Option<PathBuf>,
    world: Option<PathBuf>,
    #[serde(default)]
    route: Route,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    instances: RawInstances,
    #[serde(default)]
    grants: Grants,
    #[serde(default)]
    deps: BTreeMap<String, PathBuf>,
    inference: Option<RawInference>,
    keyvalue: Option<RawKeyvalue>,
    #[serde(default, rename = "require-signed")]
    require_signed: bool,
    device: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyvalue {
    backend: String,
    buckets: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInference {
    embeddings: Option<String>,
    generation: Option<String>,
    #[serde(rename = "max-batch")]
    max_batch: Option<u32>,
    window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    timeout: Option<String>,
    memory: Option<String>,
    concurrency: Option<u32>,
    body: Option<String>,
    #[serde(rename = "tensor-memory")]
    tensor_memory: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstances {
    reuse: Option<u32>,
    idle: Option<String>,
}

/// Which requests a deployment serves: an optional exact host (port ignored,
/// case-insensitive) and a path prefix (whole segments; default `/`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Host name to match, e.g. `shop.example`; any host when absent.
    pub host: Option<String>,
    /// Path prefix to match, e.g. `/api`; `/` when absent.
    pub path: Option<String>,
}

/// What a deployment's guests may touch. Everything is off by default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Grants {
    /// Host directories preopened for the guest.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Hosts (`name` or `name:port`) the guest may send HTTP requests to.
    #[serde(default)]
    pub outgoing_hosts: Vec<String>,
    /// Values the guest reads through `wasi:config/store`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Values the guest reads through `wasi:config/store` like `config`, but
    /// never shown in logs, errors or metrics; given inline, or read at
    /// start-up from an environment variable or a file.
    #[serde(default)]
    pub secrets: BTreeMap<String, Secret>,
    /// Environment variables the guest sees.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Model weights (safetensors files) the guest opens by name through
    /// `wasi:tensor/weights`; loaded once at start-up.
    #[serde(default)]
    pub weights: BTreeMap<String, PathBuf>,
    /// Models from the models directory (`scripts/fetch-models.sh`), by
    /// name: each grants its weights under its name and its folder,
    /// read-only, at `/models/<name>` (see `models.rs`).
    #[serde(default)]
    pub models: Vec<String>,
    /// Whether the guest may compile kernels of its own through `wasi:cuda`
    /// (`module.load-source`); without it only vetted kernels load.
    #[serde(default)]
    pub cuda_source: bool,
}

/// A secret config value. Its `Debug` never shows the value.
#[derive(Clone, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Secret {
    /// The value itself (or, once loaded, the value read from its source).
    Value(String),
    /// Read from this environment variable of the server at start-up.
    Env {
        /// The variable's name.
        env: String,
    },
    /// Read from this file (relative to the deployment file) at start-up;
    /// one trailing newline is dropped.
    File {
        /// The file.
        file: PathBuf,
    },
}

impl Secret {
    /// The value (empty until [`parse`] has read it from its source).
    pub fn expose(&self) -> &str {
        match self {
            Secret::Value(v) => v,
            _ => "",
        }
    }

    /// Reads the value from its source; errors name the source, never a value.
    fn load(&self, base: &Path) -> std::result::Result<Secret, String> {
        Ok(Secret::Value(match self {
            Secret::Value(v) => v.clone(),
            Secret::Env { env } => std::env::var(env)
                .map_err(|_| format!("environment variable `{env}` is not set"))?,
            Secret::File { file } => {
                let path = base.join(file);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let text = text.strip_suffix('\n').unwrap_or(&text);
                text.strip_suffix('\r').unwrap_or(text).to_string()
            }
        }))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// One preopened directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// Directory on the host.
    pub host: PathBuf,
    /// Path the guest sees.
    pub guest: String,
    /// Whether the guest may write (default: read-only).
    #[serde(default)]
    pub writable: bool,
}

/// Per-deployment limits, with the server's defaults filled in.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock budget of one request.
    pub timeout: Duration,
    /// Linear memory cap of one instance, in bytes.
    pub memory: u64,
    /// Requests served at once (others wait, within their budget).
    pub concurrency: Option<u32>,
    /// Largest request body accepted, in bytes.
    pub body: u64,
    /// Tensor memory the tenant may hold at once, in bytes.
    pub tensor_memory: u64,
}

/// How long a deployment's instances live: by default a fresh instance per
/// request; with `reuse` above 1, an instance whose request ended cleanly
/// serves the deployment's next requests, one at a time, up to `reuse` in
/// all, and is dropped after `idle` without one (`serving/instances.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instances {
    /// Requests one instance serves (1: a fresh instance per request).
    pub reuse: u32,
    /// How long an instance waits for its next request before it is dropped.
    pub idle: Duration,
}

impl Instances {
    /// How long an idle instance is kept unless the deployment says.
    pub const DEFAULT_IDLE: Duration = Duration::from_secs(10);

    /// A fresh instance per request: the default.
    pub const FRESH: Instances = Instances {
        reuse: 1,
        idle: Self::DEFAULT_IDLE,
    };

    /// Whether instances serve more than one request.
    pub fn reused(&self) -> bool {
        self.reuse > 1
    }
}

/// Batching across requests (`[deployment.inference]`): the model
/// components that serve the world's `tensorwasm:inference@0.1.0` imports,
/// each run as one long-lived instance that the host's batcher feeds with
/// the work of every concurrent request of the deployment (`crate::inference`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inference {
    /// The component serving `embeddings` (a package name or a `.wasm` path).
    pub embeddings: Option<ModelSource>,
    /// The component serving `generation`.
    pub generation: Option<ModelSource>,
    /// Requests embedded together, or sequences decoded together, at most.
    pub max_batch: u32,
    /// How long an embedding batch waits for more requests after the first.
    pub window: Duration,
}

impl Inference {
    /// Sequences or requests per batch unless the deployment says.
    pub const DEFAULT_MAX_BATCH: u32 = 64;
    /// The largest `max-batch` accepted.
    pub const MAX_MAX_BATCH: u32 = 1024;
}

/// Where a deployment's `wasi:keyvalue` buckets live
/// (`[deployment.keyvalue]`) when not in the server's embedded store: a
/// Redis shared by replicas (`crate::keyvalue::redis`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyvalueBackend {
    /// The Redis URL (`redis://…` or `redis+unix://…`).
    pub url: String,
    /// The buckets kept there (identifiers as guests open them, e.g.
    /// `audit`, `volatile:ratelimit`); `None`: all of them.
    pub buckets: Option<Vec<String>>,
}

/// Where a model component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A package, found as a world's packages are (the deployment's `deps`,
    /// then the components built into the binary), e.g. `tensorwasm:minilm`.
    Package(String),
    /// A component file.
    Path(PathBuf),
}

/// Where a deployment's component comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A `.wasm` component or `.cwasm` precompiled artifact.
    Component(PathBuf),
    /// A `.wac` world to compose, with its package dependencies.
    World(PathBuf, BTreeMap<String, PathBuf>),
    /// A world embedded in the binary, by name
    /// ([`crate::platform::compose::EMBEDDED_WORLDS`]).
    Embedded(&'static str),
}

impl Source {
    /// The BLAKE3 digests (`blake3:HEX`, as the registry names artifacts)
    /// of what it runs: the component, or the world and each package it
    /// names explicitly; `null` where a file cannot be read.
    pub fn digests(&self) -> serde_json::Value {
        let file = |p: &Path| {
            std::fs::read(p)
                .ok()
                .map(|b| format!("blake3:{}", blake3::hash(&b).to_hex()))
        };
        match self {
            Source::Component(path) => serde_json::json!({ "component": file(path) }),
            Source::World(path, deps) => serde_json::json!({
                "world": file(path),
                "packages": deps.iter().map(|(n, p)| (n.clone(), file(p).into())).collect::<serde_json::Map<_, _>>(),
            }),
            Source::Embedded(name) => {
                let text = crate::platform::compose::EMBEDDED_WORLDS
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, w)| format!("blake3:{}", blake3::hash(w.as_bytes()).to_hex()));
                serde_json::json!({ "world": text })
            }
        }
    }
}

/// One deployment, validated.
#[derive(Debug, Clone)]
pub struct DeploymentSpec {
    /// Unique name (used in metrics and logs).
    pub name: String,
    /// The tenant every request of this deployment runs for.
    pub tenant: String,
    /// The component or world.
    pub source: Source,
    /// Which requests it serves.
    pub route: Route,
    /// Its limits.
    pub limits: Limits,
    /// How long its instances live.
    pub instances: Instances,
    /// What its guests may touch.
    pub grants: Grants,
    /// Batching across requests, if the deployment opts in.
    pub inference: Option<Inference>,
    /// Buckets kept outside the embedded store, if the deployment says.
    pub keyvalue: Option<KeyvalueBackend>,
    /// Run only artifacts signed by a trusted key (docs/REGISTRY.md).
    pub require_signed: bool,
    /// Where its tensors compute (`device`; `auto`: its tenant's GPU,
    /// docs/DEPLOYMENTS.md "GPUs").
    pub device: DeviceSpec,
}

/// Most deployments one file (one server) may hold.
pub const MAX_DEPLOYMENTS: usize = 10_000;
/// Past this many deployments in one file, start-up warns.
const MANY_DEPLOYMENTS: usize = 1_000;

/// Parses the deployment file at `path`; `defaults` supplies unset limits.
pub fn load(path: &Path, defaults: &Limits) -> Result<Vec<DeploymentSpec>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text, path, defaults)
}

/// Parses deployment-file `text` (read from `path`).
pub fn parse(text: &str, path: &Path, defaults: &Limits) -> Result<Vec<DeploymentSpec>> {
    let file: File = toml::from_str(text).map_err(|e| {
        let msg = e.message().to_string();
        match e.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                anyhow::anyhow!("{}:{line}: {msg}", path.display())
            }
            None => anyhow::anyhow!("{}: {msg}", path.display()),
        }
    })?;
    if file.deployment.is_empty() {
        bail!(
            "{}: no deployments (add a [[deployment]] table)",
            path.display()
        );
    }
    if file.deployment.len() > MAX_DEPLOYMENTS {
        bail!(
            "{}: {} deployments; one server takes at most {MAX_DEPLOYMENTS} (each has its own \
             instances, limits and metrics series: serve many routes from one deployment instead)",
            path.display(),
            file.deployment.len()
        );
    }
    if file.deployment.len() > MANY_DEPLOYMENTS {
        tracing::warn!(
            "{}: {} deployments; each holds its own instances, limits and metrics series, \
             so start-up, memory and /metrics grow with the count",
            path.display(),
            file.deployment.len()
        );
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut names = std::collections::HashSet::new();
    let mut specs = Vec::new();
    for raw in file.deployment {
        let name = raw.name.clone();
        let at = Place { path, name: &name };
        if !valid_name(&raw.name) {
            bail!(
                "{}: deployment name `{}` must be letters, digits, `-` or `_`",
                path.display(),
                raw.name
            );
        }
        if !names.insert(raw.name.clone()) {
            return Err(at.err("duplicate name"));
        }
        specs.push(raw.validate(&at, base, defaults)?);
    }
    Ok(specs)
}

/// Whether `name` may name a deployment: letters, digits, `-` or `_`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// One deployment given as JSON (the admin API): an object with a
/// deployment table's keys; `name` may be left out and must otherwise be
/// `name`. Relative paths are relative to `base`.
pub fn from_json(
    name: &str,
    mut value: serde_json::Value,
    base: &Path,
    defaults: &Limits,
) -> Result<DeploymentSpec> {
    if !valid_name(name) {
        bail!("deployment name `{name}` must be letters, digits, `-` or `_`");
    }
    let object = value.as_object_mut().context(
        "a deployment is a JSON object with a deployment file's keys (`tenant`, `component` or `world`, `route`, `limits`, ...)",
    )?;
    match object.get("name") {
        None => {
            object.insert("name".into(), name.into());
        }
        Some(n) if n.as_str() == Some(name) => {}
        Some(n) => bail!("the body names deployment {n}, the URL `{name}`"),
    }
    let raw: RawDeployment =
        serde_json::from_value(value).map_err(|e| anyhow::anyhow!("deployment `{name}`: {e}"))?;
    let at = Place {
        path: Path::new("the request"),
        name,
    };
    raw.validate(&at, base, defaults)
}

/// Where an error is: the file and the deployment.
struct Place<'a> {
    path: &'a Path,
    name: &'a str,
}

impl Place<'_> {
    fn err(&self, what: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{}: deployment `{}`: {what}",
            self.path.display(),
            self.name
        )
    }
}

impl RawDeployment {
    /// Checks one deployment and resolves its paths against `base`.
    fn validate(self, at: &Place, base: &Path, defaults: &Limits) -> Result<DeploymentSpec> {
        if self.tenant.is_empty() {
            return Err(at.err("`tenant` must not be empty"));
        }
        let source = match (&self.component, &self.world) {
            (Some(c), None) => Source::Component(artifact_path(base, c)),
            (None, Some(w)) => Source::World(
                artifact_path(base, w),
                self.deps
                    .iter()
                    .map(|(k, v)| (k.clone(), artifact_path(base, v)))
                    .collect(),
            ),
            _ => return Err(at.err("set exactly one of `component` or `world`")),
        };
        if let Some(p) = &self.route.path
            && !p.starts_with('/')
        {
            return Err(at.err(&format!("route path `{p}` must start with `/`")));
        }
        let inference = self
            .inference
            .as_ref()
            .map(|i| i.resolve(at, base))
            .transpose()?;
        let keyvalue = self.keyvalue.map(|k| k.resolve(at)).transpose()?;
        let device = match &self.device {
            None => DeviceSpec::Auto,
            Some(d) => d
                .parse()
                .map_err(|e: String| at.err(&format!("`device`: {e}")))?,
        };
        Ok(DeploymentSpec {
            device,
            inference,
            keyvalue,
            limits: self.limits.resolve(at, defaults)?,
            instances: self.instances.resolve(at)?,
            grants: self.grants.resolve(at, base)?,
            name: self.name,
            tenant: self.tenant,
            source,
            route: self.route,
            require_signed: self.require_signed,
        })
    }
}

/// A path relative to the deployment file, or a `registry:` reference as is.
fn artifact_path(base: &Path, path: &Path) -> PathBuf {
    if crate::assembly::signed::is_reference(path) {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

impl RawLimits {
    /// The limits, with `defaults` for those not set.
    fn resolve(&self, at: &Place, defaults: &Limits) -> Result<Limits> {
        let size = |v: &Option<String>, default: u64| match v {
            Some(v) => parse_size(v).map_err(|e| at.err(&e)),
            None => Ok(default),
        };
        let limits = Limits {
            timeout: match &self.timeout {
                Some(t) => parse_duration(t).map_err(|e| at.err(&e))?,
                None => defaults.timeout,
            },
            memory: size(&self.memory, defaults.memory)?,
            concurrency: self.concurrency.or(defaults.concurrency),
            body: size(&self.body, defaults.body)?,
            tensor_memory: size(&self.tensor_memory, defaults.tensor_memory)?,
        };
        if limits.concurrency == Some(0) {
            return Err(at.err("`concurrency` must be at least 1"));
        }
        Ok(limits)
    }
}

impl RawInstances {
    /// The instance lifetime, fresh per request unless `reuse` says more.
    fn resolve(&self, at: &Place) -> Result<Instances> {
        let reuse = self.reuse.unwrap_or(1);
        if reuse == 0 {
            return Err(
                at.err("`instances.reuse` must be at least 1 (1: a fresh instance per request)")
            );
        }
        let idle = match &self.idle {
            Some(t) => parse_duration(t).map_err(|e| at.err(&format!("`instances.idle`: {e}")))?,
            None => Instances::DEFAULT_IDLE,
        };
        Ok(Instances { reuse, idle })
    }
}

impl RawKeyvalue {
    /// The backend: a Redis URL, and bucket identifiers that are not empty.
    fn resolve(self, at: &Place) -> Result<KeyvalueBackend> {
        let url = self.backend.trim();
        if !(url.starts_with("redis://") || url.starts_with("redis+unix://")) {
            return Err(at.err(
                "`keyvalue.backend` must be a Redis URL (`redis://HOST:PORT/DB` or \
                 `redis+unix:///PATH`); without `[deployment.keyvalue]` buckets live in \
                 the server's own store",
            ));
        }
        if let Some(b) = self
            .buckets
            .iter()
            .flatten()
            .find(|b| b.is_empty() || b.len() > crate::keyvalue::MAX_IDENTIFIER)
        {
            return Err(at.err(&format!(
                "`keyvalue.buckets`: `{b}` is not a bucket identifier (1 to {} bytes)",
                crate::keyvalue::MAX_IDENTIFIER
            )));
        }
        Ok(KeyvalueBackend {
            url: url.to_string(),
            buckets: self.buckets,
        })
    }
}

impl RawInference {
    /// The batching settings; a model is a package name (`ns:name`) or a path.
    fn resolve(&self, at: &Place, base: &Path) -> Result<Inference> {
        let model = |v: &Option<String>| {
            v.as_ref()
                .map(|v| match v.contains(':') && !v.contains('/') {
                    true => ModelSource::Package(v.clone()),
                    false => ModelSource::Path(base.join(v)),
                })
        };
        let inference = Inference {
            embeddings: model(&self.embeddings),
            generation: model(&self.generation),
            max_batch: self.max_batch.unwrap_or(Inference::DEFAULT_MAX_BATCH),
            // Zero is allowed: batch only what queued while the last batch ran.
            window: match &self.window {
                Some(t) => humantime::parse_duration(t.trim()).map_err(|e| {
                    at.err(&format!(
                        "`inference.window`: invalid duration `{t}`: {e} (try `500us` or `0s`)"
                    ))
                })?,
                None => Duration::ZERO,
            },
        };
        if inference.embeddings.is_none() && inference.generation.is_none() {
            return Err(at.err(
                "`inference` names no model component: set `embeddings`, `generation` or both",
            ));
        }
        if !(1..=Inference::MAX_MAX_BATCH).contains(&inference.max_batch) {
            return Err(at.err(&format!(
                "`inference.max-batch` must be in 1..={}",
                Inference::MAX_MAX_BATCH
            )));
        }
        if inference.window > Duration::from_secs(1) {
            return Err(at.err("`inference.window` must be at most 1s"));
        }
        Ok(inference)
    }
}

impl Grants {
    /// Checks the grants, resolves their paths against `base` and reads
    /// the secrets from their sources.
    fn resolve(mut self, at: &Place, base: &Path) -> Result<Grants> {
        for dir in &mut self.dirs {
            dir.host = base.join(&dir.host);
            if !dir.host.is_dir() {
                let shown = dir.host.display();
                return Err(at.err(&format!("granted directory {shown} does not exist")));
            }
        }
        for (name, file) in &mut self.weights {
            *file = base.join(&*file);
            if !file.is_file() {
                let shown = file.display();
                return Err(at.err(&format!(
                    "granted weights `{name}`: file {shown} does not exist"
                )));
            }
        }
        if let Some(bad) = self.models.iter().find(|m| !valid_model_name(m)) {
            return Err(at.err(&format!(
                "model `{bad}`: a model is named by its folder name (letters, digits, `-`, `_`, `.`)"
            )));
        }
        for key in self.config.keys().chain(self.secrets.keys()) {
            if key.starts_with(RESERVED_CONFIG_PREFIX) {
                return Err(at.err(&format!(
                    "config key `{key}`: keys starting with `{RESERVED_CONFIG_PREFIX}` are set by the host"
                )));
            }
        }
        for (key, secret) in &mut self.secrets {
            if self.config.contains_key(key) {
                return Err(at.err(&format!("`{key}` is both a config value and a secret")));
            }
            *secret = secret
                .load(base)
                .map_err(|e| at.err(&format!("secret `{key}`: {e}")))?;
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Limits {
        Limits {
            timeout: Duration::from_secs(30),
            memory: 1 << 28,
            concurrency: None,
            body: 1 << 20,
            tensor_memory: 1 << 30,
        }
    }

    #[test]
    fn parses_a_full_deployment() {
        let text = r#"
            [[deployment]]
            name = "a"
            tenant = "t1"
            component = "a.wasm"
            route = { host = "a.example", path = "/api" }
            limits = { timeout = "2s", memory = "64MiB", concurrency = 4 }
            instances = { reuse = 50, idle = "3s" }
            [deployment.grants]
            outgoing-hosts = ["example.com"]
            config = { k = "v" }
        "#;
        let specs = parse(text, Path::new("/srv/d.toml"), &defaults()).unwrap();
        assert_eq!(specs.len(), 1);
        let d = &specs[0];
        assert_eq!(d.limits.timeout, Duration::from_secs(2));
        assert_eq!(d.limits.memory, 64 << 20);
        assert_eq!(d.limits.body, 1 << 20);
        assert_eq!(
            d.instances,
            Instances {
                reuse: 50,
                idle: Duration::from_secs(3)
            }
        );
        assert!(matches!(&d.source, Source::Component(p) if p == Path::new("/srv/a.wasm")));
        assert_eq!(d.grants.outgoing_hosts, vec!["example.com"]);
    }

    #[test]
    fn secrets_load_from_their_sources_and_never_print() {
        let dir = std::env::temp_dir().join(format!("tw-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pass"), "from-file\n").unwrap();
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var("TW_TEST_SECRET", "from-env") };
        let text = r#"
            [[deployment]]
            name = "a"
            tenant = "t"
            component = "a.wasm"
            [deployment.grants]
            secrets = { a = "inline", b = { env = "TW_TEST_SECRET" }, c = { file = "pass" } }
        "#;
        let specs = parse(text, &dir.join("d.toml"), &defaults()).unwrap();
        let s = &specs[0].grants.secrets;
        assert_eq!(s["a"].expose(), "inline");
        assert_eq!(s["b"].expose(), "from-env");
        assert_eq!(s["c"].expose(), "from-file");
        let shown = format!("{:?}", specs[0]);
        assert!(
            !shown.contains("from-env") && !shown.contains("inline"),
            "{shown}"
        );
        let missing = text.replace("TW_TEST_SECRET", "TW_TEST_SECRET_UNSET");
        let err = parse(&missing, &dir.join("d.toml"), &defaults()).unwrap_err();
        assert!(err.to_string().contains("TW_TEST_SECRET_UNSET"), "{err}");
        let reserved = text.replace("a = \"inline\"", "\"tensorwasm.tenant\" = \"x\"");
        assert!(parse(&reserved, &dir.join("d.toml"), &defaults()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_the_batching_settings() {
        let text = "[[deployment]]\nname = \"a\"\ntenant = \"t\"\nworld = \"w.wac\"\ninference = { embeddings = \"tensorwasm:minilm\", generation = \"models/gen.wasm\", max-batch = 16, window = \"500us\" }\n";
        let spec = &parse(text, Path::new("/srv/d.toml"), &defaults()).unwrap()[0];
        assert_eq!(
            spec.inference,
            Some(Inference {
                embeddings: Some(ModelSource::Package("tensorwasm:minilm".into())),
                generation: Some(ModelSource::Path("/srv/models/gen.wasm".into())),
                max_batch: 16,
                window: Duration::from_micros(500),
            })
        );
        let text = "[[deployment]]\nname = \"a\"\ntenant = \"t\"\ncomponent = \"c.wasm\"\n";
        assert_eq!(
            parse(text, Path::new("d.toml"), &defaults()).unwrap()[0].inference,
            None
        );
    }

    #[test]
    fn rejects_bad_files() {
        let p = Path::new("d.toml");
        for (text, needle) in [
            (
                "[[deployment]]\nname = \"a\"\ntenant = \"t\"\n",
                "exactly one",
            ),
            (
                "[[deployment]]\nname = \"a\"\ntenant = \"t\"\ncomponent = \"x\"\ncolour = 1\n",
                "unknown field",
            ),
            (
                "[[deployment]]\nname = \"a\"\ntenant = \"t\"\ncomponent = \"x\"\nlimits = { timeout = \"soon\" }\n",
                "invalid duration",
            ),
            (
                "[[deployment]]\nname = \"a\"\ntenant = \"t\"\ncomponent = \"x\"\ninstances = { reuse = 0 }\n",
                "at least 1",
            ),
            (
                "[[deployment]]\nname = \"a\"\ntenant = \"t\"\ncomponent = \"x\"\ninstances = { reuse = 5, idle = \"0s\" }\n",
                "greater than zero",
            ),
            (
                "[[deployment]]\nname = \"a\"\ntenant = \"t\"\ncomponent = \"x\"\ninstances = { count = 5 }\n",
                "unknown field",
            ),
            (
                "[[deployment]]\nname = \"a\"\ntenant = \"t\"\nworld = \"w.wac\"\ninference = { max-batch = 8 }\n",
                "names no model component",
            ),
            (
                "[[deployment]]\nname = \"a\"\ntenant = \"t\"\nworld = \"w.wac\"\ninference = { embeddings = \"e:m\", max-batch = 2000 }\n",
                "must be in 1..=1024",
            ),
            (
                "[[deployment]]\nname = \"a\"\ntenant = \"t\"\nworld = \"w.wac\"\ninference = { embeddings = \"e:m\", window = \"soon\" }\n",
                "`inference.window`: invalid duration",
            ),
            (
                "[[deployment]]\nname = \"a\"\ntenant = \"t\"\nworld = \"w.wac\"\ninference = { embeddings = \"e:m\", window = \"2s\" }\n",
                "at most 1s",
            ),
            (
                "[[deployment]]\nname = \"a\"\ntenant = \"t\"\nworld = \"w.wac\"\ninference = { embedding = \"e:m\" }\n",
                "unknown field",
            ),
            ("", "no deployments"),
            ("[[deployment]]\nname = \"a\"\n", "tenant"),
        ] {
            let err = parse(text, p, &defaults()).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
            assert!(err.starts_with("d.toml"), "{err}");
        }
    }
}
