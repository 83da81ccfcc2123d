//! A deployment's buckets in Redis (`[deployment.keyvalue] backend =
//! "redis://…"`), so that replicas of a server share them: rate-limit
//! counters admit one global rate, audit records land in one place.
//!
//! Each bucket is one Redis hash, named as the embedded store names its
//! table ([`super::table_name`]: tenant first, so tenants never meet) under
//! the prefix [`PREFIX`]. A batch of writes is one Lua script, so it applies
//! atomically and with the embedded store's semantics: worked out over what
//! the batch's own earlier writes left, all or nothing, increments on
//! decimal u64 values with the same errors. A write is acknowledged when
//! Redis answers it; what that means after a crash is Redis's persistence
//! (docs/SCALING.md). Connections are a [`ConnectionManager`]: a lost one
//! fails the calls made meanwhile (bounded by [`TIMEOUT`]) and is remade.
//!
//! Writes to a tenant's `audit` bucket are chained as in the embedded
//! store ([`super::chain`]): the chain is a hash of its own (entries by
//! sequence number, and `head`: the last one's number, its tag and the id
//! of the key that made it). Tags are HMACs only this server's key can
//! make, so they are computed here, not in Redis; a batch goes with its
//! entries and the head it extends, and the script applies it only if that
//! is still the head (else this server reads the new head and tries again).
//! Replicas that share a Redis must share their `audit-key` file.

use super::chain::{self, Secret, Tag};
use super::durable::{PAGE, Write, WriteResult, stage};
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use anyhow::{Context, Result};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// What every hash's name starts with, so a shared Redis tells ours apart.
pub const PREFIX: &str = "tensor-wasm:";

/// Longest a call (or a connection attempt) may take before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// The batch script: ARGV holds triples (op `s`, `d` or `i`; key; value or
/// delta). Answers `{1, last increment or ""}` or `{0, why}`.
const WRITE_SCRIPT: &str = r#"
local MAX = "18446744073709551615"
local function canonical(s)
  local d = string.match(s, "^%+?(%d+)$")
  if not d then return nil end
  d = (string.gsub(d, "^0+", ""))
  if d == "" then d = "0" end
  if #d > 20 or (#d == 20 and d > MAX) then return nil end
  return d
