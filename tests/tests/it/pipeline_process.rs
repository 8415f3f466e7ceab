//! The pipeline with real processes and fake remote services: the production worker binary under
//! SIGTERM, and the GitHub API.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use nix::sys::signal::Signal;
use sqlx::PgPool;
use tokio::process::Command;

use crate::app::TestApp;
use crate::helpers::{count_state, wait_for};

/// A fake GitHub API: `octo/thing` exists (ETag "v1", 304 when it matches), anything else is 404.
async fn fake_github(hits: Arc<AtomicUsize>) -> String {
    let app = Router::new().route(
        "/repos/{owner}/{repo}",
        get(move |Path((owner, repo)): Path<(String, String)>, headers: HeaderMap| {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                if (owner.as_str(), repo.as_str()) != ("octo", "thing") {
                    return (StatusCode::NOT_FOUND, r#"{"message":"Not Found"}"#).into_response();
                }
                if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some("\"v1\"") {
                    return StatusCode::NOT_MODIFIED.into_response();
                }
                (
                    [(header::ETAG, "\"v1\""), (header::CONTENT_TYPE, "application/json")],
                    r#"{"full_name":"octo/thing","description":"A thing","stargazers_count":42,"archived":false,"pushed_at":"2026-11-01T10:00:00Z","html_url":"https://github.com/octo/thing"}"#,
                )
                    .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn refresh_reads_github_repositories_and_marks_missing_ones_unavailable(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    let hits = Arc::new(AtomicUsize::new(0));
    app.settings.github_api_url = fake_github(hits.clone()).await.parse().expect("url");
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

    // The second refresh sends the stored ETag and keeps everything on 304.
    app.cycle_and_work().await;
    let again = app.link(ids[0]).await;
    assert_eq!(again.github.and_then(|g| g.stars), Some(42));
    assert_eq!(hits.load(Ordering::SeqCst), 4, "two repos asked twice");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_sigterm_mid_batch_lets_in_flight_checks_finish_and_the_rest_complete_elsewhere(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.settings.fetch.timeout = Duration::from_secs(5);
    // /slow answers after 3 s: slower than the time between SIGTERM and the end of the drain
    // would be if in-flight jobs were dropped.
    let n = 12;
    let ids = app
        .add_links(&(0..n).map(|i| app.url(&format!("/slow?{i}"))).collect::<Vec<_>>())
        .await;
    assert_eq!(app.run_cycle().await.check.enqueued, n as i64);

    let mut child = Command::new(env!("CARGO_BIN_EXE_linkpulse-worker"))
        .args(["--concurrency", "4"])
        .env("DATABASE_URL", &app.settings.database_url)
        .env("LINKPULSE_ALLOW_PRIVATE_NETWORKS", "true")
        .env("LINKPULSE_HTTP_TIMEOUT", "5s")
        .env("LINKPULSE_WORKER_ADDR", "127.0.0.1:0")
        .env("LINKPULSE_SHUTDOWN_GRACE", "20s")
        .env("LINKPULSE_HOST_CONCURRENCY", "8")
        .env("LINKPULSE_HOST_INTERVAL", "0s")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn worker");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().expect("pid")).expect("pid"));
    wait_for(Duration::from_secs(20), "4 checks in flight", || async {
        (app.site.hits("/slow") >= 4).then_some(())
    })
    .await;
    nix::sys::signal::kill(pid, Signal::SIGTERM).expect("sigterm");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exited in time")
        .expect("wait");
    assert_eq!(status.code(), Some(0), "a drained worker exits 0");
    let finished_by_first = count_state(&app.pool, "done").await;
    assert!(
        finished_by_first >= 4,
        "in-flight checks finished before exit ({finished_by_first})"
    );

    app.run_until_idle(1, 8, Duration::from_secs(60)).await;
    assert_eq!(count_state(&app.pool, "done").await, n as i64, "every job completed");
    for id in ids {
        assert_eq!(app.link(id).await.last_outcome.as_deref(), Some("ok"));
    }
    // HEAD succeeds, so each link is fetched exactly once if no job ran twice.
    let requests = app.site.requests.lock().expect("lock").clone();
    let total: usize = requests.iter().filter(|((_, p), _)| p == "/slow").map(|(_, c)| c).sum();
    assert_eq!(total, n, "no check ran twice");
}
