//! Each live deployment's revisions, durable in `<data-dir>/deployments.redb`
//! (redb; a change is committed, with fsync, before the admin call that made
//! it is answered). The database is opened for each read or write and closed
//! after, so servers that share a data directory without changing
//! deployments never contend for its lock.

use anyhow::{Context, Result};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Deployment name → its revisions, as JSON.
const TABLE: TableDefinition<&str, &str> = TableDefinition::new("deployments");
/// The database's file in the data directory.
pub const FILE: &str = "deployments.redb";

/// What a revision did.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Deployed a spec (new or replacing).
    Deploy,
    /// Restored an earlier revision's spec.
    Rollback,
    /// Took the deployment out of service.
    Undeploy,
}

/// What a revision serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Served {
    /// A spec given to the admin API (its relative paths are relative to `base`).
    Spec {
        /// The deployment, as JSON with a deployment table's keys.
        spec: serde_json::Value,
        /// The server's working directory when it was given.
        base: PathBuf,
    },
    /// The spec the server was started with (deployment file or command
    /// line): revision 0.
    Seed,
    /// Nothing: undeployed.
    Nothing,
}

/// One change of a deployment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Revision {
    /// 1, 2, ... per deployment (0 is the start-up spec).
    pub revision: u64,
    /// What it did.
    pub action: Action,
    /// What it serves.
    pub served: Served,
    /// For a rollback, the revision it restored.
    pub from: Option<u64>,
    /// When, in milliseconds since the epoch.
    pub time_ms: u64,
    /// The admin token's id.
    pub by: String,
    /// The admin call's request id.
    pub request_id: String,
}

impl Revision {
    /// Its JSON for the admin API, inline secret values and a Redis
    /// password redacted.
    pub fn public(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(url) = v.pointer_mut("/served/spec/keyvalue/backend")
            && let Some(text) = url.as_str()
        {
            *url = crate::keyvalue::redis::shown(text).into();
        }
        if let Some(secrets) = v
            .pointer_mut("/served/spec/grants/secrets")
            .and_then(|s| s.as_object_mut())
        {
            for value in secrets.values_mut().filter(|s| s.is_string()) {
                *value = "<redacted>".into();
            }
        }
        v
    }
}

/// The revisions in one data directory.
#[derive(Clone)]
pub struct History {
    path: PathBuf,
}

impl History {
    /// The history kept in `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(FILE),
        }
    }

    /// Every deployment's revisions, oldest first (none before the first change).
    pub fn load(&self) -> Result<BTreeMap<String, Vec<Revision>>> {
        if !self.path.exists() {
            return Ok(BTreeMap::new());
        }
        let db = self.open()?;
        let txn = db.begin_read()?;
        let table = match txn.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
            Err(e) => return Err(e.into()),
        };
        let mut all = BTreeMap::new();
        for entry in table.iter()? {
            let (name, json) = entry?;
            let revisions: Vec<Revision> =
                serde_json::from_str(json.value()).with_context(|| {
                    format!("{}: deployment `{}`", self.path.display(), name.value())
                })?;
            all.insert(name.value().to_string(), revisions);
        }
        Ok(all)
    }

    /// Replaces `name`'s revisions with `revisions`, durably.
    pub fn save(&self, name: &str, revisions: &[Revision]) -> Result<()> {
        let json = serde_json::to_string(revisions)?;
        let db = self.open()?;
        let txn = db.begin_write()?;
        txn.open_table(TABLE)?.insert(name, json.as_str())?;
        txn.commit()?;
        Ok(())
    }

    fn open(&self) -> Result<Database> {
        crate::platform::database::open(&self.path, "the deployment history")
    }
}
