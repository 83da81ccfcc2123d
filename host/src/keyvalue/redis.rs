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

use super::durable::{PAGE, Write, WriteResult};
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use anyhow::{Context, Result};
use std::sync::OnceLock;
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

/// One Redis server's connection, shared by the deployments that name it.
pub struct Redis {
    conn: ConnectionManager,
    script: ::redis::Script,
    /// The URL without its password, for errors and logs.
    shown: String,
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

impl Redis {
    /// A client of the Redis at `url` (`redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`
    /// or `redis+unix:///PATH`). It connects on first use, so a server
    /// starts while Redis is down (calls fail until it is back).
    pub fn new(url: &str) -> Result<Self> {
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
            shown: shown(url),
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

    /// Applies `writes` to the hash of `table`, atomically.
    pub async fn write(&self, table: &str, writes: Vec<Write>) -> WriteResult {
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
