//! The `site` command: a local test site answering every kind of link a checker meets, and the
//! list of its URLs, so linkpulse and lychee can be timed on the same links without the internet.
//!
//! The mix is the one lychee's numbers were measured on: 80 % `200`, and 5 % each of `404`,
//! `500`, a slow `200` and a `302` to a `200`. The kinds are interleaved (`i % 20`), so any prefix
//! of the list has the same mix and no stretch of slow links lands on one batch of workers.
//!
//! It runs as a process of its own, so its CPU never counts against the checker being measured.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::signal::unix::{SignalKind, signal};

/// How long `/slow/{i}` waits before answering: long enough to hold a check slot visibly, far
/// below the 5 s fetch timeout of both checkers.
pub const SLOW_DELAY: Duration = Duration::from_millis(200);

/// The page every `200` serves: a small HTML document, like a real page's first bytes.
const PAGE: &str = "<!doctype html><html><head><title>ok</title></head><body>ok</body></html>\n";

/// One kind of link of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ok,
    Missing,
    Error,
    Slow,
    Redirect,
}

impl Kind {
    /// The kind of the `i`-th URL: of every 20, 16 ok and one of each other kind.
    fn of(i: usize) -> Self {
        match i % 20 {
            16 => Self::Missing,
            17 => Self::Error,
            18 => Self::Slow,
            19 => Self::Redirect,
            _ => Self::Ok,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Missing => "missing",
            Self::Error => "error",
            Self::Slow => "slow",
            Self::Redirect => "redirect",
        }
    }
}

/// The `i`-th URL of the list served on `port`.
pub(crate) fn url(port: u16, i: usize) -> String {
    format!("http://127.0.0.1:{port}/{}/{i}", Kind::of(i).path())
}

/// Writes the list: `count` URLs, one per line.
///
/// # Errors
///
/// If the file cannot be written.
pub fn write_urls(path: &Path, port: u16, count: usize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut list = String::with_capacity(count * 40);
    for i in 0..count {
        list.push_str(&url(port, i));
        list.push('\n');
    }
    std::fs::write(path, list).with_context(|| format!("writing {}", path.display()))
}

/// The site's routes. `GET` routes answer `HEAD` too (axum drops the body), as real servers do.
pub(crate) fn router() -> Router {
    Router::new()
        .route("/ok/{id}", get(ok))
        .route("/missing/{id}", get(missing))
        .route("/error/{id}", get(error))
        .route("/slow/{id}", get(slow))
        .route("/redirect/{id}", get(redirect))
}

async fn ok() -> Response {
    page(StatusCode::OK)
}

async fn missing() -> Response {
    page(StatusCode::NOT_FOUND)
}

async fn error() -> Response {
    page(StatusCode::INTERNAL_SERVER_ERROR)
}

async fn slow() -> Response {
    tokio::time::sleep(SLOW_DELAY).await;
    page(StatusCode::OK)
}

/// A relative `Location`, as most sites send: both checkers must resolve it against the URL.
async fn redirect(UrlPath(id): UrlPath<String>) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, format!("/ok/r{id}"))]).into_response()
}

fn page(status: StatusCode) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

/// Binds `127.0.0.1:port`, writes the list of `count` URLs to `urls`, then serves until SIGTERM
/// or SIGINT. The list is written only once the port is bound, so a script that waits for the
/// file can start checking at once.
///
/// # Errors
///
/// If the port cannot be bound, the list cannot be written, or serving fails.
pub async fn serve(port: u16, urls: &Path, count: usize) -> anyhow::Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    write_urls(urls, bound.port(), count)?;
    tracing::info!(addr = %bound, urls = %urls.display(), count, "test site serving");
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    axum::serve(listener, router())
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
        .await
        .context("serving the test site")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_eighty_percent_ok_and_five_of_each_other_kind() {
        let kinds: Vec<Kind> = (0..5_000).map(Kind::of).collect();
        let count = |kind| kinds.iter().filter(|k| **k == kind).count();
        assert_eq!(count(Kind::Ok), 4_000);
        for kind in [Kind::Missing, Kind::Error, Kind::Slow, Kind::Redirect] {
            assert_eq!(count(kind), 250, "{kind:?}");
        }
        assert_eq!(url(8080, 19), "http://127.0.0.1:8080/redirect/19");
    }
}
