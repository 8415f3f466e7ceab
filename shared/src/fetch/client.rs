//! The fetcher: one `reqwest` client, redirects followed by hand so every hop is re-validated.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use reqwest::header::{HeaderMap, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use url::Url;

use super::guard::{GuardPolicy, GuardedResolver, Refused};

/// Default `User-Agent`: honest, naming the project and where to learn about it.
pub const DEFAULT_USER_AGENT: &str = concat!(
    "linkpulse/",
    env!("CARGO_PKG_VERSION"),
    " (+https://github.com/linkpulse/linkpulse; link checker)"
);
/// Redirects followed before giving up.
pub const MAX_REDIRECTS: u32 = 10;
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

/// Why a fetch got no response. Classified by the check into dead, transient or blocked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The guard refused the URL or a redirect target; nothing was connected to.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The host name does not exist.
    #[error("no such host: {0}")]
    NoSuchHost(String),
    /// The total deadline passed.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Connection refused, reset or closed early.
    #[error("connection failed: {0}")]
    Connect(String),
    /// TLS handshake or certificate failure.
    #[error("TLS failure: {0}")]
    Tls(String),
    /// More than [`MAX_REDIRECTS`] hops.
    #[error("more than {0} redirects")]
    TooManyRedirects(u32),
    /// A redirect came back to a URL already visited.
    #[error("redirect loop at {0}")]
    RedirectLoop(String),
    /// A redirect without a usable `Location`.
    #[error("invalid redirect: {0}")]
    InvalidRedirect(String),
    /// Our side cannot make requests (no egress, out of file descriptors): never the link's fault.
    #[error("local failure: {0}")]
    Local(String),
    /// Any other transport failure.
    #[error("request failed: {0}")]
    Other(String),
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
    /// Stop reading as soon as `</head>` has been seen.
    pub stop_at_head: bool,
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
    /// The body was cut at the cap (or at `</head>`).
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
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
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
        let result = match tokio::time::timeout(deadline, self.fetch_hops(request)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout(deadline)),
        };
        record_fetch(&tracing::Span::current(), &result);
        result
    }

    async fn fetch_hops(&self, request: FetchRequest) -> Result<FetchResponse, FetchError> {
        let mut url = request.url.clone();
        let mut method = request.method.clone();
        let mut visited: HashSet<String> = HashSet::new();
        for hop in 0..=MAX_REDIRECTS {
            self.settings.guard.check_url(&url)?;
            visited.insert(url.to_string());
            let response = self
                .client
                .request(method.clone(), url.clone())
                .headers(request.headers.clone())
                .send()
                .await
                .map_err(classify_error)?;
            let status = response.status();
            if is_redirect(status) {
                let target = redirect_target(&url, response.headers().get(LOCATION))?;
                if visited.contains(target.as_str()) {
                    return Err(FetchError::RedirectLoop(target.to_string()));
                }
                redirected(hop + 1, status, &target);
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
                read_capped(response, request.max_body, request.stop_at_head).await?
            };
            tracing::debug!(status = status.as_u16(), bytes = body.len(), redirects = hop, "fetched");
            return Ok(FetchResponse {
                url,
                status,
                headers,
                body,
                redirects: hop,
                truncated,
            });
        }
        Err(FetchError::TooManyRedirects(MAX_REDIRECTS))
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

impl FetchError {
    /// A stable name for the kind of failure (the `outcome.class` of an `http.fetch` span).
    pub fn class(&self) -> &'static str {
        match self {
            Self::Refused(_) => "refused",
            Self::NoSuchHost(_) => "no_such_host",
            Self::Timeout(_) => "timeout",
            Self::Connect(_) => "connect",
            Self::Tls(_) => "tls",
            Self::TooManyRedirects(_) => "too_many_redirects",
            Self::RedirectLoop(_) => "redirect_loop",
            Self::InvalidRedirect(_) => "invalid_redirect",
            Self::Local(_) => "local",
            Self::Other(_) => "other",
        }
    }
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

fn redirect_target(from: &Url, location: Option<&HeaderValue>) -> Result<Url, FetchError> {
    let location = location
        .ok_or_else(|| FetchError::InvalidRedirect("no Location header".into()))?
        .to_str()
        .map_err(|_| FetchError::InvalidRedirect("Location is not valid text".into()))?;
    let mut target = from
        .join(location)
        .map_err(|e| FetchError::InvalidRedirect(format!("{location:?}: {e}")))?;
    target.set_fragment(None);
    Ok(target)
}

/// Reads at most `max` decoded bytes: the decompressor runs inside the stream, so a gzip bomb
/// stops at the cap instead of expanding in memory.
async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
    stop_at_head: bool,
) -> Result<(Vec<u8>, bool), FetchError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(classify_error)? {
        let room = max.saturating_sub(body.len());
        if chunk.len() >= room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
        if stop_at_head && let Some(end) = crate::metadata::head_end(&body) {
            body.truncate(end);
            return Ok((body, true));
        }
    }
    Ok((body, false))
}

/// Maps a reqwest error to what it means for the link, by walking its cause chain.
fn classify_error(error: reqwest::Error) -> FetchError {
    let chain = crate::queue::backend::error_chain(&error);
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return FetchError::Refused(refused.clone());
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionRefused | ConnectionReset | ConnectionAborted | UnexpectedEof | BrokenPipe => {
                    return FetchError::Connect(chain);
                }
                TimedOut => return FetchError::Timeout(Duration::ZERO),
                // EMFILE / ENETUNREACH / EADDRNOTAVAIL: our side, not the link's.
                _ if matches!(io.raw_os_error(), Some(24 | 23 | 101 | 99)) => return FetchError::Local(chain),
                _ => {}
            }
        }
        source = cause.source();
    }
    let lower = chain.to_ascii_lowercase();
    if error.is_timeout() {
        FetchError::Timeout(Duration::ZERO)
    } else if lower.contains("failed to lookup address")
        || lower.contains("name or service not known")
        || lower.contains("no such host")
    {
        FetchError::NoSuchHost(chain)
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        FetchError::Tls(chain)
    } else if error.is_connect() {
        FetchError::Connect(chain)
    } else {
        FetchError::Other(chain)
    }
}
