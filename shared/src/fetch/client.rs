//! The fetcher: one `reqwest` client, redirects followed by hand so every hop is re-validated.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use reqwest::header::{HeaderMap, LOCATION};
use reqwest::{Method, StatusCode};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use url::Url;

use super::body::{StopAtFactory, read_capped};
use super::errors::{FetchError, TimeoutPhase};
use super::guard::{GuardPolicy, GuardedResolver};
use super::redirect::{MAX_REDIRECTS, Redirects, is_redirect};

/// Default `User-Agent`: honest, naming the project and where to learn about it.
pub const DEFAULT_USER_AGENT: &str = concat!(
    "linkpulse/",
    env!("CARGO_PKG_VERSION"),
    " (+https://github.com/linkpulse/linkpulse; link checker)"
);
/// Longest wait for one connection (TCP and TLS), within the fetch's deadline.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Total deadline of one fetch (all hops and the body).
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// How the fetcher behaves.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// `LINKPULSE_HTTP_TIMEOUT`: total deadline of one fetch, redirects and body included.
    pub timeout: Duration,
    /// `LINKPULSE_USER_AGENT`.
    pub user_agent: String,
    /// Who may be reached.
    pub guard: GuardPolicy,
    /// Kept-alive connections per host. A worker sets it to its concurrency — as many requests
    /// to one host as can be in flight — so a host checked in bulk is not re-dialled per request;
    /// the per-host cap and pacing normally keep the real number far lower.
    pub max_idle_per_host: usize,
}

impl Default for FetchSettings {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_HTTP_TIMEOUT,
            user_agent: DEFAULT_USER_AGENT.to_owned(),
            guard: GuardPolicy::default(),
            max_idle_per_host: DEFAULT_MAX_IDLE_PER_HOST,
        }
    }
}

/// One request.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// `HEAD` or `GET`.
    pub method: Method,
    /// Where.
    pub url: Url,
    /// Extra headers (`Accept`, conditional headers).
    pub headers: HeaderMap,
    /// Stop reading the body after this many decoded bytes.
    pub max_body: usize,
    /// Where to stop reading early, if anywhere (the scrape stops after `</head>`).
    pub stop_at: Option<StopAtFactory>,
}

/// A response after redirects, with at most `max_body` bytes of body.
#[derive(Debug, Clone)]
pub struct FetchResponse {
    /// Final URL (after redirects).
    pub url: Url,
    /// Final status.
    pub status: StatusCode,
    /// Final headers.
    pub headers: HeaderMap,
    /// Decoded body bytes read.
    pub body: Vec<u8>,
    /// Hops followed.
    pub redirects: u32,
    /// The body was cut at the cap (or where [`FetchRequest::stop_at`] said).
    pub truncated: bool,
}

/// Fetches user URLs safely. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    settings: Arc<FetchSettings>,
}

/// Idle connections kept per host unless the settings say otherwise.
pub const DEFAULT_MAX_IDLE_PER_HOST: usize = 64;

