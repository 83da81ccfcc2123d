//! The durable store behind `wasi:keyvalue`: one redb database file, one
//! table per tenant bucket, and a single writer thread that commits the
//! writes of every waiting request together (group commit). A write is
//! acknowledged only after its transaction is committed with redb's default
//! durability (fsync), so an acknowledged write survives `kill -9`.

use super::chain::{self, Chainer, Secret};
use anyhow::{Context, Result, anyhow};
use redb::{
    ConcurrencyMode, Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle,
};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Keys are UTF-8 strings, values bytes.
type Def<'a> = TableDefinition<'a, &'static str, &'static [u8]>;

/// Most writes one commit carries.
const GROUP_MAX: usize = 512;

/// Keys returned per `list-keys` page.
pub const PAGE: usize = 1000;

/// One change, applied inside a write transaction.
#[derive(Debug)]
pub enum Write {
    /// Store `value` at `key`.
    Set(String, Vec<u8>),
    /// Remove `key`.
    Delete(String),
    /// Add `delta` to the decimal number at `key` (absent: 0); answers the sum.
    Increment(String, u64),
}

/// What a committed batch of writes answers: the last increment's value, if any.
pub type WriteResult = std::result::Result<Option<u64>, String>;

struct Job {
    table: String,
    writes: Vec<Write>,
    reply: oneshot::Sender<WriteResult>,
}

/// The database and its writer thread. Share it with an `Arc`; dropping the
/// last one waits for the writer to finish what it was given.
pub struct Durable {
    db: std::sync::Arc<Database>,
    path: PathBuf,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Durable {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The database's page cache. redb's default (1 GiB) lets a server's memory
/// grow with its database (an audit log grows forever); the hot set here is
/// small (rate-limit buckets, recent keys), and reads that miss are a page
/// read from the OS's own file cache.
pub const CACHE_BYTES: usize = 16 << 20;

impl Durable {
    /// Opens (or creates) the database at `dir/keyvalue.redb` and starts its writer.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        let path = dir.join("keyvalue.redb");
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::SingleWriter)
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => anyhow!(
                    "{}: the database is open in another tensor-wasm server; give each server \
                     its own --data-dir",
                    path.display()
                ),
                e => anyhow!("cannot open the database {}: {e}", path.display()),
            })?;
        let db = std::sync::Arc::new(db);
        let mut chainer = Chainer::new(Secret::load(dir, true)?);
        let (tx, rx) = mpsc::channel();
        let writer_db = db.clone();
        let writer = std::thread::Builder::new()
            .name("keyvalue-writer".into())
            .spawn(move || writer(&writer_db, &mut chainer, &rx))
            .context("cannot start the keyvalue writer thread")?;
        Ok(Self {
            db,
            path,
            jobs: Some(tx),
            writer: Some(writer),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies `writes` to `table` and waits until they are durable.
    pub async fn write(&self, table: String, writes: Vec<Write>) -> WriteResult {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            table,
            writes,
            reply,
        };
        if self.jobs.as_ref().is_none_or(|j| j.send(job).is_err()) {
            return Err("the keyvalue writer is gone".into());
        }
        rx.await
            .map_err(|_| "the keyvalue writer stopped".to_string())?
    }

    /// The values of `keys` in `table` (absent tables read as empty).
    pub fn get_many(&self, table: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let txn = self.db.begin_read()?;
        let t = match txn.open_table(Def::new(table)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![None; keys.len()]),
            Err(e) => return Err(e.into()),
        };
        keys.iter()
            .map(|k| Ok(t.get(k.as_str())?.map(|v| v.value().to_vec())))
            .collect()
    }

    /// Up to [`PAGE`] keys of `table` after skipping `skip`, and whether more follow.
    pub fn keys(&self, table: &str, skip: u64) -> Result<(Vec<String>, bool)> {
        let txn = self.db.begin_read()?;
        let t = match txn.open_table(Def::new(table)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok((Vec::new(), false)),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        let mut iter = t.iter()?.skip(usize::try_from(skip).unwrap_or(usize::MAX));
        for item in iter.by_ref().take(PAGE) {
            out.push(item?.0.value().to_string());
        }
        Ok((out, iter.next().is_some()))
    }
}

