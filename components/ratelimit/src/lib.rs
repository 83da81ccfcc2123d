//! `ratelimit`: a token bucket per caller (the bearer token's id, or the
//! client address for anonymous callers), shared by every instance through
//! `wasi:keyvalue` atomics; over the limit: 429 with `Retry-After` and
//! `RateLimit-*` headers. Admitted requests are forwarded unchanged (a
//! WASI 0.2 middleware cannot add headers to a response it does not make).
//!
//! Config: `ratelimit.default = "QPS/BURST"` (e.g. `"10/20"`; unset: no
//! limit) and per token `ratelimit.token.ID = "QPS/BURST"` or `"off"`.
//!
//! # The bucket, with increments only
//! `wasi:keyvalue` offers atomic increment but no compare-and-swap, so the
//! bucket is kept as claimable slots: time is cut into slots of
//! `σ = (BURST/K)/QPS` seconds, each producing `BURST/K` tokens (K ≤ 16), and
//! a request may take a token from any of the last K slots, oldest first,
//! by incrementing that slot's counter: the increment that returns a value
//! within the slot's capacity holds the token. Rejected requests take no
//! token (they read, and at most push a full slot's counter further past its
//! capacity), so a flood cannot starve its own bucket, and in
//! any interval of t seconds at most `QPS·t + BURST + BURST/K` requests are
//! admitted.
//!
//! A warm instance (`instances = { reuse = N }`) remembers the slot it last
//! took a token from, per bucket, and tries that slot first: one increment
//! instead of reading the whole window, until the slot is full or leaves
//! the window. It also keeps each token caller's parsed policy and open
//! bucket, so a request costs the increment and little else.

// Natively only the fuzz targets use this crate (its parsers).
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use gatewaykit::keyvalue::{atomics, batch, store};
use httpkit::{json_error, respond};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Mutex;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

gatewaykit::bindings!("tensorwasm:ratelimit/ratelimit");

/// Most slots a bucket is cut into.
const MAX_SLOTS: u64 = 16;
/// Increments tried before giving up on a contended bucket.
const TRIES: usize = 3;
/// How long a slot's counter is kept after it leaves the window (at most
/// [`KEEP_SLOTS`] of them). A request still in flight reads the window of the
/// time it started; were a counter it can see deleted under it, it would find
/// the slot unclaimed and take that token a second time.
const KEEP_NS: u64 = 10_000_000_000;
/// Most slots kept beyond the window.
const KEEP_SLOTS: u64 = 512;

/// Buckets whose last slot this instance remembers, at most.
const REMEMBERED: usize = 256;

/// The slot this instance last took a token from, per bucket name.
static LAST: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// A bucket's rate and size.
#[derive(Debug, Clone, Copy)]
struct Policy {
    qps: f64,
    burst: u64,
}

/// The fuzz targets' way in (`fuzz/`): parses a `QPS/BURST` rate.
#[doc(hidden)]
pub fn fuzz_policy(text: &str) -> Result<Option<(f64, u64)>, String> {
    parse_policy("fuzz", text).map(|p| p.map(|p| (p.qps, p.burst)))
}

fn parse_policy(key: &str, text: &str) -> Result<Option<Policy>, String> {
    let text = text.trim();
    if text == "off" {
        return Ok(None);
    }
    let bad = || format!("{key}: expected `QPS/BURST` (e.g. `10/20`) or `off`, got `{text}`");
    let (qps, burst) = text.split_once('/').ok_or_else(bad)?;
    let qps: f64 = qps.trim().parse().map_err(|_| bad())?;
    let burst: u64 = burst.trim().parse().map_err(|_| bad())?;
    if !(qps.is_finite() && qps > 0.0) || burst == 0 || burst > 1_000_000 {
        return Err(bad());
    }
    Ok(Some(Policy { qps, burst }))
}

/// The policy for caller `id` (a token's own, else the default).
fn policy(token: Option<&str>) -> Result<Option<Policy>, String> {
    if let Some(id) = token {
        let key = format!("ratelimit.token.{id}");
        if let Some(text) = gatewaykit::config_get(&key) {
            return parse_policy(&key, text);
        }
    }
    match gatewaykit::config_get("ratelimit.default") {
        Some(text) => parse_policy("ratelimit.default", text),
        None => Ok(None),
    }
}

