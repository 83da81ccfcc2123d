//! Live deployments: the set a server serves, changed while it runs through
//! the admin API (docs/OPERATIONS.md).
//!
//! A change builds its new revision completely — trust policy, compile,
//! link, pre-initialize, capability state — while the old one serves. Only
//! then is it checked against the routing table, written to the audit log,
//! recorded durably ([`history`]) and swapped in. Requests in flight hold
//! the revision they started on and finish there; new ones get the new one.
//! A change that fails any step leaves the serving set as it was. One change
//! per deployment at a time: a second one gets a conflict.

pub mod history;
mod start;
mod waiting;

pub use start::{Planned, Started, plan};
pub use waiting::Waiting;

use crate::assembly::Assembly;
use crate::assembly::spec::{self, DeploymentSpec, Limits};
use crate::serving::deployment::Deployment;
use crate::serving::router::Router;
use history::{Action, History, Revision, Served};
use registry::{Policy, Registry};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

/// Reads the start-up specs (the deployment file, or the command line's).
pub type Reread = Box<dyn Fn() -> anyhow::Result<Vec<DeploymentSpec>> + Send + Sync>;

/// What a spec needs before it is assembled.
pub struct Resolve {
    /// The artifact registry (`registry:` references).
    pub registry: Registry,
    /// The server's trust policy.
    pub policy: Policy,
    /// `--models-dir`, if found.
    pub models_dir: Option<PathBuf>,
    /// The server's default limits.
    pub defaults: Limits,
    /// The largest instance memory the engine was sized for.
    pub max_memory: u64,
}

impl Resolve {
    /// Resolves `spec`'s artifacts under the trust policy
    /// ([`crate::assembly::signed::resolve`]).
    pub fn apply(&self, spec: &mut DeploymentSpec) -> anyhow::Result<()> {
        crate::assembly::signed::resolve(
            spec,
            &self.registry,
            &self.policy,
            self.models_dir.as_deref(),
        )
    }
}

/// The deployments a server serves, and the one way to change them.
pub struct Live {
    assembly: Arc<Assembly>,
    router: RwLock<Arc<Router>>,
    /// The start-up specs (revision 0), by name, as last read.
    seeds: Mutex<BTreeMap<String, DeploymentSpec>>,
    /// Reads the start-up specs again (SIGHUP).
    reread: Reread,
    /// Each changed deployment's revisions, as recorded.
    revisions: Mutex<BTreeMap<String, Vec<Revision>>>,
    /// Deployments with a change under way.
    changing: Mutex<BTreeSet<String>>,
    /// Serializes the swap step of every change.
    swap: tokio::sync::Mutex<()>,
    history: History,
    resolve: Resolve,
    /// Start-up deployments waiting for their models ([`waiting`]).
    /// Read on every request while any waits, so a read-write lock.
    waiting: RwLock<Vec<Arc<Waiting>>>,
    /// Whether `waiting` has any (read on every request).
    any_waiting: std::sync::atomic::AtomicBool,
}

/// Why a request has no deployment.
pub enum Unrouted {
    /// No route matches.
    NoRoute,
    /// Its route's deployment waits for its models: why.
    Waiting(String),
}

/// Who asks for a change.
pub struct Caller<'a> {
    /// The admin token's id.
    pub token: &'a str,
    /// The admin call's request id.
    pub request_id: &'a str,
    /// The client's address.
    pub client: &'a str,
    /// Whether the token may change a deployment of this tenant.
    pub may_deploy: &'a (dyn Fn(&str) -> bool + Sync),
}

/// Why a change was refused; nothing changed.
#[derive(Debug)]
pub enum Refusal {
    /// The spec is malformed (400).
    BadSpec(String),
    /// The token lacks the scope (403).
    Forbidden(String),
    /// No such deployment or revision (404).
    NotFound(String),
    /// Another change or a stale `If-Match`, or a route taken (409).
    Conflict {
        /// Why.
        message: String,
        /// The deployment's revision now, if it is deployed.
        current: Option<u64>,
    },
    /// The new revision failed to build (422).
    Failed(String),
    /// The audit log or the history could not be written (503).
    Unavailable(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadSpec(m)
            | Self::Forbidden(m)
            | Self::NotFound(m)
            | Self::Failed(m)
            | Self::Unavailable(m)
            | Self::Conflict { message: m, .. } => f.write_str(m),
        }
    }
}