impl Fetcher {
    /// Builds the client: guarded resolver, no environment proxies, no automatic redirects,
    /// gzip/brotli/deflate decoding, HTTP/1.1 and HTTP/2.
    ///
    /// # Errors
    ///
    /// If the TLS backend cannot be initialised.
    pub fn new(settings: FetchSettings) -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .user_agent(settings.user_agent.clone())
            .dns_resolver(Arc::new(GuardedResolver::new(Arc::new(settings.guard.clone()))))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout(&settings))
            .timeout(settings.timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(settings.max_idle_per_host)
            .http1_max_headers(200)
            .build()
            .map_err(|e| FetchError::Local(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            client,
            settings: Arc::new(settings),
        })
    }

    /// The underlying client (for the GitHub API: same user agent, guard and timeouts).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Settings in force.
    pub fn settings(&self) -> &FetchSettings {
        &self.settings
    }

    /// Sends `request`, following up to [`MAX_REDIRECTS`] redirects, validating every hop, all
    /// within the total deadline.
    ///
    /// Traced as one `http.fetch` client span per request (redirects included): method, host,
    /// final status, redirects followed, body bytes read and the outcome class, with an
    /// `http.redirect` event per hop. 4xx, 5xx and failures set an error status. Hosts only, never
    /// whole URLs: paths and query strings of saved links can hold tokens.
    ///
    /// # Errors
    ///
    /// A [`FetchError`] when no final response arrived.
    #[tracing::instrument(
        name = "http.fetch",
        skip_all,
        fields(
            otel.kind = "client",
            http.request.method = %request.method,
            url.host = request.url.host_str().unwrap_or_default(),
            http.response.status_code = tracing::field::Empty,
            http.redirects = 0,
            http.response.body.size = tracing::field::Empty,
            outcome.class = tracing::field::Empty,
            error.type = tracing::field::Empty,
        )
    )]
    pub async fn fetch(&self, request: FetchRequest) -> Result<FetchResponse, FetchError> {
        let deadline = self.settings.timeout;
        // The phase the hops are in, read when the deadline cuts them off.
        let phase = AtomicU8::new(TimeoutPhase::Headers.code());
        let result = match tokio::time::timeout(deadline, self.fetch_hops(request, &phase)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout {
                phase: TimeoutPhase::from_code(phase.load(Ordering::Relaxed)),
                limit: deadline,
            }),
        };
        record_fetch(&tracing::Span::current(), &result);
        result
    }

    async fn fetch_hops(&self, request: FetchRequest, phase: &AtomicU8) -> Result<FetchResponse, FetchError> {
        let mut url = request.url.clone();
        let mut method = request.method.clone();
        let mut redirects = Redirects::new(&url, MAX_REDIRECTS);
        loop {
            self.settings.guard.check_url(&url)?;
            phase.store(TimeoutPhase::Headers.code(), Ordering::Relaxed);
            let response = self
                .client
                .request(method.clone(), url.clone())
                .headers(request.headers.clone())
                .send()
                .await
                .map_err(|e| self.classify(e, TimeoutPhase::Headers))?;
            let status = response.status();
            if is_redirect(status) {
                let target = redirects.next(&url, response.headers().get(LOCATION))?;
                redirected(redirects.followed(), status, &target);
                if status == StatusCode::SEE_OTHER && method != Method::HEAD {
                    method = Method::GET;
                }
                url = target;
                continue;
            }
            let headers = response.headers().clone();
            let (body, truncated) = if method == Method::HEAD {
                (Vec::new(), false)
            } else {
                phase.store(TimeoutPhase::Body.code(), Ordering::Relaxed);
                let stop = request.stop_at.map(|make| make());
                read_capped(response.bytes_stream(), request.max_body, stop)
                    .await
                    .map_err(|e| self.classify(e, TimeoutPhase::Body))?
            };
            let hops = redirects.followed();
            tracing::debug!(
                status = status.as_u16(),
                bytes = body.len(),
                redirects = hops,
                "fetched"
            );
            return Ok(FetchResponse {
                url,
                status,
                headers,
                body,
                redirects: hops,
                truncated,
            });
        }
    }
}

/// One redirect hop: counted on the `http.fetch` span and drawn as an `http.redirect` event (its
/// status and the next host; the target's path and query stay out of the trace and the logs).
fn redirected(hop: u32, status: StatusCode, target: &Url) {
    let span = tracing::Span::current();
    let host = target.host_str().unwrap_or_default().to_owned();
    span.record("http.redirects", i64::from(hop));
    span.add_event(
        "http.redirect",
        vec![
            KeyValue::new("http.redirect.hop", i64::from(hop)),
            KeyValue::new("http.response.status_code", i64::from(status.as_u16())),
            KeyValue::new("url.host", host.clone()),
        ],
    );
    tracing::debug!(hop, status = status.as_u16(), to.host = %host, "following redirect");
}

/// Status, bytes and outcome class of a finished fetch on its span; an error status for
/// responses ≥ 400 (OpenTelemetry's rule for HTTP client spans) and for failures.
fn record_fetch(span: &tracing::Span, result: &Result<FetchResponse, FetchError>) {
    match result {
        Ok(response) => {
            let code = response.status.as_u16();
            // Signed: the OpenTelemetry layer turns unsigned values into strings.
            span.record("http.response.status_code", i64::from(code));
            span.record("http.redirects", i64::from(response.redirects));
            span.record(
                "http.response.body.size",
                i64::try_from(response.body.len()).unwrap_or(i64::MAX),
            );
            let class = match code {
                304 => "not_modified",
                100..=199 => "informational",
                200..=299 => "success",
                300..=399 => "redirect",
                400..=499 => "client_error",
                _ => "server_error",
            };
            span.record("outcome.class", class);
            if code >= 400 {
                span.record("error.type", code.to_string().as_str());
                crate::telemetry::set_error(span, &format!("HTTP {}", response.status));
            }
        }
        Err(error) => {
            let class = error.class();
            span.record("outcome.class", class);
            span.record("error.type", class);
            crate::telemetry::set_error(span, &error.to_string());
        }
    }
}

impl Fetcher {
    /// What a reqwest error means for the link (see [`FetchError::from_reqwest`]), with this
    /// fetcher's limits.
    fn classify(&self, error: reqwest::Error, phase: TimeoutPhase) -> FetchError {
        FetchError::from_reqwest(error, phase, connect_timeout(&self.settings), self.settings.timeout)
    }
}