/// The slot layout of a policy.
struct Slots {
    count: u64,
    burst: u64,
    length_ns: u64,
}

impl Slots {
    fn new(p: Policy) -> Self {
        let count = p.burst.min(MAX_SLOTS);
        let per_slot = p.burst as f64 / count as f64;
        let length_ns = ((per_slot / p.qps) * 1e9).max(1.0) as u64;
        Self {
            count,
            burst: p.burst,
            length_ns,
        }
    }

    /// Tokens slot `j` produces: the slots' shares of BURST, exact over K slots.
    fn capacity(&self, j: u64) -> u64 {
        let share =
            |j: u64| (u128::from(j) * u128::from(self.burst) / u128::from(self.count)) as u64;
        share(j + 1) - share(j)
    }
}

fn key(slot: u64) -> String {
    format!("{slot:020}")
}

enum Verdict {
    /// A token taken from this slot.
    Admit(u64),
    Reject {
        retry_ns: u64,
    },
}

/// Takes one token from `bucket` (named `name`) at time `now` (ns): from
/// the slot this instance last took one from while it is in the window and
/// not full, else from the oldest slot with tokens left.
fn take(
    bucket: &store::Bucket,
    name: &str,
    slots: &Slots,
    now: u64,
) -> Result<Verdict, store::Error> {
    let current = now / slots.length_ns;
    let first = current.saturating_sub(slots.count - 1);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&j) = last.get(name).filter(|j| (first..=current).contains(*j)) {
        if atomics::increment(bucket, &key(j), 1)? <= slots.capacity(j) {
            return Ok(Verdict::Admit(j));
        }
        // Full for good (counters only grow): forget it.
        last.remove(name);
    }
    let verdict = take_oldest(bucket, slots, first, now)?;
    if let Verdict::Admit(j) = verdict {
        if last.len() >= REMEMBERED {
            last.clear();
        }
        last.insert(name.to_string(), j);
    }
    Ok(verdict)
}

