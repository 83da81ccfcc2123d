//! Host state behind `wasi:keyvalue` handles.

use std::sync::Arc;

/// An open bucket: the table of one tenant's bucket, and where it lives.
#[derive(Clone)]
pub struct Bucket {
    /// The table's name ([`super::table_name`]).
    pub table: String,
    /// Its store.
    pub store: Store,
}

/// Where a bucket lives.
#[derive(Clone)]
pub enum Store {
    /// The server's database (redb).
    Durable,
    /// The server's memory (`volatile:…` identifiers).
    Volatile,
    /// A Redis named by the deployment (`[deployment.keyvalue]`).
    Redis(Arc<super::redis::Redis>),
}

impl Store {
    /// Its `db.system.name` in traces.
    pub fn system(&self) -> &'static str {
        match self {
            Store::Durable => "redb",
            Store::Volatile => "tensor-wasm-volatile",
            Store::Redis(_) => "redis",
        }
    }
}
