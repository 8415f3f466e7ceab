//! Tracing across processes: the real `producer cycle` and `worker` binaries export to an
//! in-process OTLP receiver, and one link's check is one trace from the producer's cycle through
//! the queue to the worker's requests and write-back.

use linkpulse_shared::config::ExposeSecret;
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::any;
use nix::sys::signal::Signal;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use linkpulse_queue::{JobFilter, inspect};

use crate::app::TestApp;
use crate::helpers::{count_state, wait_for};
use crate::otlp_receiver::{OtlpReceiver, ReceivedSpan};

/// A query-string token in a saved URL: it must not reach any span.
const SECRET: &str = "s3cret-token";
/// Batch schedule of the children: far longer than the tests, so spans reach the receiver only
/// through the flush at exit — which is what these tests are about.
const NEVER: &str = "600000";

/// A command for one of the test package's binaries, with no OpenTelemetry variable inherited
/// from the test's own environment.
fn command(bin: &str) -> Command {
    let mut command = Command::new(bin);
    for (name, _) in std::env::vars() {
        if name.starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    command.kill_on_drop(true);
    command
}

/// Runs `producer ARGS` to completion; returns (stdout, stderr lines).
async fn producer(app: &TestApp, args: &[&str], env: &[(&str, String)]) -> (String, Vec<String>) {
    let mut command = command(env!("CARGO_BIN_EXE_linkpulse-producer"));
    command
        .args(args)
        .env("DATABASE_URL", app.settings.database_url.expose_secret())
        .env("LINKPULSE_CHECK_AFTER", "0s")
        .env("LINKPULSE_REFRESH_ENABLED", "false")
        .env("RUST_LOG", "info");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("producer exited in time")
        .expect("run producer");
    let stderr: Vec<String> = String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(output.status.success(), "producer {args:?} failed: {stderr:#?}");
    (String::from_utf8(output.stdout).expect("utf-8 stdout"), stderr)
}

/// A worker child process whose stderr is collected line by line.
struct Worker {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    fn spawn(app: &TestApp, env: &[(&str, String)]) -> Self {
        let mut command = command(env!("CARGO_BIN_EXE_linkpulse-worker"));
        command
            .args(["--concurrency", "8"])
            .env("DATABASE_URL", app.settings.database_url.expose_secret())
            .env("LINKPULSE_ALLOW_PRIVATE_NETWORKS", "true")
            .env("LINKPULSE_WORKER_ADDR", "127.0.0.1:0")
            .env("LINKPULSE_HTTP_TIMEOUT", "5s")
            .env("LINKPULSE_HOST_CONCURRENCY", "8")
            .env("LINKPULSE_HOST_INTERVAL", "0s")
            .env("LINKPULSE_POLL_INTERVAL", "200ms")
            .env("LINKPULSE_SHUTDOWN_GRACE", "20s")
            // Debug for our library: the fetcher's events inside `http.fetch` show the ids in logs.
            .env("RUST_LOG", "info,linkpulse_shared=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn worker");
        let pipe = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.lock().expect("lock").push(line);
            }
        });
        Self { child, stderr }
    }

    /// SIGTERM, then the exit code.
    async fn terminate(mut self) -> (Option<i32>, Vec<String>) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id().expect("pid")).expect("pid"));
        nix::sys::signal::kill(pid, Signal::SIGTERM).expect("sigterm");
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("worker exited in time")
            .expect("wait");
        // The pipe closes at exit; let the reader take the last lines.
        let stderr = &self.stderr;
        wait_for(Duration::from_secs(5), "the worker's stderr to close", || async move {
            (Arc::strong_count(stderr) == 1).then_some(())
        })
        .await;
        let lines = self.stderr.lock().expect("lock").clone();
        (status.code(), lines)
    }
}