/// A change that took effect.
pub struct Applied {
    /// The revision it made.
    pub revision: u64,
    /// Whether the deployment existed before.
    pub replaced: bool,
    /// The deployment now serving, if any.
    pub deployment: Option<Arc<Deployment>>,
}

impl Live {
    /// The live set over what the server `started` with.
    pub fn new(
        assembly: Arc<Assembly>,
        started: Started,
        resolve: Resolve,
        history: History,
    ) -> Self {
        Self {
            assembly,
            router: RwLock::new(Arc::new(started.router)),
            seeds: Mutex::new(started.seeds),
            reread: started.reread,
            revisions: Mutex::new(started.revisions),
            changing: Mutex::default(),
            swap: tokio::sync::Mutex::new(()),
            history,
            resolve,
            any_waiting: (!started.waiting.is_empty()).into(),
            waiting: RwLock::new(started.waiting.into_iter().map(Arc::new).collect()),
        }
    }

    /// The assembly every deployment (and job) is built with.
    pub fn assembly(&self) -> &Arc<Assembly> {
        &self.assembly
    }

    /// What specs are resolved with.
    pub fn resolver(&self) -> &Resolve {
        &self.resolve
    }

    /// Why the server cannot compute on a GPU, when it has GPUs and every
    /// one was taken out (`/readyz` answers 503).
    pub fn gpus_out(&self) -> Option<String> {
        self.assembly.gpus_out()
    }

    /// The routing table now.
    pub fn router(&self) -> Arc<Router> {
        self.router
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The deployment serving `req` now.
    pub fn route<B>(&self, req: &http::Request<B>) -> Result<Arc<Deployment>, Unrouted> {
        let router = self.router.read().unwrap_or_else(|e| e.into_inner());
        let found = router.route_request(req);
        if let Some(w) = self.waiting_for(req.uri().path(), found.map(|d| &**d)) {
            return Err(Unrouted::Waiting(w.message()));
        }
        found.cloned().ok_or(Unrouted::NoRoute)
    }

    /// `name`'s revisions, oldest first (revision 0: the start-up spec), or
    /// `None` when it has none.
    pub fn history(&self, name: &str) -> Option<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        if self.lock_seeds().contains_key(name) {
            out.push(
                serde_json::json!({"revision": 0, "action": "deploy", "served": {"kind": "seed"}}),
            );
        }
        if let Some(revisions) = self.lock_revisions().get(name) {
            out.extend(revisions.iter().map(Revision::public));
        }
        (!out.is_empty()).then_some(out)
    }

    /// The tenant `name` belongs to: its deployment's, else (undeployed)
    /// that of the last spec it served, else its start-up spec's.
    pub fn tenant_of(&self, name: &str) -> Option<String> {
        if let Some(d) = self.router().deployments().iter().find(|d| d.name == name) {
            return Some(d.tenant.clone());
        }
        let recorded = self.lock_revisions().get(name).and_then(|revisions| {
            revisions.iter().rev().find_map(|r| match &r.served {
                Served::Spec { spec, .. } => spec["tenant"].as_str().map(str::to_string),
                _ => None,
            })
        });
        recorded.or_else(|| self.lock_seeds().get(name).map(|s| s.tenant.clone()))
    }

    /// The revision `name` serves now, if it is deployed.
    pub fn current(&self, name: &str) -> Option<u64> {
        let deployed = self.router().deployments().iter().any(|d| d.name == name);
        deployed.then(|| {
            self.lock_revisions()
                .get(name)
                .and_then(|r| r.last())
                .map_or(0, |r| r.revision)
        })
    }

    /// Deploys `body` (JSON, a deployment table's keys) as `name`, new or
    /// replacing; `if_match`: only if `name` serves that revision now.
    pub async fn deploy(
        self: &Arc<Self>,
        name: &str,
        body: serde_json::Value,
        if_match: Option<u64>,
        who: &Caller<'_>,
    ) -> Result<Applied, Refusal> {
        let base = std::env::current_dir().unwrap_or_default();
        let spec = spec::from_json(name, body.clone(), &base, &self.resolve.defaults)
            .map_err(|e| Refusal::BadSpec(format!("{e:#}")))?;
        let served = Served::Spec { spec: body, base };
        self.change(
            name,
            Action::Deploy,
            served,
            Some(spec),
            if_match,
            None,
            who,
        )
        .await
    }

