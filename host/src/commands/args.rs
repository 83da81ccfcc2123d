//! The `tensor-wasm` command line.

use crate::platform::units::{parse_duration, parse_size};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// TensorWasm: serve WebAssembly components (wasi:http) with GPU host interfaces.
#[derive(Debug, Parser)]
#[command(name = "tensor-wasm", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// How the log on stderr is written: `text` for people, `json` for log
    /// collectors (one object per line: timestamp, level, target, message and
    /// the event's fields).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a component, a composed world or a deployment file over HTTP.
    ///
    /// PATH may be a component (`.wasm`), a precompiled artifact (`.cwasm`, from
    /// `tensor-wasm compile`), a WAC world (`.wac`, composed at start-up), or a
    /// deployment file (`.toml`, many deployments and tenants on one server).
    /// Without PATH, the world embedded in the binary is served.
    ///
    /// Every request gets a fresh, isolated instance with its own memory cap and
    /// wall-clock budget. SIGINT/SIGTERM stop accepting connections and let
    /// in-flight requests finish (up to --shutdown-grace).
    Serve(Box<ServeArgs>),
    /// Compose a WAC world into one component file.
    Compose {
        /// The `.wac` world to compose.
        world: PathBuf,
        /// Where to write the composed component.
        #[arg(short, long, value_name = "OUT.wasm")]
        output: PathBuf,
        /// Where a package named in the world comes from (repeatable).
        #[arg(long = "dep", value_name = "NAME=PATH", value_parser = parse_dep)]
        deps: Vec<(String, PathBuf)>,
    },
    /// Compile a component (or world) ahead of time into a `.cwasm` artifact.
    ///
    /// The artifact is only valid for this version of tensor-wasm and the same
    /// engine settings (--max-memory, --max-instances); `serve` rejects others.
    Compile {
        /// The component or `.wac` world to compile.
        input: PathBuf,
        /// Where to write the artifact.
        #[arg(short, long, value_name = "OUT.cwasm")]
        output: PathBuf,
        /// Where a package named in the world comes from (repeatable).
        #[arg(long = "dep", value_name = "NAME=PATH", value_parser = parse_dep)]
        deps: Vec<(String, PathBuf)>,
        /// Engine settings the artifact is compiled for.
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Run a headless job: a component exporting `wasi:cli/run` (the
    /// `tensorwasm:platform/tensor-job` world), once, with the terminal's stdio.
    ///
    /// The job gets wasi:tensor (with the weights granted by --weights),
    /// wasi:cuda, wasi:scheduler and WASI with nothing else granted unless
    /// asked (--dir, --env). The exit status is the job's.
    Run(RunArgs),
    /// Read the gateway's audit records (written by the `audit` component).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Make bearer tokens for the gateway's `auth` component.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Deploy to a running server through its admin API: every deployment of a
    /// deployment file, or one given by flags. Each is built before it takes
    /// traffic; requests in flight finish on the revision they started on.
    Deploy(DeployArgs),
    /// Take a deployment out of service on a running server.
    Undeploy {
        /// The deployment.
        name: String,
        /// Only if it serves this revision now.
        #[arg(long, value_name = "REVISION")]
        if_match: Option<u64>,
        /// The server.
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List, show, and roll back a running server's deployments.
    #[command(subcommand)]
    Deployments(DeploymentsCommand),
    /// Watch a running server on one screen, refreshed like `top` (Ctrl-C
    /// quits): each deployment's requests/s, p50 and p99 latency, 5xx/s,
    /// in-flight and queued requests and idle instances; each tenant's
    /// tensor memory against its quota; version, backend, artifact cache and
    /// keyvalue commits. Read from the admin listener's /healthz and /metrics
    /// (no token needed); rates and percentiles cover the last interval.
    Observe {
        /// The admin listener, `HOST:PORT` or `http://HOST:PORT`.
        #[arg(
            long,
            env = "TENSOR_WASM_ADMIN",
            default_value = "http://127.0.0.1:9090",
            value_name = "ADDR"
        )]
        admin: String,
        /// Print the board once, after two scrapes --interval apart, and exit
        /// (1 when the server cannot be reached): for scripts.
        #[arg(long)]
        once: bool,
        /// Time between scrapes.
        #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
        interval: std::time::Duration,
    },
    /// Print a shell completion script, e.g. `tensor-wasm completions bash > ~/.local/share/bash-completion/completions/tensor-wasm`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages for tensor-wasm and every subcommand (tensor-wasm-serve.1, …) into DIR, e.g. `tensor-wasm man ~/.local/share/man/man1`.
    Man {
        /// Where to write them (created when missing).
        dir: PathBuf,
    },
    /// Signing keys and the trust policy (docs/REGISTRY.md).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Vetted wasi:cuda kernel modules: publish, list, verify (docs/KERNELS.md).
    #[command(subcommand)]
    Kernel(KernelCommand),
    /// Store a component, world, kernel or model manifest in the registry under NAME:VERSION, and with --to push it (and its record, signatures included) to an OCI registry.
    Push {
        /// The file, or a model folder (stored as its manifest: every file's BLAKE3) [default: the artifact already stored as --name].
        file: Option<PathBuf>,
        /// Its name, e.g. `acme/shop:1.2.0`.
        #[arg(long, value_name = "NAME:VERSION")]
        name: String,
        /// What it is: component, world, kernel or model [default: world for `.wac`, else component].
        #[arg(long)]
        kind: Option<String>,
        /// Sign it with this secret key.
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
        /// Also push it to an OCI registry (plain HTTP for localhost/127.0.0.1, else HTTPS).
        #[arg(long, value_name = "oci://HOST/REPO:TAG")]
        to: Option<String>,
        /// The data directory holding the registry [default: as `serve`].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Fetch an artifact from an OCI registry into the registry (`oci://HOST/REPO:TAG`, with its record and signatures when it has one), or write a stored artifact's bytes (checked against its digest) to a file.
    Pull {
        /// `oci://HOST/REPO:TAG`, `NAME:VERSION` or `blake3:HEX`.
        reference: String,
        /// Where to write its bytes (required for a stored artifact).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// The data directory holding the registry [default: as `serve`].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// List the registry's artifacts: name, kind, digest, size, signers.
    List {
        /// The data directory holding the registry [default: as `serve`].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Exit 0 only if the artifact is intact and signed by a trusted key (the registry's `trust` file and --trust-key).
    Verify {
        /// `NAME:VERSION`, `blake3:HEX`, or a local file or model folder (checked as `serve` would).
        reference: String,
        /// Trust this public key too (repeatable).
        #[arg(long = "trust-key", value_name = "KEY.pub")]
        trust_key: Vec<PathBuf>,
        /// The data directory holding the registry [default: as `serve`].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Add a signature to an artifact already in the registry.
    Sign {
        /// `NAME:VERSION`.
        name: String,
        /// The secret key.
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// The data directory holding the registry [default: as `serve`].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Delete blobs that no name points at.
    Gc {
        /// The data directory holding the registry [default: as `serve`].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Print a component's (or world's) imports and exports; for a
    /// `registry:` reference, its record (digest, signatures) first.
    Inspect {
        /// The component, artifact or `.wac` world, or `registry:NAME:VERSION` / `registry:blake3:HEX`.
        path: PathBuf,
        /// The data directory holding the registry [default: as `serve`].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Where a package named in the world comes from (repeatable).
        #[arg(long = "dep", value_name = "NAME=PATH", value_parser = parse_dep)]
        deps: Vec<(String, PathBuf)>,
    },
}

/// `tensor-wasm audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the newest records (JSON lines, oldest first).
    Tail {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Only this tenant's records.
        #[arg(long)]
        tenant: Option<String>,
        /// The server's data directory [default: as `serve`].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Read the records kept in this Redis instead (replicas'
        /// `[deployment.keyvalue]`).
        #[arg(long, value_name = "URL", conflicts_with = "data_dir")]
        redis: Option<String>,
    },
    /// Check each tenant's audit chain (docs/GATEWAY.md, "Audit"): exit 0 only if no record was altered, removed, reordered or added outside the server; names the first one that was.
    Verify {
        /// Only this tenant's records.
        #[arg(long)]
        tenant: Option<String>,
        /// The server's data directory (its `audit-key` file too) [default: as `serve`].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Check the chains kept in this Redis instead (replicas'
        /// `[deployment.keyvalue]`; the key is still the data directory's).
        #[arg(long, value_name = "URL")]
        redis: Option<String>,
    },
    /// Print the records that match (JSON lines, oldest first).
    Query {
        /// Only this tenant's records.
        #[arg(long)]
        tenant: Option<String>,
        /// Only records since a time: a duration ago (`10m`, `2h`) or RFC 3339 (`2026-12-01T10:00:00Z`).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Only the record of this request (its `x-request-id`).
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
        /// The server's data directory [default: as `serve`].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Read the records kept in this Redis instead (replicas'
        /// `[deployment.keyvalue]`).
        #[arg(long, value_name = "URL", conflicts_with = "data_dir")]
        redis: Option<String>,
    },
}

/// How to reach a server's admin API.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// The admin listener's URL.
    #[arg(
        long,
        env = "TENSOR_WASM_ADMIN",
        default_value = "http://127.0.0.1:9090",
        value_name = "URL"
    )]
    pub admin: String,
    /// A file holding the admin token [default: the data directory's admin-token; or $TENSOR_WASM_ADMIN_TOKEN].
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The server's data directory, for its admin-token [default: as `serve`].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `tensor-wasm deploy ...`.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// A deployment file (`.toml`); its relative paths are sent as absolute ones.
    #[arg(conflicts_with_all = ["name", "component", "world"])]
    pub file: Option<PathBuf>,
    /// The deployment's name (instead of a file).
    #[arg(long, requires = "tenant")]
    pub name: Option<String>,
    /// Its tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Its component (`.wasm`, `.cwasm` or `registry:NAME:VERSION`).
    #[arg(long, conflicts_with = "world")]
    pub component: Option<String>,
    /// Its world (`.wac` or `registry:NAME:VERSION`).
    #[arg(long)]
    pub world: Option<String>,
    /// Its route's path prefix [default: /].
    #[arg(long, value_name = "PREFIX")]
    pub path: Option<String>,
    /// Its route's host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only if the deployment serves this revision now (a conflict otherwise).
    #[arg(long, value_name = "REVISION")]
    pub if_match: Option<u64>,
    /// The server.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `tensor-wasm deployments ...`.
#[derive(Debug, Subcommand)]
pub enum DeploymentsCommand {
    /// Every deployment the token may read.
    List {
        /// The server.
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// One deployment: spec as running, revision, counters.
    Get {
        /// The deployment.
        name: String,
        /// The server.
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// A deployment's revisions (0: the spec the server started with).
    History {
        /// The deployment.
        name: String,
        /// The server.
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Deploy an earlier revision's spec again, as a new revision.
    Rollback {
        /// The deployment.
        name: String,
        /// The revision to restore [default: the one before the current].
        #[arg(long, value_name = "REVISION")]
        to: Option<u64>,
        /// The server.
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `tensor-wasm token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a random token; prints it (once) and its `auth.tokens` entry (its hash, id and scopes).
    New {
        /// The token's id (in audit records, rate limits and logs).
        #[arg(long, default_value = "client")]
        id: String,
        /// Its scopes: `read`, `write` or `admin`, each optionally on a path prefix (`write:/echo`).
        #[arg(long, default_value = "read")]
        scopes: String,
    },
    /// Print the `sha256:` hash of the token given on standard input.
    Hash,
}

/// `tensor-wasm key ...`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make an ed25519 key pair: KEY (secret, 0600) and KEY.pub.
    Generate {
        /// Where to write the secret key (refuses to overwrite).
        #[arg(long, value_name = "KEY")]
        out: PathBuf,
        /// A comment stored in KEY.pub.
        #[arg(long, default_value = "tensor-wasm")]
        comment: String,
    },
    /// List the trusted and revoked keys (the registry's `trust` file).
    List {
        /// The data directory holding the registry [default: as `serve`].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Trust a public key (adds it to the registry's `trust` file).
    Trust {
        /// The public key file (`KEY.pub`).
        key: PathBuf,
        /// The data directory holding the registry [default: as `serve`].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Revoke a key by id: its signatures no longer count.
    Revoke {
        /// The key id (16 hex digits, as `key list` and `list` print).
        id: String,
        /// The data directory holding the registry [default: as `serve`].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
}

/// `tensor-wasm kernel ...`.
#[derive(Debug, Subcommand)]
pub enum KernelCommand {
    /// Check a CUDA C module's `@kernel` declarations and store it in the registry as kind `kernel`, signed with --sign (and with --to pushed to an OCI registry too).
    Publish {
        /// The `.cu` file.
        file: PathBuf,
        /// Its name, e.g. `acme/kernels:1.0.0` (guests load it by this name or by digest).
        #[arg(long, value_name = "NAME:VERSION")]
        name: String,
        /// Sign it with this secret key.
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
        /// Also push it to an OCI registry.
        #[arg(long, value_name = "oci://HOST/REPO:TAG")]
        to: Option<String>,
        /// The data directory holding the registry [default: as `serve`].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// List the built-in modules and the registry's kernels, with their declared kernels and signers.
    List {
        /// The data directory holding the registry [default: as `serve`].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Exit 0 only if the module (built-in name, NAME:VERSION or blake3:HEX) is intact, declares its kernels, and is signed by a trusted key (the built-in key, the `trust` file, --trust-key).
    Verify {
        /// The module.
        reference: String,
        /// Trust this public key too (repeatable).
        #[arg(long = "trust-key", value_name = "KEY.pub")]
        trust_key: Vec<PathBuf>,
        /// The data directory holding the registry [default: as `serve`].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
}

/// Flags of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Component (.wasm), artifact (.cwasm), world (.wac), deployment file (.toml), or `registry:NAME:VERSION`.
    pub path: Option<PathBuf>,
    /// Address to serve HTTP on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Address of the admin listener (/healthz, /readyz, /metrics, the admin and jobs API), or `off`.
    #[arg(long, default_value = "127.0.0.1:9090", value_name = "ADDR|off")]
    pub admin_listen: String,
    /// Wall-clock budget of one request; past it the guest is stopped and the client gets a 504.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub request_timeout: Duration,
    /// Largest request body accepted (413 above it).
    #[arg(long, default_value = "16MiB", value_parser = parse_size, value_name = "SIZE")]
    pub max_body_size: u64,
    /// Tensor memory (wasi:tensor) one tenant may hold across all its requests at once; past it an op returns `quota-exceeded`.
    #[arg(long, default_value = "1GiB", value_parser = parse_size, value_name = "SIZE")]
    pub tensor_memory: u64,
    /// Requests one deployment serves at once; more wait within their budget (default: no limit but the pool).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<u32>,
    /// Requests one instance serves, one at a time, before it is dropped (wasmtime's flag): 1 gives every request a fresh instance; more lets a request see what earlier requests left in the instance's memory (docs/DEPLOYMENTS.md). For a component or world; a deployment file sets `instances` per deployment [default: 1; the embedded default world: 1000].
    #[arg(long, value_name = "N")]
    pub max_instance_reuse_count: Option<u32>,
    /// How long a reused instance waits for its next request before it is dropped [default: 10s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub idle_instance_timeout: Option<Duration>,
    /// Serving threads, each with its own listener and runtime [default: one per CPU].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// How long a serving thread keeps polling its connections after a response before it sleeps (only while its requests arrive that close together: an idle server sleeps), or `off`. Saves the wake-up on a keep-alive client's next request at the price of that much CPU when none comes (docs/OPERATIONS.md); at most 1ms.
    #[arg(long, default_value = "50us", value_parser = parse_busy_poll, value_name = "DURATION|off")]
    pub busy_poll: Duration,
    /// How long shutdown waits for in-flight requests (idle connections, and ones that sent only part of a request, close at once).
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_grace: Duration,
    /// Connections the serving listener holds at once; when full, its longest-idle connection is closed to take a new one, and new ones are refused only while all are busy [default: ¾ of the open-file limit, which start-up raises to its hard limit].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Connections one client address may hold at once; at the limit its own longest-idle one makes room [default: no limit of its own, as a load balancer or NAT puts many users behind one address].
    #[arg(long, value_name = "N")]
    pub max_connections_per_client: Option<usize>,
    /// Time a client has, from the first byte of a request (on a new or an idle connection), to send the whole request head; past it the connection is closed (slow-header clients).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub header_read_timeout: Duration,
    /// Time a connection may stay open with no request in progress and nothing being sent; past it the server closes it.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub idle_connection_timeout: Duration,
    /// PEM certificate chain to serve HTTPS with, on both listeners (ALPN h2 and http/1.1); read again whenever it or the key changes. Needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) client certificates must chain to (mTLS); a verified client's identity (URI SAN, else DNS SAN, else common name) reaches components in `x-client-identity`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// With --tls-client-ca: whether every client must present a certificate, or may come without one (and use a bearer token instead).
    #[arg(long, value_enum, default_value = "required", value_name = "WHEN")]
    pub tls_client_auth: crate::serving::tls::ClientAuth,
    /// Log one line per request (target `access`, level info): request id, tenant, deployment, method, path, status, and µs until the response's head.
    #[arg(long)]
    pub access_log: bool,
    /// Export traces (OpenTelemetry, OTLP) to the collector at URL, e.g.
    /// `http://127.0.0.1:4318` (HTTP) or `http://127.0.0.1:4317` (gRPC).
    /// Off by default; `OTEL_EXPORTER_OTLP_ENDPOINT` turns it on too, and the
    /// other `OTEL_*` variables (service name, sampler, batching) apply.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// The OTLP transport (default: `OTEL_EXPORTER_OTLP_PROTOCOL`, else http/protobuf).
    #[arg(long, value_enum, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<crate::platform::telemetry::Protocol>,
    /// One span per `wasi:tensor` op in traces (verbose), not only a
    /// summary per request.
    #[arg(long)]
    pub trace_tensor_ops: bool,
    /// Jobs (`POST /v1/jobs`) that run at once, each on a thread of its own; more wait queued.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub max_jobs: usize,
    /// Where a package named in a world comes from (repeatable).
    #[arg(long = "dep", value_name = "NAME=PATH", value_parser = parse_dep)]
    pub deps: Vec<(String, PathBuf)>,
    /// Directory of the compiled-artifact cache [default: $TENSOR_WASM_CACHE_DIR or ~/.cache/tensor-wasm].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not read or write the compiled-artifact cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Directory of the durable data: the wasi:keyvalue database (audit records included) [default: $TENSOR_WASM_DATA_DIR or ~/.local/share/tensor-wasm].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Directory of the models that deployments grant by name (`grants.models`), filled by `bash scripts/fetch-models.sh` [default: $TENSOR_WASM_MODELS_DIR or ~/.cache/tensor-wasm/models].
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    /// Trust artifacts signed by this public key (`KEY.pub`; repeatable). With any trusted key only signed artifacts run (docs/REGISTRY.md); the registry's `trust` file (`tensor-wasm key trust`) adds more.
    #[arg(long = "trust-key", value_name = "KEY.pub")]
    pub trust_key: Vec<PathBuf>,
    /// Refuse every artifact not signed by a trusted key, server-wide (per deployment: `require-signed = true`).
    #[arg(long)]
    pub require_signed: bool,
    /// Engine settings.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Tensor device settings.
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl ServeArgs {
    /// What the trace flags ask for.
    pub fn trace_options(&self) -> crate::platform::telemetry::TraceOptions {
        crate::platform::telemetry::TraceOptions {
            endpoint: self.otlp_endpoint.clone(),
            protocol: self.otlp_protocol,
            tensor_ops: self.trace_tensor_ops,
        }
    }
}

/// Flags of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job: a component (.wasm) or artifact (.cwasm) exporting wasi:cli/run (or, with --invoke, the function called).
    pub path: PathBuf,
    /// Arguments passed to the job (after `--`).
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
    /// Call this typed export instead of wasi:cli/run, with WAVE-encoded
    /// arguments (as `wasmtime run --invoke`), e.g. `'add(1, 2)'`,
    /// `'greet("ada", some(true))'`, or `'ns:pkg/iface#func(...)'` for a
    /// function of an exported interface; prints the results as WAVE.
    #[arg(long, value_name = "CALL", conflicts_with = "args")]
    pub invoke: Option<String>,
    /// Weights the job may open by NAME through wasi:tensor/weights (repeatable).
    #[arg(long = "weights", value_name = "NAME=FILE", value_parser = parse_grant)]
    pub weights: Vec<(String, PathBuf)>,
    /// A host directory the job may read, seen as GUEST (repeatable).
    #[arg(long = "dir", value_name = "HOST::GUEST", value_parser = parse_dir)]
    pub dirs: Vec<(PathBuf, String)>,
    /// An environment variable the job sees (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Wall-clock budget; past it the job is stopped [default: none].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// Tensor memory the job may hold at once.
    #[arg(long, default_value = "1GiB", value_parser = parse_size, value_name = "SIZE")]
    pub tensor_memory: u64,
    /// Directory of the compiled-artifact cache [default: $TENSOR_WASM_CACHE_DIR or ~/.cache/tensor-wasm].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Engine settings.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Tensor device settings.
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// `--busy-poll`: a duration up to 1 ms, or `off` (zero).
fn parse_busy_poll(text: &str) -> Result<Duration, String> {
    if matches!(text.trim(), "off" | "0") {
        return Ok(Duration::ZERO);
    }
    let d = parse_duration(text)?;
    if d > Duration::from_millis(1) {
        return Err(format!(
            "`{text}` is longer than 1ms: a thread would spin that long after every response"
        ));
    }
    Ok(d)
}

fn parse_grant(text: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=FILE, got `{text}`"))?;
    Ok((name.to_string(), PathBuf::from(path)))
}

fn parse_dir(text: &str) -> Result<(PathBuf, String), String> {
    let (host, guest) = text
        .split_once("::")
        .ok_or_else(|| format!("expected HOST::GUEST, e.g. data::/data, got `{text}`"))?;
    Ok((PathBuf::from(host), guest.to_string()))
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got `{text}`"))?;
    Ok((k.to_string(), v.to_string()))
}

/// Where wasi:tensor computes.
#[derive(Debug, Args, Clone)]
pub struct DeviceArgs {
    /// Tensor backend: `auto` (every CUDA GPU when a driver is present, else the CPU; logged at start-up), `cpu`, `cuda` (GPU 0), `cuda:N`, `cuda:N,M,...` or `cuda:all`. With several GPUs each tenant is placed on one by its tensor-memory quota (least reserved first), unless a deployment names its `device`; each GPU is health-checked and a failed one is taken out (docs/DEPLOYMENTS.md "GPUs").
    #[arg(
        long,
        default_value = "auto",
        value_name = "auto|cpu|cuda[:N[,M...]|:all]"
    )]
    pub device: crate::tensor::device::DeviceSpec,
    /// Run f32 matrix products on GPU tensor cores in TF32 (faster; about 1e-3 relative error instead of f32's 1e-6).
    #[arg(long)]
    pub tf32: bool,
}

/// Settings baked into the engine (and so into compiled artifacts).
#[derive(Debug, Args, Clone)]
pub struct EngineArgs {
    /// Linear-memory cap of one instance (the sum of its memories); a guest past it traps and gets a 500.
    #[arg(long, default_value = "256MiB", value_parser = parse_size, value_name = "SIZE")]
    pub max_memory: u64,
    /// Instances alive at once across the server (the pooling allocator's size).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_instances: u32,
}

fn parse_dep(text: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = text.split_once('=').ok_or_else(|| {
        format!("expected NAME=PATH, e.g. tensorwasm:hello=hello.wasm, got `{text}`")
    })?;
    if !name.contains(':') {
        return Err(format!(
            "package name `{name}` needs a namespace, e.g. `acme:{name}`"
        ));
    }
    Ok((name.to_string(), PathBuf::from(path)))
}
