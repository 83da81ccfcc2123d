//! The audit chain: every write to a tenant's `audit` bucket gets an entry
//! in a table of its own (`audit-chain/…`, which no guest can open) holding
//! the record's key, the SHA-256 of its new value and an HMAC-SHA256 tag
//! chained over the previous entry's tag. Tags are keyed by a per-tenant
//! secret derived from the data directory's `audit-key` file, which is kept
//! out of the database, so whoever edits the database without the key
//! cannot make the chain agree again. Entries are made by the keyvalue
//! writer thread inside the transaction that writes the record, so
//! concurrent requests never fork the chain. [`verify`] walks it.

use crate::platform::hex;
use anyhow::{Context, Result, bail};
use hmac::{Hmac, Mac};
use redb::{ReadableTable, TableDefinition};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// An entry's HMAC-SHA256 tag.
pub type Tag = [u8; 32];

/// Writes to an audit bucket as chained: each key with its value as it
/// then stood (`None`: deleted).
pub type Written = Vec<(String, Option<Vec<u8>>)>;
type ChainDef<'a> = TableDefinition<'a, u64, &'static [u8]>;

/// The file (in the data directory) holding the chain's secret.
pub const KEY_FILE: &str = "audit-key";

/// The bucket whose writes are chained.
const BUCKET: &str = "audit";

/// The chain table of `tenant`.
pub fn table(tenant: &str) -> String {
    format!("audit-chain/{}/{tenant}", tenant.len())
}

/// The tenant whose audit bucket `table` is, if it is one.
pub fn audited_tenant(table: &str) -> Option<&str> {
    super::parse_table_name(table)
        .filter(|(_, bucket)| *bucket == BUCKET)
        .map(|(tenant, _)| tenant)
}

/// The chain's secret: `dir/audit-key` (32 random bytes, hex), made on
/// first use with mode 0600.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl Secret {
    /// Reads `dir`'s key, making it first if `create`.
    pub fn load(dir: &Path, create: bool) -> Result<Secret> {
        let path = dir.join(KEY_FILE);
        if !path.exists() && create {
            let mut key = [0u8; 32];
            rand::fill(&mut key);
            crate::platform::token::write_secret(&path, &hex::encode(&key))?;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the audit chain's key {}", path.display()))?;
        let bytes = unhex(text.trim())
            .filter(|b| b.len() == 32)
            .with_context(|| format!("{}: not 64 hex digits", path.display()))?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        Ok(Secret(key))
    }

    /// The key's id: 16 hex digits of a hash of it (a chain in Redis
    /// names the key that made it, so a server with another key refuses
    /// to extend it instead of breaking it).
    pub fn id(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"tensor-wasm audit key id\0")
            .chain_update(self.0)
            .finalize();
        hex::encode(&digest[..8])
    }

    /// The tenant's own key: HMAC(secret, "tenant:" + name).
    pub(super) fn for_tenant(&self, tenant: &str) -> Hmac<Sha256> {
        let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        derive.update(b"tensor-wasm audit chain v1\0tenant:");
        derive.update(tenant.as_bytes());
        let key = derive.finalize().into_bytes();
        <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("any key length")
    }
}

/// One chain entry: a write of `key` (`value`'s SHA-256, `None`: deleted).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Entry {
    key: String,
    /// SHA-256 of the value written, hex; absent for a delete.
    sha256: Option<String>,
    /// The tag, hex.
    tag: String,
}

fn tag_of(mac: &Hmac<Sha256>, prev: &Tag, seq: u64, key: &str, sha256: Option<&str>) -> Tag {
    let mut m = mac.clone();
    m.update(prev);
    m.update(&seq.to_be_bytes());
    m.update(&(key.len() as u64).to_be_bytes());
    m.update(key.as_bytes());
    match sha256 {
        Some(h) => {
            m.update(b"set");
            m.update(h.as_bytes());
        }
        None => m.update(b"del"),
    }
    m.finalize().into_bytes().into()
}

/// Chain entries, each with its sequence number.
pub type Entries = Vec<(u64, Vec<u8>)>;

/// The entries chaining `written` after the entry `head` (its sequence
/// number and tag; `(0, [0; 32])` before the first), and the new head.
pub(super) fn entries(
    mac: &Hmac<Sha256>,
    head: (u64, Tag),
    written: &Written,
) -> Result<(Entries, (u64, Tag))> {
    let (mut seq, mut prev) = head;
    let mut out = Vec::with_capacity(written.len());
    for (key, value) in written {
        seq += 1;
        let sha256 = value.as_ref().map(|v| hex::encode(&Sha256::digest(v)));
        prev = tag_of(mac, &prev, seq, key, sha256.as_deref());
        let entry = Entry {
            key: key.clone(),
            sha256,
            tag: hex::encode(&prev),
        };
        out.push((seq, serde_json::to_vec(&entry)?));
    }
    Ok((out, (seq, prev)))
}

