//! Webhooks end to end: a local receiver on 127.0.0.1, events written as the transitions write
//! them, the outbox dispatcher, the worker's `deliver` handler, the CLI and the API.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use linkpulse_shared::config::{ExposeSecret, Settings};
use linkpulse_shared::webhooks::signing::{SignatureError, verify};
use linkpulse_shared::webhooks::{self, dispatch, store};

use crate::admin::{TOKEN, admin, http};
use crate::app::TestApp;
use crate::helpers::wait_for;
use crate::producer_loop::{ProducerRun, producer_command};

/// One request the receiver saw.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    headers: HeaderMap,
    body: Vec<u8>,
    /// What it answered.
    status: u16,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header"))
    }

    /// Checks the signature with `secret` as a receiver would (5 minutes of tolerance).
    fn verify(&self, secret: &str) -> Result<(), SignatureError> {
        verify(
            self.header("x-linkpulse-signature"),
            secret,
            &self.body,
            chrono::Utc::now().timestamp(),
            300,
        )
    }
}

#[derive(Debug, Default)]
struct ReceiverState {
    seen: Mutex<Vec<Received>>,
    /// Statuses of the next answers; 200 once empty.
    script: Mutex<VecDeque<u16>>,
    /// Held by the first request until the test sends.
    gate: Mutex<Option<oneshot::Receiver<()>>>,
}

/// A webhook receiver on 127.0.0.1.
struct Receiver {
    addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), &[]).await
    }

    /// Answers `script` (then 200) on `addr`.
    async fn start_on(addr: SocketAddr, script: &[u16]) -> Self {
        let state = Arc::new(ReceiverState {
            script: Mutex::new(script.iter().copied().collect()),
            ..ReceiverState::default()
        });
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().route("/hook", post(receive)).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn seen(&self) -> Vec<Received> {
        self.state.seen.lock().expect("lock").clone()
    }

    /// The 2xx-answered deliveries' bodies.
    fn accepted(&self) -> Vec<Value> {
        self.seen()
            .iter()
            .filter(|r| r.status < 300)
            .map(Received::json)
            .collect()
    }

    async fn wait_accepted(&self, n: usize) -> Vec<Value> {
        wait_for(Duration::from_secs(30), &format!("{n} accepted deliveries"), || async {
            let accepted = self.accepted();
            (accepted.len() >= n).then_some(accepted)
        })
        .await
    }
}

async fn receive(State(state): State<Arc<ReceiverState>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let gate = state.gate.lock().expect("lock").take();
    if let Some(gate) = gate {
        let _ = gate.await;
    }
    let status = state.script.lock().expect("lock").pop_front().unwrap_or(200);
    state.seen.lock().expect("lock").push(Received {
        at: Instant::now(),
        headers,
        body: body.to_vec(),
        status,
    });
    StatusCode::from_u16(status).expect("status")
}

/// A status transition of `link_id` to `to`, written as the write-backs write it: the link's
/// `event_seq` taken in the UPDATE, the event row in the same statement. Returns (event id, seq).
async fn transition(pool: &PgPool, link_id: i64, to: &str, reason: &str) -> (i64, i64) {
    sqlx::query_as(
        "WITH old AS (SELECT status FROM links WHERE id = $1),
              moved AS (UPDATE links SET status = $2, event_seq = event_seq + 1 WHERE id = $1
                        RETURNING id, url, event_seq)
         INSERT INTO link_events (link_id, seq, url, type, from_status, to_status, reason)
         SELECT m.id, m.event_seq, m.url, link_event_type(o.status, $2), o.status, $2, $3
         FROM moved m, old o
         RETURNING id, seq",
    )
    .bind(link_id)
    .bind(to)
    .bind(reason)
    .fetch_one(pool)
    .await
    .expect("transition")
}

/// A webhook for every event type at `url`; returns (id, secret).
async fn add_webhook(pool: &PgPool, url: &str) -> (i64, String) {
    let url = url::Url::parse(url).expect("url");
    let added = store::add(
        pool,
        &url,
        &webhooks::parse_events::<&str>(None).expect("events"),
        "test",
    )
    .await
    .expect("add webhook");
    (added.webhook.id, added.secret)
}

/// In-process workers, stopped (and drained) by [`Workers::stop`].
struct Workers {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<linkpulse_shared::shutdown::Drained>>,
}

