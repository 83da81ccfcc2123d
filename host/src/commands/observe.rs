//! `tensor-wasm observe`: a one-screen status board of a running server,
//! read from its admin listener's `/healthz` and `/metrics` (nothing else:
//! no token needed). Rates and percentiles are over the last interval (the
//! difference between two scrapes), like `top`.

use super::admin_http::exchange;
use anyhow::{Result, anyhow};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::time::{Duration, Instant};

/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the board: redrawn every `interval` until interrupted, or printed
/// once (after two scrapes `interval` apart) with `once`.
pub fn run(admin: &str, interval: Duration, once: bool) -> Result<()> {
    let mut before = Scrape::take(admin)?;
    loop {
        std::thread::sleep(interval);
        let now = match Scrape::take(admin) {
            Ok(s) => s,
            Err(e) if !once => {
                // Like `top` when its source goes away: say so, keep trying.
                print!("\x1b[H\x1b[2J{e:#}\nretrying every {interval:?}…\n");
                std::io::stdout().flush()?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let board = render(admin, &before, &now);
        if once {
            print!("{board}");
            return Ok(());
        }
        print!("\x1b[H\x1b[2J{board}");
        std::io::stdout().flush()?;
        before = now;
    }
}

/// One reading of `/healthz` and `/metrics`.
struct Scrape {
    at: Instant,
    health: String,
    samples: Vec<Sample>,
}

/// One sample line: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Scrape {
    fn take(admin: &str) -> Result<Scrape> {
        let health = get(admin, "/healthz")?;
        let text = get(admin, "/metrics")?;
        Ok(Scrape {
            at: Instant::now(),
            health: health.trim().to_string(),
            samples: parse(&text),
        })
    }

    /// Samples of `name` whose labels include every pair of `with`.
    fn find<'a>(
        &'a self,
        name: &'a str,
        with: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
    }

    fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        // (An empty float sum is -0.)
        self.find(name, with).map(|s| s.value).sum::<f64>() + 0.0
    }

    /// A gauge's value, `-` when the series does not exist.
    fn gauge(&self, name: &str, with: &[(&str, &str)]) -> String {
        match self.find(name, with).next() {
            Some(_) => format!("{:.0}", self.sum(name, with)),
            None => "-".into(),
        }
    }

    /// `(tenant, deployment)` pairs that have a request counter, and
    /// tenants with a tensor quota.
    fn deployments(&self) -> Vec<(String, String)> {
        let mut seen: Vec<(String, String)> = self
            .find("tensorwasm_in_flight_requests", &[])
            .filter_map(|s| {
                Some((
                    s.labels.get("tenant")?.clone(),
                    s.labels.get("deployment")?.clone(),
                ))
            })
            .collect();
        seen.sort();
        seen.dedup();
        seen
    }

    fn tenants(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .find("tensorwasm_tensor_quota_bytes", &[])
            .filter_map(|s| s.labels.get("tenant").cloned())
            .collect();
        t.sort();
        t.dedup();
        t
    }
}

/// GET `path` of the admin listener: the body of a 200, else an error.
fn get(admin: &str, path: &str) -> Result<String> {
    let (status, body) = exchange(admin, "GET", path, &[], "", Some(SCRAPE_TIMEOUT))?;
    if status != 200 {
        return Err(anyhow!("{path}: HTTP {status}: {}", body.trim()));
    }
    Ok(body)
}

/// The samples of a Prometheus/OpenMetrics text exposition (comments,
/// exemplars and malformed lines skipped).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let line = line.split(" # ").next()?;
            let (series, value) = line.rsplit_once(' ')?;
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().ok()?,
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, labels(rest.strip_suffix('}')?)?),
                None => (series, BTreeMap::new()),
            };
            Some(Sample {
                name: name.to_string(),
                labels,
                value,
            })
        })
        .collect()
}

/// `a="x",b="y"` (values with `\"`, `\\` and `\n` escapes).
fn labels(mut s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    while !s.is_empty() {
        let (key, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        out.insert(key.trim().to_string(), value);
        s = rest[end + 1..].trim_start_matches(',');
    }
    Some(out)
}

/// The `q` quantile of the requests between two scrapes of a histogram
/// (linear within a bucket, as PromQL's `histogram_quantile`); `None`
/// without requests in between.
fn quantile(
    q: f64,
    before: &Scrape,
    now: &Scrape,
    name: &str,
    with: &[(&str, &str)],
) -> Option<f64> {
    let bucket = format!("{name}_bucket");
    let mut counts: Vec<(f64, f64)> = now
        .find(&bucket, with)
        .filter_map(|s| {
            let le: f64 = match s.labels.get("le")?.as_str() {
                "+Inf" => f64::INFINITY,
                v => v.parse().ok()?,
            };
            let earlier = before
                .find(&bucket, with)
                .find(|b| b.labels == s.labels)
                .map_or(0.0, |b| b.value);
            Some((le, s.value - earlier))
        })
        .collect();
    counts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = counts.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (le, count) in counts {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let within = (count - below).max(f64::MIN_POSITIVE);
            return Some(lower + (le - lower) * (rank - below) / within);
        }
        (lower, below) = (le, count);
    }
    None
}

fn seconds(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 0.001 => format!("{:.0}µs", s * 1e6),
        Some(s) if s < 1.0 => format!("{:.1}ms", s * 1e3),
        Some(s) => format!("{s:.2}s"),
    }
}

fn bytes(b: f64) -> String {
    crate::platform::units::format_size(b.max(0.0) as u64)
}

