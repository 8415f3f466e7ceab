//! What one fetch result means for a link: a [`Verdict`], a status and a reason.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;

use crate::fetch::{FetchError, FetchResponse, parse_retry_after};

/// Class of one check's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Reachable.
    Ok,
    /// Evidence of death: 404, 410, 451, other client errors, no such host, redirect loops, TLS
    /// failures, refused by the guard.
    Dead,
    /// Possibly temporary: timeouts, resets, refused connections, 408, 5xx.
    Transient,
    /// Not evidence of anything: 401, 403, 429, 999, bot challenges, failures on our side.
    Blocked,
}

impl Verdict {
    /// Stored name (`links.last_outcome`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Dead => "dead",
            Self::Transient => "transient",
            Self::Blocked => "blocked",
        }
    }
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The class.
    pub verdict: Verdict,
    /// Final HTTP status, if any response arrived.
    pub status_code: Option<u16>,
    /// Human-readable reason (empty for `ok`).
    pub reason: String,
    /// `Retry-After` of a 429/503, capped at [`MAX_RETRY_AFTER`](crate::fetch::MAX_RETRY_AFTER).
    pub retry_after: Option<Duration>,
}

/// Classifies one fetch result.
pub fn classify(result: &Result<FetchResponse, FetchError>) -> CheckResult {
    match result {
        Ok(response) => verdict_of_response(response),
        Err(error) => verdict_of_error(error),
    }
}

/// The verdict of a response: its status, unless it is a bot challenge.
pub fn verdict_of_response(response: &FetchResponse) -> CheckResult {
    let status = response.status;
    let code = status.as_u16();
    let challenged = response
        .headers
        .get("cf-mitigated")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("challenge"))
        || (!response.body.is_empty() && crate::scrape::is_challenge_page(&String::from_utf8_lossy(&response.body)));
    let (verdict, reason) = match code {
        _ if challenged => (Verdict::Blocked, format!("HTTP {code}: bot challenge")),
        200..=299 | 304 => (Verdict::Ok, String::new()),
        401 | 403 | 429 | 999 => (Verdict::Blocked, format!("HTTP {code}: {}", reason_of(status))),
        408 | 500..=599 => (Verdict::Transient, format!("HTTP {code}: {}", reason_of(status))),
        300..=399 => (Verdict::Dead, format!("HTTP {code}: redirect without a usable target")),
        _ => (Verdict::Dead, format!("HTTP {code}: {}", reason_of(status))),
    };
    let retry_after = matches!(code, 429 | 503)
        .then(|| {
            response
                .headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()))
        })
        .flatten();
    CheckResult {
        verdict,
        status_code: Some(code),
        reason,
        retry_after,
    }
}

/// `result` with a host's accepted status codes applied: a response whose status `accepted`
/// says counts as `ok` for its host (`[[host]] accept` in the rules file) is `ok`, whatever that
/// status means elsewhere, a bot challenge included (the operator vouched for the host). Results
/// without a response are left alone.
pub fn with_accepted(result: CheckResult, accepted: impl Fn(u16) -> bool) -> CheckResult {
    match result.status_code {
        Some(code) if result.verdict != Verdict::Ok && accepted(code) => CheckResult {
            verdict: Verdict::Ok,
            status_code: Some(code),
            reason: String::new(),
            retry_after: None,
        },
        _ => result,
    }
}

fn reason_of(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("non-standard status")
}

