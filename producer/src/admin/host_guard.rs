//! Two checks on every admin request before any handler: the `Host` allowlist and the origin of
//! state-changing requests.
//!
//! **Host.** A DNS-rebinding page (a name of the attacker's that first resolves to their server,
//! then to 127.0.0.1) makes the victim's browser talk to our port as if it were the attacker's own
//! site, same-origin, and read the answers. The browser still sends the attacker's name as `Host`,
//! so we answer only to names we know: loopback names, IP literals (a rebinding needs a name) and
//! the host of `LINKPULSE_PUBLIC_URL`. The probes and `/metrics` are exempt: kubelets and
//! Prometheus come by pod IP or service name and read nothing private.
//!
//! **Origin.** A cross-site form post or `fetch` carries an `Origin` (or at least `Sec-Fetch-Site:
//! cross-site`) naming the other site; a post whose origin is not this server's own is refused
//! whatever cookie or token it has. API clients (curl, scripts) send neither header and pass on to
//! the token checks.

use axum::extract::{Request, State};
use axum::http::header::{HOST, ORIGIN};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use linkpulse_shared::config::Settings;

use super::AdminState;

/// Paths every `Host` may reach: probes and the metrics scrape.
const EXEMPT_PATHS: [&str; 3] = ["/livez", "/readyz", "/metrics"];

/// The middleware: refuses a foreign `Host` with 400 and a cross-origin state change with 403.
pub async fn guard(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if !EXEMPT_PATHS.contains(&path) {
        let host = request_host(&request);
        if !host.as_deref().is_some_and(|h| host_allowed(h, &state.settings)) {
            let shown = host.unwrap_or_default();
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!(
                    "Host {shown:?} is not served here: use a loopback name, an IP address or the host of LINKPULSE_PUBLIC_URL"
                ),
            );
        }
    }
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if changes {
        let authority = request_authority(&request);
        let public = state
            .settings
            .public_url
            .as_ref()
            .map(|u| u.origin().ascii_serialization());
        if let Err(why) = same_origin(request.headers(), authority.as_deref(), public.as_deref()) {
            return refuse(StatusCode::FORBIDDEN, why);
        }
    }
    next.run(request).await
}

/// The host the client asked for, lower case, without port: the request target's authority
/// (HTTP/2, absolute-form) or the `Host` header.
fn request_host(request: &Request) -> Option<String> {
    Some(strip_port(&request_authority(request)?).to_ascii_lowercase())
}

/// `host[:port]` the client asked for: the request target's authority (HTTP/2, absolute-form) or
/// the `Host` header.
fn request_authority(request: &Request) -> Option<String> {
    match request.uri().authority() {
        Some(authority) => Some(authority.as_str().to_owned()),
        None => Some(request.headers().get(HOST)?.to_str().ok()?.to_owned()),
    }
}

/// `host[:port]` or `[v6]:port` without the port (and without the brackets).
fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// Whether `host` (lower case, no port) is one we answer to.
pub fn host_allowed(host: &str, settings: &Settings) -> bool {
    let host = host.trim_end_matches('.');
    if host == "localhost" || host.ends_with(".localhost") || host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    settings
        .public_url
        .as_ref()
        .and_then(url::Url::host_str)
        .is_some_and(|public| public.trim_end_matches('.').eq_ignore_ascii_case(host))
}

/// Whether a state-changing request comes from this server's own pages (or from no page at all):
/// its `Origin` names the authority the request was sent to, or the public URL's origin (a
/// reverse proxy may rewrite `Host` to the upstream's address).
fn same_origin(headers: &HeaderMap, authority: Option<&str>, public_origin: Option<&str>) -> Result<(), &'static str> {
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("null").trim_end_matches('/');
        if public_origin.is_some_and(|public| public.eq_ignore_ascii_case(origin)) {
            return Ok(());
        }
        let origin_authority = origin.split_once("://").map(|(_, rest)| rest);
        return match (origin_authority, authority) {
            (Some(from), Some(to)) if from.eq_ignore_ascii_case(to) => Ok(()),
            _ => Err("cross-origin request refused: the Origin header does not match this server"),
        };
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("cross-site" | "same-site") => Err("cross-site request refused (Sec-Fetch-Site)"),
        _ => Ok(()),
    }
}

/// A refusal as the API speaks it (JSON) for `/api/`-style clients and as text for browsers: a
/// short JSON object serves both.
fn refuse(status: StatusCode, why: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": why }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_ip_literals_and_the_public_host_are_allowed() {
        let mut settings = Settings::defaults("postgres://x");
        for host in ["localhost", "app.localhost", "127.0.0.1", "::1", "10.1.2.3"] {
            assert!(host_allowed(host, &settings), "{host}");
        }
        assert!(!host_allowed("attacker.example", &settings));
        settings.public_url = url::Url::parse("https://links.example.org/").ok();
        assert!(host_allowed("links.example.org", &settings));
        assert!(!host_allowed("evil.links.example.org.attacker.example", &settings));
    }

    #[test]
    fn ports_and_brackets_are_stripped() {
        assert_eq!(strip_port("example.org:8080"), "example.org");
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("example.org"), "example.org");
    }

    #[test]
    fn origin_must_match_the_host_or_the_public_url() {
        let here = Some("127.0.0.1:8080");
        let mut headers = HeaderMap::new();
        assert!(same_origin(&headers, here, None).is_ok());
        headers.insert(ORIGIN, "http://127.0.0.1:8080".parse().expect("header"));
        assert!(same_origin(&headers, here, None).is_ok());
        headers.insert(ORIGIN, "http://attacker.example".parse().expect("header"));
        assert!(same_origin(&headers, here, None).is_err());
        headers.insert(ORIGIN, "null".parse().expect("header"));
        assert!(same_origin(&headers, here, None).is_err());
        // Behind a proxy that rewrote Host: the public origin is this server's too.
        headers.insert(ORIGIN, "https://links.example.org".parse().expect("header"));
        assert!(same_origin(&headers, here, None).is_err());
        assert!(same_origin(&headers, here, Some("https://links.example.org")).is_ok());
        assert!(same_origin(&headers, here, Some("http://links.example.org")).is_err());
        headers.remove(ORIGIN);
        headers.insert("sec-fetch-site", "cross-site".parse().expect("header"));
        assert!(same_origin(&headers, here, None).is_err());
    }
}
