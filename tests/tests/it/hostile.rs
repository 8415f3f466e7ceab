//! Hostile clients and hostile servers: the admin server's limits under a burst of readers, the
//! GitHub API's rate limit shared by the whole pool, and secrets that never leave the process.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use linkpulse_shared::config::ExposeSecret;
use nix::sys::signal::Signal;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::app::TestApp;
use crate::helpers::wait_for;

/// A plain HTTP/1.1 request over a fresh connection: (status, body). No client library, so the
/// test controls exactly what is sent (a huge body, odd query strings).
async fn raw_request(addr: &str, request: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may answer (413) before the whole body is written and close: ignore write errors.
    let _ = stream.write_all(request).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn get_path(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    raw_request(addr, request.as_bytes()).await
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn listing_limits_past_the_maximum_and_oversized_bodies_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut settings = app.settings.clone();
    settings.admin_addr = "127.0.0.1:0".parse().expect("addr");
    settings.admin_token = Some(linkpulse_shared::config::AdminToken::new("t0ken"));
    let stop = CancellationToken::new();
    let addr = producer::admin::serve(app.pool.clone(), Arc::new(settings), stop.clone())
        .await
        .expect("admin server")
        .to_string();

    for path in [
        "/api/jobs?limit=999999999",
        "/api/jobs?limit=1001",
        "/api/links?limit=1001",
        "/api/links?limit=99999999999999999999",
        "/api/jobs?limit=-1",
    ] {
        let (status, body) = get_path(&addr, path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("limit"), "{path}: {body}");
    }
    for path in ["/api/jobs?limit=1000", "/api/links?limit=1000", "/api/jobs"] {
        assert_eq!(get_path(&addr, path, None).await.0, 200, "{path}");
    }

    // A megabyte of JSON to a route that takes a body: refused by size, not parsed.
    let body = format!("{{\"state\":\"failed\",\"pad\":\"{}\"}}", "x".repeat(1 << 20));
    let request = format!(
        "POST /api/queue/requeue HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer t0ken\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _) = raw_request(&addr, request.as_bytes()).await;
    assert_eq!(status, 413);
    // The same call with a small body works (the limit is not refusing everything).
    let small = r#"{"state":"failed"}"#;
    let request = format!(
        "POST /api/queue/requeue HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer t0ken\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{small}",
        small.len()
    );
    let (status, body) = raw_request(&addr, request.as_bytes()).await;
    assert_eq!((status, body.contains("requeued")), (200, true), "{body}");
    stop.cancel();
}

/// A running `producer` or `worker` process whose stderr is collected.
pub(crate) struct ServiceProcess {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl ServiceProcess {
    /// `producer ARGS` with `env` (and none of the test's own `LINKPULSE_*`/`OTEL_*`).
    pub(crate) fn spawn(env: &[(&str, String)], args: &[&str]) -> Self {
        Self::start(env!("CARGO_BIN_EXE_linkpulse-producer"), env, args)
    }

    /// `worker` with `env` (and none of the test's own `LINKPULSE_*`/`OTEL_*`).
    pub(crate) fn spawn_worker(env: &[(&str, String)]) -> Self {
        Self::start(env!("CARGO_BIN_EXE_linkpulse-worker"), env, &[])
    }

    fn start(bin: &str, env: &[(&str, String)], args: &[&str]) -> Self {
        let mut command = Command::new(bin);
        command
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, _) in std::env::vars() {
            if name.starts_with("OTEL_") || name.starts_with("LINKPULSE_") {
                command.env_remove(name);
            }
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn the process");
        let lines = collect_lines(child.stderr.take().expect("stderr"));
        Self { child, lines }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id().expect("pid")).expect("pid fits")
    }

    /// The address a JSON log line with `message` names in its `addr` field: where the process
    /// bound a port it was given as `127.0.0.1:0` (no port picked by the test that another test
    /// could take first).
    pub(crate) async fn logged_addr(&self, message: &str) -> String {
        let lines = self.lines.clone();
        wait_for(Duration::from_secs(30), message, || {
            let lines = lines.clone();
            async move {
                lines.lock().expect("lock").iter().find_map(|line| {
                    let value: serde_json::Value = serde_json::from_str(line).ok()?;
                    (value["message"] == message).then(|| value["addr"].as_str().map(str::to_owned))?
                })
            }
        })
        .await
    }

    /// Everything the process wrote to stderr so far.
    pub(crate) fn logs(&self) -> String {
        self.lines.lock().expect("lock").join("\n")
    }

    pub(crate) fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }
}

fn collect_lines(pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().expect("lock").push(line);
        }
    });
    lines
}