impl Workers {
    fn start(settings: &Settings) -> Self {
        let stop = CancellationToken::new();
        let handle = tokio::spawn(worker::app::run(settings.clone(), 4, stop.clone()));
        Self { stop, handle }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.handle.await.expect("worker task").expect("worker ran");
    }
}

/// Settings whose retries and polls are fast enough to watch.
fn fast(app: &TestApp) -> Settings {
    let mut settings = app.settings.clone();
    settings.queue.poll_interval = Duration::from_millis(50);
    settings.queue.retry.base = Duration::from_millis(200);
    settings.queue.retry.max = Duration::from_secs(5);
    settings
}

/// `(state, attempts, last error)` of the deliver jobs, oldest first.
async fn deliver_jobs(pool: &PgPool) -> Vec<(String, i32, Option<String>)> {
    sqlx::query_as(
        "SELECT state, attempts, errors -> -1 ->> 'error' FROM queue_jobs WHERE kind = 'deliver' ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .expect("deliver jobs")
}

async fn wait_jobs_finished(pool: &PgPool) -> Vec<(String, i32, Option<String>)> {
    wait_for(Duration::from_secs(30), "the deliver jobs to finish", || async {
        let jobs = deliver_jobs(pool).await;
        (!jobs.is_empty() && jobs.iter().all(|(s, _, _)| s == "done" || s == "failed")).then_some(jobs)
    })
    .await
}

/// Dispatches like the producer's leader, pass after pass, until the outbox is empty (an event
/// whose endpoint's job is running waits for a later pass).
async fn dispatch_all(pool: &PgPool, settings: &Settings) {
    wait_for(Duration::from_secs(30), "the outbox to empty", || async {
        dispatch(pool, settings).await.expect("dispatch");
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM link_events WHERE dispatched_at IS NULL")
            .fetch_one(pool)
            .await
            .expect("count");
        (left == 0).then_some(())
    })
    .await;
}

/// Runs `producer ARGS` on the test's database; returns (exit code, stdout, stderr).
async fn producer(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let db = app.settings.database_url.expose_secret().to_owned();
    let output = producer_command(&db, args, env).output().await.expect("run producer");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The whole path through `producer run`: its leader dispatches the event every pass, a worker
/// posts it once, signed with the endpoint's secret, with the contract's body and headers.
/// Events of unsubscribed types, and events from before the endpoint existed, are not sent.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_transition_is_delivered_once_signed_with_the_event_id_as_idempotency_key(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let receiver = Receiver::start().await;
    let link = app.add_links(&[app.url("/ok")]).await[0];
    let (before, _) = transition(&app.pool, link, "paused", "before the webhook existed").await;
    let url = url::Url::parse(&receiver.url()).expect("url");
    let only_down = webhooks::parse_events(Some(&["link.down"])).expect("events");
    let added = store::add(&app.pool, &url, &only_down, "test").await.expect("add");
    // not subscribed: changed; subscribed: down
    transition(&app.pool, link, "active", "resumed").await;
    let (event, seq) = transition(&app.pool, link, "inaccessible", "HTTP 404 Not Found").await;

    let db = app.settings.database_url.expose_secret().to_owned();
    let producer = ProducerRun::spawn(
        &db,
        &[
            ("LINKPULSE_CHECK_ENABLED", "false"),
            ("LINKPULSE_REFRESH_ENABLED", "false"),
        ],
    )
    .await;
    let workers = Workers::start(&fast(&app));
    let delivered = receiver.wait_accepted(1).await;
    wait_jobs_finished(&app.pool).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    workers.stop().await;
    producer.stop(nix::sys::signal::Signal::SIGTERM).await;

    let seen = receiver.seen();
    assert_eq!(seen.len(), 1, "exactly one request: {seen:?}");
    let request = &seen[0];
    assert_eq!(request.verify(&added.secret), Ok(()));
    assert_eq!(request.verify("another secret"), Err(SignatureError::Mismatch));
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(request.header("x-linkpulse-event"), "link.down");
    assert_eq!(request.header("idempotency-key"), event.to_string());
    let body = &delivered[0];
    let at = body["at"].as_str().expect("at").to_owned();
    assert_eq!(
        body,
        &serde_json::json!({
            "id": event.to_string(), "type": "link.down", "link": {"id": link, "url": app.url("/ok")},
            "from": "active", "to": "inaccessible", "reason": "HTTP 404 Not Found", "at": at, "seq": seq
        })
    );
    assert!(chrono::DateTime::parse_from_rfc3339(&at).is_ok(), "{at}");
    let undispatched: i64 = sqlx::query_scalar("SELECT count(*) FROM link_events WHERE dispatched_at IS NULL")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(undispatched, 0, "every event went through the outbox");
    let cursor: i64 = sqlx::query_scalar("SELECT last_seq FROM webhook_cursors WHERE webhook_id = $1")
        .bind(added.webhook.id)
        .fetch_one(&app.pool)
        .await
        .expect("cursor");
    assert_eq!(cursor, seq);
    assert!(before < event);
}

/// A receiver answering 503 three times gets the event on the fourth attempt, after delays
/// that grow as the queue's persisted backoff says, and then never again.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_receiver_that_is_down_gets_the_event_after_growing_delays_exactly_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let receiver = Receiver::start_on("127.0.0.1:0".parse().expect("addr"), &[503, 503, 503]).await;
    let link = app.add_links(&[app.url("/ok")]).await[0];
    let (_, secret) = add_webhook(&app.pool, &receiver.url()).await;
    let (event, _) = transition(&app.pool, link, "inaccessible", "dead").await;
    let settings = fast(&app);
    let report = dispatch(&app.pool, &settings).await.expect("dispatch");
    assert_eq!((report.dispatched, report.enqueued), (1, 1), "{report:?}");

    let workers = Workers::start(&settings);
    receiver.wait_accepted(1).await;
    let jobs = wait_jobs_finished(&app.pool).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    workers.stop().await;

    let seen = receiver.seen();
    let statuses: Vec<u16> = seen.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 503, 200], "exactly once after the outage");
    for request in &seen {
        assert_eq!(
            request.header("idempotency-key"),
            event.to_string(),
            "same key on every retry"
        );
        assert_eq!(request.verify(&secret), Ok(()), "re-signed on every retry");
    }
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].at - w[0].at).collect();
    // base 200 ms: attempt n waits [½, 1] × 200 ms × 2^(n-1)
    for (n, gap) in gaps.iter().enumerate() {
        let floor = Duration::from_millis(100 << n);
        assert!(*gap >= floor, "gap {n} of {gaps:?} is under {floor:?}");
    }
    assert!(gaps[2] > gaps[0], "delays grow: {gaps:?}");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].0, "done");
    assert_eq!(jobs[0].1, 4, "four attempts");
    let failing: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar("SELECT failing_since FROM webhooks")
        .fetch_one(&app.pool)
        .await
        .expect("webhook");
    assert_eq!(failing, None, "a success ends the failure run");
}

