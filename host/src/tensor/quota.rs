//! Per-tenant tensor-memory accounting: every tensor's bytes are charged to
//! its tenant when created and released when its last handle drops.

use super::error::{TResult, TensorError};
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One tenant's cap and current use.
#[derive(Debug)]
pub struct Quota {
    limit: u64,
    used: AtomicU64,
    gauge: Gauge,
}

impl Quota {
    /// A quota of `limit` bytes reported through `gauge`.
    pub fn new(limit: u64, gauge: Gauge) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
            gauge,
        }
    }

    /// The cap in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Charges `bytes`, or fails with `QuotaExceeded` leaving the quota unchanged.
    pub fn charge(self: &Arc<Self>, bytes: u64) -> TResult<Charge> {
        let mut current = self.used.load(Ordering::Relaxed);
        loop {
            let next = current.saturating_add(bytes);
            if next > self.limit {
                return Err(TensorError::QuotaExceeded {
                    requested: bytes,
                    in_use: current,
                    limit: self.limit,
                });
            }
            match self.used.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
        self.gauge.inc_by(bytes as i64);
        Ok(Charge {
            quota: self.clone(),
            bytes,
        })
    }
}

/// Bytes charged to a quota, given back on drop.
#[derive(Debug)]
pub struct Charge {
    quota: Arc<Quota>,
    bytes: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.quota.used.fetch_sub(self.bytes, Ordering::AcqRel);
        self.quota.gauge.dec_by(self.bytes as i64);
    }
}

/// The quotas of all tenants on this server, one per tenant name.
#[derive(Debug, Default)]
pub struct Quotas {
    by_tenant: Mutex<HashMap<String, Arc<Quota>>>,
}

impl Quotas {
    /// The quota of `tenant`, created with `limit` on first use. Deployments of
    /// one tenant share it; they must agree on the limit.
    pub fn get(
        &self,
        tenant: &str,
        limit: u64,
        gauge: impl FnOnce() -> Gauge,
    ) -> anyhow::Result<Arc<Quota>> {
        let mut map = self.by_tenant.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = map.get(tenant) {
            if q.limit != limit {
                anyhow::bail!(
                    "tenant `{tenant}`: deployments disagree on `tensor-memory` ({} vs {limit} bytes)",
                    q.limit
                );
            }
            return Ok(q.clone());
        }
        let q = Arc::new(Quota::new(limit, gauge()));
        map.insert(tenant.to_string(), q.clone());
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_and_releases() {
        let q = Arc::new(Quota::new(100, Gauge::default()));
        let a = q.charge(60).unwrap();
        let err = q.charge(41).unwrap_err();
        assert_eq!(
            err,
            TensorError::QuotaExceeded {
                requested: 41,
                in_use: 60,
                limit: 100
            }
        );
        let b = q.charge(40).unwrap();
        assert_eq!(q.used(), 100);
        drop(a);
        drop(b);
        assert_eq!(q.used(), 0);
        assert_eq!(q.gauge.get(), 0);
    }
}
