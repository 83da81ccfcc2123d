//! A job as recorded in `<data-dir>/jobs.redb` (redb; every change of state
//! is committed, with fsync, before it is reported), and its public JSON.

use anyhow::{Context, Result};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Job id → the job, as JSON.
const TABLE: TableDefinition<&str, &str> = TableDefinition::new("jobs");
/// The database's file in the data directory.
pub const FILE: &str = "jobs.redb";

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Accepted, waiting for a free slot.
    Queued,
    /// Running now.
    Running,
    /// Exited with status 0, or its call returned.
    Succeeded,
    /// Exited non-zero, trapped, hit a limit, or could not start.
    Failed,
    /// Cancelled (`DELETE`) before it finished.
    Cancelled,
}

impl State {
    /// Whether the job has ended.
    pub fn finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// One job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// Its id.
    pub id: String,
    /// The tenant it runs for.
    pub tenant: String,
    /// Its state.
    pub state: State,
    /// The request that made it (a deployment table's keys plus the job's).
    pub request: serde_json::Value,
    /// The server's working directory then (relative paths are relative to it).
    pub base: PathBuf,
    /// The export it calls, as text (`None`: its `wasi:cli/run`).
    pub call: Option<String>,
    /// Its exit status, for a `wasi:cli/run` job that exited.
    pub exit_status: Option<u8>,
    /// Its call's results: `{"wave": [...], "json": [...]}`.
    pub result: Option<serde_json::Value>,
    /// Why it failed, or was cancelled.
    pub error: Option<String>,
    /// Its stdout (the first [`super::output::CAP`] bytes).
    pub stdout: String,
    /// Bytes of stdout dropped past the cap.
    pub stdout_dropped: u64,
    /// Its stderr (the first [`super::output::CAP`] bytes).
    pub stderr: String,
    /// Bytes of stderr dropped past the cap.
    pub stderr_dropped: u64,
    /// When it was accepted, started (last attempt) and finished, in
    /// milliseconds since the epoch.
    pub created_ms: u64,
    /// See `created_ms`.
    pub started_ms: Option<u64>,
    /// See `created_ms`.
    pub finished_ms: Option<u64>,
    /// Times it was started (more than 1: a restart interrupted it).
    pub attempts: u32,
    /// The admin token that made it.
    pub by: String,
    /// The admin call that made it.
    pub request_id: String,
}

impl Job {
    /// Its JSON for the API: inline secrets redacted, timings added; without
    /// its output when `brief`.
    pub fn public(&self, brief: bool) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(secrets) = v
            .pointer_mut("/request/grants/secrets")
            .and_then(|s| s.as_object_mut())
        {
            for value in secrets.values_mut().filter(|s| s.is_string()) {
                *value = "<redacted>".into();
            }
        }
        let queued = self.started_ms.map(|s| s.saturating_sub(self.created_ms));
        let ran = self
            .started_ms
            .zip(self.finished_ms)
            .map(|(s, f)| f.saturating_sub(s));
        v["queued_ms"] = queued.into();
        v["run_ms"] = ran.into();
        if let Some(o) = v.as_object_mut() {
            o.remove("base");
            if brief {
                for k in ["stdout", "stderr", "request"] {
                    o.remove(k);
                }
            }
        }
        v
    }
}

/// The jobs of one data directory.
#[derive(Clone)]
pub struct JobStore {
    path: PathBuf,
}

impl JobStore {
    /// The jobs kept in `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(FILE),
        }
    }

    /// Every job.
    pub fn all(&self) -> Result<Vec<Job>> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        let db = self.open()?;
        let txn = db.begin_read()?;
        let table = match txn.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (id, json) = entry?;
            out.push(
                serde_json::from_str(json.value())
                    .with_context(|| format!("{}: job `{}`", self.path.display(), id.value()))?,
            );
        }
        Ok(out)
    }

    /// Job `id`, if there is one.
    pub fn get(&self, id: &str) -> Result<Option<Job>> {
        if !self.path.exists() {
            return Ok(None);
        }
        let db = self.open()?;
        let txn = db.begin_read()?;
        let table = match txn.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match table.get(id)? {
            Some(json) => Ok(Some(serde_json::from_str(json.value())?)),
            None => Ok(None),
        }
    }

    /// Writes `job`, durably.
    pub fn save(&self, job: &Job) -> Result<()> {
        let json = serde_json::to_string(job)?;
        let db = self.open()?;
        let txn = db.begin_write()?;
        txn.open_table(TABLE)?
            .insert(job.id.as_str(), json.as_str())?;
        txn.commit()?;
        Ok(())
    }

    /// Removes the jobs `ids`.
    pub fn remove(&self, ids: &[String]) -> Result<()> {
        let db = self.open()?;
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(TABLE)?;
            for id in ids {
                table.remove(id.as_str())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn open(&self) -> Result<redb::Database> {
        crate::platform::database::open(&self.path, "the jobs")
    }
}
