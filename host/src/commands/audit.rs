//! `tensor-wasm audit tail|query|verify`: reads the audit records the
//! gateway's `audit` component wrote to each tenant's `audit` bucket, from
//! the keyvalue database (read-only: a running server may go on writing)
//! or from the Redis that replicas share.

use crate::keyvalue::redis::block_on as redis_block_on;
use crate::keyvalue::{Reader, parse_table_name};
use anyhow::{Result, anyhow};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The bucket the `audit` component writes to.
pub const BUCKET: &str = "audit";

/// Which records to show.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// Only this tenant's.
    pub tenant: Option<String>,
    /// Only records at or after this time (ns since the epoch).
    pub since_ns: Option<u64>,
    /// Only the record of this request.
    pub request_id: Option<String>,
}

/// One record: its time (from its key) and its JSON text.
#[derive(Debug, Clone)]
pub struct Record {
    /// Nanoseconds since the epoch.
    pub time_ns: u64,
    /// The request id in its key.
    pub request_id: String,
    /// The JSON record.
    pub json: String,
}

/// Where the records are: a server's data directory, or the Redis that
/// replicas keep their audit buckets in.
#[derive(Debug, Clone)]
pub enum Source {
    /// The embedded store in this data directory.
    Embedded(PathBuf),
    /// The Redis at this URL.
    Redis(String),
}

impl Source {
    /// `--redis URL` if given, else the data directory (`--data-dir`, or
    /// `serve`'s default).
    pub fn of(redis: Option<String>, data_dir: Option<PathBuf>) -> Result<Source> {
        Ok(match redis {
            Some(url) => Source::Redis(url),
            None => Source::Embedded(crate::platform::dirs::data_dir(data_dir.as_ref())?),
        })
    }
}

/// A bucket's entries (key, value), in key order.
type Entries = Vec<(String, Vec<u8>)>;

/// Each audited tenant's records in `source` (only `tenant`'s, if given).
fn buckets(source: &Source, tenant: Option<&str>) -> Result<Vec<Entries>> {
    let wanted = |t: &str| tenant.is_none_or(|only| only == t);
    match source {
        Source::Embedded(dir) => {
            let reader = Reader::open(dir)?;
            if let Some(note) = &reader.note {
                eprintln!("note: {note}");
            }
            let mut out = Vec::new();
            for table in reader.tables()? {
                if parse_table_name(&table).is_some_and(|(t, b)| b == BUCKET && wanted(t)) {
                    out.push(reader.entries(&table)?);
                }
            }
            Ok(out)
        }
        Source::Redis(url) => {
            let (redis, tenants) = redis_tenants(url, tenant)?;
            tenants
                .iter()
                .map(|t| redis_block_on(redis.entries(&crate::keyvalue::table_name(t, BUCKET))))
                .collect()
        }
    }
}

/// The Redis at `url` and its audited tenants (only `tenant`, if given).
fn redis_tenants(
    url: &str,
    tenant: Option<&str>,
) -> Result<(crate::keyvalue::redis::Redis, Vec<String>)> {
    let redis = crate::keyvalue::redis::Redis::new(url, None)?;
    let mut tenants = redis_block_on(redis.audited_tenants())?;
    tenants.retain(|t| tenant.is_none_or(|only| only == t));
    Ok((redis, tenants))
}

/// The records in `source` that pass `filter`, oldest first.
pub fn records(source: &Source, filter: &Filter) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for entries in buckets(source, filter.tenant.as_deref())? {
        for (key, value) in entries {
            let Some((time, id)) = key.split_once('-') else {
                continue;
            };
            let Ok(time_ns) = time.parse::<u64>() else {
                continue;
            };
            if filter.since_ns.is_some_and(|s| time_ns < s)
                || filter.request_id.as_deref().is_some_and(|r| r != id)
            {
                continue;
            }
            out.push(Record {
                time_ns,
                request_id: id.to_string(),
                json: String::from_utf8_lossy(&value).into_owned(),
            });
        }
    }
    out.sort_by(|a, b| (a.time_ns, &a.request_id).cmp(&(b.time_ns, &b.request_id)));
    Ok(out)
}