end
local function add(a, b)
  local out, carry, i, j = {}, 0, #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local x = carry
    if i > 0 then x = x + tonumber(string.sub(a, i, i)) end
    if j > 0 then x = x + tonumber(string.sub(b, j, j)) end
    out[#out + 1] = tostring(x % 10)
    carry = math.floor(x / 10)
    i = i - 1
    j = j - 1
  end
  local s = string.reverse(table.concat(out))
  if #s > 20 or (#s == 20 and s > MAX) then return nil end
  return s
end
local staged, order, last = {}, {}, ""
for n = 1, #ARGV, 3 do
  local op, k = ARGV[n], ARGV[n + 1]
  local seen = staged[k] ~= nil
  if op == "s" then
    staged[k] = ARGV[n + 2]
  elseif op == "d" then
    staged[k] = false
  else
    local cur = staged[k]
    if cur == nil then cur = redis.call("HGET", KEYS[1], k) end
    if cur == false then cur = "0" else cur = canonical(cur) end
    if not cur then
      return {0, "cannot increment `" .. k .. "`: the value is not a decimal number"}
    end
    local sum = add(cur, ARGV[n + 2])
    if not sum then return {0, "cannot increment `" .. k .. "`: the sum overflows u64"} end
    staged[k] = sum
    last = sum
  end
  if not seen then order[#order + 1] = k end
end
for _, k in ipairs(order) do
  if staged[k] == false then
    redis.call("HDEL", KEYS[1], k)
  else
    redis.call("HSET", KEYS[1], k, staged[k])
  end
end
return {1, last}
"#;

/// The chained batch script: KEYS are the bucket's hash and its chain's;
/// ARGV the head it extends (`""`: none yet), the new head, the number of
/// writes, the writes as triples (op `s` or `d`; key; value), then the
/// chain entries as pairs (sequence number; entry). Answers `{1, ""}`, or
/// `{2, head}` when the head has moved.
const CHAIN_SCRIPT: &str = r#"
local head = redis.call("HGET", KEYS[2], "head")
if not head then head = "" end
if head ~= ARGV[1] then return {2, head} end
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  if ARGV[i] == "s" then
    redis.call("HSET", KEYS[1], ARGV[i + 1], ARGV[i + 2])
  else
    redis.call("HDEL", KEYS[1], ARGV[i + 1])
  end
  i = i + 3
end
while i < #ARGV do
  redis.call("HSET", KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call("HSET", KEYS[2], "head", ARGV[2])
return {1, ""}
"#;

/// Tries at extending a chain whose head other servers keep moving (each
/// server sends one batch per tenant at a time, so a try loses only to
/// another replica's).
const CHAIN_TRIES: usize = 64;

/// One Redis server's connection, shared by the deployments that name it.
pub struct Redis {
    conn: ConnectionManager,
    script: ::redis::Script,
    chain_script: ::redis::Script,
    /// The URL without its password, for errors and logs.
    shown: String,
    /// Where the audit chain's key is (the data directory).
    key_dir: Option<PathBuf>,
    /// The key, read (or made) on the first audit write.
    secret: OnceLock<Result<Secret, String>>,
    /// Per tenant: its audit chain's state on this server.
    heads: Mutex<HashMap<String, Arc<ChainSlot>>>,
}

/// A tenant's audit chain on this server.
#[derive(Default)]
struct ChainSlot {
    /// The head as this server last wrote it (the guess the next batch
    /// tries first), locked while batches are under way.
    head: tokio::sync::Mutex<String>,
    /// Batches waiting for the head, each with where its result goes.
    queue: Mutex<Vec<(Vec<Write>, tokio::sync::oneshot::Sender<WriteResult>)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A chain's head as Redis keeps it: `SEQ TAG KEY-ID`.
struct Head {
    seq: u64,
    tag: Tag,
    key_id: String,
}

impl Head {
    fn parse(text: &str) -> Option<Head> {
        if text.is_empty() {
            return Some(Head {
                seq: 0,
                tag: [0; 32],
                key_id: String::new(),
            });
        }
        let mut words = text.split(' ');
        let (seq, tag, key_id) = (words.next()?, words.next()?, words.next()?);
        Some(Head {
            seq: seq.parse().ok()?,
            tag: chain::unhex_tag(tag).ok()?,
            key_id: key_id.to_string(),
        })
    }
}

/// The runtime that drives every Redis connection (its reconnects run
/// there), alive as long as the process: requests run on the listener
/// threads' own runtimes, which come and go.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("redis")
            .enable_all()
            .build()
            .expect("cannot start the Redis runtime")
    })
}

/// Runs `f` (a [`Redis`] call) to its end, from outside any runtime: for
/// commands.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

impl Redis {
    /// A client of the Redis at `url` (`redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`
    /// or `redis+unix:///PATH`). It connects on first use, so a server
    /// starts while Redis is down (calls fail until it is back).
    pub fn new(url: &str, key_dir: Option<PathBuf>) -> Result<Self> {
        let info: ::redis::ConnectionInfo = url
            .parse()
            .with_context(|| format!("`{}` is not a Redis URL", shown(url)))?;
        let client = ::redis::Client::open(info)
            .with_context(|| format!("`{}` is not a usable Redis URL", shown(url)))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let _entered = runtime().enter();
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .with_context(|| format!("cannot make a Redis client for `{}`", shown(url)))?;
        Ok(Self {
            conn,
            script: ::redis::Script::new(WRITE_SCRIPT),
            chain_script: ::redis::Script::new(CHAIN_SCRIPT),
            shown: shown(url),
            key_dir,
            secret: OnceLock::new(),
            heads: Mutex::default(),
        })
    }

    /// The URL, its password left out.
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// Logs, in the background, whether Redis answers now (a server starts
    /// either way; a deployment's calls fail while it does not).
    pub fn check(self: &std::sync::Arc<Self>) {
        let this = self.clone();
        runtime().spawn(async move {
            match this.ping().await {
                Ok(()) => tracing::info!("keyvalue: Redis at {} answers", this.shown),
                Err(e) => tracing::warn!("keyvalue: {e:#}; its buckets fail until it does"),
            }
        });
    }

    /// Answers whether Redis answers `PING` within [`TIMEOUT`].
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        ::redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .with_context(|| format!("Redis at {} does not answer", self.shown))
            .map(drop)
    }

    /// Applies `writes` to the hash of `table`, atomically (and chained,
    /// for an audit bucket).
    pub async fn write(self: &Arc<Self>, table: &str, writes: Vec<Write>) -> WriteResult {
        if let Some(tenant) = chain::audited_tenant(table) {
            return self.write_chained(tenant, table, writes).await;
        }
        let mut invocation = self.script.key(hash(table));
        for w in writes {
            match w {
                Write::Set(k, v) => invocation.arg("s").arg(k).arg(v),
                Write::Delete(k) => invocation.arg("d").arg(k).arg(""),
                Write::Increment(k, d) => invocation.arg("i").arg(k).arg(d.to_string()),
            };
        }
        let mut conn = self.conn.clone();
        let (ok, answer): (i64, String) =
            invocation.invoke_async(&mut conn).await.map_err(|e| {
                tracing::error!("Redis write to {} failed: {e}", self.shown);
                "the store could not be written (Redis failed; see the server log)".to_string()
            })?;
        match (ok, answer.as_str()) {
            (1, "") => Ok(None),
            (1, n) => n
                .parse()
                .map(Some)
                .map_err(|_| format!("Redis answered `{n}` for an increment")),
            (_, why) => Err(why.to_string()),
        }
    }

    /// Applies `writes` to `tenant`'s audit bucket `table` with their chain
    /// entries. Concurrent batches of one tenant go to Redis together (one
    /// script, one append-only-file fsync: a group commit), since a chain
    /// takes one batch at a time; on a task of the Redis runtime, so a
    /// request that goes away cannot cut short a commit carrying others'.
    async fn write_chained(
        self: &Arc<Self>,
        tenant: &str,
        table: &str,
        writes: Vec<Write>,
    ) -> WriteResult {
        let slot = lock(&self.heads)
            .entry(tenant.to_string())
            .or_default()
            .clone();
        let (reply, answer) = tokio::sync::oneshot::channel();
        lock(&slot.queue).push((writes, reply));
        let (this, tenant, table) = (self.clone(), tenant.to_string(), table.to_string());
        runtime().spawn(async move {
            // Whoever holds the head sends everything queued by then: this
            // batch, or (when an earlier holder took it) nothing.
            let mut head = slot.head.lock().await;
            let jobs = std::mem::take(&mut *lock(&slot.queue));
            if !jobs.is_empty() {
                let batches: Vec<&[Write]> = jobs.iter().map(|(w, _)| w.as_slice()).collect();
                let results = this
                    .commit_chained(&tenant, &table, &mut head, &batches)
                    .await;
                for ((_, reply), result) in jobs.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
        });
        answer
            .await
            .unwrap_or_else(|_| Err("the audit write was dropped".into()))
    }

    /// Applies `batches` (each all or nothing, in order) to `tenant`'s audit
    /// bucket with their chain entries, extending `head` (this server's last
    /// one, or Redis's) until that is still the head when they land.
    async fn commit_chained(
        &self,
        tenant: &str,
        table: &str,
        last_written: &mut String,
        batches: &[&[Write]],
    ) -> Vec<WriteResult> {
        let everyone = |e: String| batches.iter().map(|_| Err(e.clone())).collect();
        let failed = |e: &dyn std::fmt::Display| {
            tracing::error!("Redis audit write to {} failed: {e}", self.shown);
            "the store could not be written (Redis failed; see the server log)".to_string()
        };
        let secret = match self.secret.get_or_init(|| match &self.key_dir {
            Some(dir) => std::fs::create_dir_all(dir)
                .map_err(anyhow::Error::from)
                .and_then(|()| Secret::load(dir, true))
                .map_err(|e| format!("{e:#}")),
            None => Err("no data directory for the audit chain's key".into()),
        }) {
            Ok(secret) => secret,
            Err(e) => {
                tracing::error!("the audit chain's key for Redis at {}: {e}", self.shown);
                return everyone(
                    "the audit chain's key is unavailable (see the server log)".into(),
                );
            }
        };
        let (bucket, chain_hash) = (hash(table), hash(&chain::table(tenant)));
        let mut counted: Vec<&str> = Vec::new();
        for w in batches.iter().flat_map(|b| b.iter()) {
            if let Write::Increment(k, _) = w
                && !counted.contains(&k.as_str())
            {
                counted.push(k);
            }
        }
        let mut known = Some(std::mem::take(last_written)).filter(|h| !h.is_empty());
        let mac = secret.for_tenant(tenant);
        let mut conn = self.conn.clone();
        for _ in 0..CHAIN_TRIES {
            // The head (and what increments add to) as Redis has it now,
            // unless the guess will do.
            let (head_text, current) = match known.take() {
                Some(head) if counted.is_empty() => (head, Vec::new()),
                _ => {
                    let mut pipe = ::redis::pipe();
                    pipe.cmd("HGET").arg(&chain_hash).arg("head");
                    pipe.cmd("HMGET").arg(&bucket).arg(&counted).arg("");
                    match pipe
                        .query_async::<(Option<String>, Vec<Option<Vec<u8>>>)>(&mut conn)
                        .await
                    {
                        Ok((head, values)) => (head.unwrap_or_default(), values),
                        Err(e) => return everyone(failed(&e)),
                    }
                }
            };
            let Some(head) = Head::parse(&head_text) else {
                return everyone(failed(&format!(
                    "the chain head `{head_text}` is unreadable"
                )));
            };
            if !head_text.is_empty() && head.key_id != secret.id() {
                tracing::error!(
                    "the audit chain of tenant `{tenant}` in Redis at {} was made with another \
                     audit-key (id {}; this server's is {}): copy that server's `audit-key` \
                     into this server's data directory",
                    self.shown,
                    head.key_id,
                    secret.id()
                );
                return everyone(
                    "the audit chain could not be extended (another server's audit-key made \
                     it; see the server log)"
                        .into(),
                );
            }
            // Each batch's outcome, worked out here over what Redis and the
            // batches before it left; one that fails changes nothing.
            let mut staged: HashMap<&str, Option<Cow<'_, [u8]>>> = HashMap::new();
            let mut written: chain::Written = Vec::new();
            let mut results: Vec<WriteResult> = Vec::with_capacity(batches.len());
            for writes in batches {
                let mine = stage(writes, |k| {
                    Ok::<_, std::convert::Infallible>(match staged.get(k) {
                        Some(v) => v.as_deref().map(Cow::Borrowed),
                        None => counted
                            .iter()
                            .position(|c| *c == k)
                            .and_then(|i| current.get(i)?.as_deref())
                            .map(Cow::Borrowed),
                    })
                })
                .unwrap_or_else(|never| match never {});
                let mine = match mine {
                    Ok(mine) => mine,
                    Err(why) => {
                        results.push(Err(why));
                        continue;
                    }
                };
                for w in writes.iter() {
                    let (Write::Set(k, _) | Write::Delete(k) | Write::Increment(k, _)) = w;
                    let value = mine.values[k.as_str()].as_deref().map(<[u8]>::to_vec);
                    written.push((k.clone(), value));
                }
                results.push(Ok(mine.last));
                staged.extend(mine.values);
            }
            if written.is_empty() {
                *last_written = head_text;
                return results;
            }
            let (entries, (seq, tag)) = match chain::entries(&mac, (head.seq, head.tag), &written) {
                Ok(made) => made,
                Err(e) => return everyone(failed(&e)),
            };
            let new_head = format!(
                "{seq} {} {}",
                crate::platform::hex::encode(&tag),
                secret.id()
            );
            let mut invocation = self.chain_script.key(&bucket);
            invocation
                .key(&chain_hash)
                .arg(&head_text)
                .arg(&new_head)
                .arg(staged.len());
            for (k, v) in &staged {
                match v {
                    Some(v) => invocation.arg("s").arg(*k).arg(&**v),
                    None => invocation.arg("d").arg(*k).arg(""),
                };
            }
            for (seq, entry) in &entries {
                invocation.arg(*seq).arg(entry.as_slice());
            }
            match invocation.invoke_async::<(i64, String)>(&mut conn).await {
                Ok((1, _)) => {
                    *last_written = new_head;
                    return results;
                }
                // Another server extended the chain first: its head is next.
                Ok((_, answer)) => known = Some(answer),
                Err(e) => return everyone(failed(&e)),
            }
        }
        everyone(failed(&format!(
            "the audit chain of tenant `{tenant}` moved under {CHAIN_TRIES} tries in a row"
        )))
    }

    /// `tenant`'s audit chain in Redis, in sequence order (for `tensor-wasm
    /// audit verify`).
    pub async fn chain(&self, tenant: &str) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut conn = self.conn.clone();
        let all: HashMap<String, Vec<u8>> = ::redis::cmd("HGETALL")
            .arg(hash(&chain::table(tenant)))
            .query_async(&mut conn)
            .await
            .with_context(|| format!("Redis read from {} failed", self.shown))?;
        let mut entries: Vec<(u64, Vec<u8>)> = all
            .into_iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
            .collect();
        entries.sort_unstable_by_key(|(seq, _)| *seq);
        Ok(entries)
    }

    /// Every entry of `table`, in key order.
    pub async fn entries(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let mut conn = self.conn.clone();
        let all: HashMap<String, Vec<u8>> = ::redis::cmd("HGETALL")
            .arg(hash(table))
            .query_async(&mut conn)
            .await
            .with_context(|| format!("Redis read from {} failed", self.shown))?;
        let mut entries: Vec<(String, Vec<u8>)> = all.into_iter().collect();
        entries.sort_unstable();
        Ok(entries)
    }

    /// The tenants with an audit bucket or an audit chain in this Redis.
    pub async fn audited_tenants(&self) -> Result<Vec<String>> {
        let mut conn = self.conn.clone();
        let mut names: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{PREFIX}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .with_context(|| format!("Redis read from {} failed", self.shown))?;
            names.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut tenants: Vec<String> = names
            .iter()
            .filter_map(|n| n.strip_prefix(PREFIX))
            .filter_map(|t| chain::audited_tenant(t).or_else(|| chain::chain_tenant(t)))
            .map(str::to_string)
            .collect();
        tenants.sort_unstable();
        tenants.dedup();
        Ok(tenants)
    }

    /// The values of `keys` in `table`.
    pub async fn get_many(&self, table: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        ::redis::cmd("HMGET")
            .arg(hash(table))
            .arg(keys)
            .query_async(&mut conn)
            .await
            .with_context(|| format!("Redis read from {} failed", self.shown))
    }

    /// Up to [`PAGE`] keys of `table`, in order, after skipping `skip`, and
    /// whether more follow. (Every page reads all the hash's keys: Redis
    /// keeps them unordered. Buckets listed often should stay small.)
    pub async fn keys(&self, table: &str, skip: u64) -> Result<(Vec<String>, bool)> {
        let mut conn = self.conn.clone();
        let mut keys: Vec<String> = ::redis::cmd("HKEYS")
            .arg(hash(table))
            .query_async(&mut conn)
            .await
            .with_context(|| format!("Redis read from {} failed", self.shown))?;
        keys.sort_unstable();
        let mut iter = keys
            .into_iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX));
        let page: Vec<String> = iter.by_ref().take(PAGE).collect();
        Ok((page, iter.next().is_some()))
    }
}

/// The Redis hash holding `table`.
pub fn hash(table: &str) -> String {
    format!("{PREFIX}{table}")
}

/// `url` with its password (if any) replaced by `***`, for logs, errors
/// and the admin API.
pub fn shown(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn passwords_never_show() {
        assert_eq!(shown("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(shown("redis://user:p@ss@h/1"), "redis://user:***@h/1");
        assert_eq!(shown("redis://h:6379/0"), "redis://h:6379/0");
        assert_eq!(shown("redis://user@h/0"), "redis://user@h/0");
        assert_eq!(
            shown("redis+unix:///run/redis.sock"),
            "redis+unix:///run/redis.sock"
        );
    }
}
