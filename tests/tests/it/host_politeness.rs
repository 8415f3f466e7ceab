//! Politeness toward one host, through the whole pipeline: a host's cool-down holds back all its
//! jobs without spending their attempts, and the per-host cap (default 2) holds across worker
//! processes.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use nix::sys::signal::Signal;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use linkpulse_shared::config::{DEFAULT_HOST_CONCURRENCY, Settings};

use crate::app::TestApp;
use crate::helpers::{count_state, url_of, wait_for};

/// A worker running in this process until stopped.
struct InProcessWorker {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<linkpulse_shared::shutdown::Drained>>,
}

impl InProcessWorker {
    fn start(settings: &Settings) -> Self {
        let stop = CancellationToken::new();
        let handle = tokio::spawn(worker::app::run(settings.clone(), 8, stop.clone()));
        Self { stop, handle }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.handle.await.expect("worker task").expect("worker ran");
    }
}

/// How long the rate-limited page asks its host to wait.
const RETRY_AFTER: Duration = Duration::from_secs(6);

/// Requests a site received: path and arrival.
type Arrivals = Arc<Mutex<Vec<(String, Instant)>>>;

async fn rate_limited_site(State(arrivals): State<Arrivals>, Path(path): Path<String>) -> Response {
    let path = format!("/{path}");
    let limited_before = {
        let mut arrivals = arrivals.lock().expect("lock");
        arrivals.push((path.clone(), Instant::now()));
        arrivals.iter().filter(|(p, _)| *p == path).count() - 1
    };
    match path.as_str() {
        // The first attempt (HEAD, then GET) is told to come back later.
        "/limited" if limited_before < 2 => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, RETRY_AFTER.as_secs().to_string())],
        )
            .into_response(),
        _ => "ok".into_response(),
    }
}