fn writer(db: &Database, chainer: &mut Chainer, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < GROUP_MAX {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let committed = commit(db, chainer, &jobs);
        match &committed {
            Ok(_) => chainer.committed(),
            Err(_) => chainer.aborted(),
        }
        match committed {
            Ok(results) => {
                for (job, r) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(r);
                }
            }
            Err(e) => {
                tracing::error!("keyvalue commit failed: {e:#}");
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err("the write could not be committed".into()));
                }
            }
        }
    }
}

/// Applies every job in one transaction and commits it; a job whose
/// increment cannot apply (not a number, overflow) fails alone. Writes to
/// an `audit` bucket are chained ([`super::chain`]) in the same transaction.
fn commit(db: &Database, chainer: &mut Chainer, jobs: &[Job]) -> Result<Vec<WriteResult>> {
    let started = std::time::Instant::now();
    let txn = db.begin_write()?;
    let mut results = Vec::with_capacity(jobs.len());
    // Audit writes by tenant, chained once per transaction, in job order.
    let mut audited: Vec<(&str, chain::Written)> = Vec::new();
    for job in jobs {
        let mut t = txn.open_table(Def::new(&job.table))?;
        let result = apply(&mut t, &job.writes)?;
        if let (Ok(_), Some(tenant)) = (&result, chain::audited_tenant(&job.table)) {
            let at = match audited.iter().position(|(t, _)| *t == tenant) {
                Some(i) => i,
                None => {
                    audited.push((tenant, Vec::new()));
                    audited.len() - 1
                }
            };
            for w in &job.writes {
                let (Write::Set(key, _) | Write::Delete(key) | Write::Increment(key, _)) = w;
                let now = t.get(key.as_str())?.map(|v| v.value().to_vec());
                audited[at].1.push((key.clone(), now));
            }
        }
        results.push(result);
    }
    for (tenant, written) in &audited {
        chainer.append(&txn, tenant, written)?;
    }
    txn.commit()?;
    crate::platform::metrics::KEYVALUE_COMMITS.observe(started.elapsed().as_secs_f64());
    Ok(results)
}

fn apply(
    t: &mut redb::Table<&'static str, &'static [u8]>,
    writes: &[Write],
) -> Result<WriteResult> {
    // Worked out first, so a failing job changes nothing (and never fails
    // the transaction it shares with other requests' jobs).
    let staged = match stage(writes, |k| {
        t.get(k).map(|v| v.map(|v| Cow::Owned(v.value().to_vec())))
    })? {
        Ok(staged) => staged,
        Err(why) => return Ok(Err(why)),
    };
    for (k, v) in &staged.values {
        match v {
            Some(v) => t.insert(*k, &**v)?,
            None => t.remove(*k)?,
        };
    }
    Ok(Ok(staged.last))
}

/// What a batch of writes leaves, worked out before anything changes.
pub(super) struct Staged<'a> {
    /// Each key the batch touches and its value after it (`None`: deleted).
    pub values: HashMap<&'a str, Option<Cow<'a, [u8]>>>,
    /// The last increment's sum, if any.
    pub last: Option<u64>,
}

/// Works out `writes` over what the batch's own earlier writes left and,
/// for a key they have not touched, `current(key)` (its value before the
/// batch). `Ok(Err(why))` when an increment cannot apply: the batch then
/// changes nothing. The one staging every store shares.
pub(super) fn stage<'a, 'b, E>(
    writes: &'a [Write],
    mut current: impl FnMut(&str) -> std::result::Result<Option<Cow<'b, [u8]>>, E>,
) -> std::result::Result<std::result::Result<Staged<'a>, String>, E> {
    let mut values: HashMap<&'a str, Option<Cow<'a, [u8]>>> = HashMap::new();
    let mut last = None;
    for w in writes {
        let (key, value) = match w {
            Write::Set(k, v) => (k, Some(Cow::Borrowed(v.as_slice()))),
            Write::Delete(k) => (k, None),
            Write::Increment(k, delta) => {
                let sum = match values.get(k.as_str()) {
                    Some(v) => incremented(v.as_deref(), *delta),
                    None => incremented(current(k)?.as_deref(), *delta),
                };
                match sum {
                    Ok(n) => {
                        last = Some(n);
                        (k, Some(Cow::Owned(n.to_string().into_bytes())))
                    }
                    Err(e) => return Ok(Err(format!("cannot increment `{k}`: {e}"))),
                }
            }
        };
        values.insert(key, value);
    }
    Ok(Ok(Staged { values, last }))
}