/// Two transitions of one link arrive in `seq` order although the first delivery failed once and
/// the second event was written (and dispatched) while the job waited out its backoff: the
/// queued job picks it up, behind the first.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn two_transitions_arrive_in_order_when_the_first_delivery_is_retried(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let receiver = Receiver::start_on("127.0.0.1:0".parse().expect("addr"), &[500]).await;
    let link = app.add_links(&[app.url("/ok")]).await[0];
    add_webhook(&app.pool, &receiver.url()).await;
    let mut settings = fast(&app);
    settings.queue.retry.base = Duration::from_secs(2);
    let (first, _) = transition(&app.pool, link, "inaccessible", "dead").await;
    dispatch(&app.pool, &settings).await.expect("dispatch");

    let workers = Workers::start(&settings);
    wait_for(
        Duration::from_secs(30),
        "the first attempt to fail and back off",
        || async {
            let jobs = deliver_jobs(&app.pool).await;
            let backing_off = jobs.first().map(|j| (j.0.as_str(), j.1)) == Some(("queued", 1));
            (receiver.seen().len() == 1 && backing_off).then_some(())
        },
    )
    .await;
    let (second, _) = transition(&app.pool, link, "active", "check ok").await;
    let report = dispatch(&app.pool, &settings).await.expect("dispatch");
    assert_eq!(
        (report.dispatched, report.enqueued, report.deferred),
        (1, 0, 0),
        "{report:?}"
    );
    receiver.wait_accepted(2).await;
    wait_jobs_finished(&app.pool).await;
    workers.stop().await;

    let order: Vec<(String, u16)> = receiver
        .seen()
        .iter()
        .map(|r| (r.json()["id"].as_str().expect("id").to_owned(), r.status))
        .collect();
    assert_eq!(
        order,
        [
            (first.to_string(), 500),
            (first.to_string(), 200),
            (second.to_string(), 200)
        ]
    );
    let seqs: Vec<i64> = receiver
        .accepted()
        .iter()
        .map(|b| b["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, [1, 2]);
}

/// An event written while its endpoint's job for the link is *running* is not lost: the
/// dispatcher leaves it in the outbox (the dedupe key would skip a new job, and the running one
/// may have read the events already) and dispatches it once the job finished.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn an_event_written_while_its_delivery_job_runs_is_not_lost(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let receiver = Receiver::start().await;
    let (release, gate) = oneshot::channel();
    *receiver.state.gate.lock().expect("lock") = Some(gate);
    let link = app.add_links(&[app.url("/ok")]).await[0];
    let (webhook, _) = add_webhook(&app.pool, &receiver.url()).await;
    let mut settings = fast(&app);
    settings.fetch.timeout = Duration::from_secs(10);
    transition(&app.pool, link, "inaccessible", "dead").await;
    dispatch(&app.pool, &settings).await.expect("dispatch");
    let workers = Workers::start(&settings);
    wait_for(Duration::from_secs(30), "the delivery job to run", || async {
        let jobs = deliver_jobs(&app.pool).await;
        (jobs.first().map(|j| j.0.as_str()) == Some("running")).then_some(())
    })
    .await;

    let key: String = sqlx::query_scalar("SELECT dedupe_key FROM queue_jobs WHERE kind = 'deliver'")
        .fetch_one(&app.pool)
        .await
        .expect("job");
    assert_eq!(key, webhooks::dispatch::dedupe_key(webhook, link));
    let (second, _) = transition(&app.pool, link, "active", "check ok").await;
    let report = dispatch(&app.pool, &settings).await.expect("dispatch");
    assert_eq!((report.dispatched, report.deferred), (0, 1), "{report:?}");
    release.send(()).expect("release the receiver");
    receiver.wait_accepted(2).await;
    dispatch_all(&app.pool, &settings).await;
    wait_jobs_finished(&app.pool).await;
    workers.stop().await;

    let ids: Vec<Value> = receiver.seen().iter().map(|r| r.json()["id"].clone()).collect();
    assert_eq!(ids.len(), 2, "each event once: {ids:?}");
    assert_eq!(ids[1], second.to_string());
    let cursor: i64 = sqlx::query_scalar("SELECT last_seq FROM webhook_cursors WHERE webhook_id = $1")
        .bind(webhook)
        .fetch_one(&app.pool)
        .await
        .expect("cursor");
    assert_eq!(cursor, 2);
}

