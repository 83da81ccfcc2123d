//! Headless jobs: `tensor-wasm run` on the terminal, and the jobs API
//! (`POST /v1/jobs` on the admin listener; docs/OPERATIONS.md, "Jobs"),
//! which runs a job component for a tenant in the background with a
//! deployment's limits and grants, and keeps its state, result and output.
//!
//! Submitting and cancelling are written to the tenant's audit log first, as
//! every admin change is. A job is recorded durably before it is
//! acknowledged and at each change of state ([`record`]); one that a restart interrupted (queued or running) is
//! run again from the start when the server comes back — at least once, so
//! a job with side effects should make them idempotent. At most
//! `--max-jobs` run at once, on threads of their own; the rest wait, queued.
//! Finished jobs are kept for [`RETENTION`].

pub mod call;
pub mod output;
pub mod record;
pub mod run;
pub mod values;

use crate::assembly::spec::{self, DeploymentSpec, Source};
use crate::live::{Caller, Live, Refusal};
use crate::wasi::JobIo;
use call::Call;
use output::Captured;
use record::{Job, JobStore, State};
use run::{Outcome, Task};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A job's deadline unless its `limits.timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a finished job is kept (dropped at the next start after).
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Jobs a list shows, newest first.
pub const LIST_LIMIT: usize = 100;

/// The jobs of one server.
pub struct Jobs {
    live: Arc<Live>,
    store: JobStore,
    /// Jobs queued or running in this process. Its lock also orders every
    /// write of a job's state, so that a job's end and its cancellation
    /// cannot both be recorded.
    active: Mutex<HashMap<String, Active>>,
    slots: Arc<tokio::sync::Semaphore>,
    runtime: tokio::runtime::Handle,
}

/// A job queued or running in this process.
struct Active {
    task: tokio::task::AbortHandle,
    /// Its stdout and stderr so far.
    output: (Captured, Captured),
}

impl Active {
    /// Copies the output so far into `job`.
    fn output_into(&self, job: &mut Job) {
        (job.stdout, job.stdout_dropped) = self.output.0.text();
        (job.stderr, job.stderr_dropped) = self.output.1.text();
    }
}

/// A job request taken apart.
struct Parsed {
    spec: DeploymentSpec,
    task: Task,
    argv: Vec<String>,
}

