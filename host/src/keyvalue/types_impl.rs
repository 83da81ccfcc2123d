//! The `wasi:keyvalue` host traits: store, atomics and batch.

use super::bindings::wasi::keyvalue::{atomics, batch, store};
use super::durable::Write;
use super::error::{check_batch, check_key, check_value, durable, other};
use super::types::{Bucket, Store};
use super::{KeyvalueView, MAX_IDENTIFIER, table_name};
use crate::platform::telemetry::Span;
use store::{Error, KeyResponse};
use wasmtime::component::Resource;

type Answer<T> = wasmtime::Result<Result<T, Error>>;

impl KeyvalueView<'_> {
    fn bucket(&self, b: &Resource<Bucket>) -> wasmtime::Result<Bucket> {
        Ok(self.table.get(b)?.clone())
    }

    fn db(&self) -> Result<&super::Durable, Error> {
        durable(&self.ctx.stores)
    }

    /// Reads `keys` of `b` (Redis's in the returned future, which holds
    /// only the store; the others at once).
    fn read(
        &self,
        op: &'static str,
        b: &Bucket,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>, Error>> + Send + 'static {
        let span = span(op, b);
        let (now, redis) = match &b.store {
            Store::Volatile => (Ok(self.ctx.stores.volatile.get_many(&b.table, keys)), None),
            Store::Durable => (
                self.db()
                    .and_then(|db| db.get_many(&b.table, keys).map_err(unread)),
                None,
            ),
            Store::Redis(r) => (
                Ok(Vec::new()),
                Some((r.clone(), b.table.clone(), keys.to_vec())),
            ),
        };
        async move {
            match redis {
                None => now,
                Some((r, table, keys)) => {
                    span.over(r.get_many(&table, &keys)).await.map_err(unread)
                }
            }
        }
    }

    /// A page of `b`'s keys, as [`Self::read`] reads.
    fn list(
        &self,
        b: &Bucket,
        skip: u64,
    ) -> impl Future<Output = Result<(Vec<String>, bool), Error>> + Send + 'static {
        let span = span("list-keys", b);
        let (now, redis) = match &b.store {
            Store::Volatile => (Ok(self.ctx.stores.volatile.keys(&b.table, skip)), None),
            Store::Durable => (
                self.db()
                    .and_then(|db| db.keys(&b.table, skip).map_err(unread)),
                None,
            ),
            Store::Redis(r) => (Ok((Vec::new(), false)), Some((r.clone(), b.table.clone()))),
        };
        async move {
            match redis {
                None => now,
                Some((r, table)) => span.over(r.keys(&table, skip)).await.map_err(unread),
            }
        }
    }

    /// Applies `writes` (volatile buckets at once; durable ones once
    /// committed); the returned future holds only the store, not the view.
    fn write(
        &self,
        op: &'static str,
        b: Bucket,
        writes: Vec<Write>,
    ) -> impl Future<Output = Result<Option<u64>, Error>> + Send + 'static {
        let stores = self.ctx.stores.clone();
        let stats = self.ctx.writes.clone();
        let span = span(op, &b);
        span.over(async move {
            let started = std::time::Instant::now();
            let audit = stats.is_audit(&b.table);
            let written = match &b.store {
                Store::Volatile => return stores.volatile.write(&b.table, writes).map_err(other),
                Store::Durable => durable(&stores)?.write(b.table, writes).await,
                Store::Redis(r) => r.write(&b.table, writes).await,
            };
            stats.observe(audit, started.elapsed().as_secs_f64());
            written.map_err(other)
        })
    }
}

/// A failed read, logged here with its cause; the guest gets `other`.
fn unread(e: anyhow::Error) -> Error {
    tracing::error!("keyvalue read failed: {e:#}");
    other("the store could not be read")
}

/// A span for one `wasi:keyvalue` call that reaches the store.
fn span(op: &'static str, b: &Bucket) -> Span {
    let span = Span::child(match op {
        "get" => "wasi:keyvalue get",
        "exists" => "wasi:keyvalue exists",
        "get-many" => "wasi:keyvalue get-many",
        "list-keys" => "wasi:keyvalue list-keys",
        "set" => "wasi:keyvalue set",
        "delete" => "wasi:keyvalue delete",
        "increment" => "wasi:keyvalue increment",
        "set-many" => "wasi:keyvalue set-many",
        _ => "wasi:keyvalue delete-many",
    });
    if !span.is_recording() {
        return span;
    }
    span.with("db.system.name", b.store.system())
        .with("db.operation.name", op)
        .with("db.collection.name", b.table.clone())
}