/// After `webhooks rotate`, deliveries carry two signatures: the old secret verifies during the
/// grace period, and once it is over only the new one does.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_rotated_secret_verifies_during_its_grace_period_and_not_after(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let receiver = Receiver::start().await;
    let link = app.add_links(&[app.url("/ok")]).await[0];
    let (webhook, old) = add_webhook(&app.pool, &receiver.url()).await;
    let id = webhook.to_string();
    let (code, out, err) = producer(&app, &["webhooks", "rotate", &id, "--grace", "1h", "--json"], &[]).await;
    assert_eq!(code, 0, "{err}");
    let rotated: Value = serde_json::from_str(&out).expect("JSON");
    let new = rotated["secret"].as_str().expect("secret").to_owned();
    assert_ne!(new, old);
    assert!(rotated["previous_secret_until"].is_string(), "{rotated}");

    let settings = fast(&app);
    let workers = Workers::start(&settings);
    transition(&app.pool, link, "inaccessible", "dead").await;
    dispatch(&app.pool, &settings).await.expect("dispatch");
    receiver.wait_accepted(1).await;
    // the grace period ends
    sqlx::query("UPDATE webhooks SET previous_secret_until = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .expect("end the grace");
    transition(&app.pool, link, "active", "ok").await;
    dispatch_all(&app.pool, &settings).await;
    receiver.wait_accepted(2).await;
    workers.stop().await;

    let seen = receiver.seen();
    assert_eq!(seen[0].header("x-linkpulse-signature").matches("v1=").count(), 2);
    assert_eq!(seen[0].verify(&new), Ok(()));
    assert_eq!(
        seen[0].verify(&old),
        Ok(()),
        "the old secret signs during the grace period"
    );
    assert_eq!(seen[1].header("x-linkpulse-signature").matches("v1=").count(), 1);
    assert_eq!(seen[1].verify(&new), Ok(()));
    assert_eq!(seen[1].verify(&old), Err(SignatureError::Mismatch), "and not after");
}