impl Jobs {
    /// The jobs kept in `data_dir`, building with `live`'s assembly, at most
    /// `max_running` at once; the unfinished ones start again now.
    pub fn start(
        live: Arc<Live>,
        data_dir: &Path,
        max_running: usize,
    ) -> anyhow::Result<Arc<Self>> {
        let max_running = max_running.max(1);
        // Lives as long as the process: jobs hold the service, which holds it.
        let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(max_running)
                .thread_name("job")
                .enable_all()
                .build()?,
        ));
        let jobs = Arc::new(Self {
            live,
            store: JobStore::new(data_dir),
            active: Mutex::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(max_running)),
            runtime: runtime.handle().clone(),
        });
        jobs.resume()?;
        Ok(jobs)
    }

    /// Queues again every job a restart interrupted; drops finished jobs
    /// older than [`RETENTION`].
    fn resume(self: &Arc<Self>) -> anyhow::Result<()> {
        let oldest = now_ms().saturating_sub(RETENTION.as_millis() as u64);
        let mut expired = Vec::new();
        for mut job in self.store.all()? {
            if job.state.finished() {
                if job.finished_ms.unwrap_or(0) < oldest {
                    expired.push(job.id);
                }
                continue;
            }
            if job.state == State::Running {
                tracing::warn!(
                    "job {}: a restart interrupted it (attempt {}); running it again",
                    job.id,
                    job.attempts
                );
            }
            job.state = State::Queued;
            self.store.save(&job)?;
            self.spawn(job.id);
        }
        if !expired.is_empty() {
            self.store.remove(&expired)?;
        }
        Ok(())
    }

    /// Accepts a job (`request`: a deployment table's keys plus `args`, or
    /// `invoke`, or `function` and `arguments`), recorded before it returns.
    pub async fn submit(
        self: &Arc<Self>,
        request: Value,
        who: &Caller<'_>,
    ) -> Result<Job, Refusal> {
        let base = std::env::current_dir().unwrap_or_default();
        let parsed = self.parse(&request, &base).map_err(Refusal::BadSpec)?;
        let tenant = parsed.spec.tenant.clone();
        if !(who.may_deploy)(&tenant) {
            return Err(Refusal::Forbidden(format!(
                "token `{}` may not run jobs of tenant `{tenant}` (it needs deploy:{tenant} or deploy:*)",
                who.token
            )));
        }
        let job = Job {
            id: new_id(),
            tenant,
            state: State::Queued,
            request,
            base,
            call: match &parsed.task {
                Task::Run => None,
                Task::Invoke(c) => Some(c.text()),
            },
            exit_status: None,
            result: None,
            error: None,
            stdout: String::new(),
            stdout_dropped: 0,
            stderr: String::new(),
            stderr_dropped: 0,
            created_ms: now_ms(),
            started_ms: None,
            finished_ms: None,
            attempts: 0,
            by: who.token.to_string(),
            request_id: who.request_id.to_string(),
        };
        let audit = serde_json::json!({
            "path": "/v1/jobs",
            "admin": { "action": "job-submit", "job": job.id, "call": job.call },
        });
        self.live.audit_admin(&job.tenant, audit, who, None).await?;
        let (store, saved) = (self.store.clone(), job.clone());
        tokio::task::spawn_blocking(move || store.save(&saved))
            .await
            .map_err(|e| Refusal::Unavailable(e.to_string()))?
            .map_err(|e| Refusal::Unavailable(format!("the job was not recorded: {e:#}")))?;
        self.spawn(job.id.clone());
        Ok(job)
    }

    /// Job `id`; while it runs, with its output so far.
    pub fn get(&self, id: &str) -> Result<Job, Refusal> {
        let mut job = self.recorded(id)?;
        if let Some(active) = self.lock_active().get(id) {
            active.output_into(&mut job);
        }
        Ok(job)
    }

    fn recorded(&self, id: &str) -> Result<Job, Refusal> {
        self.store
            .get(id)
            .map_err(|e| Refusal::Unavailable(format!("{e:#}")))?
            .ok_or_else(|| Refusal::NotFound(format!("no job `{id}`")))
    }

    /// The newest [`LIST_LIMIT`] jobs of the tenants `may_read` allows.
    pub fn list(&self, may_read: &dyn Fn(&str) -> bool) -> Result<Vec<Job>, Refusal> {
        let mut jobs = self
            .store
            .all()
            .map_err(|e| Refusal::Unavailable(format!("{e:#}")))?;
        jobs.retain(|j| may_read(&j.tenant));
        jobs.sort_by_key(|j| std::cmp::Reverse((j.created_ms, j.id.clone())));
        jobs.truncate(LIST_LIMIT);
        Ok(jobs)
    }

    /// Cancels job `id` (queued or running), audited first.
    pub async fn cancel(&self, id: &str, who: &Caller<'_>) -> Result<Job, Refusal> {
        let job = self.recorded(id)?;
        if (who.may_deploy)(&job.tenant) && !job.state.finished() {
            let audit = serde_json::json!({
                "path": format!("/v1/jobs/{id}"),
                "admin": { "action": "job-cancel", "job": id },
            });
            self.live.audit_admin(&job.tenant, audit, who, None).await?;
        }
        let mut active = self.lock_active();
        let mut job = self.recorded(id)?;
        if !(who.may_deploy)(&job.tenant) {
            return Err(Refusal::Forbidden(format!(
                "token `{}` may not cancel jobs of tenant `{}`",
                who.token, job.tenant
            )));
        }
        if job.state.finished() {
            return Err(Refusal::Conflict {
                message: format!("job `{id}` has already ended ({:?})", job.state).to_lowercase(),
                current: None,
            });
        }
        if let Some(a) = active.remove(id) {
            a.task.abort();
            a.output_into(&mut job);
        }
        job.state = State::Cancelled;
        job.finished_ms = Some(now_ms());
        job.error = Some(format!("cancelled by token `{}`", who.token));
        self.store
            .save(&job)
            .map_err(|e| Refusal::Unavailable(format!("{e:#}")))?;
        Ok(job)
    }

    fn lock_active(&self) -> std::sync::MutexGuard<'_, HashMap<String, Active>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts job `id` on the jobs' runtime (it waits there for a slot).
    fn spawn(self: &Arc<Self>, id: String) {
        let mut active = self.lock_active();
        let output = (Captured::default(), Captured::default());
        let (me, key, out) = (self.clone(), id.clone(), output.clone());
        let task = self.runtime.spawn(async move { me.drive(&key, out).await });
        let task = task.abort_handle();
        active.insert(id, Active { task, output });
    }

    async fn drive(self: Arc<Self>, id: &str, (stdout, stderr): (Captured, Captured)) {
        let Ok(_slot) = self.slots.clone().acquire_owned().await else {
            return;
        };
        let started = self.update(id, |job| {
            job.state = State::Running;
            job.started_ms = Some(now_ms());
            job.attempts += 1;
        });
        let Some(job) = started else { return };
        let outcome = self.execute(&job, &stdout, &stderr).await;
        self.update(id, |job| {
            job.finished_ms = Some(now_ms());
            (job.stdout, job.stdout_dropped) = stdout.text();
            (job.stderr, job.stderr_dropped) = stderr.text();
            match outcome {
                Ok(Outcome::Exited(status)) => {
                    job.exit_status = Some(status);
                    job.state = if status == 0 {
                        State::Succeeded
                    } else {
                        State::Failed
                    };
                }
                Ok(Outcome::Returned(results)) => {
                    job.state = State::Succeeded;
                    job.result = Some(serde_json::json!({
                        "wave": results.iter().map(call::wave).collect::<Vec<_>>(),
                        "json": results.iter().map(values::to_json).collect::<Vec<_>>(),
                    }));
                }
                Err(e) => {
                    job.state = State::Failed;
                    job.error = Some(e);
                }
            }
        });
        self.lock_active().remove(id);
    }

    /// Applies `change` to job `id` and records it, unless the job is no
    /// longer active (cancelled); the job as recorded.
    fn update(&self, id: &str, change: impl FnOnce(&mut Job)) -> Option<Job> {
        let active = self.lock_active();
        if !active.contains_key(id) {
            return None;
        }
        let recorded = self.store.get(id).and_then(|job| {
            let mut job = job.ok_or_else(|| anyhow::anyhow!("it is not recorded"))?;
            change(&mut job);
            self.store.save(&job)?;
            Ok(job)
        });
        match recorded {
            Ok(job) => Some(job),
            Err(e) => {
                tracing::error!("job {id}: cannot record its state: {e:#}");
                None
            }
        }
    }

    /// Builds and runs `job` (one attempt), its output into `stdout` and `stderr`.
    async fn execute(
        self: &Arc<Self>,
        job: &Job,
        stdout: &Captured,
        stderr: &Captured,
    ) -> Result<Outcome, String> {
        let Parsed {
            mut spec,
            task,
            argv,
        } = self.parse(&job.request, &job.base)?;
        let timeout = spec.limits.timeout;
        let io = JobIo {
            args: argv,
            captured: Some((stdout.clone(), stderr.clone())),
        };
        let (me, t) = (self.clone(), task.clone());
        let built = tokio::task::spawn_blocking(move || {
            me.live.resolver().apply(&mut spec)?;
            me.live.assembly().for_job(&spec, &io, Some(timeout), &t)
        })
        .await
        .map_err(|e| format!("the build stopped: {e}"))?;
        let (component, state) = built.map_err(|e| format!("{e:#}"))?;
        let origin = format!("job {}", job.id);
        run::execute(
            self.live.assembly(),
            &component,
            state,
            &task,
            Some(timeout),
            &origin,
        )
        .await
        .map_err(|e| format!("{e:#}"))
    }

    /// Takes a job request apart: its spec (a deployment table's keys, the
    /// deadline [`DEFAULT_TIMEOUT`] unless given), task and argv.
    fn parse(&self, request: &Value, base: &Path) -> Result<Parsed, String> {
        let mut rest = request
            .as_object()
            .cloned()
            .ok_or("a job is a JSON object: a deployment's keys (`tenant`, `component`, `limits`, `grants`) and `args`, or `invoke`, or `function` with `arguments`")?;
        if rest.contains_key("name") {
            return Err("a job has no `name`; it is given an id".into());
        }
        let args: Vec<String> = match rest.remove("args") {
            None => Vec::new(),
            Some(v) => {
                serde_json::from_value(v).map_err(|_| "`args` must be an array of strings")?
            }
        };
        let task = task(
            rest.remove("invoke"),
            rest.remove("function"),
            rest.remove("arguments"),
        )?;
        let resolver = self.live.resolver();
        let mut defaults = resolver.defaults.clone();
        defaults.timeout = DEFAULT_TIMEOUT;
        let spec = spec::from_json("job", Value::Object(rest), base, &defaults)
            .map_err(|e| format!("{e:#}"))?;
        if !matches!(spec.source, Source::Component(_)) {
            return Err(
                "a job is one component: give `component` (a path or a registry: reference)".into(),
            );
        }
        if spec.limits.memory > resolver.max_memory {
            return Err(format!(
                "limits.memory ({} bytes) is above what this server's instances can have ({} bytes; serve --max-memory)",
                spec.limits.memory, resolver.max_memory
            ));
        }
        let argv = std::iter::once("job".to_string()).chain(args).collect();
        Ok(Parsed { spec, task, argv })
    }
}