/// The verdict of a fetch that got no response.
pub fn verdict_of_error(error: &FetchError) -> CheckResult {
    let verdict = match error {
        FetchError::Refused(_)
        | FetchError::NoSuchHost(_)
        | FetchError::Tls(_)
        | FetchError::TooManyRedirects(_)
        | FetchError::RedirectLoop(_)
        | FetchError::InvalidRedirect(_) => Verdict::Dead,
        FetchError::Timeout { .. } | FetchError::Connect(_) | FetchError::Other(_) => Verdict::Transient,
        FetchError::Local(_) => Verdict::Blocked,
    };
    CheckResult {
        verdict,
        status_code: None,
        reason: error.to_string(),
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderMap, HeaderValue};
    use url::Url;

    use super::*;
    use crate::fetch::{MAX_RETRY_AFTER, Refused, TimeoutPhase};

    fn response(code: u16, headers: &[(&'static str, &str)], body: &str) -> Result<FetchResponse, FetchError> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        Ok(FetchResponse {
            url: Url::parse("https://example.com/").expect("url"),
            status: StatusCode::from_u16(code).expect("status"),
            headers: map,
            body: body.as_bytes().to_vec(),
            redirects: 0,
            truncated: false,
        })
    }

    #[test]
    fn statuses_map_to_verdicts() {
        let cases = [
            (200, Verdict::Ok),
            (204, Verdict::Ok),
            (304, Verdict::Ok),
            (401, Verdict::Blocked),
            (403, Verdict::Blocked),
            (429, Verdict::Blocked),
            (999, Verdict::Blocked),
            (404, Verdict::Dead),
            (410, Verdict::Dead),
            (451, Verdict::Dead),
            (400, Verdict::Dead),
            (408, Verdict::Transient),
            (500, Verdict::Transient),
            (503, Verdict::Transient),
            (522, Verdict::Transient),
        ];
        for (code, verdict) in cases {
            assert_eq!(classify(&response(code, &[], "")).verdict, verdict, "HTTP {code}");
        }
    }

    #[test]
    fn a_cloudflare_challenge_is_blocked_not_dead_or_ok() {
        let r = classify(&response(403, &[("cf-mitigated", "challenge")], ""));
        assert_eq!(r.verdict, Verdict::Blocked);
        assert!(r.reason.contains("challenge"));
        let r = classify(&response(200, &[("cf-mitigated", "challenge")], ""));
        assert_eq!(
            r.verdict,
            Verdict::Blocked,
            "a 200 challenge is not proof of life either"
        );
    }

    #[test]
    fn transport_failures_map_to_verdicts() {
        let cases = [
            (FetchError::NoSuchHost("x".into()), Verdict::Dead),
            (FetchError::RedirectLoop("x".into()), Verdict::Dead),
            (FetchError::Tls("x".into()), Verdict::Dead),
            (FetchError::Refused(Refused("x".into())), Verdict::Dead),
            (
                FetchError::Timeout {
                    phase: TimeoutPhase::Body,
                    limit: Duration::from_secs(1),
                },
                Verdict::Transient,
            ),
            (FetchError::Connect("reset".into()), Verdict::Transient),
            (FetchError::Local("EMFILE".into()), Verdict::Blocked),
        ];
        for (error, verdict) in cases {
            assert_eq!(classify(&Err(error.clone())).verdict, verdict, "{error}");
        }
    }

    #[test]
    fn a_hosts_accepted_codes_count_as_ok_and_nothing_else_changes() {
        let rules =
            &crate::rules::Rules::parse("[[host]]\nname = \"example.com\"\naccept = [403, 429]\n").expect("rules");
        let for_host = |host: &'static str| move |code: u16| rules.accepts(host, code);
        let accepted = with_accepted(classify(&response(403, &[], "")), for_host("example.com"));
        assert_eq!(
            accepted,
            CheckResult {
                verdict: Verdict::Ok,
                status_code: Some(403),
                reason: String::new(),
                retry_after: None,
            }
        );
        let limited = with_accepted(
            classify(&response(429, &[("retry-after", "7")], "")),
            for_host("example.com"),
        );
        assert_eq!((limited.verdict, limited.retry_after), (Verdict::Ok, None));
        let challenged = with_accepted(
            classify(&response(403, &[("cf-mitigated", "challenge")], "")),
            for_host("example.com"),
        );
        assert_eq!(
            challenged.verdict,
            Verdict::Ok,
            "the operator vouched for this host's 403"
        );
        // Another code of the same host, the same code of another host: as without rules.
        let gone = with_accepted(classify(&response(404, &[], "")), for_host("example.com"));
        assert_eq!(gone.verdict, Verdict::Dead);
        let other = with_accepted(classify(&response(403, &[], "")), for_host("example.org"));
        assert_eq!(other.verdict, Verdict::Blocked);
        assert!(other.reason.contains("403"));
        let no_response = with_accepted(classify(&Err(FetchError::Connect("reset".into()))), |_| true);
        assert_eq!(no_response.verdict, Verdict::Transient);
    }

    #[test]
    fn retry_after_of_a_429_is_read_and_capped() {
        let r = classify(&response(429, &[("retry-after", "7")], ""));
        assert_eq!(r.retry_after, Some(Duration::from_secs(7)));
        let r = classify(&response(503, &[("retry-after", "999999")], ""));
        assert_eq!(r.retry_after, Some(MAX_RETRY_AFTER));
        let r = classify(&response(500, &[("retry-after", "7")], ""));
        assert_eq!(r.retry_after, None, "only 429 and 503 ask us to wait");
    }
}
