//! One signed `POST` of a delivery, and what the receiver's answer means for it.
//!
//! Shared by the worker's `deliver` handler and `producer webhooks test` (a ping), so both send
//! exactly the same headers through the same guarded client.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use super::WebhookError;
use super::payload::Delivery;
use super::signing::{SIGNATURE_HEADER, signature_header};
use super::store::Target;
use crate::fetch::{FetchError, Fetcher, MAX_RETRY_AFTER, PostResponse, parse_retry_after};

/// Header naming the event type (receivers can route before parsing).
pub const EVENT_HEADER: &str = "X-Linkpulse-Event";
/// Header carrying the event id, the same on every retry of a delivery.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// What an answer (or its absence) means for a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: delivered.
    Delivered {
        /// The status.
        status: u16,
    },
    /// The receiver answered something else: retry, after its `Retry-After` for a 429 or 503.
    Rejected {
        /// The status.
        status: u16,
        /// The wait it asked for (429 and 503 only, capped).
        retry_after: Option<Duration>,
        /// `HTTP 503 Service Unavailable: <start of its body>`.
        reason: String,
    },
    /// The guard refused the target: retrying cannot help until the configuration changes.
    Refused(String),
    /// No answer (timeout, connection refused, TLS, DNS): retry.
    Unreachable(String),
}

impl Verdict {
    /// The status code, when the receiver answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Delivered { status } | Self::Rejected { status, .. } => Some(*status),
            Self::Refused(_) | Self::Unreachable(_) => None,
        }
    }

    /// Why the delivery failed (`None` when delivered).
    pub fn failure(&self) -> Option<&str> {
        match self {
            Self::Delivered { .. } => None,
            Self::Rejected { reason, .. } => Some(reason),
            Self::Refused(reason) | Self::Unreachable(reason) => Some(reason),
        }
    }
}

/// The headers of `delivery`'s `POST` whose body is `body`, signed at `now` with the target's
/// current (and, during a rotation, previous) secret.
pub fn headers(target: &Target, delivery: &Delivery, body: &[u8], now: DateTime<Utc>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let signature = signature_header(&target.signing_secrets(now), now.timestamp(), body);
    // Hex, digits, `t=`, `,` and `.`/`_` only: always valid header values.
    let values = [
        (SIGNATURE_HEADER, signature),
        (EVENT_HEADER, delivery.kind.clone()),
        (IDEMPOTENCY_HEADER, delivery.id.clone()),
    ];
    for (name, value) in values {
        // `from_bytes` lower-cases the documented spelling.
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
            headers.insert(name, value);
        }
    }
    headers
}

/// Posts `delivery` to `target` and judges the answer.
///
/// # Errors
///
/// Only if the body cannot be encoded (never in practice); every network outcome is a
/// [`Verdict`].
pub async fn send(fetcher: &Fetcher, target: &Target, delivery: &Delivery) -> Result<Verdict, serde_json::Error> {
    let body = delivery.to_bytes()?;
    let url = match url::Url::parse(&target.url) {
        Ok(url) => url,
        Err(error) => return Ok(Verdict::Refused(format!("invalid webhook URL: {error}"))),
    };
    let headers = headers(target, delivery, &body, Utc::now());
    Ok(judge(fetcher.post(&url, headers, body).await))
}

/// The answer to a ping (`webhooks test ID`, `POST /api/webhooks/{id}/test`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PingResult {
    /// The endpoint.
    pub webhook: i64,
    /// The ping's id (its `Idempotency-Key`).
    pub id: String,
    /// 2xx.
    pub ok: bool,
    /// The status, when it answered.
    pub status: Option<u16>,
    /// Why not ok.
    pub error: Option<String>,
    /// Sending to answer.
    pub duration_ms: f64,
}