impl store::Host for KeyvalueView<'_> {
    async fn open(&mut self, identifier: String) -> Answer<Resource<Bucket>> {
        let store = self.ctx.store_of(&identifier);
        if matches!(store, Store::Durable)
            && let Err(e) = self.db()
        {
            return Ok(Err(e));
        }
        if identifier.len() > MAX_IDENTIFIER {
            return Ok(Err(other(format!(
                "bucket identifiers are at most {MAX_IDENTIFIER} bytes"
            ))));
        }
        let table = table_name(&self.ctx.tenant, &identifier);
        Ok(Ok(self.table.push(Bucket { table, store })?))
    }
}

impl store::HostBucket for KeyvalueView<'_> {
    async fn get(&mut self, b: Resource<Bucket>, key: String) -> Answer<Option<Vec<u8>>> {
        let table = self.bucket(&b)?;
        if let Err(e) = check_key(&key) {
            return Ok(Err(e));
        }
        let keys = std::slice::from_ref(&key);
        Ok(self
            .read("get", &table, keys)
            .await
            .map(|mut v| v.pop().flatten()))
    }

    async fn set(&mut self, b: Resource<Bucket>, key: String, value: Vec<u8>) -> Answer<()> {
        let table = self.bucket(&b)?;
        if let Err(e) = check_key(&key).and_then(|()| check_value(&value)) {
            return Ok(Err(e));
        }
        Ok(self
            .write("set", table, vec![Write::Set(key, value)])
            .await
            .map(drop))
    }

    async fn delete(&mut self, b: Resource<Bucket>, key: String) -> Answer<()> {
        let table = self.bucket(&b)?;
        if let Err(e) = check_key(&key) {
            return Ok(Err(e));
        }
        Ok(self
            .write("delete", table, vec![Write::Delete(key)])
            .await
            .map(drop))
    }

    async fn exists(&mut self, b: Resource<Bucket>, key: String) -> Answer<bool> {
        let table = self.bucket(&b)?;
        if let Err(e) = check_key(&key) {
            return Ok(Err(e));
        }
        let keys = std::slice::from_ref(&key);
        Ok(self
            .read("exists", &table, keys)
            .await
            .map(|v| v.first().is_some_and(Option::is_some)))
    }

    async fn list_keys(&mut self, b: Resource<Bucket>, cursor: Option<u64>) -> Answer<KeyResponse> {
        let table = self.bucket(&b)?;
        let skip = cursor.unwrap_or(0);
        Ok(self
            .list(&table, skip)
            .await
            .map(|(keys, more)| KeyResponse {
                cursor: more.then(|| skip + keys.len() as u64),
                keys,
            }))
    }

    async fn drop(&mut self, b: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl atomics::Host for KeyvalueView<'_> {
    async fn increment(&mut self, b: Resource<Bucket>, key: String, delta: u64) -> Answer<u64> {
        let table = self.bucket(&b)?;
        if let Err(e) = check_key(&key) {
            return Ok(Err(e));
        }
        Ok(self
            .write("increment", table, vec![Write::Increment(key, delta)])
            .await
            .and_then(|n| n.ok_or_else(|| other("the increment returned no value"))))
    }
}

impl batch::Host for KeyvalueView<'_> {
    async fn get_many(
        &mut self,
        b: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Answer<Vec<Option<(String, Vec<u8>)>>> {
        let table = self.bucket(&b)?;
        if let Err(e) =
            check_batch(keys.len()).and_then(|()| keys.iter().try_for_each(|k| check_key(k)))
        {
            return Ok(Err(e));
        }
        Ok(self.read("get-many", &table, &keys).await.map(|values| {
            keys.into_iter()
                .zip(values)
                .map(|(k, v)| v.map(|v| (k, v)))
                .collect()
        }))
    }

    async fn set_many(&mut self, b: Resource<Bucket>, pairs: Vec<(String, Vec<u8>)>) -> Answer<()> {
        let table = self.bucket(&b)?;
        let checked = check_batch(pairs.len()).and_then(|()| {
            pairs
                .iter()
                .try_for_each(|(k, v)| check_key(k).and_then(|()| check_value(v)))
        });
        if let Err(e) = checked {
            return Ok(Err(e));
        }
        let writes = pairs.into_iter().map(|(k, v)| Write::Set(k, v)).collect();
        Ok(self.write("set-many", table, writes).await.map(drop))
    }

    async fn delete_many(&mut self, b: Resource<Bucket>, keys: Vec<String>) -> Answer<()> {
        let table = self.bucket(&b)?;
        if let Err(e) =
            check_batch(keys.len()).and_then(|()| keys.iter().try_for_each(|k| check_key(k)))
        {
            return Ok(Err(e));
        }
        let writes = keys.into_iter().map(Write::Delete).collect();
        Ok(self.write("delete-many", table, writes).await.map(drop))
    }
}
