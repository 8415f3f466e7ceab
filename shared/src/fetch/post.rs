//! One guarded `POST`: what a webhook delivery needs from the fetcher.
//!
//! The same client as every fetch — guarded resolver, no environment proxies, the fetch deadline —
//! and the same URL check before connecting. Redirects are not followed: a receiver that answers
//! 3xx has moved, and re-posting a signed body to wherever a `Location` points would hand the
//! delivery (and its signature) to a host nobody registered. The answer's body is read only up to
//! a few bytes, for the operator's error message.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use url::Url;

use super::body::read_capped;
use super::client::{Fetcher, MAX_CONNECT_TIMEOUT};
use super::errors::{FetchError, TimeoutPhase};

/// Bytes of a receiver's answer kept (for `last_error`); the rest is not read.
pub const MAX_POST_ANSWER: usize = 512;

/// A receiver's answer to a `POST`.
#[derive(Debug, Clone)]
pub struct PostResponse {
    /// Its status.
    pub status: StatusCode,
    /// Its headers (`Retry-After`).
    pub headers: HeaderMap,
    /// At most [`MAX_POST_ANSWER`] bytes of its body.
    pub body: Vec<u8>,
    /// From sending the request to the end of the part of the body read.
    pub elapsed: Duration,
}

impl Fetcher {
    /// Posts `body` to `url` with `headers`, through the network guard, within the fetch
    /// deadline; a redirect is returned as the answer, never followed.
    ///
    /// # Errors
    ///
    /// A [`FetchError`] when no answer arrived (refused by the guard, timeout, connection
    /// failure).
    #[tracing::instrument(
        name = "http.post",
        skip_all,
        fields(
            otel.kind = "client",
            url.host = url.host_str().unwrap_or_default(),
            http.response.status_code = tracing::field::Empty,
        )
    )]
    pub async fn post(&self, url: &Url, headers: HeaderMap, body: Vec<u8>) -> Result<PostResponse, FetchError> {
        self.settings().guard.check_url(url)?;
        let limit = self.settings().timeout;
        let connect_limit = limit.min(MAX_CONNECT_TIMEOUT);
        let started = std::time::Instant::now();
        let request = self
            .client()
            .request(Method::POST, url.clone())
            .headers(headers)
            .body(body)
            .send();
        let response = match tokio::time::timeout(limit, request).await {
            Ok(sent) => sent.map_err(|e| FetchError::from_reqwest(e, TimeoutPhase::Headers, connect_limit, limit))?,
            Err(_) => {
                return Err(FetchError::Timeout {
                    phase: TimeoutPhase::Headers,
                    limit,
                });
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        // The status is the answer; the body only explains it. A receiver that dribbles or breaks
        // off its body does not turn an answer into a failure: whatever arrived within the rest
        // of the deadline is kept.
        let remaining = limit.saturating_sub(started.elapsed());
        let body = tokio::time::timeout(remaining, read_capped(response.bytes_stream(), MAX_POST_ANSWER, None))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|(body, _)| body)
            .unwrap_or_default();
        tracing::Span::current().record("http.response.status_code", i64::from(status.as_u16()));
        Ok(PostResponse {
            status,
            headers,
            body,
            elapsed: started.elapsed(),
        })
    }
}