/// `webhooks add` prints the secret once, `webhooks test` sends a signed ping and prints the
/// answer; a failing ping or an unknown id exits 1 with the reason.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn the_cli_adds_an_endpoint_and_pings_it(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let receiver = Receiver::start_on("127.0.0.1:0".parse().expect("addr"), &[200, 500]).await;
    let private = [("LINKPULSE_ALLOW_PRIVATE_NETWORKS", "true")];
    let url = receiver.url();
    let (code, out, err) = producer(
        &app,
        &["webhooks", "add", &url, "--events", "link.down,link.up", "--json"],
        &private,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let added: Value = serde_json::from_str(&out).expect("JSON");
    let secret = added["secret"].as_str().expect("secret").to_owned();
    assert_eq!(secret.len(), 64);
    assert_eq!(added["events"], serde_json::json!(["link.down", "link.up"]));
    let id = added["id"].as_i64().expect("id").to_string();

    let (code, out, err) = producer(&app, &["webhooks", "test", &id], &private).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("webhook {id} answered HTTP 200")), "{out}");
    let ping = &receiver.seen()[0];
    assert_eq!(ping.verify(&secret), Ok(()));
    assert_eq!(ping.header("x-linkpulse-event"), "ping");
    let body = ping.json();
    assert_eq!(body["type"], "ping");
    assert_eq!(ping.header("idempotency-key"), body["id"].as_str().expect("id"));
    assert!(body["link"].is_null() && body["seq"].is_null(), "{body}");

    let (code, _, err) = producer(&app, &["webhooks", "test", &id], &private).await;
    assert_eq!(code, 1, "a 500 is a failed ping");
    assert!(err.contains(&format!("ping to webhook {id} failed: HTTP 500")), "{err}");
    let (code, _, err) = producer(&app, &["webhooks", "test", "999"], &private).await;
    assert_eq!((code, err.trim()), (1, "error: no webhook 999"));
    let (code, _, err) = producer(&app, &["webhooks", "add", &url, "--events", "link.gone"], &private).await;
    assert_eq!(code, 1);
    assert!(err.contains("unknown event type \"link.gone\""), "{err}");
    // pings stay out of the failure record
    let webhook = store::get(&app.pool, id.parse().expect("id"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!((webhook.failing_since, webhook.last_error), (None, None));
}

/// An endpoint whose deliveries all fail for longer than LINKPULSE_WEBHOOK_DISABLE_AFTER is
/// disabled with the reason, by the failing delivery itself or by the dispatcher's sweep; `webhooks
/// list`, the API and the dashboard say so, and it gets no new jobs.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn an_endpoint_failing_past_the_window_is_disabled_and_listed_so(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let receiver = Receiver::start_on("127.0.0.1:0".parse().expect("addr"), &[500; 20]).await;
    let link = app.add_links(&[app.url("/ok")]).await[0];
    let (webhook, _) = add_webhook(&app.pool, &receiver.url()).await;
    let mut settings = fast(&app);
    settings.webhook_disable_after = Duration::from_millis(300);
    transition(&app.pool, link, "inaccessible", "dead").await;
    dispatch(&app.pool, &settings).await.expect("dispatch");
    let workers = Workers::start(&settings);
    let jobs = wait_jobs_finished(&app.pool).await;
    workers.stop().await;
    assert_eq!(jobs[0].0, "failed", "{jobs:?}");
    let error = jobs[0].2.clone().unwrap_or_default();
    assert!(error.starts_with(&format!("webhook {webhook} disabled")), "{error}");
    assert!(jobs[0].1 < 5, "disabled before the attempts ran out: {jobs:?}");

    let (code, out, err) = producer(&app, &["webhooks", "list", "--json"], &[]).await;
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(listed[0]["enabled"], false);
    let reason = listed[0]["disabled_reason"].as_str().expect("reason");
    assert!(reason.starts_with("every delivery failed since"), "{reason}");
    assert!(reason.contains("HTTP 500"), "{reason}");
    let (_, out, _) = producer(&app, &["webhooks", "list"], &[]).await;
    assert!(
        out.contains("DISABLED") && out.contains("disabled: every delivery failed"),
        "{out}"
    );
    let (addr, stop) = admin(&app, Some(TOKEN)).await;
    let page = http(addr, "GET", "/", None, None).await;
    assert!(
        page.body.contains(&format!(
            "<tr id=\"webhook-{webhook}\"><td class=\"n\">{webhook}</td><td data-state=\"disabled\">"
        )),
        "{}",
        page.body
    );
    let api = http(addr, "GET", "/api/webhooks", None, None).await;
    assert_eq!(api.json()[0]["enabled"], false);
    stop.cancel();

    transition(&app.pool, link, "active", "ok").await;
    let report = dispatch(&app.pool, &settings).await.expect("dispatch");
    assert_eq!(
        (report.dispatched, report.enqueued),
        (1, 0),
        "no jobs for a disabled endpoint"
    );

    // the sweep: an endpoint failing for four days with no job left to notice is disabled by the
    // dispatcher at the default window (3 days)
    let (other, _) = add_webhook(&app.pool, &receiver.url()).await;
    sqlx::query("UPDATE webhooks SET failing_since = now() - interval '4 days', last_error = 'HTTP 502' WHERE id = $1")
        .bind(other)
        .execute(&app.pool)
        .await
        .expect("age");
    let report = dispatch(&app.pool, &app.settings).await.expect("dispatch");
    assert_eq!(report.disabled, 1);
    let swept = store::get(&app.pool, other).await.expect("get").expect("exists");
    assert!(!swept.enabled);
    assert!(
        swept
            .disabled_reason
            .unwrap_or_default()
            .contains("LINKPULSE_WEBHOOK_DISABLE_AFTER=3days")
    );

    // enabling gives it a clean record
    let (code, _, err) = producer(&app, &["webhooks", "enable", &webhook.to_string()], &[]).await;
    assert_eq!(code, 0, "{err}");
    let enabled = store::get(&app.pool, webhook).await.expect("get").expect("exists");
    assert!(enabled.enabled && enabled.failing_since.is_none() && enabled.disabled_reason.is_none());
}