    /// Takes `name` out of service.
    pub async fn undeploy(
        self: &Arc<Self>,
        name: &str,
        if_match: Option<u64>,
        who: &Caller<'_>,
    ) -> Result<Applied, Refusal> {
        if self.current(name).is_none() {
            return Err(Refusal::NotFound(format!("no deployment `{name}`")));
        }
        self.change(
            name,
            Action::Undeploy,
            Served::Nothing,
            None,
            if_match,
            None,
            who,
        )
        .await
    }

    /// Deploys again what revision `to` of `name` served (by default the
    /// last one before the current that served something).
    pub async fn rollback(
        self: &Arc<Self>,
        name: &str,
        to: Option<u64>,
        who: &Caller<'_>,
    ) -> Result<Applied, Refusal> {
        let (to, served) = self.earlier(name, to)?;
        let spec = self.spec_of(name, &served).map_err(Refusal::Failed)?;
        self.change(
            name,
            Action::Rollback,
            served,
            Some(spec),
            None,
            Some(to),
            who,
        )
        .await
    }

    /// The revision a rollback restores, and what it served.
    fn earlier(&self, name: &str, to: Option<u64>) -> Result<(u64, Served), Refusal> {
        let revisions = self.lock_revisions().get(name).cloned().unwrap_or_default();
        let mut served: Vec<(u64, Served)> = Vec::new();
        if self.lock_seeds().contains_key(name) {
            served.push((0, Served::Seed));
        }
        served.extend(
            revisions
                .iter()
                .filter(|r| !matches!(r.served, Served::Nothing))
                .map(|r| (r.revision, r.served.clone())),
        );
        let last = revisions.last().map_or(0, |r| r.revision);
        let found = match to {
            Some(n) => served.into_iter().find(|(r, _)| *r == n),
            None => served.into_iter().rev().find(|(r, _)| *r != last),
        };
        found.ok_or_else(|| {
            Refusal::NotFound(match to {
                Some(n) => format!("deployment `{name}` has no revision {n} that served a spec"),
                None => format!("deployment `{name}` has no earlier revision to roll back to"),
            })
        })
    }

