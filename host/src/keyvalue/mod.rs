//! `wasi:keyvalue@0.2.0-draft` (store, atomics, batch) over one embedded
//! ACID database (redb) on disk, shared by every instance of the server.
//!
//! Buckets belong to tenants: `open(identifier)` opens the caller's tenant's
//! bucket of that name, so no component can reach another tenant's data.
//! Reads run in place; writes go to one writer thread that commits the
//! writes of all waiting instances together and answers each only once its
//! transaction is durable (fsync), so an acknowledged write survives a crash.
//!
//! Buckets named `volatile:…` live in the server's memory instead
//! ([`volatile`]): shared and atomic, but not durable. A deployment may keep
//! its buckets (all, or those it lists) in a Redis instead ([`redis`]), so
//! that replicas share them.
//!
//! Lifecycle (`crate::assembly::capabilities`): one [`Keyvalue`] per server
//! (its database opens on first use, so a server whose guests never open a
//! durable bucket does not claim the data directory; the assembly opens it
//! at start-up for deployments that import `wasi:keyvalue`, so errors show
//! then), a [`KeyvalueCtx`] per deployment and instance (the tenant's name),
//! bucket handles in the instance's resource table.

#[allow(missing_docs)]
pub mod bindings;
pub mod chain;
pub mod durable;
mod error;
pub mod redis;
mod types;
mod types_impl;
pub mod volatile;

pub use durable::{Durable, Reader};
pub use types::{Bucket, Store};
pub use volatile::Volatile;

use crate::assembly::capabilities::{
    Capability, DeploymentEnv, InstanceEnv, InstanceState, ServerEnv,
};
use crate::platform::metrics::{DeploymentLabel, Metrics};
use prometheus_client::metrics::histogram::Histogram;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use wasmtime::component::{HasData, Linker, ResourceTable};

/// Longest bucket identifier accepted, in bytes.
pub const MAX_IDENTIFIER: usize = 256;
/// Longest key accepted, in bytes.
pub const MAX_KEY: usize = 4096;
/// Largest value accepted, in bytes.
pub const MAX_VALUE: usize = 16 << 20;

/// The server's keyvalue stores.
pub struct Keyvalue {
    stores: Arc<Stores>,
    metrics: Arc<Metrics>,
    /// Redis clients by URL, one per server that deployments name.
    redis: Mutex<HashMap<String, Arc<redis::Redis>>>,
}

/// The durable store (opened once, on first use) and the volatile one.
pub struct Stores {
    dir: Option<PathBuf>,
    durable: OnceLock<Result<Durable, String>>,
    volatile: Volatile,
}

impl Stores {
    /// The durable store, opened now if it is not yet; `None` on a server
    /// without a data directory (a job).
    pub fn durable(&self) -> Option<Result<&Durable, &str>> {
        let dir = self.dir.as_ref()?;
        let opened = self.durable.get_or_init(|| {
            let store = Durable::open(dir).map_err(|e| format!("{e:#}"))?;
            tracing::info!("keyvalue store: {}", store.path().display());
            Ok(store)
        });
        Some(opened.as_ref().map_err(String::as_str))
    }
}

impl Keyvalue {
    /// Opens the durable store now (a deployment imports `wasi:keyvalue`),
    /// so that a store that cannot open stops the server at start-up.
    pub fn open_durable(&self) -> anyhow::Result<()> {
        match self.stores.durable() {
            Some(Err(e)) => Err(anyhow::anyhow!("{e}")),
            _ => Ok(()),
        }
    }
}

impl Keyvalue {
    /// Writes `value` at `key` in `tenant`'s bucket `bucket` and waits until
    /// it is durable: the host's own records (the admin API's audit of a
    /// job; a deployment's go through [`KeyvalueCtx::record_audit`]).
    pub async fn record(
        &self,
        tenant: &str,
        bucket: &str,
        key: String,
        value: Vec<u8>,
    ) -> anyhow::Result<()> {
        self.stores
            .record(table_name(tenant, bucket), key, value)
            .await
    }
}