/// Targets go through the network guard: a private address is refused when added and when
/// delivered to, unless private networks are allowed or the host is in LINKPULSE_ALLOWED_HOSTS.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_target_on_a_private_address_is_refused_unless_allowed(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let receiver = Receiver::start().await;
    let url = receiver.url();
    let (code, _, err) = producer(&app, &["webhooks", "add", &url], &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("refused by the network guard: 127.0.0.1 is a loopback address"),
        "{err}"
    );
    let (code, _, err) = producer(
        &app,
        &["webhooks", "add", &url],
        &[("LINKPULSE_ALLOWED_HOSTS", "127.0.0.1")],
    )
    .await;
    assert_eq!(code, 0, "{err}");

    // a worker without the exemption refuses to post, and the job fails at once (retrying
    // cannot help until the configuration changes)
    let link = app.add_links(&[app.url("/ok")]).await[0];
    let mut closed = fast(&app);
    closed.fetch.guard.allow_private_networks = false;
    transition(&app.pool, link, "inaccessible", "dead").await;
    dispatch(&app.pool, &closed).await.expect("dispatch");
    let workers = Workers::start(&closed);
    let jobs = wait_jobs_finished(&app.pool).await;
    workers.stop().await;
    assert_eq!((jobs[0].0.as_str(), jobs[0].1), ("failed", 1), "{jobs:?}");
    assert!(
        jobs[0]
            .2
            .as_deref()
            .unwrap_or_default()
            .contains("refused by the network guard"),
        "{jobs:?}"
    );
    assert!(receiver.seen().is_empty());

    // with the host allowed, the requeued job delivers
    let mut allowed = closed.clone();
    allowed.fetch.guard.allowed_hosts = ["127.0.0.1".to_owned()].into_iter().collect();
    let (code, out, err) = producer(&app, &["queue", "requeue", "--kind", "deliver", "--json"], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("JSON"),
        serde_json::json!({"requeued": 1})
    );
    let workers = Workers::start(&allowed);
    receiver.wait_accepted(1).await;
    workers.stop().await;
}