/// Every entry of the table `def` names (none if it does not exist), in
/// key order, each key made owned by `key`.
pub(super) fn read_all<K: redb::Key + 'static, T>(
    txn: &redb::ReadTransaction,
    def: TableDefinition<K, &'static [u8]>,
    key: impl Fn(K::SelfType<'_>) -> T,
) -> Result<Vec<(T, Vec<u8>)>> {
    let t = match txn.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    t.iter()?
        .map(|item| {
            let (k, v) = item?;
            Ok((key(k.value()), v.value().to_vec()))
        })
        .collect()
}

/// `current` (a decimal u64, absent = 0) plus `delta`.
fn incremented(current: Option<&[u8]>, delta: u64) -> std::result::Result<u64, String> {
    let n = match current {
        None => 0,
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or("the value is not a decimal number")?,
    };
    n.checked_add(delta)
        .ok_or_else(|| "the sum overflows u64".to_string())
}

/// Read access for `tensor-wasm audit`, while a server may be writing, or
/// after one was killed.
pub struct Reader {
    db: Readable,
    /// How the file was read when it could not be read as it is.
    pub note: Option<String>,
}

enum Readable {
    /// The file as it is, read-only.
    Direct(redb::ReadOnlyDatabase),
    /// The file, repaired in place (no server had it open).
    Repaired(Database),
    /// A repaired copy of the file, removed when dropped.
    Copy(Database, PathBuf),
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Readable::Copy(_, dir) = &self.db {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Reader {
    /// Opens the database in `dir` for reading. A file left by a killed
    /// server cannot be read as it is (its allocator state needs rebuilding):
    /// with no server holding it, it is repaired as the next server start
    /// would; with a running server holding it, a copy is repaired and read.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("keyvalue.redb");
        if !path.is_file() {
            anyhow::bail!(
                "no database at {} (nothing was written yet, or pass --data-dir)",
                path.display()
            );
        }
        let builder = || {
            let mut b = Database::builder();
            b.set_concurrency_mode(ConcurrencyMode::SingleWriter)
                .set_cache_size(CACHE_BYTES);
            b
        };
        let cannot = |e: redb::DatabaseError| anyhow!("cannot open {}: {e}", path.display());
        let (db, note) = match builder().open_read_only(&path) {
            Ok(db) => (Readable::Direct(db), None),
            Err(redb::DatabaseError::RepairAborted) => match builder().open(&path) {
                Ok(db) => (
                    Readable::Repaired(db),
                    Some(format!(
                        "{} was not closed cleanly (its server was killed); repaired it, as the next \
                         server start would",
                        path.display()
                    )),
                ),
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    let copy_dir = std::env::temp_dir().join(format!(
                        "tensor-wasm-read-{}-{}",
                        std::process::id(),
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_nanos())
                    ));
                    std::fs::create_dir_all(&copy_dir)?;
                    let copy = copy_dir.join("keyvalue.redb");
                    let copied = std::fs::copy(&path, &copy)
                        .with_context(|| format!("cannot copy {}", path.display()))
                        .and_then(|_| builder().create(&copy).map_err(cannot));
                    match copied {
                        Ok(db) => (
                            Readable::Copy(db, copy_dir),
                            Some(format!(
                                "a running server holds {} and its file needs recovery to be read \
                                 from outside; read a recovered copy taken now",
                                path.display()
                            )),
                        ),
                        Err(e) => {
                            let _ = std::fs::remove_dir_all(&copy_dir);
                            return Err(e);
                        }
                    }
                }
                Err(e) => return Err(cannot(e)),
            },
            Err(e) => return Err(cannot(e)),
        };
        Ok(Self { db, note })
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction> {
        Ok(match &self.db {
            Readable::Direct(db) => db.begin_read()?,
            Readable::Repaired(db) | Readable::Copy(db, _) => db.begin_read()?,
        })
    }

    /// `tenant`'s audit chain, in sequence order.
    pub fn chain(&self, tenant: &str) -> Result<Vec<(u64, Vec<u8>)>> {
        chain::read_chain(&self.begin_read()?, tenant)
    }