    /// The spec `served` describes.
    fn spec_of(&self, name: &str, served: &Served) -> Result<DeploymentSpec, String> {
        match served {
            Served::Seed => self
                .lock_seeds()
                .get(name)
                .cloned()
                .ok_or_else(|| format!("deployment `{name}` has no start-up spec")),
            Served::Spec { spec, base } => {
                spec::from_json(name, spec.clone(), base, &self.resolve.defaults)
                    .map_err(|e| format!("{e:#}"))
            }
            Served::Nothing => Err(format!("that revision of `{name}` served nothing")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn change(
        self: &Arc<Self>,
        name: &str,
        action: Action,
        served: Served,
        spec: Option<DeploymentSpec>,
        if_match: Option<u64>,
        from: Option<u64>,
        who: &Caller<'_>,
    ) -> Result<Applied, Refusal> {
        let claim = self.claim(name, if_match)?;
        let old = self
            .router()
            .deployments()
            .iter()
            .find(|d| d.name == name)
            .cloned();
        for tenant in old
            .iter()
            .map(|d| d.tenant.as_str())
            .chain(spec.iter().map(|s| s.tenant.as_str()))
        {
            if !(who.may_deploy)(tenant) {
                return Err(Refusal::Forbidden(format!(
                    "token `{}` may not change deployments of tenant `{tenant}` (it needs deploy:{tenant} or deploy:*)",
                    who.token
                )));
            }
        }
        let tenant = spec.as_ref().map_or_else(
            || old.as_ref().map(|d| d.tenant.clone()).unwrap_or_default(),
            |s| s.tenant.clone(),
        );
        let deployment = match spec {
            Some(spec) => Some(self.build(spec, claim.next).await?),
            None => None,
        };
        let revision = Revision {
            revision: claim.next,
            action,
            served,
            from,
            time_ms: now_ms(),
            by: who.token.to_string(),
            request_id: who.request_id.to_string(),
        };
        self.commit(name, &tenant, revision, deployment.clone(), who)
            .await?;
        Ok(Applied {
            revision: claim.next,
            replaced: old.is_some(),
            deployment,
        })
    }

    /// Marks `name` as changing; refused while another change of it runs or
    /// when it does not serve `if_match`.
    fn claim(&self, name: &str, if_match: Option<u64>) -> Result<Claim<'_>, Refusal> {
        let current = self.current(name);
        if let Some(want) = if_match
            && current != Some(want)
        {
            return Err(Refusal::Conflict {
                message: format!(
                    "deployment `{name}` is at {}, not revision {want} (If-Match)",
                    current.map_or("no revision (not deployed)".into(), |c| format!(
                        "revision {c}"
                    ))
                ),
                current,
            });
        }
        let mut changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        if !changing.insert(name.to_string()) {
            return Err(Refusal::Conflict {
                message: format!(
                    "another change of deployment `{name}` is under way; retry when it is done"
                ),
                current,
            });
        }
        let next = self
            .lock_revisions()
            .get(name)
            .and_then(|r| r.last())
            .map_or(1, |r| r.revision + 1);
        Ok(Claim {
            live: self,
            name: name.to_string(),
            next,
        })
    }

    /// Builds `spec` on a blocking thread: the trust policy, then the assembly.
    async fn build(
        self: &Arc<Self>,
        mut spec: DeploymentSpec,
        revision: u64,
    ) -> Result<Arc<Deployment>, Refusal> {
        if spec.limits.memory > self.resolve.max_memory {
            return Err(Refusal::BadSpec(format!(
                "limits.memory ({} bytes) is above what this server's instances can have ({} bytes; serve --max-memory)",
                spec.limits.memory, self.resolve.max_memory
            )));
        }
        let me = self.clone();
        let built = tokio::task::spawn_blocking(move || {
            me.resolve.apply(&mut spec)?;
            me.assembly.for_deployment(spec)
        })
        .await;
        match built {
            Ok(Ok(mut d)) => {
                d.revision = revision;
                Ok(Arc::new(d))
            }
            Ok(Err(e)) => Err(Refusal::Failed(format!("{e:#}"))),
            Err(e) => Err(Refusal::Failed(format!("the build stopped: {e}"))),
        }
    }

    /// Checks the new table, audits, records, swaps — in that order, one
    /// change at a time.
    async fn commit(
        &self,
        name: &str,
        tenant: &str,
        revision: Revision,
        deployment: Option<Arc<Deployment>>,
        who: &Caller<'_>,
    ) -> Result<(), Refusal> {
        let _one = self.swap.lock().await;
        let router = self.router();
        // Its audit goes where the deployment keeps its audit bucket (the
        // removed one's, when it is undeployed).
        let audited = deployment.clone().or_else(|| {
            router
                .deployments()
                .iter()
                .find(|d| d.name == name)
                .cloned()
        });
        let mut entries: Vec<Arc<Deployment>> = router
            .deployments()
            .iter()
            .filter(|d| d.name != name)
            .cloned()
            .collect();
        entries.extend(deployment);
        let router = Router::new(entries).map_err(|e| Refusal::Conflict {
            message: format!("{e:#}"),
            current: self.current(name),
        })?;
        self.audit(name, tenant, &revision, who, audited.as_deref())
            .await?;
        let mut revisions = self.lock_revisions().get(name).cloned().unwrap_or_default();
        revisions.push(revision);
        let (history, saved) = (self.history.clone(), revisions.clone());
        let name_owned = name.to_string();
        tokio::task::spawn_blocking(move || history.save(&name_owned, &saved))
            .await
            .map_err(|e| Refusal::Unavailable(e.to_string()))?
            .map_err(|e| Refusal::Unavailable(format!("the change was not recorded: {e:#}")))?;
        self.lock_revisions().insert(name.to_string(), revisions);
        *self.router.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(router);
        self.stop_waiting(name);
        Ok(())
    }

    /// Writes the change to the tenant's audit log (`tensor-wasm audit`)
    /// before it takes effect.
    async fn audit(
        &self,
        name: &str,
        tenant: &str,
        r: &Revision,
        who: &Caller<'_>,
        deployment: Option<&Deployment>,
    ) -> Result<(), Refusal> {
        let record = serde_json::json!({
            "deployment": name,
            "path": format!("/v1/deployments/{name}"),
            "admin": { "action": r.action, "revision": r.revision, "from": r.from },
        });
        self.audit_admin(tenant, record, who, deployment).await
    }

    /// Writes an admin call's record (`fields`: its `path`, `admin` and
    /// what else it names) to `tenant`'s audit log, durably: where
    /// `deployment` keeps its audit bucket, else (none, or that store
    /// fails) the server's database. An error means the call must not take
    /// effect.
    pub async fn audit_admin(
        &self,
        tenant: &str,
        mut fields: serde_json::Value,
        who: &Caller<'_>,
        deployment: Option<&Deployment>,
    ) -> Result<(), Refusal> {
        let now = std::time::SystemTime::now();
        let common = serde_json::json!({
            "time": humantime::format_rfc3339_millis(now).to_string(),
            "tenant": tenant,
            "token": who.token,
            "method": "ADMIN",
            "request_id": who.request_id,
            "client": who.client,
        });
        if let (Some(f), Some(c)) = (fields.as_object_mut(), common.as_object()) {
            f.extend(c.clone());
        }
        let nanos = now
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let key = format!("{nanos:020}-{}", who.request_id);
        let record = fields.to_string().into_bytes();
        if let Some(d) = deployment {
            match d.record_audit(key.clone(), record.clone()).await {
                Ok(()) => return Ok(()),
                // Kept in the server's database instead, so that a
                // deployment whose store is down can still be changed.
                Err(e) => tracing::warn!(
                    "the audit record of an admin change to `{}` could not go where its audit \
                     bucket is ({e:#}); writing it to the server's database",
                    d.name
                ),
            }
        }
        self.assembly.audit(tenant, key, record).await.map_err(|e| {
            Refusal::Unavailable(format!(
                "the audit record could not be written, so nothing changed: {e:#}"
            ))
        })
    }

    /// Reads the start-up specs again and applies them with the same swap
    /// as an API change (SIGHUP): every deployment that serves its start-up
    /// spec is rebuilt from the new one (new bytes at the same path
    /// included), one the specs add is deployed, one they drop is
    /// undeployed; a deployment the admin API changed last is left as it
    /// is. Each change is a revision by `sighup`, audited; a spec that fails
    /// leaves its deployment as it was. Returns a line per change.
    pub async fn reread(self: &Arc<Self>) -> Vec<String> {
        let seeds = match (self.reread)() {
            Ok(s) => s,
            Err(e) => return vec![format!("SIGHUP: nothing changed: {e:#}")],
        };
        let old: BTreeSet<String> = std::mem::replace(
            &mut *self.lock_seeds(),
            seeds.iter().map(|s| (s.name.clone(), s.clone())).collect(),
        )
        .into_keys()
        .collect();
        let always = |_: &str| true;
        let request_id = crate::serving::request_id::generate();
        let who = Caller {
            token: "sighup",
            request_id: request_id.to_str().unwrap_or(""),
            client: "local",
            may_deploy: &always,
        };
        let mut report = Vec::new();
        for (name, spec) in reseeded(old, seeds) {
            if !self.serves_seed(&name) || self.is_waiting(&name) {
                report.push(format!(
                    "`{name}`: left as it is (set by the admin API, or waiting for its models)"
                ));
                continue;
            }
            let result = match spec {
                Some(spec) => {
                    self.change(
                        &name,
                        Action::Deploy,
                        Served::Seed,
                        Some(spec),
                        None,
                        None,
                        &who,
                    )
                    .await
                }
                None if self.current(&name).is_some() => {
                    self.change(
                        &name,
                        Action::Undeploy,
                        Served::Nothing,
                        None,
                        None,
                        None,
                        &who,
                    )
                    .await
                }
                None => continue,
            };
            report.push(match result {
                Ok(a) => format!("`{name}`: revision {}", a.revision),
                Err(e) => format!("`{name}`: unchanged: {e:?}"),
            });
        }
        report
    }

    /// Whether `name` serves its start-up spec (or nothing the API set).
    fn serves_seed(&self, name: &str) -> bool {
        self.lock_revisions()
            .get(name)
            .and_then(|r| r.last())
            .is_none_or(|r| matches!(r.served, Served::Seed))
    }

    fn lock_seeds(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, DeploymentSpec>> {
        self.seeds.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_revisions(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<Revision>>> {
        self.revisions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Each new start-up spec by name, then each `old` name no longer among them.
fn reseeded(
    old: BTreeSet<String>,
    seeds: Vec<DeploymentSpec>,
) -> Vec<(String, Option<DeploymentSpec>)> {
    let gone: Vec<String> = old
        .into_iter()
        .filter(|n| !seeds.iter().any(|s| &s.name == n))
        .collect();
    seeds
        .into_iter()
        .map(|s| (s.name.clone(), Some(s)))
        .chain(gone.into_iter().map(|n| (n, None)))
        .collect()
}

/// A deployment marked as changing, until dropped.
struct Claim<'a> {
    live: &'a Live,
    name: String,
    /// The revision the change makes.
    next: u64,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.live
            .changing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.name);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