/// A second local site: `/hop` answers 302 to `target`.
async fn redirect_site(target: String) -> String {
    let app = Router::new().route(
        "/hop",
        any(move || {
            let target = target.clone();
            async move { (StatusCode::FOUND, [(header::LOCATION, target)]).into_response() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The JSON log lines of `lines`, asserting that every line is one.
fn json_lines(lines: &[String], who: &str) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{who} logged a non-JSON line ({e}): {l}")))
        .collect()
}

fn one<'a>(spans: &'a [ReceivedSpan], what: &str, pred: impl Fn(&ReceivedSpan) -> bool) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| pred(s)).collect();
    assert_eq!(found.len(), 1, "expected exactly one {what}, got {found:#?}");
    found[0]
}

fn children<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan, name: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.name == name && s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id)
        .collect()
}

fn unix_nanos(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).expect("after 1970").as_nanos()).expect("fits")
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_links_check_is_one_trace_from_the_producer_cycle_through_the_queue_to_the_write_back(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let receiver = OtlpReceiver::start().await;
    let hop_site = redirect_site(app.url("/ok")).await;
    let urls = vec![
        app.url(&format!("/ok?token={SECRET}")),
        app.url("/gone"),
        format!("{hop_site}/hop"),
        app.url("/slow"),
    ];
    let ids = app.add_links(&urls).await;
    let (ok_id, gone_id, hop_id, slow_id) = (ids[0], ids[1], ids[2], ids[3]);
    let export = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", NEVER.to_owned()),
    ];

    // The producer: one cycle, then exit. Its spans arrive through the flush at exit.
    let (stdout, producer_log) = producer(&app, &["cycle", "--json"], &export).await;
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("cycle JSON");
    assert_eq!(report["check"]["enqueued"], 4, "{report}");
    let spans = receiver.spans();
    let cycle = one(&spans, "producer.cycle span", |s| s.name == "producer.cycle");
    assert_eq!(cycle.service, "linkpulse-producer");
    assert_eq!(cycle.parent_span_id, "", "a cycle starts a trace");
    assert_eq!(cycle.int("enqueued.check"), Some(4));
    assert_eq!(cycle.int("skipped.check"), Some(0));
    let trace = cycle.trace_id.clone();
    // The cycle runs the check schedule (a `schedule.run` span) which enqueues.
    let run = one(&spans, "schedule.run span", |s| s.name == "schedule.run");
    assert_eq!(run.trace_id, trace);
    assert_eq!(run.parent_span_id, cycle.span_id, "the run is part of the cycle");
    assert_eq!(run.str("schedule"), Some("check"));
    let enqueue = one(&spans, "job.enqueue span", |s| s.name == "job.enqueue");
    assert_eq!(enqueue.trace_id, trace);
    assert_eq!(
        enqueue.parent_span_id, run.span_id,
        "the enqueue is part of the schedule's run"
    );
    assert_eq!(enqueue.str("job.kind"), Some("check"));
    assert_eq!(enqueue.int("enqueued"), Some(4));
    // Its logs are JSON carrying the ids of the span they were written in.
    let done = json_lines(&producer_log, "the producer")
        .into_iter()
        .find(|l| l["message"] == "cycle done")
        .expect("a `cycle done` line");
    assert_eq!(done["trace_id"], trace.as_str());
    assert_eq!(done["span_id"], cycle.span_id.as_str());

    // The queue carries the context: `queue list` shows each job's trace id.
    let jobs = inspect::list(&app.pool, &JobFilter::default(), 10).await.expect("list");
    assert_eq!(jobs.len(), 4);
    assert!(
        jobs.iter().all(|j| j.trace_id.as_deref() == Some(trace.as_str())),
        "{jobs:#?}"
    );
    let job_of: HashMap<i64, i64> = jobs
        .iter()
        .map(|j| (j.payload["link_id"].as_i64().expect("link_id"), j.id))
        .collect();

    // The worker: the three quick checks finish and /slow is in flight when SIGTERM arrives.
    let worker = Worker::spawn(&app, &export);
    wait_for(
        Duration::from_secs(30),
        "three checks written and /slow in flight",
        || async {
            for id in [ok_id, gone_id, hop_id] {
                app.link(id).await.last_checked_at?;
            }
            (app.site.hits("/slow") >= 1).then_some(())
        },
    )
    .await;
    assert!(
        receiver.named("job.run").is_empty(),
        "premise: with a {NEVER} ms batch schedule, nothing is exported before shutdown"
    );
    let sigterm_at = SystemTime::now();
    let (code, worker_log) = worker.terminate().await;
    assert_eq!(code, Some(0), "the worker drains and exits 0: {worker_log:#?}");
    assert_eq!(
        count_state(&app.pool, "done").await,
        4,
        "the in-flight check finished in the drain"
    );

    // Everything the worker traced arrived, flushed at exit.
    let spans = receiver.spans();
    let runs: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == "job.run").collect();
    let summary: Vec<String> = spans
        .iter()
        .map(|s| {
            format!(
                "{} {} link={:?} parent={}",
                s.service,
                s.name,
                s.int("link.id"),
                s.parent_span_id
            )
        })
        .collect();
    assert_eq!(runs.len(), 4, "one attempt per link: {summary:#?}");
    let run_of = |link: i64| {
        one(&spans, "job.run of a link", |s| {
            s.name == "job.run" && s.int("link.id") == Some(link)
        })
    };
    for link in [ok_id, gone_id, hop_id, slow_id] {
        let run = run_of(link);
        assert_eq!(run.service, "linkpulse-worker");
        assert_eq!(run.trace_id, trace, "the attempt is in the producer's trace");
        assert_eq!(
            run.parent_span_id, enqueue.span_id,
            "the attempt is a child of its enqueue"
        );
        assert_eq!(run.kind, 5, "a consumer span");
        assert_eq!(run.int("job.id"), Some(job_of[&link]));
        assert_eq!(run.str("job.kind"), Some("check"));
        assert_eq!(run.int("job.attempt"), Some(1));
        assert_eq!(run.str("url.host"), Some("127.0.0.1"));
        assert!(
            run.int("queue.wait_ms").is_some_and(|ms| ms >= 0),
            "queue wait recorded: {run:#?}"
        );
        assert_eq!(run.str("job.outcome"), Some("done"));
        assert!(!run.is_error(), "a dead link is a result, not a failed job: {run:#?}");

        let fetches = children(&spans, run, "http.fetch");
        assert!(!fetches.is_empty(), "requests are children of the attempt");
        for fetch in &fetches {
            assert_eq!(fetch.kind, 3, "a client span");
            assert!(matches!(fetch.str("http.request.method"), Some("HEAD" | "GET")));
            assert_eq!(fetch.str("url.host"), Some("127.0.0.1"));
            assert!(fetch.str("outcome.class").is_some(), "{fetch:#?}");
        }
        let writes = children(&spans, run, "db.write_back");
        assert_eq!(writes.len(), 1, "one write-back per attempt");
        assert_eq!(writes[0].bool("applied"), Some(true));
        assert_eq!(writes[0].str("db.operation.name"), Some("link_record_check"));

        let wait = one(&spans, "queue.wait of a job", |s| {
            s.name == "queue.wait" && s.int("job.id") == Some(job_of[&link])
        });
        assert_eq!(
            wait.parent_span_id, enqueue.span_id,
            "the wait hangs off the enqueue too"
        );
        assert!(
            wait.end_unix_nano <= run.start_unix_nano + 1_000_000,
            "the wait ends when the attempt starts"
        );

        // The trace is findable from the link.
        assert_eq!(app.link(link).await.last_trace_id.as_deref(), Some(trace.as_str()));
    }

    // A healthy request.
    let ok_fetch = children(&spans, run_of(ok_id), "http.fetch");
    assert_eq!(ok_fetch.len(), 1, "HEAD succeeded, no GET");
    assert_eq!(
        ok_fetch[0].int("http.response.status_code"),
        Some(200),
        "{:#?}",
        ok_fetch[0]
    );
    assert_eq!(ok_fetch[0].str("outcome.class"), Some("success"));
    assert_eq!(ok_fetch[0].int("http.response.body.size"), Some(0));
    assert!(!ok_fetch[0].is_error());

    // A failing request sets the error status, with the reason; the verdict is on the attempt.
    let gone = run_of(gone_id);
    assert_eq!(gone.str("verdict"), Some("dead"));
    let gone_fetches = children(&spans, gone, "http.fetch");
    assert_eq!(gone_fetches.len(), 2, "HEAD, then GET before judging");
    for fetch in gone_fetches {
        assert!(fetch.is_error(), "{fetch:#?}");
        assert!(fetch.status_message.contains("404"), "{fetch:#?}");
        assert_eq!(fetch.int("http.response.status_code"), Some(404));
        assert_eq!(fetch.str("outcome.class"), Some("client_error"));
    }

    // A redirect hop is an event of its request.
    let hop_fetch = children(&spans, run_of(hop_id), "http.fetch");
    assert_eq!(hop_fetch.len(), 1);
    assert_eq!(hop_fetch[0].int("http.redirects"), Some(1));
    assert_eq!(hop_fetch[0].int("http.response.status_code"), Some(200));
    let hop = hop_fetch[0]
        .events
        .iter()
        .find(|e| e.name == "http.redirect")
        .expect("an http.redirect event");
    assert_eq!(
        hop.attributes.get("http.redirect.hop").map(|a| a.text()).as_deref(),
        Some("1")
    );
    assert_eq!(
        hop.attributes
            .get("http.response.status_code")
            .map(|a| a.text())
            .as_deref(),
        Some("302")
    );

    // The check that was in flight at SIGTERM ended after it and still arrived.
    let slow = run_of(slow_id);
    assert!(
        slow.end_unix_nano > unix_nanos(sigterm_at),
        "premise: /slow was still running when SIGTERM arrived"
    );

    // No secret in any attribute, event or status.
    for span in &spans {
        let mut texts: Vec<String> = span.attributes.values().map(|a| a.text()).collect();
        texts.extend(span.events.iter().flat_map(|e| e.attributes.values().map(|a| a.text())));
        texts.push(span.status_message.clone());
        assert!(!texts.iter().any(|t| t.contains(SECRET)), "{span:#?}");
    }

    // Worker logs are JSON, and those written inside a request carry its ids.
    let worker_lines = json_lines(&worker_log, "the worker");
    let fetch_ids: Vec<&str> = spans
        .iter()
        .filter(|s| s.name == "http.fetch")
        .map(|s| s.span_id.as_str())
        .collect();
    assert!(
        worker_lines
            .iter()
            .any(|l| l["trace_id"] == trace.as_str() && l["span_id"].as_str().is_some_and(|id| fetch_ids.contains(&id))),
        "a log line inside an http.fetch span carries its ids"
    );

    // `links show` names the trace and, with LINKPULSE_JAEGER_URL, links to it.
    let (shown, _) = producer(
        &app,
        &["links", "show", &ok_id.to_string()],
        &[("LINKPULSE_JAEGER_URL", "http://jaeger.test:16686".to_owned())],
    )
    .await;
    assert!(shown.contains(&format!("trace: {trace}")), "{shown}");
    assert!(
        shown.contains(&format!("jaeger: http://jaeger.test:16686/trace/{trace}")),
        "{shown}"
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn no_export_is_attempted_when_the_endpoint_is_unset(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.add_links(&[app.url("/ok")]).await;
    // Without an endpoint an exporter would default to localhost:4317: listen there, so an
    // attempt would be seen. A busy port would leave the key assertion unchecked: fail instead.
    let mut default_ports = Vec::new();
    for addr in ["127.0.0.1:4317", "[::1]:4317"] {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => default_ports.push(OtlpReceiver::serve(listener)),
            // No IPv6 loopback on this machine: nothing can be sent there either.
            Err(e)
                if addr.starts_with('[')
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::Unsupported
                    ) => {}
            Err(e) => panic!(
                "cannot listen on {addr} ({e}): this test must watch the default OTLP endpoint; \
                 stop whatever holds port 4317 (a local collector?) and run it again"
            ),
        }
    }
    assert!(!default_ports.is_empty(), "premise: 127.0.0.1:4317 is watched");

    let (stdout, log) = producer(
        &app,
        &["cycle", "--json"],
        &[
            ("OTEL_SERVICE_NAME", "linkpulse-producer".to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
        ],
    )
    .await;
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("cycle JSON");
    assert_eq!(report["check"]["enqueued"], 1);

    for receiver in &default_ports {
        assert_eq!(receiver.exports(), 0, "nothing was sent to the default endpoint");
    }
    // Traces still exist without export: logs carry the ids and the job carries the context.
    let done = json_lines(&log, "the producer")
        .into_iter()
        .find(|l| l["message"] == "cycle done")
        .expect("a `cycle done` line");
    let trace = done["trace_id"].as_str().expect("a trace id in the log").to_owned();
    let jobs = inspect::list(&app.pool, &JobFilter::default(), 10).await.expect("list");
    assert_eq!(jobs[0].trace_id.as_deref(), Some(trace.as_str()));
}