/// A delivery to a receiver that never answers ends `failed` after its attempts, like any job;
/// `queue requeue --kind deliver` sends it again once the receiver is up.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_delivery_that_exhausts_its_attempts_fails_and_requeue_resends_it(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    // a port nobody listens on, for now
    let port = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = port.local_addr().expect("addr");
    drop(port);
    let link = app.add_links(&[app.url("/ok")]).await[0];
    let (_, secret) = add_webhook(&app.pool, &format!("http://{addr}/hook")).await;
    let mut settings = fast(&app);
    settings.queue.max_attempts = 2;
    let (event, _) = transition(&app.pool, link, "inaccessible", "dead").await;
    dispatch(&app.pool, &settings).await.expect("dispatch");
    let workers = Workers::start(&settings);
    let jobs = wait_jobs_finished(&app.pool).await;
    assert_eq!((jobs[0].0.as_str(), jobs[0].1), ("failed", 2), "{jobs:?}");
    assert!(
        jobs[0].2.as_deref().unwrap_or_default().contains("connection failed"),
        "{jobs:?}"
    );
    let (code, out, _) = producer(
        &app,
        &["queue", "list", "--state", "failed", "--kind", "deliver", "--json"],
        &[],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out)
            .expect("JSON")
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let receiver = Receiver::start_on(addr, &[]).await;
    let (code, out, err) = producer(&app, &["queue", "requeue", "--kind", "deliver", "--json"], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("JSON"),
        serde_json::json!({"requeued": 1})
    );
    let delivered = receiver.wait_accepted(1).await;
    wait_jobs_finished(&app.pool).await;
    workers.stop().await;
    assert_eq!(delivered[0]["id"], event.to_string());
    assert_eq!(receiver.seen().len(), 1);
    assert_eq!(receiver.seen()[0].verify(&secret), Ok(()));
}