/// The task a request's `invoke`, `function` and `arguments` ask for.
fn task(
    invoke: Option<Value>,
    function: Option<Value>,
    arguments: Option<Value>,
) -> Result<Task, String> {
    match (invoke, function, arguments) {
        (None, None, None) => Ok(Task::Run),
        (Some(Value::String(text)), None, None) => Call::parse(&text)
            .map(Task::Invoke)
            .map_err(|e| format!("{e:#}")),
        (Some(_), None, None) => {
            Err("`invoke` must be a string: a WAVE call such as \"add(1, 2)\"".into())
        }
        (None, Some(Value::String(name)), arguments) => match arguments {
            None => Ok(Task::Invoke(Call::json(&name, Vec::new()))),
            Some(Value::Array(a)) => Ok(Task::Invoke(Call::json(&name, a))),
            Some(_) => Err("`arguments` must be an array of JSON values, one per parameter".into()),
        },
        (None, Some(_), _) => Err("`function` must be a string: the export's name".into()),
        (None, None, Some(_)) => Err("`arguments` needs `function`".into()),
        (Some(_), _, _) => Err(
            "give `invoke` (a WAVE call) or `function` with `arguments` (JSON), not both".into(),
        ),
    }
}

/// A new job id: 32 hex digits, unique as request ids are.
fn new_id() -> String {
    let id = crate::serving::request_id::generate();
    id.to_str().unwrap_or_default().to_string()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
