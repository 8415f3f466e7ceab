//! A database outage longer than the rescue window: when the database comes back, no worker takes
//! the jobs of live workers that simply could not heartbeat (the outage rule), so the checks that
//! were in flight run once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::routing::any;
use linkpulse_shared::config::ExposeSecret;
use sqlx::PgPool;

use crate::app::TestApp;
use crate::helpers::wait_for;
use crate::hostile::ServiceProcess;
use crate::tcp_proxy::{Mode, TcpProxy};

/// Requests per (method, path), and whether held responses may go.
#[derive(Debug, Default)]
struct Held {
    requests: Mutex<HashMap<(String, String), usize>>,
    released: AtomicBool,
}

async fn hold(State(held): State<Arc<Held>>, method: Method, Path(path): Path<String>) -> &'static str {
    *held
        .requests
        .lock()
        .expect("lock")
        .entry((method.to_string(), path))
        .or_default() += 1;
    while !held.released.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    "ok"
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn checks_in_flight_across_an_outage_longer_than_the_rescue_window_run_once(pool: PgPool) {
    const RESCUE_AFTER: Duration = Duration::from_millis(1500);
    let app = TestApp::spawn(pool).await;
    let held = Arc::new(Held::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let site = listener.local_addr().expect("addr");
    let router = Router::new().route("/hold/{*path}", any(hold)).with_state(held.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let urls: Vec<String> = (0..10).map(|i| format!("http://{site}/hold/{i}")).collect();
    app.add_links(&urls).await;
    app.run_cycle().await;

    let direct = app.settings.database_url.expose_secret().to_owned();
    let upstream = url::Url::parse(&direct).expect("url");
    let upstream = format!(
        "{}:{}",
        upstream.host_str().expect("host"),
        upstream.port().unwrap_or(5432)
    )
    .parse()
    .expect("upstream address");
    // Each worker reaches the database through its own proxy, so the two come back at different
    // moments, as they do after a real outage.
    let proxies = [TcpProxy::start(upstream).await, TcpProxy::start(upstream).await];
    let env = |proxy: &TcpProxy| -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", proxy.url_through(&direct)),
            ("LINKPULSE_HEARTBEAT_INTERVAL", "200ms".to_owned()),
            ("LINKPULSE_RESCUE_AFTER", "1500ms".to_owned()),
            ("LINKPULSE_POLL_INTERVAL", "200ms".to_owned()),
            ("LINKPULSE_RETRY_BASE", "100ms".to_owned()),
            ("LINKPULSE_ALLOW_PRIVATE_NETWORKS", "true".to_owned()),
            ("LINKPULSE_HTTP_TIMEOUT", "30s".to_owned()),
            ("LINKPULSE_HOST_CONCURRENCY", "20".to_owned()),
            ("LINKPULSE_HOST_INTERVAL", "0s".to_owned()),
            ("LINKPULSE_WORKER_CONCURRENCY", "8".to_owned()),
            ("LINKPULSE_WORKER_ADDR", "127.0.0.1:0".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ]
    };
    // The busy worker starts first and claims every job; the other one starts idle.
    let busy = ServiceProcess::spawn_worker(&env(&proxies[1]));
    let requests = |method: &'static str| {
        let held = held.clone();
        move || {
            held.requests
                .lock()
                .expect("lock")
                .iter()
                .filter(|((m, _), _)| m == method)
                .map(|(_, n)| *n)
                .sum::<usize>()
        }
    };
    let heads = requests("HEAD");
    let in_flight = tokio::time::timeout(Duration::from_secs(30), async {
        // One worker's concurrency of requests in flight; the rest of its claim waits in its buffer.
        while heads() < 8 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let states: Vec<(String, i32, serde_json::Value)> =
        sqlx::query_as("SELECT state, attempts, errors FROM queue_jobs ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .expect("states");
    assert!(
        in_flight.is_ok(),
        "premise: every check in flight ({} HEADs, jobs {states:?}); worker logs:\n{}",
        heads(),
        busy.logs()
    );
    let idle = ServiceProcess::spawn_worker(&env(&proxies[0]));
    wait_for(Duration::from_secs(30), "the idle worker to register", || async {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_workers")
            .fetch_one(&app.pool)
            .await
            .expect("workers");
        (n == 2).then_some(())
    })
    .await;
    let workers = [idle, busy];

    // The outage: every connection cut, new ones refused, for twice the rescue window.
    for proxy in &proxies {
        proxy.set(Mode::Down);
    }
    tokio::time::sleep(RESCUE_AFTER * 2).await;
    let (silent_for,): (f64,) =
        sqlx::query_as("SELECT extract(epoch FROM now() - min(heartbeat_at))::float8 FROM queue_workers")
            .fetch_one(&app.pool)
            .await
            .expect("heartbeats");
    assert!(
        silent_for > RESCUE_AFTER.as_secs_f64(),
        "premise: the workers looked dead ({silent_for} s silent)"
    );
    // The idle worker's database comes back first; the busy worker's a moment later, within one
    // rescue window. Without the outage rule the idle worker, healthy again and the maintenance
    // holder, would rescue every job of the busy one, which is alive and still running them.
    proxies[0].set(Mode::Forward);
    tokio::time::sleep(RESCUE_AFTER * 2 / 3).await;
    proxies[1].set(Mode::Forward);
    // The handlers keep running well past the point where a rescue would have struck.
    tokio::time::sleep(RESCUE_AFTER * 2).await;
    held.released.store(true, Ordering::SeqCst);

    let finished = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let (open,): (i64,) =
                sqlx::query_as("SELECT count(*) FROM queue_jobs WHERE state IN ('queued', 'running')")
                    .fetch_one(&app.pool)
                    .await
                    .expect("count");
            if open == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if finished.is_err() {
        let states: Vec<(String, i32, serde_json::Value)> =
            sqlx::query_as("SELECT state, attempts, errors FROM queue_jobs ORDER BY id")
                .fetch_all(&app.pool)
                .await
                .expect("states");
        panic!(
            "checks never finished: {states:?}\nworker logs:\n{}\n---\n{}",
            workers[0].logs(),
            workers[1].logs()
        );
    }
    let counts = held.requests.lock().expect("lock").clone();
    for i in 0..urls.len() {
        let n = counts.get(&("HEAD".to_owned(), i.to_string())).copied().unwrap_or(0);
        assert_eq!(n, 1, "/hold/{i} was fetched {n} times: {counts:?}");
    }
    let (lost,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM queue_jobs, jsonb_array_elements(errors) e WHERE e ->> 'kind' = 'lost'")
            .fetch_one(&app.pool)
            .await
            .expect("lost");
    assert_eq!(lost, 0, "no job was rescued from a live worker");
    let (done,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_jobs WHERE state = 'done' AND attempts = 1")
        .fetch_one(&app.pool)
        .await
        .expect("done");
    assert_eq!(done, 10);
    for worker in workers {
        worker.stop().await;
    }
}