/// Serves `router` on `ip`, returning the address.
async fn serve_on(ip: &str, router: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// State, attempts and errors of the check job of a link.
async fn check_job(pool: &PgPool, link_id: i64) -> (String, i32, Vec<serde_json::Value>) {
    let (state, attempts, errors): (String, i32, serde_json::Value) = sqlx::query_as(
        "SELECT state, attempts, errors FROM queue_jobs WHERE kind = 'check' AND (payload->>'link_id')::int8 = $1",
    )
    .bind(link_id)
    .fetch_one(pool)
    .await
    .expect("check job");
    (state, attempts, errors.as_array().cloned().unwrap_or_default())
}

fn kinds(errors: &[serde_json::Value]) -> Vec<&str> {
    errors.iter().map(|e| e["kind"].as_str().unwrap_or("?")).collect()
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn other_jobs_of_a_cooling_host_are_snoozed_without_spending_an_attempt(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let arrivals = Arrivals::default();
    let router = Router::new()
        .route("/{*path}", any(rate_limited_site))
        .with_state(arrivals.clone());
    let cooling = serve_on("127.0.0.1", router.clone()).await;
    let elsewhere = serve_on("127.0.0.2", router).await;

    // The rate-limited link first, alone: its 429 starts the host's cool-down.
    let limited = app.add_links(&[format!("http://{cooling}/limited")]).await[0];
    assert_eq!(app.run_cycle().await.check.enqueued, 1);
    let worker = InProcessWorker::start(&app.settings);
    let left: f64 = wait_for(Duration::from_secs(30), "the 429 to cool the host down", || async {
        let row: Option<(f64,)> = sqlx::query_as(
            "SELECT extract(epoch FROM until - now())::float8 FROM host_cooldowns WHERE host = '127.0.0.1'",
        )
        .fetch_optional(&app.pool)
        .await
        .expect("cool-down");
        row.map(|(left,)| left)
    })
    .await;
    let cool_down_ends = Instant::now() + Duration::from_secs_f64(left.max(0.0));

    // Then the host's other links, and one on another host.
    let mut others = Vec::new();
    for i in 0..3 {
        others.push(format!("http://{cooling}/page/{i}"));
    }
    others.push(format!("http://{elsewhere}/elsewhere"));
    let ids = app.add_links(&others).await;
    let (same_host, other_host) = (&ids[..3], ids[3]);
    assert_eq!(
        app.run_cycle().await.check.enqueued,
        4,
        "premise: the limited link's job is still queued (retrying), the others are new"
    );

    wait_for(
        Duration::from_secs(30),
        "the host's other jobs to be put off and the other host's job done",
        || async {
            let mut ready = check_job(&app.pool, other_host).await.0 == "done";
            for id in same_host {
                let (state, _, errors) = check_job(&app.pool, *id).await;
                ready &= !errors.is_empty() || state == "done";
            }
            ready.then_some(())
        },
    )
    .await;
    assert!(
        Instant::now() < cool_down_ends,
        "premise: the host is still cooling down ({:?} late)",
        Instant::now() - cool_down_ends
    );
    for id in same_host {
        let (state, attempts, errors) = check_job(&app.pool, *id).await;
        assert_eq!(
            (state.as_str(), attempts),
            ("queued", 0),
            "link {id}: snoozed, the attempt given back: {errors:?}"
        );
        assert_eq!(kinds(&errors), ["snooze"], "link {id}: {errors:?}");
        let reason = errors[0]["error"].as_str().unwrap_or_default();
        assert!(reason.contains("cooling down"), "link {id}: {reason}");
    }
    let early: Vec<String> = arrivals
        .lock()
        .expect("lock")
        .iter()
        .filter(|(path, _)| path.starts_with("/page/"))
        .map(|(path, _)| path.clone())
        .collect();
    assert!(early.is_empty(), "requests to the cooling host: {early:?}");
    assert_eq!(
        check_job(&app.pool, other_host).await.1,
        1,
        "another host is not held back"
    );

    wait_for(Duration::from_secs(60), "every job to finish", || async {
        (count_state(&app.pool, "queued").await + count_state(&app.pool, "running").await == 0).then_some(())
    })
    .await;
    worker.stop().await;

    for id in same_host {
        let (state, attempts, errors) = check_job(&app.pool, *id).await;
        assert_eq!(
            (state.as_str(), attempts),
            ("done", 1),
            "link {id}: one attempt spent, by the fetch itself"
        );
        assert!(kinds(&errors).iter().all(|k| *k == "snooze"), "link {id}: {errors:?}");
        assert_eq!(app.link(*id).await.last_outcome.as_deref(), Some("ok"));
    }
    let tolerance = Duration::from_millis(100);
    for (path, at) in arrivals.lock().expect("lock").iter() {
        if path.starts_with("/page/") {
            assert!(
                *at + tolerance >= cool_down_ends,
                "{path} was fetched {:?} before the cool-down ended",
                cool_down_ends - *at
            );
        }
    }
    let (state, attempts, errors) = check_job(&app.pool, limited).await;
    assert_eq!((state.as_str(), attempts), ("done", 2), "{errors:?}");
    let kinds = kinds(&errors);
    assert!(
        kinds.first() == Some(&"retry") && kinds[1..].iter().all(|k| *k == "snooze"),
        "the 429 itself spent its attempt: {errors:?}"
    );
    let link = app.link(limited).await;
    assert_eq!(
        (link.last_outcome.as_deref(), link.consecutive_failures),
        (Some("ok"), 0)
    );
}

/// How long the capped site holds request `i`: 200–600 ms, varied so that the jobs of a host
/// finish at different times and a freed slot can go to either worker.
fn hold_for(i: u64) -> Duration {
    Duration::from_millis(200 + i * 137 % 400)
}

/// What the capped site saw, per `Host` header: which workers (by `User-Agent`) have requests in
/// flight now, the most at once, and the hosts whose requests from two workers overlapped.
#[derive(Debug, Default)]
struct Capped {
    in_flight: HashMap<String, Vec<String>>,
    max_in_flight: HashMap<String, usize>,
    shared: HashSet<String>,
    total_in_flight: usize,
    max_total_in_flight: usize,
    requests_by: HashMap<String, usize>,
}

async fn hold(State(capped): State<Arc<Mutex<Capped>>>, Path(i): Path<u64>, headers: HeaderMap) -> &'static str {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (host, agent) = (text(header::HOST), text(header::USER_AGENT));
    {
        let mut capped = capped.lock().expect("lock");
        *capped.requests_by.entry(agent.clone()).or_default() += 1;
        let agents = capped.in_flight.entry(host.clone()).or_default();
        agents.push(agent.clone());
        let (now, shared) = (agents.len(), agents.iter().any(|a| *a != agent));
        let max = capped.max_in_flight.entry(host.clone()).or_default();
        *max = (*max).max(now);
        if shared {
            capped.shared.insert(host.clone());
        }
        capped.total_in_flight += 1;
        capped.max_total_in_flight = capped.max_total_in_flight.max(capped.total_in_flight);
    }
    tokio::time::sleep(hold_for(i)).await;
    let mut capped = capped.lock().expect("lock");
    let agents = capped.in_flight.entry(host).or_default();
    if let Some(at) = agents.iter().position(|a| *a == agent) {
        agents.remove(at);
    }
    capped.total_in_flight -= 1;
    "held"
}

/// A production `worker` process with the default per-host cap, polling every `poll`.
fn spawn_worker(database_url: &str, agent: &str, poll: Duration) -> Child {
    Command::new(env!("CARGO_BIN_EXE_linkpulse-worker"))
        .args(["--concurrency", "8"])
        .env("DATABASE_URL", database_url)
        .env_remove("LINKPULSE_HOST_CONCURRENCY")
        .env("LINKPULSE_ALLOW_PRIVATE_NETWORKS", "true")
        .env("LINKPULSE_WORKER_ADDR", "127.0.0.1:0")
        // No pacing: the cap alone limits what reaches a host.
        .env("LINKPULSE_HOST_INTERVAL", "0s")
        .env("LINKPULSE_POLL_INTERVAL", format!("{}ms", poll.as_millis()))
        .env("LINKPULSE_USER_AGENT", agent)
        .env("LINKPULSE_SHUTDOWN_GRACE", "10s")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn worker")
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn the_default_per_host_cap_of_two_holds_across_worker_processes(pool: PgPool) {
    assert_eq!(DEFAULT_HOST_CONCURRENCY, 2, "premise: the documented default");
    let app = TestApp::spawn(pool).await;
    let capped = Arc::new(Mutex::new(Capped::default()));
    let router = Router::new().route("/hold/{i}", any(hold)).with_state(capped.clone());
    let hosts = [
        serve_on("127.0.0.1", router.clone()).await,
        serve_on("127.0.0.2", router).await,
    ];
    // Each host's links together: nothing but the cap keeps a worker from taking all of one
    // host's jobs at once.
    let per_host = 16;
    let urls: Vec<String> = hosts
        .iter()
        .flat_map(|host| (0..per_host).map(move |i| format!("http://{host}/hold/{i}")))
        .collect();
    app.add_links(&urls).await;

    // The first worker takes both slots of each host...
    let database_url = url_of(&app.pool).await;
    let mut workers = vec![spawn_worker(&database_url, "worker-a", Duration::from_millis(500))];
    wait_for(Duration::from_secs(30), "the first worker to register", || async {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_workers")
            .fetch_one(&app.pool)
            .await
            .expect("workers");
        (n == 1).then_some(())
    })
    .await;
    assert_eq!(app.run_cycle().await.check.enqueued, urls.len() as i64);
    wait_for(
        Duration::from_secs(30),
        "two requests in flight to each host",
        || async {
            let capped = capped.lock().expect("lock");
            hosts
                .iter()
                .all(|host| capped.max_in_flight.get(&host.to_string()) >= Some(&2))
                .then_some(())
        },
    )
    .await;
    // ...then a second one competes for every slot it frees. Its quick poll (the first one's is
    // slow) wins it most freed slots; the first one's claims after its own jobs win the others.
    workers.push(spawn_worker(&database_url, "worker-b", Duration::from_millis(20)));
    wait_for(Duration::from_secs(90), "every check to finish", || async {
        (count_state(&app.pool, "done").await == urls.len() as i64).then_some(())
    })
    .await;
    for worker in &mut workers {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(worker.id().expect("pid")).expect("pid"));
        nix::sys::signal::kill(pid, Signal::SIGTERM).expect("sigterm");
    }
    for worker in &mut workers {
        let status = tokio::time::timeout(Duration::from_secs(30), worker.wait())
            .await
            .expect("worker exited in time")
            .expect("wait");
        assert_eq!(status.code(), Some(0));
    }

    let capped = capped.lock().expect("lock");
    assert_eq!(
        capped.requests_by.values().sum::<usize>(),
        urls.len(),
        "premise: one request (a successful HEAD) per link"
    );
    let mut agents: Vec<&String> = capped.requests_by.keys().collect();
    agents.sort();
    assert_eq!(agents, ["worker-a", "worker-b"], "premise: both processes ran checks");
    assert!(
        !capped.shared.is_empty(),
        "premise: the two processes had requests to one host in flight at once ({:?})",
        capped.requests_by
    );
    for host in hosts {
        let max = capped.max_in_flight.get(&host.to_string()).copied().unwrap_or_default();
        assert_eq!(
            max, 2,
            "{host}: at most {max} requests at once (cap 2, and it should be reached)"
        );
    }
    assert!(
        capped.max_total_in_flight > 2,
        "the cap is per host: the two hosts ran side by side ({} at most)",
        capped.max_total_in_flight
    );
}
