//! Volatile buckets: `open("volatile:NAME")` gives a bucket kept in the
//! server's memory instead of the database. Shared by every instance like
//! any bucket and applied atomically, but not durable: gone when the server
//! stops. For state that is cheap to lose and hot to write, such as the
//! gateway's rate-limit counters, whose every request would otherwise wait
//! for an fsync.

use super::durable::{PAGE, Write, WriteResult, stage};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// The identifier prefix that selects a volatile bucket.
pub const PREFIX: &str = "volatile:";
/// Most bytes (keys and values) one tenant's volatile buckets hold together,
/// so that no tenant can take the memory another's rate limits need.
pub const MAX_BYTES: usize = 64 << 20;

/// The server's volatile buckets, by table name.
#[derive(Default)]
pub struct Volatile {
    inner: Mutex<Tables>,
}

#[derive(Default)]
struct Tables {
    tables: HashMap<String, BTreeMap<String, Vec<u8>>>,
    /// Bytes held, by tenant.
    bytes: HashMap<String, usize>,
}

impl Volatile {
    /// Applies `writes` to `table` at once (all or nothing): the outcome is
    /// worked out over what the batch's own earlier writes left before
    /// anything changes.
    pub fn write(&self, table: &str, writes: Vec<Write>) -> WriteResult {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Tables { tables, bytes } = &mut *guard;
        let tenant = super::parse_table_name(table).map_or("", |(t, _)| t);
        let bytes = bytes.entry(tenant.to_string()).or_default();
        let t = tables.entry(table.to_string()).or_default();
        let staged = stage(&writes, |k| {
            Ok::<_, std::convert::Infallible>(t.get(k).map(|v| Cow::Borrowed(v.as_slice())))
        })
        .unwrap_or_else(|never| match never {})?;
        let mut held = *bytes;
        for (k, v) in &staged.values {
            if let Some(old) = t.get(*k) {
                held -= k.len() + old.len();
            }
            if let Some(v) = v {
                held += k.len() + v.len();
            }
        }
        if held > MAX_BYTES && held > *bytes {
            return Err(format!(
                "the tenant's volatile buckets are full ({} MiB)",
                MAX_BYTES >> 20
            ));
        }
        for (k, v) in staged.values {
            match v {
                Some(v) => t.insert(k.to_string(), v.into_owned()),
                None => t.remove(k),
            };
        }
        *bytes = held;
        Ok(staged.last)
    }

    /// The values of `keys` in `table`.
    pub fn get_many(&self, table: &str, keys: &[String]) -> Vec<Option<Vec<u8>>> {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let t = guard.tables.get(table);
        keys.iter()
            .map(|k| t.and_then(|t| t.get(k)).cloned())
            .collect()
    }

    /// Up to [`PAGE`] keys of `table` after skipping `skip`, and whether more follow.
    pub fn keys(&self, table: &str, skip: u64) -> (Vec<String>, bool) {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(t) = guard.tables.get(table) else {
            return (Vec::new(), false);
        };
        let mut iter = t.keys().skip(usize::try_from(skip).unwrap_or(usize::MAX));
        let page: Vec<String> = iter.by_ref().take(PAGE).cloned().collect();
        (page, iter.next().is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_failing_on_its_own_earlier_writes_changes_nothing() {
        let v = Volatile::default();
        let bad = v.write(
            "t",
            vec![
                Write::Increment("n".into(), u64::MAX),
                Write::Increment("n".into(), 1),
                Write::Set("k".into(), b"x".to_vec()),
                Write::Increment("k".into(), 1),
            ],
        );
        assert!(bad.unwrap_err().contains("overflows"));
        assert_eq!(v.get_many("t", &["n".into(), "k".into()]), vec![None, None]);
        assert_eq!(v.inner.lock().unwrap().bytes[""], 0);
        let chained = vec![
            Write::Set("c".into(), b"5".to_vec()),
            Write::Increment("c".into(), 2),
            Write::Increment("c".into(), 3),
        ];
        assert_eq!(v.write("t", chained), Ok(Some(10)));
        assert_eq!(v.inner.lock().unwrap().bytes[""], 3);
    }

    #[test]
    fn writes_apply_atomically_and_account_their_bytes() {
        let v = Volatile::default();
        assert_eq!(
            v.write("t", vec![Write::Increment("n".into(), 2)]),
            Ok(Some(2))
        );
        assert_eq!(
            v.write("t", vec![Write::Increment("n".into(), 3)]),
            Ok(Some(5))
        );
        v.write("t", vec![Write::Set("k".into(), b"x".to_vec())])
            .unwrap();
        let bad = v.write(
            "t",
            vec![Write::Delete("n".into()), Write::Increment("k".into(), 1)],
        );
        assert!(bad.unwrap_err().contains("not a decimal number"));
        assert_eq!(
            v.get_many("t", &["n".into(), "k".into(), "z".into()]),
            vec![Some(b"5".to_vec()), Some(b"x".to_vec()), None]
        );
        assert_eq!(
            v.keys("t", 0),
            (vec!["k".to_string(), "n".to_string()], false)
        );
        v.write(
            "t",
            vec![Write::Delete("k".into()), Write::Delete("n".into())],
        )
        .unwrap();
        assert_eq!(v.inner.lock().unwrap().bytes[""], 0);
        // Each tenant has its own cap.
        let big = vec![0u8; MAX_BYTES / 2 + 1];
        let a = super::super::table_name("a", "volatile:x");
        let b = super::super::table_name("b", "volatile:x");
        v.write(&a, vec![Write::Set("1".into(), big.clone())])
            .unwrap();
        assert!(
            v.write(&a, vec![Write::Set("2".into(), big.clone())])
                .unwrap_err()
                .contains("full")
        );
        v.write(&b, vec![Write::Set("1".into(), big)]).unwrap();
        assert_eq!(v.get_many("other", &["n".into()]), vec![None]);
    }
}