/// Parses `--since`: a duration ago (`10m`, `2h`) or an RFC 3339 time.
pub fn parse_since(text: &str) -> Result<u64> {
    let when = match humantime::parse_duration(text) {
        Ok(ago) => SystemTime::now()
            .checked_sub(ago)
            .ok_or_else(|| anyhow!("--since {text}: too long ago"))?,
        Err(_) => humantime::parse_rfc3339_weak(text).map_err(|_| {
            anyhow!(
                "--since {text}: expected a duration (10m, 2h) or a time (2026-12-01T10:00:00Z)"
            )
        })?,
    };
    Ok(when
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos()
        .min(u128::from(u64::MAX)) as u64)
}

/// `tensor-wasm audit tail`: the last `n` records, oldest first.
pub fn tail(source: &Source, tenant: Option<String>, n: usize) -> Result<()> {
    let all = records(
        source,
        &Filter {
            tenant,
            ..Filter::default()
        },
    )?;
    for r in &all[all.len().saturating_sub(n)..] {
        println!("{}", r.json);
    }
    Ok(())
}

/// `tensor-wasm audit query`: every record that passes `filter`.
pub fn query(source: &Source, filter: &Filter) -> Result<()> {
    for r in records(source, filter)? {
        println!("{}", r.json);
    }
    Ok(())
}

/// `tensor-wasm audit verify`: walks each tenant's audit chain against its
/// records; exit status 1 when one does not agree.
pub fn verify(data_dir: &Path, tenant: Option<&str>) -> Result<u8> {
    use crate::keyvalue::chain::{self, Secret};
    let reader = Reader::open(data_dir)?;
    if let Some(note) = &reader.note {
        eprintln!("note: {note}");
    }
    let secret = Secret::load(data_dir, false)?;
    let tables = reader.tables()?;
    let tenants: std::collections::BTreeSet<&str> = tables
        .iter()
        .filter_map(|t| chain::audited_tenant(t).or_else(|| chain::chain_tenant(t)))
        .filter(|t| tenant.is_none_or(|only| only == *t))
        .collect();
    let checked = tenants.into_iter().map(|t| {
        let records = reader.entries(&crate::keyvalue::table_name(t, BUCKET))?;
        Ok((t.to_string(), reader.chain(t)?, records))
    });
    report(&secret, tenant, checked)
}

/// `tensor-wasm audit verify --redis URL`: the same, for the chains that
/// replicas keep in a shared Redis (keyed by the data directory's key).
pub fn verify_redis(url: &str, data_dir: &Path, tenant: Option<&str>) -> Result<u8> {
    let secret = crate::keyvalue::chain::Secret::load(data_dir, false)?;
    let (redis, tenants) = redis_tenants(url, tenant)?;
    let checked = tenants.into_iter().map(|t| {
        let records = redis_block_on(redis.entries(&crate::keyvalue::table_name(&t, BUCKET)))?;
        let chain = redis_block_on(redis.chain(&t))?;
        Ok((t, chain, records))
    });
    report(&secret, tenant, checked)
}

/// A tenant, its chain and its records.
type Checked = (String, crate::keyvalue::chain::Entries, Entries);

/// Prints each tenant's verdict; 1 when one is broken.
fn report(
    secret: &crate::keyvalue::chain::Secret,
    tenant: Option<&str>,
    tenants: impl Iterator<Item = Result<Checked>>,
) -> Result<u8> {
    use crate::keyvalue::chain::{self, Verdict};
    let (mut seen, mut broken) = (0, 0);
    for checked in tenants {
        let (t, entries, records) = checked?;
        seen += 1;
        match chain::verify(secret, &t, &entries, &records.into_iter().collect()) {
            Verdict::Intact { records, entries } => {
                println!("tenant `{t}`: {records} records, {entries} chain entries: intact")
            }
            Verdict::Broken(why) => {
                broken += 1;
                println!("tenant `{t}`: BROKEN: {why}");
            }
        }
    }
    if seen == 0 {
        println!(
            "no audit records{}",
            tenant.map_or(String::new(), |t| format!(" for tenant `{t}`"))
        );
    }
    Ok(u8::from(broken > 0))
}