/// PEM files a test points the OTLP certificate variables at; removed when dropped.
struct PemFiles(Vec<std::path::PathBuf>);

impl PemFiles {
    fn write(&mut self, name: &str, pem: &str) -> String {
        let path = std::env::temp_dir().join(format!("linkpulse-{}-{name}.pem", std::process::id()));
        std::fs::write(&path, pem).expect("write a PEM file");
        self.0.push(path.clone());
        path.display().to_string()
    }
}

impl Drop for PemFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A self-issued certificate for `127.0.0.1`: (certificate, key), PEM.
fn self_issued() -> (String, String) {
    let issued = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
    (issued.cert.pem(), issued.signing_key.serialize_pem())
}

/// An `https://` collector is verified: with its CA in `OTEL_EXPORTER_OTLP_CERTIFICATE` the spans
/// arrive; without it the self-issued certificate is refused, nothing is exported, and the
/// command still succeeds. A collector that requires mutual TLS gets the spans only from a
/// producer that presents the client certificate it trusts.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn spans_reach_an_https_collector_only_when_its_certificate_is_trusted(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.add_links(&[app.url("/ok")]).await;
    let mut files = PemFiles(Vec::new());
    let (server_cert, server_key) = self_issued();
    let ca = files.write("server-ca", &server_cert);
    let env = |endpoint: String, extra: &[(&'static str, &String)]| {
        let mut env = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_SERVICE_NAME", "linkpulse-producer".to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", NEVER.to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).clone())));
        env
    };

    let receiver = OtlpReceiver::start_tls(&server_cert, &server_key, None).await;
    assert!(receiver.endpoint().starts_with("https://"));
    // Untrusted: the handshake fails, so no export call ever reaches the service.
    let (stdout, _) = producer(&app, &["cycle", "--json"], &env(receiver.endpoint(), &[])).await;
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("cycle JSON");
    assert_eq!(report["check"]["enqueued"], 1, "the command works without its traces");
    assert_eq!(receiver.exports(), 0, "an unverified collector was sent spans");
    // Trusted: the spans flushed at exit arrive over TLS.
    let trusted = [("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca)];
    producer(&app, &["cycle", "--json"], &env(receiver.endpoint(), &trusted)).await;
    let cycles = receiver.named("producer.cycle");
    assert_eq!(cycles.len(), 1, "{:?}", receiver.spans());
    assert_eq!(cycles[0].service, "linkpulse-producer");

    // Mutual TLS: the collector serves only clients with a certificate it trusts.
    let (client_cert, client_key) = self_issued();
    let mutual = OtlpReceiver::start_tls(&server_cert, &server_key, Some(&client_cert)).await;
    producer(&app, &["cycle", "--json"], &env(mutual.endpoint(), &trusted)).await;
    assert_eq!(mutual.exports(), 0, "a client without a certificate was served");
    let (cert_file, key_file) = (
        files.write("client", &client_cert),
        files.write("client-key", &client_key),
    );
    let with_identity = [
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &cert_file),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &key_file),
    ];
    producer(&app, &["cycle", "--json"], &env(mutual.endpoint(), &with_identity)).await;
    assert_eq!(mutual.named("producer.cycle").len(), 1, "{:?}", mutual.spans());
}