/// Sends a signed `ping` to endpoint `id` now, disabled or not (testing a receiver before turning
/// it back on is the point), through a fetcher with `fetch`'s guard and timeout. Pings stay out
/// of the endpoint's failure record. Returns `None` if there is no such endpoint.
///
/// # Errors
///
/// [`WebhookError::Database`] if the endpoint cannot be read; [`WebhookError::Send`] if no HTTP
/// client can be built.
pub async fn ping(
    pool: &sqlx::PgPool,
    fetch: &crate::fetch::FetchSettings,
    id: i64,
) -> Result<Option<PingResult>, WebhookError> {
    let Some(target) = super::store::target(pool, id).await? else {
        return Ok(None);
    };
    let fetcher = Fetcher::new(fetch.clone()).map_err(|e| WebhookError::Send(e.to_string()))?;
    let delivery = Delivery::ping(Utc::now());
    let started = std::time::Instant::now();
    let verdict = send(&fetcher, &target, &delivery)
        .await
        .map_err(|e| WebhookError::Send(format!("cannot encode the ping: {e}")))?;
    Ok(Some(PingResult {
        webhook: id,
        id: delivery.id,
        ok: matches!(verdict, Verdict::Delivered { .. }),
        status: verdict.status(),
        error: verdict.failure().map(str::to_owned),
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    }))
}

/// What a `POST`'s outcome means for the delivery.
pub fn judge(outcome: Result<PostResponse, FetchError>) -> Verdict {
    match outcome {
        Ok(answer) if answer.status.is_success() => Verdict::Delivered {
            status: answer.status.as_u16(),
        },
        Ok(answer) => {
            let retry_after = matches!(
                answer.status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            )
            .then(|| answer.headers.get(RETRY_AFTER))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()))
            .map(|d| d.min(MAX_RETRY_AFTER));
            Verdict::Rejected {
                status: answer.status.as_u16(),
                retry_after,
                reason: rejection(answer.status, &answer.body),
            }
        }
        Err(FetchError::Refused(refused)) => Verdict::Refused(refused.to_string()),
        Err(error) => Verdict::Unreachable(error.to_string()),
    }
}

/// `HTTP 503 Service Unavailable`, and the start of the answer's body on one line when it has
/// one (what the receiver said is usually the fastest diagnosis). A redirect says it was not
/// followed.
fn rejection(status: StatusCode, body: &[u8]) -> String {
    let mut reason = format!("HTTP {status}");
    if status.is_redirection() {
        reason.push_str(" (redirects are not followed: register the final URL)");
    }
    let text: String = String::from_utf8_lossy(body)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    if !text.is_empty() {
        reason.push_str(": ");
        reason.push_str(&text);
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&'static str, &str)], body: &str) -> Result<PostResponse, FetchError> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).expect("value"));
        }
        Ok(PostResponse {
            status: StatusCode::from_u16(status).expect("status"),
            headers: map,
            body: body.as_bytes().to_vec(),
            elapsed: Duration::ZERO,
        })
    }

    #[test]
    fn only_2xx_delivers_and_retry_after_is_honoured_for_429_and_503_only() {
        assert_eq!(judge(answer(204, &[], "")), Verdict::Delivered { status: 204 });
        let Verdict::Rejected {
            retry_after, reason, ..
        } = judge(answer(503, &[("retry-after", "7")], "busy\n now"))
        else {
            panic!("rejected")
        };
        assert_eq!(retry_after, Some(Duration::from_secs(7)));
        assert_eq!(reason, "HTTP 503 Service Unavailable: busy now");
        let Verdict::Rejected { retry_after, .. } = judge(answer(500, &[("retry-after", "7")], "")) else {
            panic!("rejected")
        };
        assert_eq!(retry_after, None);
        let Verdict::Rejected { reason, .. } = judge(answer(301, &[("location", "/x")], "")) else {
            panic!("rejected")
        };
        assert!(reason.contains("not followed"), "{reason}");
    }

    #[test]
    fn a_refusal_is_told_apart_from_an_unreachable_receiver() {
        let refused = judge(Err(FetchError::Refused(crate::fetch::Refused(
            "127.0.0.1 is a loopback address".into(),
        ))));
        assert!(matches!(refused, Verdict::Refused(_)), "{refused:?}");
        let down = judge(Err(FetchError::Connect("refused".into())));
        assert!(matches!(down, Verdict::Unreachable(_)), "{down:?}");
    }
}