/// `/api/webhooks`: listing, adding (secret shown once, 201), testing, rotating and removing;
/// mutations need the admin token, bad input is a 400 that stores nothing.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn the_api_manages_endpoints_with_the_admin_token(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let receiver = Receiver::start().await;
    let (addr, stop) = admin(&app, Some(TOKEN)).await;
    let body = serde_json::json!({ "url": receiver.url(), "events": ["link.down"] }).to_string();
    assert_eq!(http(addr, "POST", "/api/webhooks", None, Some(&body)).await.status, 401);
    assert_eq!(
        http(addr, "POST", "/api/webhooks", Some("wrong"), Some(&body))
            .await
            .status,
        401
    );
    for bad in [
        r#"{"url":"ftp://example.com/"}"#,
        r#"{"url":"http://169.254.169.254/"}"#,
        r#"{"url":"https://example.com/","events":["link.gone"]}"#,
        r#"{"url":"https://example.com/","extra":1}"#,
        "not json",
    ] {
        let reply = http(addr, "POST", "/api/webhooks", Some(TOKEN), Some(bad)).await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
    }
    assert_eq!(
        http(addr, "GET", "/api/webhooks", None, None).await.json(),
        serde_json::json!([])
    );

    let created = http(addr, "POST", "/api/webhooks", Some(TOKEN), Some(&body)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let created = created.json();
    let id = created["id"].as_i64().expect("id");
    let secret = created["secret"].as_str().expect("secret").to_owned();
    assert_eq!(created["created_by"], "api");
    let listed = http(addr, "GET", "/api/webhooks", None, None).await;
    assert_eq!(listed.json()[0]["events"], serde_json::json!(["link.down"]));
    assert!(!listed.body.contains(&secret), "no secret in listings");

    let pinged = http(addr, "POST", &format!("/api/webhooks/{id}/test"), Some(TOKEN), None).await;
    assert_eq!(
        (pinged.status, pinged.json()["ok"].clone()),
        (200, Value::Bool(true)),
        "{}",
        pinged.body
    );
    assert_eq!(receiver.seen()[0].verify(&secret), Ok(()));
    let rotated = http(
        addr,
        "POST",
        &format!("/api/webhooks/{id}/rotate"),
        Some(TOKEN),
        Some(r#"{"grace":"0s"}"#),
    )
    .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert!(rotated.json()["previous_secret_until"].is_null());
    let bad_grace = http(
        addr,
        "POST",
        &format!("/api/webhooks/{id}/rotate"),
        Some(TOKEN),
        Some(r#"{"grace":"soon"}"#),
    )
    .await;
    assert_eq!(bad_grace.status, 400);

    assert_eq!(
        http(addr, "DELETE", &format!("/api/webhooks/{id}"), None, None)
            .await
            .status,
        401
    );
    let removed = http(addr, "DELETE", &format!("/api/webhooks/{id}"), Some(TOKEN), None).await;
    assert_eq!(removed.json(), serde_json::json!({ "removed": id }));
    assert_eq!(
        http(addr, "DELETE", &format!("/api/webhooks/{id}"), Some(TOKEN), None)
            .await
            .status,
        404
    );
    assert_eq!(
        http(addr, "POST", "/api/webhooks/999/test", Some(TOKEN), None)
            .await
            .status,
        404
    );
    stop.cancel();
}

/// The receiver's check printed in the README, run on a real delivery: it accepts the right
/// secret and refuses another (skipped where python3 is missing).
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn the_readme_receiver_check_verifies_a_real_delivery(pool: PgPool) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README");
    let start = readme
        .find("```python\nimport hmac")
        .expect("the README's Python check");
    let code = &readme[start + "```python\n".len()..];
    let code = &code[..code.find("```").expect("end of the block")];
    let app = TestApp::spawn(pool).await;
    let receiver = Receiver::start().await;
    let link = app.add_links(&[app.url("/ok")]).await[0];
    let (_, secret) = add_webhook(&app.pool, &receiver.url()).await;
    transition(&app.pool, link, "inaccessible", "HTTP 404 Not Found").await;
    let settings = fast(&app);
    dispatch(&app.pool, &settings).await.expect("dispatch");
    let workers = Workers::start(&settings);
    receiver.wait_accepted(1).await;
    workers.stop().await;
    let delivery = &receiver.seen()[0];
    // What the README shows as an example.
    eprintln!(
        "example delivery (secret {secret}):\nx-linkpulse-signature: {}\n{}",
        delivery.header("x-linkpulse-signature"),
        String::from_utf8_lossy(&delivery.body)
    );
    for (key, expected) in [(secret.as_str(), "True"), ("wrong", "False")] {
        let script = format!(
            "{code}\nimport os, sys\nprint(verify(os.environ['SECRET'], os.environ['SIG'], sys.stdin.buffer.read()))\n"
        );
        let child = tokio::process::Command::new("python3")
            .args(["-c", &script])
            .env("SECRET", key)
            .env("SIG", delivery.header("x-linkpulse-signature"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("python3 not found: README check skipped");
            return;
        };
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&delivery.body).await.expect("write body");
        drop(stdin);
        let output = child.wait_with_output().await.expect("python3");
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), expected, "{key}");
    }
}

/// The real thing, without SQL-made events: three 404 checks make the link `inaccessible` (the
/// check write-back writes the event in the same statement), and the endpoint gets `link.down`.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn three_failed_checks_send_link_down(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let receiver = Receiver::start().await;
    let (_, secret) = add_webhook(&app.pool, &receiver.url()).await;
    let link = app.add_links(&[app.url("/gone")]).await[0];
    for _ in 0..3 {
        app.cycle_and_work().await;
    }
    assert_eq!(app.link(link).await.status, "inaccessible");
    let settings = fast(&app);
    dispatch_all(&app.pool, &settings).await;
    let workers = Workers::start(&settings);
    let delivered = receiver.wait_accepted(1).await;
    wait_jobs_finished(&app.pool).await;
    workers.stop().await;
    assert_eq!(receiver.seen().len(), 1);
    assert_eq!(receiver.seen()[0].verify(&secret), Ok(()));
    let body = &delivered[0];
    assert_eq!(
        (body["type"].as_str(), body["from"].as_str(), body["to"].as_str()),
        (Some("link.down"), Some("active"), Some("inaccessible"))
    );
    assert_eq!(body["link"]["id"], link);
    assert!(body["reason"].as_str().unwrap_or_default().contains("404"), "{body}");
}
