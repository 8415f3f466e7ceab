//! The producer's admin HTTP (API, auth, metrics), the worker's `/metrics`, and leadership among
//! `producer run` processes.

use linkpulse_shared::config::ExposeSecret;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use linkpulse_shared::config::{AdminToken, Settings};

use crate::app::TestApp;
use crate::helpers::{url_of, wait_for};

pub(crate) const TOKEN: &str = "correct-horse-battery-staple";

/// One HTTP response, as far as these tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A deliberately tiny HTTP/1.0 client (the test crate has no HTTP client, and 1.0 means the
/// server closes the connection after a plain, unchunked body).
pub async fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Reply {
    let bearer = token.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
    http_with(addr, method, path, &headers, body).await
}

/// [`http`] with any request headers.
pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or("");
    if method == "POST" {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut raw))
        .await
        .expect("reply in time")
        .expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    Reply {
        status,
        body: body.to_owned(),
    }
}

/// Parses the Prometheus text format strictly enough to catch a broken page: every sample line
/// is `name{labels} value`, every value a float. Keyed by `name{labels}` exactly as rendered.
pub fn parse_prometheus(page: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in page.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE ") || !comment.is_empty(),
                "bad comment: {line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels: {line}");
        }
        samples.insert(series.to_owned(), value);
    }
    samples
}

/// Starts the admin server on 127.0.0.1:0 with `token`.
pub(crate) async fn admin(app: &TestApp, token: Option<&str>) -> (SocketAddr, CancellationToken) {
    let mut settings = app.settings.clone();
    settings.admin_addr = "127.0.0.1:0".parse().expect("addr");
    settings.admin_token = token.map(AdminToken::new);
    let stop = CancellationToken::new();
    let addr = producer::admin::serve(app.pool.clone(), Arc::new(settings), stop.clone())
        .await
        .expect("admin server");
    (addr, stop)
}

