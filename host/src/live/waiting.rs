//! Start-up deployments that wait for their models: the default world's
//! OpenAI API (`serve` with no path). Until every model it grants is in the
//! models directory its route answers 503 naming the command that fetches
//! them, and nothing is compiled; once they are there it is built in the
//! background and swapped in as its start-up revision — no restart.

use super::Live;
use crate::assembly::models::{self, FETCH_COMMAND};
use crate::assembly::spec::DeploymentSpec;
use crate::serving::deployment::Deployment;
use crate::serving::router::{Router, path_matches};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the models directory is looked at.
const POLL: Duration = Duration::from_secs(2);

/// A deployment waiting for its models.
pub struct Waiting {
    spec: DeploymentSpec,
    models_dir: PathBuf,
    stage: Mutex<Stage>,
}

/// The total size of `models`' weights in `dir`, once all are there.
fn weights_size(models: &[String], dir: &std::path::Path) -> Option<u64> {
    models
        .iter()
        .map(|m| {
            models::weights(&dir.join(m))
                .and_then(|p| p.metadata().ok())
                .map(|m| m.len())
        })
        .sum()
}

/// Where a waiting deployment is.
enum Stage {
    /// Models missing (or, `Some(size)`, all there but not yet seen the same
    /// size twice: still being written): what its route answers.
    Missing(String, Option<u64>),
    /// Being built.
    Building,
    /// Its build failed: what its route answers.
    Failed(String),
}

impl Waiting {
    /// `spec`, waiting for its `grants.models` to appear in `models_dir`.
    pub fn new(spec: DeploymentSpec, models_dir: PathBuf) -> Self {
        let w = Self {
            spec,
            models_dir,
            stage: Mutex::new(Stage::Building),
        };
        w.set(Stage::Missing(w.missing_message(&w.missing()), None));
        w
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Why its route cannot be served yet.
    pub fn message(&self) -> String {
        match &*self.lock() {
            Stage::Missing(m, _) | Stage::Failed(m) => m.clone(),
            Stage::Building => self.starting(),
        }
    }

    fn starting(&self) -> String {
        format!(
            "`{}` found its models and is starting; retry in a few seconds",
            self.spec.name
        )
    }

    fn prefix(&self) -> &str {
        self.spec
            .route
            .path
            .as_deref()
            .unwrap_or("/")
            .trim_end_matches('/')
    }

    fn missing(&self) -> Vec<String> {
        models::missing(&self.spec.grants.models, &self.models_dir)
    }

    fn missing_message(&self, missing: &[String]) -> String {
        if missing.is_empty() {
            return self.starting();
        }
        format!(
            "`{}` needs the models {}, not yet in {}: fetch them with `{FETCH_COMMAND} --models-dir {}`; they are picked up without a restart",
            self.spec.name,
            missing.join(", "),
            self.models_dir.display(),
            self.models_dir.display()
        )
    }

    fn set(&self, stage: Stage) {
        *self.lock() = stage;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stage> {
        self.stage.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Live {
    /// The waiting deployment whose route wins for `path` over `found` (the
    /// deployment the table routes it to), if any.
    pub(super) fn waiting_for(
        &self,
        path: &str,
        found: Option<&Deployment>,
    ) -> Option<Arc<Waiting>> {
        if !self.any_waiting.load(Ordering::Relaxed) {
            return None;
        }
        let waiting = self.read_waiting();
        waiting
            .iter()
            .find(|w| {
                path_matches(w.prefix(), path)
                    && found.is_none_or(|d| {
                        d.route.host.is_none() && Router::prefix_of(d).len() < w.prefix().len()
                    })
            })
            .cloned()
    }

    /// Whether `name` waits for its models.
    pub(super) fn is_waiting(&self, name: &str) -> bool {
        self.read_waiting().iter().any(|w| w.name() == name)
    }

    /// Looks at the models directory every [`POLL`] while any deployment
    /// waits; builds and swaps in each whose models are all there.
    pub async fn watch_models(self: Arc<Self>) {
        let mut tick = tokio::time::interval(POLL);
        while self.any_waiting.load(Ordering::Relaxed) {
            tick.tick().await;
            let ready: Vec<Arc<Waiting>> = self
                .read_waiting()
                .iter()
                .filter(|w| matches!(*w.lock(), Stage::Missing(..)))
                .cloned()
                .collect();
            for w in ready {
                let missing = w.missing();
                let size = weights_size(&w.spec.grants.models, &w.models_dir);
                let seen = match &*w.lock() {
                    Stage::Missing(_, seen) => *seen,
                    _ => None,
                };
                if !missing.is_empty() || size != seen {
                    w.set(Stage::Missing(w.missing_message(&missing), size));
                    continue;
                }
                w.set(Stage::Building);
                tracing::info!(
                    "deployment `{}`: its models are here; building it",
                    w.name()
                );
                match self.build(w.spec.clone(), 0).await {
                    Ok(d) => self.install(&w, d).await,
                    Err(e) => self.give_up(&w, e.to_string()),
                }
            }
        }
    }

    /// Swaps `deployment` in for the waiting `w`, unless something else
    /// took its name meanwhile.
    async fn install(&self, w: &Arc<Waiting>, deployment: Arc<Deployment>) {
        let _one = self.swap.lock().await;
        let router = self.router();
        let taken = router.deployments().iter().any(|d| d.name == w.name())
            || self.lock_revisions().contains_key(w.name());
        if !taken {
            let mut entries = router.deployments().to_vec();
            entries.push(deployment);
            match Router::new(entries) {
                Ok(r) => *self.router.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(r),
                Err(e) => return self.give_up(w, format!("{e:#}")),
            }
            tracing::info!("deployment `{}`: serving", w.name());
        }
        self.stop_waiting(w.name());
    }

    /// `name` waits no more (built, or changed through the admin API).
    pub(super) fn stop_waiting(&self, name: &str) {
        let mut waiting = self.waiting.write().unwrap_or_else(|e| e.into_inner());
        waiting.retain(|w| w.name() != name);
        self.any_waiting
            .store(!waiting.is_empty(), Ordering::Relaxed);
    }

    /// `w` failed to build: its route says why from now on.
    fn give_up(&self, w: &Waiting, why: String) {
        tracing::error!("deployment `{}`: cannot serve it: {why}", w.name());
        w.set(Stage::Failed(format!(
            "`{}` did not start: {why}; see the server log, fix it and restart",
            w.name()
        )));
    }

    fn read_waiting(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Waiting>>> {
        self.waiting.read().unwrap_or_else(|e| e.into_inner())
    }
}