impl Stores {
    /// Writes one record to the durable store and waits until it is durable.
    async fn record(&self, table: String, key: String, value: Vec<u8>) -> anyhow::Result<()> {
        let db = match self.durable() {
            Some(Ok(d)) => d,
            Some(Err(e)) => anyhow::bail!("{e}"),
            None => anyhow::bail!("this server has no data directory"),
        };
        db.write(table, vec![durable::Write::Set(key, value)])
            .await
            .map(drop)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

impl Capability for Keyvalue {
    type Deployment = KeyvalueCtx;
    type Instance = KeyvalueCtx;

    fn new(env: &ServerEnv) -> anyhow::Result<Self> {
        Ok(Keyvalue {
            stores: Arc::new(Stores {
                dir: env.data_dir.clone(),
                durable: OnceLock::new(),
                volatile: Volatile::default(),
            }),
            metrics: env.metrics.clone(),
            redis: Mutex::default(),
        })
    }

    fn add_to_linker(linker: &mut Linker<InstanceState>) -> anyhow::Result<()> {
        add_to_linker(linker)
    }

    fn deployment(&self, env: &DeploymentEnv) -> anyhow::Result<KeyvalueCtx> {
        let remote = match env.keyvalue {
            None => None,
            Some(backend) => {
                let mut clients = self.redis.lock().unwrap_or_else(|p| p.into_inner());
                let redis = match clients.get(&backend.url) {
                    Some(r) => r.clone(),
                    None => {
                        let r = Arc::new(redis::Redis::new(&backend.url, self.stores.dir.clone())?);
                        r.check();
                        clients.insert(backend.url.clone(), r.clone());
                        r
                    }
                };
                Some(Arc::new(Remote {
                    redis,
                    buckets: backend.buckets.clone(),
                }))
            }
        };
        Ok(KeyvalueCtx {
            stores: self.stores.clone(),
            remote,
            tenant: env.tenant.into(),
            writes: Arc::new(WriteStats {
                label: DeploymentLabel::new(env.tenant, env.name),
                audit_table: table_name(env.tenant, AUDIT_BUCKET),
                metrics: self.metrics.clone(),
                all: OnceLock::new(),
                audit: OnceLock::new(),
            }),
        })
    }

    fn instance(ctx: &KeyvalueCtx, _: &InstanceEnv) -> anyhow::Result<KeyvalueCtx> {
        Ok(ctx.clone())
    }
}

/// A deployment's (and its instances') `wasi:keyvalue` state.
#[derive(Clone)]
pub struct KeyvalueCtx {
    stores: Arc<Stores>,
    /// The Redis its buckets live in, if the deployment names one.
    remote: Option<Arc<Remote>>,
    tenant: Arc<str>,
    writes: Arc<WriteStats>,
}

/// A deployment's Redis, and which of its buckets live there.
struct Remote {
    redis: Arc<redis::Redis>,
    /// Identifiers kept in Redis; `None`: every bucket.
    buckets: Option<Vec<String>>,
}

impl KeyvalueCtx {
    /// Where the bucket `identifier` lives for this deployment.
    fn store_of(&self, identifier: &str) -> Store {
        match &self.remote {
            Some(r)
                if r.buckets
                    .as_ref()
                    .is_none_or(|b| b.iter().any(|b| b == identifier)) =>
            {
                Store::Redis(r.redis.clone())
            }
            _ if identifier.starts_with(volatile::PREFIX) => Store::Volatile,
            _ => Store::Durable,
        }
    }

    /// Writes `value` at `key` in this deployment's audit bucket, where the
    /// deployment keeps it (its Redis, else the server's database), durably
    /// and chained like its guests' records: the host's own records of the
    /// deployment (admin API changes).
    pub async fn record_audit(&self, key: String, value: Vec<u8>) -> anyhow::Result<()> {
        let table = table_name(&self.tenant, AUDIT_BUCKET);
        match self.store_of(AUDIT_BUCKET) {
            Store::Redis(r) => r
                .write(&table, vec![durable::Write::Set(key, value)])
                .await
                .map(drop)
                .map_err(|e| anyhow::anyhow!("{e}")),
            _ => self.stores.record(table, key, value).await,
        }
    }
}

/// The bucket whose writes also count as audit records (the `audit`
/// component's).
const AUDIT_BUCKET: &str = "audit";

/// A deployment's durable-write latencies, its series made on first use.
struct WriteStats {
    label: DeploymentLabel,
    audit_table: String,
    metrics: Arc<Metrics>,
    all: OnceLock<Histogram>,
    audit: OnceLock<Histogram>,
}

impl WriteStats {
    /// Whether `table` is the deployment's audit bucket.
    fn is_audit(&self, table: &str) -> bool {
        table == self.audit_table
    }

    /// Records a durable write (to the audit bucket or not) that took
    /// `secs` to commit.
    fn observe(&self, audit: bool, secs: f64) {
        let m = &self.metrics;
        self.all
            .get_or_init(|| m.keyvalue_writes.get_or_create(&self.label).clone())
            .observe(secs);
        if audit {
            self.audit
                .get_or_init(|| m.audit_writes.get_or_create(&self.label).clone())
                .observe(secs);
        }
    }
}

impl KeyvalueStateView for InstanceState {
    fn keyvalue(&mut self) -> KeyvalueView<'_> {
        KeyvalueView {
            table: &mut self.table,
            ctx: &self.caps.keyvalue,
        }
    }
}

/// The name of `tenant`'s bucket `identifier` in the database. The tenant's
/// length comes first, so no pair of (tenant, identifier) maps onto another.
pub fn table_name(tenant: &str, identifier: &str) -> String {
    format!("kv/{}/{tenant}/{identifier}", tenant.len())
}

/// The (tenant, identifier) a table name belongs to, if it is a bucket's.
pub fn parse_table_name(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix("kv/")?;
    let (len, rest) = rest.split_once('/')?;
    let len: usize = len.parse().ok()?;
    let tenant = rest.get(..len)?;
    let identifier = rest.get(len..)?.strip_prefix('/')?;
    Some((tenant, identifier))
}

/// What the `wasi:keyvalue` host functions operate on.
pub struct KeyvalueView<'a> {
    /// The instance's resource table.
    pub table: &'a mut ResourceTable,
    /// The instance's keyvalue state.
    pub ctx: &'a KeyvalueCtx,
}

/// Types with keyvalue state in their store data.
pub trait KeyvalueStateView: Send {
    /// The view the host functions use.
    fn keyvalue(&mut self) -> KeyvalueView<'_>;
}

struct HasKeyvalue;

impl HasData for HasKeyvalue {
    type Data<'a> = KeyvalueView<'a>;
}

/// Adds `wasi:keyvalue` (store, atomics, batch) to `linker`.
pub fn add_to_linker<T: KeyvalueStateView + 'static>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    bindings::Imports::add_to_linker::<T, HasKeyvalue>(linker, T::keyvalue)
        .map_err(anyhow::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_round_trip_and_never_collide() {
        for (t, i) in [("acme", "audit"), ("a/b", "c"), ("a", "b/c"), ("", "")] {
            assert_eq!(parse_table_name(&table_name(t, i)), Some((t, i)));
        }
        assert_ne!(table_name("a/b", "c"), table_name("a", "b/c"));
        assert_eq!(parse_table_name("other"), None);
    }
}
