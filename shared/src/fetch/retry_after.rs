//! `Retry-After`: how long a server asks us to wait, as seconds or an HTTP date.
//!
//! One parser for the check (a 429 or 503 from a link's host) and the GitHub client (its rate
//! limits); each decides what to do with the wait.

use std::time::{Duration, SystemTime};

/// Longest `Retry-After` honoured: a server cannot park a host, or a link, for longer than this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The wait `value` asks for, capped at [`MAX_RETRY_AFTER`]: seconds, or an HTTP date measured
/// from `now` (a date already past is no wait). The check passes our clock; the GitHub client
/// passes the response's `Date`, so our clock's skew does not matter.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 2 ", now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
        let soon = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let parsed = parse_retry_after(&soon, SystemTime::now()).expect("date");
        assert!(
            parsed > Duration::from_secs(25) && parsed <= Duration::from_secs(30),
            "{parsed:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn a_date_is_measured_from_the_given_now() {
        let server_now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let date = httpdate::fmt_http_date(server_now + Duration::from_secs(90));
        assert_eq!(parse_retry_after(&date, server_now), Some(Duration::from_secs(90)));
    }
}