/// Takes one token from the oldest slot of the window from `first` to now
/// with tokens left.
fn take_oldest(
    bucket: &store::Bucket,
    slots: &Slots,
    first: u64,
    now: u64,
) -> Result<Verdict, store::Error> {
    let current = now / slots.length_ns;
    let window: Vec<u64> = (first..=current).collect();
    let keys: Vec<String> = window.iter().map(|&j| key(j)).collect();
    let values = batch::get_many(bucket, &keys)?;
    let used = |v: &Option<(String, Vec<u8>)>| {
        v.as_ref()
            .and_then(|(_, bytes)| std::str::from_utf8(bytes).ok()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let free: Vec<u64> = window
        .iter()
        .zip(&values)
        .filter(|(j, v)| used(v) < slots.capacity(**j))
        .map(|(j, _)| *j)
        .collect();
    for &j in free.iter().take(TRIES) {
        let n = atomics::increment(bucket, &key(j), 1)?;
        if n <= slots.capacity(j) {
            // Once a window, the first claim of a slot clears out old counters.
            if n == 1 && j % slots.count == 0 {
                let kept = (KEEP_NS / slots.length_ns).clamp(slots.count, KEEP_SLOTS);
                collect_garbage(bucket, first.saturating_sub(kept));
            }
            return Ok(Verdict::Admit(j));
        }
    }
    let next_slot = (current + 1).saturating_mul(slots.length_ns);
    Ok(Verdict::Reject {
        retry_ns: next_slot.saturating_sub(now),
    })
}

/// Deletes the counters of slots before `first` (long out of every
/// request's window: see [`KEEP_NS`]).
fn collect_garbage(bucket: &store::Bucket, first: u64) {
    let Ok(listed) = bucket.list_keys(None) else {
        return;
    };
    let stale: Vec<String> = listed
        .keys
        .into_iter()
        .take_while(|k| k.parse::<u64>().is_ok_and(|j| j < first))
        .collect();
    if !stale.is_empty() {
        let _ = batch::delete_many(bucket, &stale);
    }
}

fn too_many(out: ResponseOutparam, p: Policy, retry_ns: u64) {
    let retry = retry_ns.div_ceil(1_000_000_000).max(1).to_string();
    let limit = p.burst.to_string();
    let window = ((p.burst as f64 / p.qps).ceil() as u64).max(1);
    let policy = format!("{};w={window}", p.burst);
    let body = format!(
        "{{\"error\":{{\"code\":\"rate_limited\",\"message\":\"rate limit of {} requests/s (burst {}) exceeded; retry in {retry} s\"}}}}",
        p.qps, p.burst
    );
    respond(
        out,
        429,
        &[
            ("content-type", "application/json"),
            ("retry-after", &retry),
            ("ratelimit-limit", &limit),
            ("ratelimit-remaining", "0"),
            ("ratelimit-reset", &retry),
            ("ratelimit-policy", &policy),
        ],
        body.as_bytes(),
    );
}

/// Who the bucket belongs to: the token's id, else the client's address.
fn bucket_name(request: &IncomingRequest, token: Option<&str>) -> String {
    match token {
        Some(id) => format!("volatile:ratelimit/token/{id}"),
        None => {
            let addr = gatewaykit::header(request, "x-client-addr").unwrap_or_default();
            let ip = addr.rsplit_once(':').map_or(addr.as_str(), |(ip, _)| ip);
            format!("volatile:ratelimit/client/{ip}")
        }
    }
}

/// What a request of one caller needs: the policy, and the caller's bucket.
struct Plan {
    policy: Policy,
    slots: Slots,
    name: String,
    bucket: store::Bucket,
}

thread_local! {
    /// Token callers' plans, kept while the instance lives (config does not
    /// change meanwhile); at most [`REMEMBERED`].
    static PLANS: RefCell<BTreeMap<String, Rc<Plan>>> = const { RefCell::new(BTreeMap::new()) };
}

/// The plan for this request's caller (`None`: no limit), from the cache
/// for token callers.
fn plan(request: &IncomingRequest, token: Option<&str>) -> Result<Option<Rc<Plan>>, Refusal> {
    if let Some(id) = token
        && let Some(plan) = PLANS.with_borrow(|p| p.get(id).cloned())
    {
        return Ok(Some(plan));
    }
    let Some(policy) = policy(token).map_err(Refusal::Config)? else {
        return Ok(None);
    };
    let name = bucket_name(request, token);
    let bucket = store::open(&name).map_err(Refusal::Store)?;
    let plan = Rc::new(Plan {
        policy,
        slots: Slots::new(policy),
        name,
        bucket,
    });
    if let Some(id) = token {
        PLANS.with_borrow_mut(|p| {
            if p.len() >= REMEMBERED {
                p.clear();
            }
            p.insert(id.to_string(), plan.clone());
        });
    }
    Ok(Some(plan))
}

/// Why a request could not be judged.
enum Refusal {
    Config(String),
    Store(store::Error),
}

struct RateLimit;

impl exports::wasi::http::incoming_handler::Guest for RateLimit {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let caller = gatewaykit::identity::caller(&request);
        let verdict = plan(&request, caller.id()).and_then(|plan| {
            let Some(plan) = plan else { return Ok(None) };
            let now = gatewaykit::time::now_ns();
            let verdict = take(&plan.bucket, &plan.name, &plan.slots, now);
            Ok(Some((plan.policy, verdict.map_err(Refusal::Store)?)))
        });
        match verdict {
            Ok(None | Some((_, Verdict::Admit(_)))) => {
                wasi::http::incoming_handler::handle(request, out)
            }
            Ok(Some((policy, Verdict::Reject { retry_ns }))) => too_many(out, policy, retry_ns),
            Err(Refusal::Config(e)) => json_error(out, 500, "bad_config", &e),
            Err(Refusal::Store(e)) => json_error(
                out,
                503,
                "ratelimit_unavailable",
                &format!("the rate limiter's store failed: {e:?}"),
            ),
        }
    }
}

// Natively (the fuzz targets link this crate) there is nothing to export.
#[cfg(target_arch = "wasm32")]
export!(RateLimit);