fn cli_json(out: Vec<u8>) -> Value {
    serde_json::from_slice(&out).expect("CLI JSON")
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn admin_api_refuses_missing_or_wrong_tokens_and_accepts_the_right_one(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.add_links(&[app.url("/ok")]).await;
    let (addr, _stop) = admin(&app, Some(TOKEN)).await;

    for token in [None, Some("wrong"), Some("correct-horse-battery-stapl")] {
        let reply = http(addr, "POST", "/api/cycle", token, None).await;
        assert_eq!(reply.status, 401, "{token:?}: {}", reply.body);
        assert!(reply.json()["error"].is_string(), "{}", reply.body);
    }
    assert_eq!(
        crate::helpers::count_state(&app.pool, "queued").await,
        0,
        "refused calls did nothing"
    );

    let reply = http(addr, "POST", "/api/cycle", Some(TOKEN), None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.json().is_object());
    assert_eq!(
        crate::helpers::count_state(&app.pool, "queued").await,
        1,
        "the cycle enqueued the check"
    );

    // Reads need no token; probes answer.
    assert_eq!(http(addr, "GET", "/api/queue/stats", None, None).await.status, 200);
    assert_eq!(http(addr, "GET", "/livez", None, None).await.status, 200);
    assert_eq!(http(addr, "GET", "/readyz", None, None).await.status, 200);
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn admin_api_refuses_every_mutation_when_no_token_is_set(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ids = app.add_links(&[app.url("/ok")]).await;
    let (addr, _stop) = admin(&app, None).await;
    let activate = format!("/api/links/{}/activate", ids[0]);
    for (path, body) in [
        ("/api/cycle", None),
        ("/api/queue/requeue", Some(r#"{"state":"failed"}"#)),
        (activate.as_str(), None),
    ] {
        for token in [None, Some(TOKEN)] {
            let reply = http(addr, "POST", path, token, body).await;
            assert_eq!(reply.status, 403, "{path} {token:?}: {}", reply.body);
            assert!(
                reply.json()["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("LINKPULSE_ADMIN_TOKEN"))
            );
        }
    }
}

/// Marks every job of `kind` failed, as if its attempts ran out.
async fn fail_all(pool: &PgPool, kind: &str) {
    sqlx::query(
        "UPDATE queue_jobs SET state = 'failed', finished_at = now(), attempts = max_attempts, \
         errors = errors || '[{\"error\":\"boom\"}]'::jsonb WHERE kind = $1",
    )
    .bind(kind)
    .execute(pool)
    .await
    .expect("fail jobs");
    // SQL by hand bypasses the queue's counters: correct them as an operator would.
    linkpulse_queue::counts::recount(pool).await.expect("recount");
}

async fn states(pool: &PgPool) -> Vec<(String, String, String)> {
    sqlx::query_as("SELECT kind, coalesce(dedupe_key, ''), state FROM queue_jobs ORDER BY kind, dedupe_key")
        .fetch_all(pool)
        .await
        .expect("states")
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn requeue_through_the_api_moves_exactly_the_selected_failed_jobs(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.settings.refresh_enabled = true;
    app.settings.refresh_after = Duration::ZERO;
    let ids = app.add_links(&[app.url("/a"), app.url("/b"), app.url("/c")]).await;
    app.run_cycle().await;
    fail_all(&app.pool, "check").await;
    fail_all(&app.pool, "refresh").await;
    let (addr, _stop) = admin(&app, Some(TOKEN)).await;

    // One link's check only.
    let body = json!({"state": "failed", "kind": "check", "link": ids[0]}).to_string();
    let reply = http(addr, "POST", "/api/queue/requeue", Some(TOKEN), Some(&body)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json(), json!({"requeued": 1}));
    let key = linkpulse_shared::link_jobs::dedupe_key(ids[0]);
    for (kind, dedupe, state) in states(&app.pool).await {
        let expected = if kind == "check" && dedupe == key {
            "queued"
        } else {
            "failed"
        };
        assert_eq!(state, expected, "{kind} {dedupe}");
    }

    // Every failed check: the two left; refreshes stay failed.
    let reply = http(
        addr,
        "POST",
        "/api/queue/requeue",
        Some(TOKEN),
        Some(r#"{"state":"failed","kind":"check","link":null}"#),
    )
    .await;
    assert_eq!(reply.json(), json!({"requeued": 2}));
    for (kind, dedupe, state) in states(&app.pool).await {
        let expected = if kind == "check" { "queued" } else { "failed" };
        assert_eq!(state, expected, "{kind} {dedupe}");
    }

    // Bad input is 400, an unknown link 404, both as JSON errors; nothing moves.
    for (body, status) in [
        (r#"{"kind":"nope"}"#, 400),
        (r#"{"state":"queued"}"#, 400),
        ("not json", 400),
        (r#"{"link":999999}"#, 404),
    ] {
        let reply = http(addr, "POST", "/api/queue/requeue", Some(TOKEN), Some(body)).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
        assert!(reply.json()["error"].is_string());
    }
    assert_eq!(crate::helpers::count_state(&app.pool, "failed").await, 3);
    let reply = http(addr, "POST", "/api/links/999999/activate", Some(TOKEN), None).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
}

/// The dashboard's requeue button moves exactly the clicked job and, when it cannot, says why:
/// the job is no longer failed, or its link already has a queued job of that kind.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn dashboard_requeue_moves_the_clicked_job_or_says_why_not(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ids = app.add_links(&[app.url("/a"), app.url("/b")]).await;
    app.run_cycle().await;
    fail_all(&app.pool, "check").await;
    let (addr, _stop) = admin(&app, Some(TOKEN)).await;
    let failed_check = |link: i64| {
        let pool = app.pool.clone();
        async move {
            let (id,): (i64,) = sqlx::query_as("SELECT id FROM queue_jobs WHERE kind = 'check' AND dedupe_key = $1")
                .bind(linkpulse_shared::link_jobs::dedupe_key(link))
                .fetch_one(&pool)
                .await
                .expect("the link's check job");
            id
        }
    };
    let (job_a, job_b) = (failed_check(ids[0]).await, failed_check(ids[1]).await);
    let (cookie, csrf) = crate::admin_surface::console_session(addr, TOKEN).await;
    let click = |job: i64, cookie: String, csrf: String| async move {
        http_with(
            addr,
            "POST",
            &format!("/jobs/{job}/requeue"),
            &[("Cookie", &cookie)],
            Some(&format!("csrf={csrf}")),
        )
        .await
    };

    let reply = click(job_a, "linkpulse_session=forged".to_owned(), csrf.clone()).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    let reply = click(job_a, cookie.clone(), "wrong".to_owned()).await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(crate::helpers::count_state(&app.pool, "queued").await, 0);
    let reply = click(job_a, cookie.clone(), csrf.clone()).await;
    assert_eq!(reply.status, 303, "on to the job's page: {}", reply.body);
    assert_eq!(
        crate::helpers::count_state(&app.pool, "queued").await,
        1,
        "only the clicked job"
    );

    // Clicked twice (a stale page): it is no longer finished; the job's page says so.
    let reply = click(job_a, cookie.clone(), csrf.clone()).await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert!(
        reply.body.contains("it is queued (only finished jobs are)"),
        "{}",
        reply.body
    );
    let reply = click(999_999, cookie.clone(), csrf.clone()).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert!(reply.body.contains("There is no job 999999"), "{}", reply.body);

    // Link b's check is due again, and the next cycle queued a new one: the old job stays failed.
    app.run_cycle().await;
    let reply = click(job_b, cookie, csrf).await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert!(
        reply.body.contains("already has a queued or running job of that kind"),
        "{}",
        reply.body
    );
    let (state,): (String,) = sqlx::query_as("SELECT state FROM queue_jobs WHERE id = $1")
        .bind(job_b)
        .fetch_one(&app.pool)
        .await
        .expect("state");
    assert_eq!(state, "failed");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn api_listings_print_the_same_json_as_the_cli(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ids = app.add_links(&[app.url("/a"), app.url("/b")]).await;
    app.run_cycle().await;
    sqlx::query("UPDATE links SET status = 'inaccessible', consecutive_failures = 3 WHERE id = $1")
        .bind(ids[1])
        .execute(&app.pool)
        .await
        .expect("mark dead");
    let (addr, _stop) = admin(&app, Some(TOKEN)).await;

    let mut out = Vec::new();
    producer::commands::queue::stats(&app.pool, true, &mut out)
        .await
        .expect("stats");
    let stats = cli_json(out);
    let reply = http(addr, "GET", "/api/queue/stats", None, None).await;
    // The age of the oldest queued job moves between the two reads: compare everything else.
    let strip = |mut v: Value| {
        for kind in ["check", "refresh"] {
            v["kinds"][kind]["oldest_queued_age_seconds"] = Value::Null;
        }
        v
    };
    assert_eq!(strip(reply.json()), strip(stats));

    let mut out = Vec::new();
    producer::commands::queue::list(&app.pool, None, Some("check".into()), 50, true, &mut out)
        .await
        .expect("list");
    let reply = http(addr, "GET", "/api/jobs?state=&kind=check&limit=50", None, None).await;
    assert_eq!(reply.json(), cli_json(out));
    assert_eq!(http(addr, "GET", "/api/jobs?state=bogus", None, None).await.status, 400);

    let mut out = Vec::new();
    producer::commands::links::list(&app.pool, Some("inaccessible"), 1000, true, &mut out)
        .await
        .expect("links");
    let reply = http(addr, "GET", "/api/links?status=inaccessible", None, None).await;
    assert_eq!(reply.json(), cli_json(out));
    assert_eq!(reply.json().as_array().map(Vec::len), Some(1));

    // Activate through the API: the link comes back active, as `links activate --json` prints it.
    let reply = http(
        addr,
        "POST",
        &format!("/api/links/{}/activate", ids[1]),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["status"], "active");
    assert_eq!(reply.json()["consecutive_failures"], 0);
    assert_eq!(app.link(ids[1]).await.status, "active");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn metrics_parse_as_prometheus_text_and_queue_depth_equals_queue_stats(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.add_links(&[app.url("/a"), app.url("/b"), app.url("/c")]).await;
    app.run_cycle().await;
    fail_all(&app.pool, "check").await;
    app.add_links(&[app.url("/d")]).await;
    app.run_cycle().await;
    // The oldest due check has waited 90 s; the only refresh is scheduled an hour ahead, and a
    // job that is not due yet does not wait.
    sqlx::query(
        "UPDATE queue_jobs SET run_at = now() - interval '90 seconds' \
         WHERE id = (SELECT min(id) FROM queue_jobs WHERE kind = 'check' AND state = 'queued')",
    )
    .execute(&app.pool)
    .await
    .expect("backdate a check");
    let mut scheduled = linkpulse_queue::NewJob::new("refresh", json!({"link_id": 1}), 5);
    scheduled.run_at = Some(chrono::Utc::now() + chrono::Duration::hours(1));
    linkpulse_queue::insert_many(&app.pool, &[scheduled])
        .await
        .expect("schedule a refresh");
    let (addr, _stop) = admin(&app, None).await;

    let reply = http(addr, "GET", "/metrics", None, None).await;
    assert_eq!(reply.status, 200);
    let samples = parse_prometheus(&reply.body);

    let mut out = Vec::new();
    producer::commands::queue::stats(&app.pool, true, &mut out)
        .await
        .expect("stats");
    let stats = cli_json(out);
    assert_eq!(stats["kinds"]["check"]["failed"], 3, "premise: three failed checks");
    // The second cycle enqueued all four links' checks again (checks are due every cycle).
    assert_eq!(stats["kinds"]["check"]["queued"], 4, "premise: four queued checks");
    assert_eq!(stats["kinds"]["refresh"]["queued"], 1, "premise: one scheduled refresh");
    for kind in ["check", "refresh"] {
        for state in ["queued", "running", "done", "failed"] {
            let series = format!("linkpulse_queue_jobs{{kind=\"{kind}\",state=\"{state}\"}}");
            let expected = stats["kinds"][kind][state].as_f64().expect("count");
            assert_eq!(samples.get(&series), Some(&expected), "{series}\n{}", reply.body);
        }
    }
    // Jobs wait: the age of the oldest due one. None waits: 0 on the page, null in the JSON.
    let age = |kind: &str| {
        let series = format!("linkpulse_queue_oldest_queued_age_seconds{{kind=\"{kind}\"}}");
        *samples
            .get(&series)
            .unwrap_or_else(|| panic!("{series} missing\n{}", reply.body))
    };
    assert!((90.0..150.0).contains(&age("check")), "check age {}", age("check"));
    let json_age = stats["kinds"]["check"]["oldest_queued_age_seconds"]
        .as_f64()
        .expect("a check waits");
    assert!((90.0..150.0).contains(&json_age), "check age in the JSON {json_age}");
    assert_eq!(age("refresh"), 0.0, "no refresh is due");
    assert_eq!(
        stats["kinds"]["refresh"]["oldest_queued_age_seconds"],
        Value::Null,
        "no refresh is due"
    );
    assert_eq!(samples.get("linkpulse_links{status=\"active\"}"), Some(&4.0));
    assert_eq!(samples.get("linkpulse_links{status=\"inaccessible\"}"), Some(&0.0));
}

/// A real `worker` process has its own recorder, so its `/metrics` counts exactly the attempts
/// it ran: an ok and a dead link are checked (done), a check answered 503 twice retries once and
/// then, out of attempts, fails; a refresh of a URL that does not parse fails at once.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn worker_metrics_show_job_counters_after_jobs_ran(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.settings.queue.max_attempts = 2;
    app.site.toggle.store(503, std::sync::atomic::Ordering::SeqCst);
    let ids = app
        .add_links(&[app.url("/ok"), app.url("/gone"), app.url("/toggle")])
        .await;
    let report = app.run_cycle().await;
    assert_eq!(report.check.enqueued, 3, "premise: three checks queued");
    let poison = linkpulse_queue::NewJob::new(
        linkpulse_shared::link_jobs::REFRESH,
        json!({"link_id": ids[0], "url": "not a url"}),
        2,
    );
    linkpulse_queue::insert_many(&app.pool, &[poison])
        .await
        .expect("enqueue a refresh that fails");

    let mut command = Command::new(env!("CARGO_BIN_EXE_linkpulse-worker"));
    for (name, _) in std::env::vars() {
        if name.starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    command
        .args(["--concurrency", "4"])
        .env("DATABASE_URL", app.settings.database_url.expose_secret())
        .env("LINKPULSE_ALLOW_PRIVATE_NETWORKS", "true")
        .env("LINKPULSE_WORKER_ADDR", "127.0.0.1:0")
        .env("LINKPULSE_HTTP_TIMEOUT", "5s")
        .env("LINKPULSE_HOST_CONCURRENCY", "8")
        .env("LINKPULSE_HOST_INTERVAL", "0s")
        .env("LINKPULSE_POLL_INTERVAL", "200ms")
        .env("LINKPULSE_RETRY_BASE", "100ms")
        .env("LINKPULSE_RETRY_MAX", "200ms")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("spawn worker");
    let stderr = child.stderr.take().expect("stderr");
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut addr_tx = Some(addr_tx);
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[worker] {line}");
            let ready = serde_json::from_str::<Value>(&line)
                .ok()
                .filter(|l| l["message"] == "worker ready")
                .and_then(|l| l["addr"].as_str().and_then(|a| a.parse().ok()));
            if let Some(addr) = ready
                && let Some(tx) = addr_tx.take()
            {
                let _ = tx.send(addr);
            }
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(30), addr_rx)
        .await
        .expect("worker ready in time")
        .expect("the worker logged its address");

    wait_for(Duration::from_secs(60), "the worker to finish every job", || async {
        let busy = crate::helpers::count_state(&app.pool, "queued").await
            + crate::helpers::count_state(&app.pool, "running").await;
        (busy == 0).then_some(())
    })
    .await;
    let states: Vec<(String, String, i32)> =
        sqlx::query_as("SELECT kind, state, attempts FROM queue_jobs ORDER BY kind, state, attempts")
            .fetch_all(&app.pool)
            .await
            .expect("states");
    let expected = [
        ("check", "done", 1),
        ("check", "done", 1),
        ("check", "failed", 2),
        ("refresh", "failed", 1),
    ];
    assert_eq!(
        states,
        expected.map(|(k, s, a)| (k.to_owned(), s.to_owned(), a)),
        "premise: every attempt ran as planned"
    );

    // The counters move when an attempt is acknowledged: wait until all five are in, then
    // compare each exactly (a process-wide recorder shared with other tests could only be
    // compared with `>=`).
    let counter = |samples: &HashMap<String, f64>, kind: &str, outcome: &str| {
        samples
            .get(&format!(
                "linkpulse_jobs_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}"
            ))
            .copied()
            .unwrap_or_default()
    };
    let (samples, page) = wait_for(Duration::from_secs(10), "five recorded attempts", || async {
        let reply = http(addr, "GET", "/metrics", None, None).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let samples = parse_prometheus(&reply.body);
        let attempts: f64 = ["check", "refresh"]
            .iter()
            .flat_map(|kind| ["done", "retry", "snooze", "fail"].map(|outcome| (*kind, outcome)))
            .map(|(kind, outcome)| counter(&samples, kind, outcome))
            .sum();
        (attempts >= 5.0).then_some((samples, reply.body))
    })
    .await;
    for (kind, outcome, expected) in [
        ("check", "done", 2.0),
        ("check", "retry", 1.0),
        ("check", "fail", 1.0),
        ("check", "snooze", 0.0),
        ("refresh", "done", 0.0),
        ("refresh", "retry", 0.0),
        ("refresh", "fail", 1.0),
    ] {
        assert_eq!(counter(&samples, kind, outcome), expected, "{kind} {outcome}: {page}");
    }
    for (kind, attempts) in [("check", 4.0), ("refresh", 1.0)] {
        let series = format!("linkpulse_job_duration_seconds_count{{kind=\"{kind}\"}}");
        assert_eq!(samples.get(&series), Some(&attempts), "{page}");
    }
    assert_eq!(samples.get("linkpulse_jobs_in_flight"), Some(&0.0), "{page}");
    assert!(
        samples
            .get("linkpulse_fetch_duration_seconds_count")
            .is_some_and(|n| *n >= 4.0),
        "one fetch per check attempt at least: {page}"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id().expect("pid")).expect("pid fits")),
        Signal::SIGTERM,
    )
    .expect("sigterm");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("worker exited in time")
        .expect("wait");
    assert_eq!(status.code(), Some(0), "the worker drained and exited cleanly");
}

/// A `producer run` child process whose stderr is watched for the leader line.
struct ProducerProcess {
    child: Child,
    pid: i32,
    leader: tokio::sync::watch::Receiver<bool>,
}

impl ProducerProcess {
    async fn spawn(settings: &Settings) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_linkpulse-producer"));
        command
            .arg("run")
            .env("DATABASE_URL", settings.database_url.expose_secret())
            .env("LINKPULSE_CYCLE_INTERVAL", "500ms")
            .env("LINKPULSE_CHECK_AFTER", "0s")
            .env("LINKPULSE_ADMIN_ADDR", "127.0.0.1:0")
            .env("LINKPULSE_REFRESH_ENABLED", "false")
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn producer");
        let pid = i32::try_from(child.id().expect("pid")).expect("pid fits");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, leader) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[producer {pid}] {line}");
                if line.contains("became the cycling leader") {
                    let _ = tx.send(true);
                }
            }
        });
        Self { child, pid, leader }
    }

    fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn only_one_producer_cycles_and_another_takes_over_after_sigkill(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.add_links(&[app.url("/a")]).await;
    let settings = Settings::defaults(url_of(&app.pool).await);
    let first = ProducerProcess::spawn(&settings).await;
    let second = ProducerProcess::spawn(&settings).await;

    wait_for(Duration::from_secs(30), "a leader", || async {
        (first.is_leader() || second.is_leader()).then_some(())
    })
    .await;
    // Both keep trying every 500 ms; after several intervals there is still exactly one leader.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(first.is_leader() != second.is_leader(), "exactly one leader");
    wait_for(Duration::from_secs(10), "the leader's cycle to enqueue", || async {
        (crate::helpers::count_state(&app.pool, "queued").await == 1).then_some(())
    })
    .await;

    let (mut leader, follower) = if first.is_leader() {
        (first, second)
    } else {
        (second, first)
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(leader.pid), Signal::SIGKILL).expect("kill leader");
    leader.child.wait().await.expect("leader exited");
    let killed = tokio::time::Instant::now();

    // Postgres drops the dead session's advisory lock once it notices the closed socket; the
    // follower tries at every tick, so it must lead within two cycle intervals (plus slack for
    // the log line to travel through the pipe).
    wait_for(Duration::from_secs(10), "the follower to take over", || async {
        follower.is_leader().then_some(())
    })
    .await;
    let took = killed.elapsed();
    assert!(took <= Duration::from_millis(1000 + 500), "took over after {took:?}");

    // And it cycles: a job done and due again is enqueued anew by the new leader.
    sqlx::query("UPDATE queue_jobs SET state = 'done', finished_at = now()")
        .execute(&app.pool)
        .await
        .expect("finish jobs");
    wait_for(Duration::from_secs(10), "the new leader to enqueue", || async {
        (crate::helpers::count_state(&app.pool, "queued").await == 1).then_some(())
    })
    .await;
}
