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
//! ([`volatile`]): shared and atomic, but not durable.
//!
//! Lifecycle (the same for every capability): one [`Store`] per server, a
//! [`KeyvalueCtx`] per instance in the `Store` data (the tenant's name and
//! the database), bucket handles in the instance's resource table.

#[allow(missing_docs)]
pub mod bindings;
pub mod store;
mod types;
mod types_impl;
pub mod volatile;

pub use store::{Reader, Store};
pub use types::Bucket;
pub use volatile::Volatile;

use std::sync::Arc;
use wasmtime::component::{HasData, Linker, ResourceTable};

/// Longest bucket identifier accepted, in bytes.
pub const MAX_IDENTIFIER: usize = 256;
/// Longest key accepted, in bytes.
pub const MAX_KEY: usize = 4096;
/// Largest value accepted, in bytes.
pub const MAX_VALUE: usize = 16 << 20;

/// Per-instance `wasi:keyvalue` state.
#[derive(Clone)]
pub struct KeyvalueCtx {
    store: Option<Arc<Store>>,
    volatile: Arc<Volatile>,
    tenant: Arc<str>,
}

impl KeyvalueCtx {
    /// An instance of `tenant`'s, over `store` (`None`: opening a durable
    /// bucket fails with `no-such-store`) and the server's volatile buckets.
    pub fn new(store: Option<Arc<Store>>, volatile: Arc<Volatile>, tenant: Arc<str>) -> Self {
        Self {
            store,
            volatile,
            tenant,
        }
    }

    /// The tenant whose buckets this instance opens.
    pub fn tenant(&self) -> &str {
        &self.tenant
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
