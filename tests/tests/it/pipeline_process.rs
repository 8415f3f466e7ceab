//! The pipeline with real processes and fake remote services: the production worker binary under
//! SIGTERM, and the GitHub API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use nix::sys::signal::Signal;
use sqlx::PgPool;
use tokio::process::{Child, Command};

use crate::app::TestApp;
use crate::helpers::{count_state, url_of, wait_for};

/// One request the fake GitHub API answered.
#[derive(Debug, Clone, PartialEq)]
struct ApiRequest {
    path: String,
    if_none_match: Option<String>,
    status: u16,
}

/// A fake GitHub API: `octo/thing` exists (ETag "v1", 304 when it matches), anything else is 404.
/// Every request is recorded with its `If-None-Match` header and the status it got.
async fn fake_github(seen: Arc<Mutex<Vec<ApiRequest>>>) -> String {
    let app = Router::new().route(
        "/repos/{owner}/{repo}",
        get(move |Path((owner, repo)): Path<(String, String)>, headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let if_none_match = headers
                    .get(header::IF_NONE_MATCH)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let response = if (owner.as_str(), repo.as_str()) != ("octo", "thing") {
                    (StatusCode::NOT_FOUND, r#"{"message":"Not Found"}"#).into_response()
                } else if if_none_match.as_deref() == Some("\"v1\"") {
                    StatusCode::NOT_MODIFIED.into_response()
                } else {
                    (
                        [(header::ETAG, "\"v1\""), (header::CONTENT_TYPE, "application/json")],
                        r#"{"full_name":"octo/thing","description":"A thing","stargazers_count":42,"archived":false,"pushed_at":"2026-11-01T10:00:00Z","html_url":"https://github.com/octo/thing"}"#,
                    )
                        .into_response()
                };
                seen.lock().expect("lock").push(ApiRequest {
                    path: format!("/repos/{owner}/{repo}"),
                    if_none_match,
                    status: response.status().as_u16(),
                });
                response
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The recorded requests for `path`, in order.
fn requests_for(seen: &Mutex<Vec<ApiRequest>>, path: &str) -> Vec<ApiRequest> {
    seen.lock()
        .expect("lock")
        .iter()
        .filter(|r| r.path == path)
        .cloned()
        .collect()
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn refresh_reads_github_repositories_and_marks_missing_ones_unavailable(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    app.settings.github_api_url = fake_github(seen.clone()).await.parse().expect("url");
    app.settings.check_enabled = false;
    app.settings.refresh_enabled = true;
    app.settings.refresh_after = Duration::ZERO;
    let ids = app
        .add_links(&[
            "https://github.com/octo/thing".into(),
            "https://github.com/octo/gone".into(),
        ])
        .await;
    app.cycle_and_work().await;

    let found = app.link(ids[0]).await;
    let gh = found.github.expect("github facts");
    assert_eq!(
        (gh.owner.as_str(), gh.repo.as_str(), gh.stars),
        ("octo", "thing", Some(42))
    );
    assert_eq!(gh.description.as_deref(), Some("A thing"));
    assert_eq!(gh.archived, Some(false));
    assert_eq!(found.status, "active");
    assert_eq!(app.link(ids[1]).await.status, "repo_unavailable");
    let first = requests_for(&seen, "/repos/octo/thing");
    assert_eq!(
        first
            .iter()
            .map(|r| (r.if_none_match.as_deref(), r.status))
            .collect::<Vec<_>>(),
        [(None, 200)],
        "premise: the first lookup is unconditional and gets the ETag"
    );

    // The second refresh sends the stored ETag, gets a 304 and keeps everything.
    app.cycle_and_work().await;
    let again = app.link(ids[0]).await;
    assert_eq!(again.github.and_then(|g| g.stars), Some(42));
    let thing = requests_for(&seen, "/repos/octo/thing");
    assert_eq!(thing.len(), 2, "asked twice: {thing:?}");
    assert_eq!(
        (thing[1].if_none_match.as_deref(), thing[1].status),
        (Some("\"v1\""), 304),
        "the second lookup is conditional on the stored ETag: {thing:?}"
    );
    let gone = requests_for(&seen, "/repos/octo/gone");
    assert_eq!(
        gone.iter().map(|r| r.status).collect::<Vec<_>>(),
        [404, 404],
        "the missing repository is asked again and is still missing"
    );
}

/// A site where every path answers 200 after `delay`; counts requests per path.
async fn slow_site(delay: Duration) -> (String, Arc<Mutex<HashMap<String, usize>>>) {
    let hits = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let counter = hits.clone();
    let app = Router::new().route(
        "/{*path}",
        get(move |Path(path): Path<String>| {
            let counter = counter.clone();
            async move {
                *counter.lock().expect("lock").entry(path).or_default() += 1;
                tokio::time::sleep(delay).await;
                "finally"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), hits)
}

/// A production worker process with fast heartbeats and a short rescue window.
fn spawn_worker(database_url: &str, concurrency: usize) -> Child {
    Command::new(env!("CARGO_BIN_EXE_linkpulse-worker"))
        .args(["--concurrency", &concurrency.to_string()])
        .env("DATABASE_URL", database_url)
        .env("LINKPULSE_ALLOW_PRIVATE_NETWORKS", "true")
        .env("LINKPULSE_HTTP_TIMEOUT", "20s")
        .env("LINKPULSE_WORKER_ADDR", "127.0.0.1:0")
        .env("LINKPULSE_SHUTDOWN_GRACE", "30s")
        .env("LINKPULSE_HOST_CONCURRENCY", "8")
        .env("LINKPULSE_HOST_INTERVAL", "0s")
        .env("LINKPULSE_HEARTBEAT_INTERVAL", "200ms")
        .env("LINKPULSE_RESCUE_AFTER", "3s")
        .env("LINKPULSE_POLL_INTERVAL", "300ms")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn worker")
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_sigterm_mid_batch_lets_in_flight_checks_finish_and_the_rest_complete_elsewhere(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let database_url = url_of(&app.pool).await;
    // Every check takes 8 s: far longer than the workers' rescue window (3 s, plus a
    // maintenance period of 1 s), so if the draining worker stopped heartbeating, its in-flight
    // checks would be rescued and run a second time.
    let (site, hits) = slow_site(Duration::from_secs(8)).await;
    let total_hits = || hits.lock().expect("lock").values().sum::<usize>();
    let n = 12;
    let ids = app
        .add_links(&(0..n).map(|i| format!("{site}/slow/{i}")).collect::<Vec<_>>())
        .await;
    assert_eq!(app.run_cycle().await.check.enqueued, n as i64);

    // Concurrency 4, and the host cap (8) lets it claim 4 more into its buffer.
    let mut draining = spawn_worker(&database_url, 4);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(draining.id().expect("pid")).expect("pid"));
    wait_for(Duration::from_secs(20), "4 checks in flight", || async {
        (total_hits() >= 4).then_some(())
    })
    .await;
    let (held,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_jobs WHERE state = 'running'")
        .fetch_one(&app.pool)
        .await
        .expect("held");
    assert_eq!(held, 8, "premise: 4 checks in flight and 4 claimed ahead");
    nix::sys::signal::kill(pid, Signal::SIGTERM).expect("sigterm");
    let _other = spawn_worker(&database_url, 8);
    let status = tokio::time::timeout(Duration::from_secs(40), draining.wait())
        .await
        .expect("exited in time")
        .expect("wait");
    assert_eq!(status.code(), Some(0), "a drained worker exits 0");
    let finished_by_first = count_state(&app.pool, "done").await;
    assert!(
        finished_by_first >= 4,
        "in-flight checks finished before exit ({finished_by_first})"
    );
    // The handed-back checks were released at once, not at the end of the drain: the other
    // worker had started them while the in-flight ones were still running.
    let seen_at_exit = total_hits();
    assert!(
        seen_at_exit > 4,
        "only {seen_at_exit} checks had started when the draining worker exited"
    );

    wait_for(Duration::from_secs(60), "every check to be done", || async {
        (count_state(&app.pool, "done").await == n as i64).then_some(())
    })
    .await;
    for id in ids {
        assert_eq!(app.link(id).await.last_outcome.as_deref(), Some("ok"));
    }
    let (lost,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_jobs WHERE errors @> '[{\"kind\": \"lost\"}]'")
        .fetch_one(&app.pool)
        .await
        .expect("lost");
    assert_eq!(lost, 0, "no check was rescued from the draining worker");
    let (attempts,): (Vec<i32>,) = sqlx::query_as("SELECT array_agg(attempts ORDER BY id) FROM queue_jobs")
        .fetch_one(&app.pool)
        .await
        .expect("attempts");
    assert_eq!(
        attempts,
        vec![1; n],
        "one attempt each: handed-back checks got theirs refunded"
    );
    // HEAD succeeds, so each link is fetched exactly once if no check ran twice.
    let requests = hits.lock().expect("lock").clone();
    assert_eq!(requests.len(), n, "every link fetched: {requests:?}");
    assert!(requests.values().all(|&c| c == 1), "no check ran twice: {requests:?}");
}
