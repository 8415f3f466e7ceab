//! How long a rate limit asks us to wait.
//!
//! GitHub has two: the primary limit (`x-ratelimit-remaining: 0`, until `x-ratelimit-reset`) and
//! secondary limits (a 403 or 429, sometimes with `Retry-After`, sometimes only a message).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{DATE, HeaderMap, HeaderName, RETRY_AFTER};

use crate::fetch::parse_retry_after;

/// Wait when GitHub says "secondary rate limit" (or answers 429) without telling us how long:
/// their documentation asks for at least one minute.
pub(super) const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// Bounds of a rate-limit wait: never spin, never park a link for longer than an hour.
const MIN_RATE_LIMIT_WAIT: Duration = Duration::from_secs(1);
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60 * 60);

const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// The wait the rate-limit headers ask for, if any: until `x-ratelimit-reset` when
/// `x-ratelimit-remaining` is 0, and `retry-after` (seconds or an HTTP date); the longer of the two
/// when both are present. Times are measured against the response's `Date` when it has one, so
/// our clock's skew does not matter.
pub(super) fn rate_limit_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let server_now = header(&DATE)
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .unwrap_or(now);

    let primary = (header(&RATELIMIT_REMAINING) == Some("0")).then(|| {
        header(&RATELIMIT_RESET)
            .and_then(|r| r.parse::<u64>().ok())
            .and_then(|r| UNIX_EPOCH.checked_add(Duration::from_secs(r)))
            .map_or(DEFAULT_RATE_LIMIT_WAIT, |reset| {
                reset.duration_since(server_now).unwrap_or(Duration::ZERO)
            })
    });
    // Capped at an hour by the parser, as the wait is below.
    let retry_after = header(&RETRY_AFTER).and_then(|v| parse_retry_after(v, server_now));
    let wait = match (primary, retry_after) {
        (Some(a), Some(b)) => a.max(b),
        (a, b) => a.or(b)?,
    };
    Some(wait.clamp(MIN_RATE_LIMIT_WAIT, MAX_RATE_LIMIT_WAIT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_rate_limit_wait_is_bounded() {
        let now = SystemTime::now();
        let epoch = |d: Duration| {
            (now + d)
                .duration_since(UNIX_EPOCH)
                .expect("after 1970")
                .as_secs()
                .to_string()
        };
        let headers = |pairs: &[(&'static str, String)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, value.parse().expect("valid value"));
            }
            map
        };
        let far = headers(&[
            ("x-ratelimit-remaining", "0".into()),
            ("x-ratelimit-reset", epoch(Duration::from_secs(7200))),
        ]);
        assert_eq!(rate_limit_wait(&far, now), Some(MAX_RATE_LIMIT_WAIT));
        let past = headers(&[("x-ratelimit-remaining", "0".into()), ("x-ratelimit-reset", "1".into())]);
        assert_eq!(rate_limit_wait(&past, now), Some(MIN_RATE_LIMIT_WAIT));
        let zero = headers(&[("retry-after", "0".into())]);
        assert_eq!(rate_limit_wait(&zero, now), Some(MIN_RATE_LIMIT_WAIT));
        let remaining = headers(&[
            ("x-ratelimit-remaining", "12".into()),
            ("x-ratelimit-reset", epoch(Duration::from_secs(100))),
        ]);
        assert_eq!(rate_limit_wait(&remaining, now), None);
        let date = headers(&[("retry-after", httpdate::fmt_http_date(now + Duration::from_secs(90)))]);
        let wait = rate_limit_wait(&date, now).expect("a wait");
        assert!(
            (Duration::from_secs(89)..=Duration::from_secs(90)).contains(&wait),
            "{wait:?}"
        );
    }
}