/// The board's text.
fn render(admin: &str, before: &Scrape, now: &Scrape) -> String {
    let dt = now.at.duration_since(before.at).as_secs_f64().max(1e-3);
    let rate = |name: &str, with: &[(&str, &str)]| {
        ((now.sum(name, with) - before.sum(name, with)) / dt).max(0.0)
    };
    let mut out = String::new();
    let info = now.find("tensorwasm_build_info", &[]).next();
    let label = |k: &str| {
        info.and_then(|s| s.labels.get(k))
            .map_or("?", String::as_str)
            .to_string()
    };
    let hits = now.sum("tensorwasm_artifact_cache_hits_total", &[]);
    let misses = now.sum("tensorwasm_artifact_cache_misses_total", &[]);
    let _ = writeln!(
        out,
        "tensor-wasm {}  {admin}  health: {}  backend: {}{}  (over the last {dt:.1}s)",
        label("version"),
        now.health,
        label("backend"),
        match label("device").as_str() {
            "cpu" | "?" => String::new(),
            d => format!(" ({d})"),
        },
    );
    let _ = writeln!(
        out,
        "cache: {hits:.0} hits, {misses:.0} misses  keyvalue commits: {:.1}/s p99 {}  trace spans dropped: {:.0}",
        rate("tensorwasm_keyvalue_commit_duration_seconds_count", &[]),
        seconds(quantile(
            0.99,
            before,
            now,
            "tensorwasm_keyvalue_commit_duration_seconds",
            &[]
        )),
        now.sum("tensorwasm_trace_spans_dropped_total", &[]),
    );
    let mut rows = Vec::new();
    for (tenant, deployment) in now.deployments() {
        let with = [
            ("tenant", tenant.as_str()),
            ("deployment", deployment.as_str()),
        ];
        let errors: f64 = now
            .find("tensorwasm_requests_total", &with)
            .filter(|s| s.labels.get("status").is_some_and(|c| c.starts_with('5')))
            .map(|s| {
                let earlier = before
                    .find("tensorwasm_requests_total", &with)
                    .find(|b| b.labels == s.labels)
                    .map_or(0.0, |b| b.value);
                s.value - earlier
            })
            .sum();
        let latency = "tensorwasm_request_duration_seconds";
        rows.push(vec![
            format!("{tenant}/{deployment}"),
            format!("{:.1}", rate("tensorwasm_requests_total", &with)),
            seconds(quantile(0.5, before, now, latency, &with)),
            seconds(quantile(0.99, before, now, latency, &with)),
            format!("{:.1}", (errors / dt).max(0.0)),
            now.gauge("tensorwasm_in_flight_requests", &with),
            now.gauge("tensorwasm_queued_requests", &with),
            now.gauge("tensorwasm_idle_instances", &with),
            format!("{:.0}", rate("tensorwasm_tensor_ops_total", &with)),
            format!("{:.0}", now.sum("tensorwasm_requests_total", &with)),
        ]);
    }
    out.push('\n');
    table(
        &mut out,
        &[
            "DEPLOYMENT",
            "REQ/S",
            "P50",
            "P99",
            "5XX/S",
            "IN-FLIGHT",
            "QUEUED",
            "IDLE",
            "OPS/S",
            "REQUESTS",
        ],
        &rows,
    );
    let rows: Vec<Vec<String>> = now
        .tenants()
        .into_iter()
        .map(|tenant| {
            let with = [("tenant", tenant.as_str())];
            let used = now.sum("tensorwasm_tensor_bytes", &with);
            let quota = now.sum("tensorwasm_tensor_quota_bytes", &with);
            vec![
                tenant.clone(),
                bytes(used),
                bytes(quota),
                format!(
                    "{:.0}%",
                    if quota > 0.0 {
                        100.0 * used / quota
                    } else {
                        0.0
                    }
                ),
                bytes(now.sum("tensorwasm_weights_bytes", &with)),
            ]
        })
        .collect();
    out.push('\n');
    table(
        &mut out,
        &["TENANT", "TENSOR MEMORY", "QUOTA", "USED", "WEIGHTS"],
        &rows,
    );
    out
}

/// Appends `rows` under `head`, columns padded.
fn table(out: &mut String, head: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(head.to_vec());
    if rows.is_empty() {
        line(vec!["(none)"]);
    }
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(text: &str) -> Scrape {
        Scrape {
            at: Instant::now(),
            health: "ok".into(),
            samples: parse(text),
        }
    }

    #[test]
    fn parses_samples_labels_escapes_and_exemplars() {
        let s = parse(
            "# HELP x y\n\
             a_total{tenant=\"t\",deployment=\"d\\\"q\"} 3\n\
             b 1.5\n\
             h_bucket{le=\"+Inf\"} 7 # {trace_id=\"abc\"} 0.2\n\
             broken{x=\"1\" 2\n",
        );
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].labels["deployment"], "d\"q");
        assert_eq!(s[0].value, 3.0);
        assert_eq!((s[1].name.as_str(), s[1].value), ("b", 1.5));
        assert_eq!(s[2].value, 7.0);
    }

    #[test]
    fn quantiles_come_from_the_interval_between_scrapes() {
        let before =
            scrape("l_bucket{le=\"0.1\"} 10\nl_bucket{le=\"1\"} 10\nl_bucket{le=\"+Inf\"} 10\n");
        // 100 new requests: 50 under 0.1 s, 50 between 0.1 and 1 s.
        let now =
            scrape("l_bucket{le=\"0.1\"} 60\nl_bucket{le=\"1\"} 110\nl_bucket{le=\"+Inf\"} 110\n");
        let p50 = quantile(0.5, &before, &now, "l", &[]).unwrap();
        assert!((p50 - 0.1).abs() < 1e-9, "{p50}");
        let p99 = quantile(0.99, &before, &now, "l", &[]).unwrap();
        assert!((p99 - 0.982).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.5, &now, &now, "l", &[]), None);
    }
}