/// Appends chain entries inside the writer's transactions; remembers each
/// tenant's last entry once it is committed.
pub struct Chainer {
    secret: Secret,
    /// Each tenant's derived key, made once.
    macs: HashMap<String, Hmac<Sha256>>,
    /// Tenant → (last sequence number, last tag), as committed.
    heads: HashMap<String, (u64, Tag)>,
    /// The same, for the transaction under way.
    pending: HashMap<String, (u64, Tag)>,
}

impl Chainer {
    /// A chainer keyed by `secret`.
    pub fn new(secret: Secret) -> Self {
        Self {
            secret,
            macs: HashMap::new(),
            heads: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    /// Chains the writes just applied to `tenant`'s audit bucket in `txn`
    /// (all of one transaction's, in order): each key's value as it then
    /// stood (`None`: deleted).
    pub fn append(
        &mut self,
        txn: &redb::WriteTransaction,
        tenant: &str,
        written: &Written,
    ) -> Result<()> {
        let mut chain = txn.open_table(ChainDef::new(&table(tenant)))?;
        let head = match self.pending.get(tenant).or_else(|| self.heads.get(tenant)) {
            Some(head) => *head,
            None => match chain.last()? {
                Some((k, v)) => {
                    let e: Entry = serde_json::from_slice(v.value())?;
                    (k.value(), unhex_tag(&e.tag)?)
                }
                None => (0, [0; 32]),
            },
        };
        let mac = self
            .macs
            .entry(tenant.to_string())
            .or_insert_with(|| self.secret.for_tenant(tenant));
        let (made, head) = entries(mac, head, written)?;
        for (seq, bytes) in &made {
            chain.insert(*seq, bytes.as_slice())?;
        }
        self.pending.insert(tenant.to_string(), head);
        Ok(())
    }

    /// The transaction committed: its entries are the heads now.
    pub fn committed(&mut self) {
        self.heads.extend(self.pending.drain());
    }

    /// The transaction failed: forget its entries.
    pub fn aborted(&mut self) {
        self.pending.clear();
    }
}

/// What [`verify`] found for one tenant.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Every record is the last one chained for its key, and every chained
    /// record is there.
    Intact {
        /// Records in the bucket.
        records: usize,
        /// Chain entries walked.
        entries: u64,
    },
    /// The first thing that does not agree.
    Broken(String),
}

/// Walks `tenant`'s chain and compares it with its audit bucket
/// (`records`: key → value, in key order).
pub fn verify(
    secret: &Secret,
    tenant: &str,
    chain: &[(u64, Vec<u8>)],
    records: &BTreeMap<String, Vec<u8>>,
) -> Verdict {
    let mac = secret.for_tenant(tenant);
    let mut prev: Tag = [0; 32];
    let mut state: BTreeMap<&str, (u64, Option<&str>)> = BTreeMap::new();
    let mut entries = Vec::with_capacity(chain.len());
    for (i, (seq, bytes)) in chain.iter().enumerate() {
        let expected = i as u64 + 1;
        if *seq != expected {
            return Verdict::Broken(format!(
                "chain entry #{expected} is missing (the next is #{seq}): entries were removed"
            ));
        }
        match serde_json::from_slice::<Entry>(bytes) {
            Ok(e) => entries.push(e),
            Err(e) => return Verdict::Broken(format!("chain entry #{seq} is unreadable: {e}")),
        }
    }
    for (i, e) in entries.iter().enumerate() {
        let seq = i as u64 + 1;
        let tag = tag_of(&mac, &prev, seq, &e.key, e.sha256.as_deref());
        if hex::encode(&tag) != e.tag {
            return Verdict::Broken(format!(
                "chain entry #{seq} (record `{}`) was altered, or entries before it were removed \
                 or reordered",
                e.key
            ));
        }
        prev = tag;
        state.insert(&e.key, (seq, e.sha256.as_deref()));
    }
    for (key, (seq, sha)) in &state {
        match (records.get(*key), sha) {
            (None, Some(_)) => {
                return Verdict::Broken(format!("record `{key}` (chain entry #{seq}) was removed"));
            }
            (Some(v), Some(sha)) if hex::encode(&Sha256::digest(v)) != *sha => {
                return Verdict::Broken(format!("record `{key}` (chain entry #{seq}) was altered"));
            }
            (Some(_), None) => {
                return Verdict::Broken(format!(
                    "record `{key}` was deleted (chain entry #{seq}) and is back: it was added \
                     outside the server"
                ));
            }
            _ => {}
        }
    }
    if let Some(key) = records.keys().find(|k| !state.contains_key(k.as_str())) {
        return Verdict::Broken(format!(
            "record `{key}` is not in the chain: it was added outside the server (or before \
             the chain existed)"
        ));
    }
    Verdict::Intact {
        records: records.len(),
        entries: chain.len() as u64,
    }
}

/// Reads `tenant`'s chain from a read transaction, in sequence order.
pub fn read_chain(txn: &redb::ReadTransaction, tenant: &str) -> Result<Vec<(u64, Vec<u8>)>> {
    super::durable::read_all(txn, ChainDef::new(&table(tenant)), |k| k)
}

/// The tenant a chain table belongs to.
pub fn chain_tenant(table: &str) -> Option<&str> {
    let rest = table.strip_prefix("audit-chain/")?;
    let (len, rest) = rest.split_once('/')?;
    (rest.len() == len.parse::<usize>().ok()?).then_some(rest)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub(super) fn unhex_tag(s: &str) -> Result<Tag> {
    match unhex(s) {
        Some(b) if b.len() == 32 => {
            let mut t = [0; 32];
            t.copy_from_slice(&b);
            Ok(t)
        }
        _ => bail!("a chain entry's tag is not 64 hex digits"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain_of(secret: &Secret, writes: &[(&str, Option<&[u8]>)]) -> Vec<(u64, Vec<u8>)> {
        let mac = secret.for_tenant("acme");
        let mut prev = [0; 32];
        writes
            .iter()
            .enumerate()
            .map(|(i, (k, v))| {
                let seq = i as u64 + 1;
                let sha256 = v.map(|v| hex::encode(&Sha256::digest(v)));
                prev = tag_of(&mac, &prev, seq, k, sha256.as_deref());
                let e = Entry {
                    key: k.to_string(),
                    sha256,
                    tag: hex::encode(&prev),
                };
                (seq, serde_json::to_vec(&e).unwrap())
            })
            .collect()
    }

    #[test]
    fn verify_names_the_first_altered_removed_reordered_or_added_record() {
        let secret = Secret([7; 32]);
        let chain = chain_of(
            &secret,
            &[("a", Some(b"1")), ("b", Some(b"2")), ("c", Some(b"3"))],
        );
        let records: BTreeMap<String, Vec<u8>> = [("a", "1"), ("b", "2"), ("c", "3")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        let ok = verify(&secret, "acme", &chain, &records);
        assert_eq!(
            ok,
            Verdict::Intact {
                records: 3,
                entries: 3
            }
        );
        let broken = |chain: &[(u64, Vec<u8>)], records: &BTreeMap<String, Vec<u8>>| match verify(
            &secret, "acme", chain, records,
        ) {
            Verdict::Broken(why) => why,
            v => panic!("{v:?}"),
        };
        let mut altered = records.clone();
        altered.insert("b".into(), b"20".to_vec());
        assert!(broken(&chain, &altered).contains("record `b` (chain entry #2) was altered"));
        let mut removed = records.clone();
        removed.remove("a");
        assert!(broken(&chain, &removed).contains("record `a` (chain entry #1) was removed"));
        let mut added = records.clone();
        added.insert("d".into(), b"4".to_vec());
        assert!(broken(&chain, &added).contains("`d` is not in the chain"));
        let mut swapped = chain.clone();
        swapped.swap(0, 1);
        let (a, b) = (swapped[0].0, swapped[1].0);
        swapped[0].0 = b;
        swapped[1].0 = a;
        assert!(broken(&swapped, &records).contains("chain entry #1 (record `b`) was altered"));
        let mut gap = chain.clone();
        gap.remove(1);
        assert!(broken(&gap, &records).contains("#2 is missing"));
        let other = Secret([8; 32]);
        assert!(matches!(
            verify(&other, "acme", &chain, &records),
            Verdict::Broken(_)
        ));
        assert!(matches!(
            verify(&secret, "globex", &chain, &records),
            Verdict::Broken(_)
        ));
    }

    #[test]
    fn chain_tables_round_trip_and_are_not_buckets() {
        assert_eq!(chain_tenant(&table("a/b")), Some("a/b"));
        assert_eq!(super::super::parse_table_name(&table("acme")), None);
        assert_eq!(
            audited_tenant(&super::super::table_name("acme", "audit")),
            Some("acme")
        );
        assert_eq!(
            audited_tenant(&super::super::table_name("acme", "notes")),
            None
        );
    }
}