/// Peak resident memory of a process (`VmHWM`), in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn two_hundred_concurrent_readers_never_delay_the_leaders_cycles(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    // History that makes every stats and dashboard read real work.
    sqlx::query(
        "INSERT INTO queue_jobs (kind, dedupe_key, payload, state, attempts, max_attempts, started_at, finished_at, \
         result_class, duration_ms) \
         SELECT CASE WHEN i % 2 = 0 THEN 'check' ELSE 'refresh' END, 'link:' || i, '{}'::jsonb, \
                CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'done' END, 1, 5, \
                now() - i * interval '1 second', now() - i * interval '1 second', 'ok', 5 \
         FROM generate_series(1, 60000) i",
    )
    .execute(&app.pool)
    .await
    .expect("history");
    let urls: Vec<String> = (0..200).map(|i| app.url(&format!("/ok?{i}"))).collect();
    app.add_links(&urls).await;

    let interval = Duration::from_millis(500);
    let producer = ServiceProcess::spawn(
        &[
            ("DATABASE_URL", app.settings.database_url.expose_secret().to_owned()),
            ("LINKPULSE_ADMIN_ADDR", "127.0.0.1:0".into()),
            ("LINKPULSE_CYCLE_INTERVAL", "500ms".into()),
            ("LINKPULSE_CHECK_AFTER", "0s".into()),
            ("LINKPULSE_LOG_FORMAT", "json".into()),
            ("RUST_LOG", "info".into()),
        ],
        &["run"],
    );
    let addr = producer.logged_addr("admin server listening").await;
    wait_for(Duration::from_secs(30), "the producer's first cycle", || async {
        (producer.count("schedule run done") >= 1).then_some(())
    })
    .await;

    // 200 clients, each reading stats and the dashboard in a loop for the whole window.
    let window = Duration::from_secs(8);
    let before = producer.count("schedule run done");
    let started = tokio::time::Instant::now();
    let answered = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for i in 0..200 {
        let addr = addr.clone();
        let answered = answered.clone();
        clients.push(tokio::spawn(async move {
            let path = if i % 2 == 0 { "/api/queue/stats" } else { "/" };
            while started.elapsed() < window {
                let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await else {
                    continue;
                };
                let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
                if stream.write_all(request.as_bytes()).await.is_err() {
                    continue;
                }
                let mut sink = Vec::new();
                if stream.read_to_end(&mut sink).await.is_ok() && sink.starts_with(b"HTTP/1.1 200") {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for client in clients {
        client.await.expect("client");
    }
    let elapsed = started.elapsed();
    let cycles = producer.count("schedule run done") - before;

    // Premise: the readers really loaded the server.
    assert!(
        answered.load(Ordering::Relaxed) >= 200,
        "only {} reads answered",
        answered.load(Ordering::Relaxed)
    );
    // One cycle per interval is the schedule; allow a busy machine half of it.
    let scheduled = (elapsed.as_millis() / interval.as_millis()) as usize;
    assert!(
        cycles * 2 >= scheduled,
        "{cycles} cycles in {elapsed:?} with a {interval:?} interval under 200 readers"
    );
    assert_eq!(producer.count("cycle failed"), 0, "a cycle failed under load");
    let peak = peak_rss_kib(producer.pid());
    assert!(peak < 128 * 1024, "producer peak RSS {peak} KiB");
}

/// A GitHub API whose rate limit is spent: every call answers 403 with `x-ratelimit-remaining: 0`
/// and a reset two minutes ahead.
async fn exhausted_github(calls: Arc<AtomicUsize>) -> String {
    let app = Router::new().route(
        "/repos/{owner}/{repo}",
        get(move || {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let reset = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() + 120;
                (
                    StatusCode::FORBIDDEN,
                    [
                        ("x-ratelimit-remaining", "0".to_owned()),
                        ("x-ratelimit-reset", reset.to_string()),
                        ("content-type", "application/json".to_owned()),
                    ],
                    "{\"message\":\"API rate limit exceeded\u{0}\"}",
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
async fn a_github_rate_limit_holds_every_repository_refresh_pool_wide_and_spreads_the_wake_ups(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    let calls = Arc::new(AtomicUsize::new(0));
    app.settings.github_api_url = exhausted_github(calls.clone()).await.parse().expect("url");
    app.settings.check_enabled = false;
    app.settings.refresh_enabled = true;
    app.settings.refresh_after = Duration::ZERO;
    let urls: Vec<String> = (0..12).map(|i| format!("https://github.com/octo/repo{i}")).collect();
    app.add_links(&urls).await;
    app.run_cycle().await;

    // One worker running one job at a time: the first refresh meets the limit, the rest must not
    // call the API at all.
    let stop = CancellationToken::new();
    let worker = tokio::spawn(worker::app::run(app.settings.clone(), 1, stop.clone()));
    let snoozed = wait_for(Duration::from_secs(60), "every refresh to be snoozed", || async {
        let rows: Vec<(f64,)> = sqlx::query_as(
            "SELECT extract(epoch FROM run_at - now())::float8 FROM queue_jobs \
             WHERE kind = 'refresh' AND state = 'queued' AND run_at > now() + interval '60 seconds'",
        )
        .fetch_all(&app.pool)
        .await
        .expect("snoozed");
        (rows.len() == urls.len()).then_some(rows)
    })
    .await;
    stop.cancel();
    worker.await.expect("worker task").expect("worker ran");

    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the API was called again while rate-limited"
    );
    let (attempts,): (i64,) = sqlx::query_as("SELECT sum(attempts) FROM queue_jobs WHERE kind = 'refresh'")
        .fetch_one(&app.pool)
        .await
        .expect("attempts");
    assert_eq!(attempts, 0, "a snooze must not spend an attempt");
    // The wake-ups are spread over a window past the reset, not all at one instant.
    let delays: Vec<f64> = snoozed.into_iter().map(|(d,)| d).collect();
    let min = delays.iter().copied().fold(f64::INFINITY, f64::min);
    let max = delays.iter().copied().fold(0.0, f64::max);
    let jobs: Vec<(String, serde_json::Value)> =
        sqlx::query_as("SELECT (run_at - now())::text, errors FROM queue_jobs ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .expect("jobs");
    assert!(min >= 100.0, "woke before the reset: {delays:?} {jobs:#?}");
    assert!(max - min >= 2.0, "wake-ups not spread: {delays:?}");
}

/// A site whose every answer is a failure that ends up in error text: 404, a stall past the
/// timeout, and a redirect loop through URLs with tokens.
async fn failing_site() -> String {
    let app = Router::new().route(
        "/{*path}",
        any(|uri: axum::http::Uri, _headers: HeaderMap| async move {
            match uri.path() {
                "/stall" => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    StatusCode::OK.into_response()
                }
                "/loop" => (
                    StatusCode::FOUND,
                    [(header::LOCATION, "/loop?token=link-s3cret-q&again=1")],
                )
                    .into_response(),
                _ => StatusCode::NOT_FOUND.into_response(),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn no_secret_from_the_environment_or_a_links_query_reaches_logs_errors_api_or_metrics(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let site = failing_site().await;
    // The server trusts loopback, so any password works: it is a secret all the same.
    let db_url = app.settings.database_url.expose_secret().replacen(
        "postgres://postgres@",
        "postgres://postgres:db-s3cret-pw@",
        1,
    );
    assert!(
        db_url.contains("db-s3cret-pw"),
        "premise: the URL carries the password: {db_url}"
    );
    let env_secrets = [
        "db-s3cret-pw",
        "gh-s3cret-token",
        "adm-s3cret-token",
        "read-s3cret-token",
    ];
    let link_secret = "link-s3cret-q";
    let links: Vec<String> = ["/gone", "/stall", "/loop"]
        .iter()
        .map(|path| format!("{site}{path}?token={link_secret}"))
        .collect();
    app.add_links(&links).await;

    let common = vec![
        ("DATABASE_URL", db_url.clone()),
        ("GITHUB_TOKEN", "gh-s3cret-token".to_owned()),
        ("LINKPULSE_ADMIN_TOKEN", "adm-s3cret-token".to_owned()),
        ("LINKPULSE_READ_TOKEN", "read-s3cret-token".to_owned()),
        ("LINKPULSE_ALLOW_PRIVATE_NETWORKS", "true".to_owned()),
        ("LINKPULSE_CHECK_AFTER", "0s".to_owned()),
        ("LINKPULSE_HTTP_TIMEOUT", "1s".to_owned()),
        ("LINKPULSE_MAX_ATTEMPTS", "2".to_owned()),
        ("LINKPULSE_RETRY_BASE", "100ms".to_owned()),
        ("LINKPULSE_RETRY_MAX", "200ms".to_owned()),
        ("LINKPULSE_HOST_INTERVAL", "0s".to_owned()),
        ("LINKPULSE_POLL_INTERVAL", "200ms".to_owned()),
        ("LINKPULSE_ADMIN_ADDR", "127.0.0.1:0".to_owned()),
        ("LINKPULSE_WORKER_ADDR", "127.0.0.1:0".to_owned()),
        ("LINKPULSE_LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "debug,sqlx=info,hyper=info,h2=info,reqwest=info".to_owned()),
    ];
    let producer = ServiceProcess::spawn(&common, &["run"]);
    let worker = ServiceProcess::spawn_worker(&common);
    let admin_addr = producer.logged_addr("admin server listening").await;
    let worker_addr = worker.logged_addr("worker ready").await;
    wait_for(Duration::from_secs(60), "every check to finish", || async {
        let (open, finished): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state IN ('queued', 'running')), \
                    count(*) FILTER (WHERE state IN ('done', 'failed')) FROM queue_jobs",
        )
        .fetch_one(&app.pool)
        .await
        .expect("count");
        (open == 0 && finished >= 3).then_some(())
    })
    .await;

    // Everything a person or a tool can read back.
    let mut shown: HashMap<String, String> = HashMap::new();
    for path in ["/api/jobs?limit=100", "/api/links", "/api/queue/stats", "/", "/metrics"] {
        let (status, body) = get_path(&admin_addr, path, Some("adm-s3cret-token")).await;
        assert_eq!(status, 200, "{path}: {body}");
        shown.insert(format!("admin {path}"), body);
    }
    let jobs: Vec<serde_json::Value> = serde_json::from_str(&shown["admin /api/jobs?limit=100"]).expect("jobs JSON");
    for mut job in jobs {
        job.as_object_mut().expect("object").remove("payload");
        assert!(
            !job.to_string().contains(link_secret),
            "a job's error text has the link's token: {job}"
        );
    }
    let (status, body) = get_path(&worker_addr, "/metrics", None).await;
    assert_eq!(status, 200, "worker /metrics");
    shown.insert("worker /metrics".into(), body);
    let (errors,): (String,) = sqlx::query_as(
        "SELECT coalesce(string_agg(errors::text || ' ' || coalesce(result_detail, ''), ' '), '') FROM queue_jobs",
    )
    .fetch_one(&app.pool)
    .await
    .expect("job errors");
    // Premise: the failures did leave error text to look at.
    assert!(errors.contains("redirect loop"), "{errors}");
    shown.insert("job errors".into(), errors);
    let (link_errors,): (String,) = sqlx::query_as("SELECT coalesce(string_agg(last_error, ' '), '') FROM links")
        .fetch_one(&app.pool)
        .await
        .expect("link errors");
    shown.insert("link errors".into(), link_errors);

    for process in [producer, worker] {
        process.stop().await;
    }
    // Logs are gathered after the processes exit, so their shutdown lines count too.
    for (name, text) in &shown {
        for secret in env_secrets {
            assert!(!text.contains(secret), "{secret} appears in {name}");
        }
        // Listings show the saved URLs themselves (a link, a job's payload): their owner's data.
        if !matches!(
            name.as_str(),
            "admin /api/links" | "admin /" | "admin /api/jobs?limit=100"
        ) {
            assert!(!text.contains(link_secret), "{link_secret} appears in {name}: {text}");
        }
    }
}

impl ServiceProcess {
    /// SIGTERM (the process must still be running: it never exits on its own), wait for a clean
    /// exit, then check the logs it wrote for secrets.
    pub(crate) async fn stop(mut self) {
        let early = self.child.try_wait().expect("try_wait");
        assert!(
            early.is_none(),
            "the process exited on its own ({early:?}):\n{}",
            self.logs()
        );
        let pid = nix::unistd::Pid::from_raw(self.pid());
        nix::sys::signal::kill(pid, Signal::SIGTERM).expect("sigterm");
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exited in time")
            .expect("wait");
        assert!(status.success(), "exit after SIGTERM: {status}:\n{}", self.logs());
        let lines = self.lines.clone();
        wait_for(Duration::from_secs(5), "the log pipe to close", || async {
            (Arc::strong_count(&lines) == 2).then_some(())
        })
        .await;
        let logs = self.lines.lock().expect("lock").join("\n");
        assert!(!logs.is_empty(), "premise: the process logged something");
        for secret in [
            "db-s3cret-pw",
            "gh-s3cret-token",
            "adm-s3cret-token",
            "read-s3cret-token",
            "link-s3cret-q",
        ] {
            assert!(!logs.contains(secret), "{secret} appears in the logs:\n{logs}");
        }
    }
}
