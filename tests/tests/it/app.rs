//! `TestApp`: a migrated database, a local HTTP site, settings pointed at both, and helpers to
//! run cycles and in-process workers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use linkpulse_shared::config::Settings;
use linkpulse_shared::db::links::{self, Link, LinkRef};
use linkpulse_shared::link_url::parse_link;
use producer::commands::links::new_link;

use crate::helpers::{url_of, wait_for};

/// The fixture page the refresh tests read.
pub const FIXTURE_PAGE: &str = r#"<!doctype html><html><head>
<meta charset="utf-8"><title>  Fixture &amp; Friends  </title>
<meta name="description" content="A page for   testing">
<meta property="og:image" content="/img/card.png">
<meta property="og:site_name" content="Fixture Site">
<link rel="shortcut icon" href="/static/fav.ico">
</head><body>hello</body></html>"#;

/// What the local site does, and what it saw.
#[derive(Debug, Default)]
pub struct SiteState {
    /// Requests per (method, path).
    pub requests: Mutex<HashMap<(String, String), usize>>,
    /// Status `/toggle` answers.
    pub toggle: AtomicU16,
    /// Requests `/flaky` has answered.
    pub flaky_hits: AtomicUsize,
}

impl SiteState {
    /// Requests seen for `path` with any method.
    pub fn hits(&self, path: &str) -> usize {
        let requests = self.requests.lock().expect("lock");
        requests.iter().filter(|((_, p), _)| p == path).map(|(_, n)| n).sum()
    }
}

async fn serve_site(State(state): State<Arc<SiteState>>, method: Method, Path(path): Path<String>) -> Response {
    let path = format!("/{path}");
    *state
        .requests
        .lock()
        .expect("lock")
        .entry((method.to_string(), path.clone()))
        .or_default() += 1;
    match path.as_str() {
        "/ok" => "ok".into_response(),
        "/gone" => StatusCode::NOT_FOUND.into_response(),
        "/head-405" if method == Method::HEAD => StatusCode::METHOD_NOT_ALLOWED.into_response(),
        "/head-405" => "works with GET".into_response(),
        "/flaky" => {
            if state.flaky_hits.fetch_add(1, Ordering::SeqCst) < 2 {
                // HEAD and GET of the first attempt both fail
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            } else {
                "recovered".into_response()
            }
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            "too late".into_response()
        }
        "/toggle" => StatusCode::from_u16(state.toggle.load(Ordering::SeqCst))
            .unwrap_or(StatusCode::OK)
            .into_response(),
        "/page" => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], FIXTURE_PAGE).into_response(),
        p if p.starts_with("/p/") => "numbered".into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A migrated database plus a local site.
pub struct TestApp {
    pub pool: PgPool,
    pub settings: Settings,
    pub site: Arc<SiteState>,
    pub site_addr: SocketAddr,
}

impl TestApp {
    /// Starts the local site and builds settings for fast tests.
    pub async fn spawn(pool: PgPool) -> Self {
        let site = Arc::new(SiteState {
            toggle: AtomicU16::new(200),
            ..SiteState::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind site");
        let site_addr = listener.local_addr().expect("addr");
        let app = Router::new()
            .route("/{*path}", any(serve_site))
            .with_state(site.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let mut settings = Settings::defaults(url_of(&pool).await);
        settings.check_after = Duration::ZERO;
        settings.refresh_enabled = false;
        settings.fetch.guard.allow_private_networks = true;
        settings.fetch.timeout = Duration::from_secs(1);
        settings.worker_addr = "127.0.0.1:0".parse().expect("addr");
        settings.queue.retry.base = Duration::from_millis(100);
        settings.queue.retry.max = Duration::from_secs(1);
        settings.queue.poll_interval = Duration::from_millis(200);
        settings.queue.host_concurrency = 8;
        // Every test link lives on 127.0.0.1: pacing would serialise them (tested on its own).
        settings.host_interval = Duration::ZERO;
        settings.shutdown_grace = Duration::from_secs(10);
        Self {
            pool,
            settings,
            site,
            site_addr,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.site_addr)
    }

    /// Saves links (paths on the local site or full URLs); returns their ids in order.
    pub async fn add_links(&self, urls: &[String]) -> Vec<i64> {
        let parsed: Vec<_> = urls.iter().map(|u| parse_link(u).expect("valid url")).collect();
        let new: Vec<_> = parsed.iter().cloned().map(new_link).collect();
        links::insert_many(&self.pool, &new).await.expect("insert links");
        let mut ids = Vec::new();
        for link in parsed {
            ids.push(self.link_by_url(link.url.as_str()).await.id);
        }
        ids
    }

    async fn link_by_url(&self, url: &str) -> Link {
        links::find(&self.pool, &LinkRef::Url(url.to_owned()))
            .await
            .expect("find")
            .expect("link exists")
    }

    /// A link by id.
    pub async fn link(&self, id: i64) -> Link {
        links::find(&self.pool, &LinkRef::Id(id))
            .await
            .expect("find")
            .expect("link exists")
    }

    /// One producer cycle.
    pub async fn run_cycle(&self) -> producer::cycle::CycleReport {
        producer::cycle::run_cycle(&self.pool, &self.settings)
            .await
            .expect("cycle")
    }

    /// Runs in-process workers until no job is queued or running, then drains them.
    pub async fn run_until_idle(&self, workers: usize, concurrency: usize, deadline: Duration) {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        for _ in 0..workers {
            let settings = self.settings.clone();
            let stop = stop.clone();
            handles.push(tokio::spawn(async move {
                worker::app::run(settings, concurrency, stop).await
            }));
        }
        wait_for(deadline, "the queue to drain", || async {
            let (busy,): (i64,) =
                sqlx::query_as("SELECT count(*) FROM queue_jobs WHERE state IN ('queued', 'running')")
                    .fetch_one(&self.pool)
                    .await
                    .expect("count");
            (busy == 0).then_some(())
        })
        .await;
        stop.cancel();
        for handle in handles {
            handle.await.expect("worker task").expect("worker ran");
        }
    }

    /// Cycle, then work until idle.
    pub async fn cycle_and_work(&self) {
        self.run_cycle().await;
        self.run_until_idle(1, 8, Duration::from_secs(30)).await;
    }
}