    /// The names of all tables.
    pub fn tables(&self) -> Result<Vec<String>> {
        let txn = self.begin_read()?;
        Ok(txn.list_tables()?.map(|t| t.name().to_string()).collect())
    }

    /// Every entry of `table` in key order.
    pub fn entries(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>> {
        read_all(&self.begin_read()?, Def::new(table), |k| k.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tw-kv-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn block<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn writes_are_read_back_paged_and_survive_reopening() {
        let dir = temp("pages");
        {
            let store = Durable::open(&dir).unwrap();
            let writes = (0..2500)
                .map(|i| Write::Set(format!("k{i:05}"), vec![i as u8]))
                .collect();
            block(store.write("t".into(), writes)).unwrap();
            assert_eq!(
                block(store.write("t".into(), vec![Write::Increment("n".into(), 7)])),
                Ok(Some(7))
            );
            let (first, more) = store.keys("t", 0).unwrap();
            assert_eq!((first.len(), more), (PAGE, true));
            let (last, more) = store.keys("t", 2 * PAGE as u64).unwrap();
            assert_eq!((last.len(), more), (501, false));
            assert_eq!(store.keys("absent", 0).unwrap(), (Vec::new(), false));
            // A failing increment changes nothing of its job.
            let bad = block(store.write(
                "t".into(),
                vec![
                    Write::Delete("k00000".into()),
                    Write::Increment("k00001".into(), 1),
                ],
            ));
            assert!(bad.unwrap_err().contains("not a decimal number"));
            assert!(store.get_many("t", &["k00000".into()]).unwrap()[0].is_some());
            let overflow =
                block(store.write("t".into(), vec![Write::Increment("n".into(), u64::MAX)]));
            assert!(overflow.unwrap_err().contains("overflows"));
        }
        let store = Durable::open(&dir).unwrap();
        let got = store
            .get_many("t", &["k00003".into(), "n".into(), "zz".into()])
            .unwrap();
        assert_eq!(got, vec![Some(vec![3]), Some(b"7".to_vec()), None]);
        let reader = Reader::open(&dir).unwrap();
        assert_eq!(reader.tables().unwrap(), vec!["t".to_string()]);
        assert_eq!(reader.entries("t").unwrap().len(), 2501);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Found by the `keyvalue` fuzz target: an increment that failed on
    /// its own batch's earlier write failed the whole group commit, other
    /// requests' jobs included, and one that failed on the volatile store
    /// left the batch half applied.
    #[test]
    fn a_batch_failing_on_its_own_earlier_writes_fails_alone_and_changes_nothing() {
        let dir = temp("own-writes");
        let store = Durable::open(&dir).unwrap();
        let set_then_add = vec![
            Write::Set("k".into(), b"x".to_vec()),
            Write::Increment("k".into(), 1),
        ];
        let add_twice = vec![
            Write::Increment("n".into(), u64::MAX),
            Write::Increment("n".into(), 1),
        ];
        let (bad, good, twice) = block(async {
            tokio::join!(
                store.write("t".into(), set_then_add),
                store.write("u".into(), vec![Write::Set("a".into(), b"1".to_vec())]),
                store.write("t".into(), add_twice),
            )
        });
        assert!(bad.unwrap_err().contains("not a decimal number"));
        assert!(twice.unwrap_err().contains("overflows"));
        assert_eq!(good, Ok(None));
        let t = store.get_many("t", &["k".into(), "n".into()]).unwrap();
        assert_eq!(t, vec![None, None]);
        assert_eq!(
            store.get_many("u", &["a".into()]).unwrap(),
            vec![Some(b"1".to_vec())]
        );
        let chained = vec![
            Write::Set("c".into(), b"5".to_vec()),
            Write::Increment("c".into(), 2),
            Write::Delete("c".into()),
            Write::Increment("c".into(), 3),
        ];
        assert_eq!(block(store.write("t".into(), chained)), Ok(Some(3)));
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_server_on_the_same_directory_gets_a_clear_error() {
        let dir = temp("twice");
        let _first = Durable::open(&dir).unwrap();
        let err = Durable::open(&dir).err().unwrap().to_string();
        assert!(err.contains("--data-dir"), "{err}");
    }
}