fn connect_timeout(settings: &FetchSettings) -> Duration {
    settings.timeout.min(MAX_CONNECT_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A one-connection-at-a-time server answering every request with `reply` (or only the head
    /// of it and then nothing, when `stall` is set).
    async fn server(reply: String, stall: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let reply = reply.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    let _ = socket.write_all(reply.as_bytes()).await;
                    if stall {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                });
            }
        });
        addr
    }

    fn fetcher(timeout: Duration, allow_private_networks: bool) -> Fetcher {
        Fetcher::new(FetchSettings {
            timeout,
            guard: GuardPolicy {
                allow_private_networks,
                ..GuardPolicy::default()
            },
            ..FetchSettings::default()
        })
        .expect("fetcher")
    }

    fn get(url: &str) -> FetchRequest {
        FetchRequest {
            method: Method::GET,
            url: Url::parse(url).expect("url"),
            headers: HeaderMap::new(),
            max_body: 1 << 20,
            stop_at: None,
        }
    }

    #[tokio::test]
    async fn a_page_that_stalls_after_its_headers_times_out_reading_the_body_with_the_real_limit() {
        let addr = server(
            "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\ncontent-type: text/html\r\n\r\n<html>".into(),
            true,
        )
        .await;
        let limit = Duration::from_millis(700);
        let error = fetcher(limit, true)
            .fetch(get(&format!("http://{addr}/slow")))
            .await
            .expect_err("stalled");
        assert_eq!(
            error,
            FetchError::Timeout {
                phase: TimeoutPhase::Body,
                limit
            }
        );
        assert_eq!(error.to_string(), "timed out after 700ms reading the body");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out_waiting_for_the_headers() {
        let addr = server(String::new(), true).await;
        let limit = Duration::from_millis(500);
        let error = fetcher(limit, true)
            .fetch(get(&format!("http://{addr}/")))
            .await
            .expect_err("no answer");
        assert_eq!(
            error,
            FetchError::Timeout {
                phase: TimeoutPhase::Headers,
                limit
            }
        );
    }

    #[tokio::test]
    async fn a_redirect_to_cloud_metadata_is_refused_even_with_private_networks_allowed() {
        let addr = server(
            "HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/latest/meta-data/\r\ncontent-length: 0\r\n\r\n"
                .into(),
            false,
        )
        .await;
        let error = fetcher(Duration::from_secs(5), true)
            .fetch(get(&format!("http://{addr}/go")))
            .await
            .expect_err("refused");
        assert!(matches!(error, FetchError::Refused(_)), "{error:?}");
        assert!(error.to_string().contains("169.254.169.254"), "{error}");
    }

    #[tokio::test]
    async fn fetch_errors_never_carry_a_links_query_or_credentials() {
        // A redirect loop through a URL with a token, and a connection refused on a URL with one.
        let addr = server(
            "HTTP/1.1 302 Found\r\nlocation: /loop?token=s3cret-loop\r\ncontent-length: 0\r\n\r\n".into(),
            false,
        )
        .await;
        let fetcher = fetcher(Duration::from_secs(5), true);
        let looped = fetcher
            .fetch(get(&format!("http://{addr}/loop?token=s3cret-loop")))
            .await
            .expect_err("loop");
        assert!(matches!(looped, FetchError::RedirectLoop(_)), "{looped:?}");
        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let closed_addr = closed.local_addr().expect("addr");
        drop(closed);
        let refused = fetcher
            .fetch(get(&format!("http://{closed_addr}/x?token=s3cret-conn")))
            .await
            .expect_err("refused");
        assert!(matches!(refused, FetchError::Connect(_)), "{refused:?}");
        for error in [looped, refused] {
            let text = error.to_string();
            assert!(!text.contains("s3cret"), "{text}");
        }
    }

    #[tokio::test]
    async fn a_server_that_does_not_speak_tls_is_a_tls_failure() {
        // Plain HTTP where a TLS handshake was expected: rustls rejects the answer (a typed
        // `rustls::Error` two `io::Error`s deep), and a server that hangs up mid-handshake gives
        // tokio-rustls's untyped "tls handshake eof".
        let plain = server("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".into(), false).await;
        let hangs_up = server(String::new(), false).await;
        let fetcher = fetcher(Duration::from_secs(5), true);
        for addr in [plain, hangs_up] {
            let error = fetcher
                .fetch(get(&format!("https://{addr}/?token=s3cret-tls")))
                .await
                .expect_err("no TLS");
            assert!(matches!(error, FetchError::Tls(_)), "{addr}: {error:?}");
            assert!(!error.to_string().contains("s3cret"), "{error}");
        }
    }
}
