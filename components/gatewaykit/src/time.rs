//! Wall-clock time (the host's, the same for every instance).

use wasip2::clocks::wall_clock;

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    let t = wall_clock::now();
    t.seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(t.nanoseconds))
}

/// `ns` since the epoch as RFC 3339 UTC with milliseconds,
/// e.g. `2026-12-01T19:20:00.123Z`.
pub fn rfc3339(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let millis = (ns / 1_000_000) % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}
