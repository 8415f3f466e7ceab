//! Conditional refresh of a page: the `ETag` and `Last-Modified` a page sent are stored, sent back
//! as `If-None-Match` / `If-Modified-Since` on the next refresh, and a 304 ends the job as
//! `not_modified` with the link's metadata kept.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sqlx::PgPool;

use crate::app::TestApp;

/// When every version of the pages was last modified.
const LAST_MODIFIED: &str = "Wed, 21 Oct 2026 07:28:00 GMT";

/// One request the site answered: path, `If-None-Match`, `If-Modified-Since`, status.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    path: String,
    if_none_match: Option<String>,
    if_modified_since: Option<String>,
    status: u16,
}

/// A site with two pages: `/versioned` (an `ETag` per version, and `Last-Modified`) and `/dated`
/// (`Last-Modified` only). Each answers 304 when the request's validator matches.
#[derive(Debug)]
struct Site {
    /// The current version of `/versioned`: ETag and title.
    version: Mutex<(&'static str, &'static str)>,
    seen: Mutex<Vec<Seen>>,
}

impl Site {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

fn page(title: &str) -> String {
    format!(
        "<html><head><title>{title}</title><meta name=\"description\" content=\"About {title}\"></head><body></body></html>"
    )
}

async fn serve(State(site): State<Arc<Site>>, Path(path): Path<String>, headers: HeaderMap) -> Response {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let if_none_match = text(header::IF_NONE_MATCH);
    let if_modified_since = text(header::IF_MODIFIED_SINCE);
    let response = match path.as_str() {
        "versioned" => {
            let (etag, title) = *site.version.lock().expect("lock");
            let validators = [(header::ETAG, etag), (header::LAST_MODIFIED, LAST_MODIFIED)];
            if if_none_match.as_deref() == Some(etag) {
                (StatusCode::NOT_MODIFIED, validators).into_response()
            } else {
                (validators, [(header::CONTENT_TYPE, "text/html")], page(title)).into_response()
            }
        }
        "dated" => {
            let validator = [(header::LAST_MODIFIED, LAST_MODIFIED)];
            if if_modified_since.as_deref() == Some(LAST_MODIFIED) {
                (StatusCode::NOT_MODIFIED, validator).into_response()
            } else {
                (validator, [(header::CONTENT_TYPE, "text/html")], page("Dated page")).into_response()
            }
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    };
    site.seen.lock().expect("lock").push(Seen {
        path,
        if_none_match,
        if_modified_since,
        status: response.status().as_u16(),
    });
    response
}

/// A TestApp that refreshes every cycle (no checks), and the site.
async fn refreshing_app(pool: PgPool) -> (TestApp, Arc<Site>, String) {
    let mut app = TestApp::spawn(pool).await;
    app.settings.check_enabled = false;
    app.settings.refresh_enabled = true;
    app.settings.refresh_after = Duration::ZERO;
    let site = Arc::new(Site {
        version: Mutex::new(("\"v1\"", "Version one")),
        seen: Mutex::default(),
    });
    let router = Router::new().route("/{page}", get(serve)).with_state(site.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    (app, site, format!("http://{addr}"))
}

/// One refresh cycle; returns the refresh job's result class and status code.
async fn refresh_once(app: &TestApp) -> (Option<String>, Option<i32>) {
    assert_eq!(app.run_cycle().await.refresh.enqueued, 1, "premise: the link is due");
    app.run_until_idle(1, 4, Duration::from_secs(30)).await;
    let (state, result, status): (String, Option<String>, Option<i32>) = sqlx::query_as(
        "SELECT state, result_class, status_code FROM queue_jobs WHERE kind = 'refresh' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .expect("refresh job");
    assert_eq!(state, "done");
    (result, status)
}

/// The page validators stored with a link.
async fn validators(app: &TestApp, id: i64) -> (Option<String>, Option<String>) {
    sqlx::query_as("SELECT http_etag, http_last_modified FROM links WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .expect("link")
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_refresh_sends_back_the_stored_etag_and_a_304_keeps_the_metadata(pool: PgPool) {
    let (app, site, base) = refreshing_app(pool).await;
    let id = app.add_links(&[format!("{base}/versioned")]).await[0];

    assert_eq!(refresh_once(&app).await, (Some("ok".into()), Some(200)));
    let first = app.link(id).await;
    assert_eq!(first.title.as_deref(), Some("Version one"));
    assert_eq!(
        validators(&app, id).await,
        (Some("\"v1\"".into()), Some(LAST_MODIFIED.into())),
        "the page's validators are stored"
    );
    let first_seen = &site.seen()[0];
    assert_eq!(
        (
            first_seen.if_none_match.as_deref(),
            first_seen.if_modified_since.as_deref()
        ),
        (None, None),
        "premise: nothing to send back the first time"
    );

    // Unchanged page: the stored validators go back, the site says 304.
    assert_eq!(refresh_once(&app).await, (Some("not_modified".into()), Some(304)));
    let second_seen = site.seen()[1].clone();
    assert_eq!(
        second_seen,
        Seen {
            path: "versioned".into(),
            if_none_match: Some("\"v1\"".into()),
            if_modified_since: Some(LAST_MODIFIED.into()),
            status: 304,
        }
    );
    let kept = app.link(id).await;
    assert_eq!(
        (kept.title.as_deref(), kept.description.as_deref()),
        (Some("Version one"), Some("About Version one")),
        "a 304 keeps the metadata"
    );
    assert_eq!(kept.last_error, None, "a 304 is not an error");
    assert!(kept.refreshed_at > first.refreshed_at, "the refresh was recorded");
    assert_eq!(
        validators(&app, id).await,
        (Some("\"v1\"".into()), Some(LAST_MODIFIED.into()))
    );

    // A new version: the old ETag no longer matches, the page is read and its new ETag stored.
    *site.version.lock().expect("lock") = ("\"v2\"", "Version two");
    assert_eq!(refresh_once(&app).await, (Some("ok".into()), Some(200)));
    let third_seen = &site.seen()[2];
    assert_eq!(
        (third_seen.if_none_match.as_deref(), third_seen.status),
        (Some("\"v1\""), 200)
    );
    assert_eq!(app.link(id).await.title.as_deref(), Some("Version two"));
    assert_eq!(validators(&app, id).await.0.as_deref(), Some("\"v2\""));
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_page_with_only_last_modified_is_asked_if_modified_since(pool: PgPool) {
    let (app, site, base) = refreshing_app(pool).await;
    let id = app.add_links(&[format!("{base}/dated")]).await[0];

    assert_eq!(refresh_once(&app).await, (Some("ok".into()), Some(200)));
    assert_eq!(app.link(id).await.title.as_deref(), Some("Dated page"));
    assert_eq!(validators(&app, id).await, (None, Some(LAST_MODIFIED.into())));

    assert_eq!(refresh_once(&app).await, (Some("not_modified".into()), Some(304)));
    let seen = site.seen();
    assert_eq!(
        (
            seen[1].if_none_match.as_deref(),
            seen[1].if_modified_since.as_deref(),
            seen[1].status
        ),
        (None, Some(LAST_MODIFIED), 304)
    );
    let kept = app.link(id).await;
    assert_eq!(kept.title.as_deref(), Some("Dated page"), "a 304 keeps the metadata");
    assert_eq!(kept.last_error, None);
}
