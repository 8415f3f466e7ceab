//! Pausing a kind, resuming it, cancelling queued jobs (`producer queue pause|resume|cancel` and
//! their API): a paused kind is not claimed within one poll interval and resume restores it at
//! once; running jobs finish; cancel discards only queued jobs and frees their dedupe keys.

use std::time::{Duration, Instant};

use integration_tests::{TEST_KIND, TestJob};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use linkpulse_queue::{CancelSelection, NewJob, insert_many};
use linkpulse_queue::{Completion, Outcome, RetryPolicy, ack, claim, control, registry};
use linkpulse_shared::config::ExposeSecret;
use linkpulse_shared::link_jobs::{CHECK, REFRESH, dedupe_key};

use crate::admin::{TOKEN, admin, http};
use crate::app::TestApp;
use crate::helpers::{WorkerProcess, enqueue, events_per_job, job, lease_of, wait_for};
use crate::producer_loop::producer_command;

/// Jobs of `kind` per state.
async fn states_of(pool: &PgPool, kind: &str) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT state FROM queue_jobs WHERE kind = $1 ORDER BY id")
        .bind(kind)
        .fetch_all(pool)
        .await
        .expect("states");
    rows.into_iter().map(|(s,)| s).collect()
}

/// What a cancel leaves on a job: state, result class, latest error and its kind, finished.
#[derive(Debug, PartialEq, sqlx::FromRow)]
struct Outcomes {
    state: String,
    result_class: Option<String>,
    last_error: Option<String>,
    last_error_kind: Option<String>,
    finished: bool,
}

async fn outcome(pool: &PgPool, id: i64) -> Outcomes {
    sqlx::query_as(
        "SELECT state, result_class, errors -> -1 ->> 'error' AS last_error, \
         errors -> -1 ->> 'kind' AS last_error_kind, finished_at IS NOT NULL AS finished \
         FROM queue_jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .expect("job row")
}

fn cancelled(reason: &str) -> Outcomes {
    Outcomes {
        state: "failed".into(),
        result_class: Some("cancelled".into()),
        last_error: Some(reason.into()),
        last_error_kind: Some("cancel".into()),
        finished: true,
    }
}

/// Id, state and dedupe key of the unfinished jobs of `kind`, by id.
async fn unfinished(pool: &PgPool, kind: &str) -> Vec<(i64, String, Option<String>)> {
    sqlx::query_as(
        "SELECT id, state, dedupe_key FROM queue_jobs WHERE kind = $1 AND state IN ('queued', 'running') ORDER BY id",
    )
    .bind(kind)
    .fetch_all(pool)
    .await
    .expect("jobs")
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_paused_kind_is_not_claimed_and_resume_restores_it_within_one_poll_interval(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.settings.refresh_enabled = true;
    app.settings.refresh_after = Duration::ZERO;
    let poll = Duration::from_secs(1);
    app.settings.queue.poll_interval = poll;
    app.add_links(&[app.url("/ok"), app.url("/page"), app.url("/p/1")])
        .await;

    // A running, idle worker: the pause must reach the claims of a live engine.
    let stop = CancellationToken::new();
    let worker = tokio::spawn({
        let (settings, stop) = (app.settings.clone(), stop.clone());
        async move { worker::app::run(settings, 4, stop).await }
    });
    wait_for(Duration::from_secs(10), "the worker to register", || async {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_workers")
            .fetch_one(&app.pool)
            .await
            .expect("workers");
        (n > 0).then_some(())
    })
    .await;
    assert!(
        control::pause(&app.pool, REFRESH, "test", Some("upstream outage"))
            .await
            .expect("pause")
    );
    // The cycle's NOTIFY wakes the worker at once: its claim must pass over the paused kind.
    let report = app.run_cycle().await;
    assert_eq!(
        (report.check.enqueued, report.refresh.enqueued),
        (3, 3),
        "premise: both kinds enqueued"
    );
    wait_for(Duration::from_secs(30), "the checks to finish", || async {
        (states_of(&app.pool, CHECK).await == ["done"; 3]).then_some(())
    })
    .await;
    // Three more polls (and the checks' completions) later, the refreshes still wait untouched.
    tokio::time::sleep(poll * 3).await;
    let (untouched,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM queue_jobs WHERE kind = $1 AND state = 'queued' AND attempts = 0")
            .bind(REFRESH)
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(
        untouched,
        3,
        "a paused kind was claimed: {:?}",
        states_of(&app.pool, REFRESH).await
    );

    assert!(
        control::resume(&app.pool, REFRESH).await.expect("resume"),
        "it was paused"
    );
    let resumed = Instant::now();
    wait_for(
        poll + Duration::from_millis(500),
        "the resumed refreshes to be claimed",
        || async {
            let (queued,): (i64,) =
                sqlx::query_as("SELECT count(*) FROM queue_jobs WHERE kind = $1 AND state = 'queued'")
                    .bind(REFRESH)
                    .fetch_one(&app.pool)
                    .await
                    .expect("count");
            (queued == 0).then_some(())
        },
    )
    .await;
    let took = resumed.elapsed();
    wait_for(Duration::from_secs(30), "the refreshes to finish", || async {
        (states_of(&app.pool, REFRESH).await == ["done"; 3]).then_some(())
    })
    .await;
    stop.cancel();
    worker.await.expect("worker task").expect("worker ran");
    assert!(
        took <= poll + Duration::from_millis(500),
        "claimed {took:?} after resume"
    );
    assert!(
        !control::resume(&app.pool, REFRESH).await.expect("resume again"),
        "no longer paused"
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_job_running_when_its_kind_is_paused_finishes_normally(pool: PgPool) {
    let slow = TestJob {
        sleep_ms: 1500,
        ..TestJob::default()
    };
    let first = enqueue(&pool, &[(slow, None)], 1).await[0];
    let _worker = WorkerProcess::spawn(&pool, &[]).await;
    wait_for(Duration::from_secs(10), "the job to start", || async {
        events_per_job(&pool, "start").await.contains_key(&first).then_some(())
    })
    .await;
    control::pause(&pool, TEST_KIND, "test", None).await.expect("pause");
    assert_eq!(job(&pool, first).await.0, "running", "premise: paused mid-run");
    let second = enqueue(&pool, &[(TestJob::default(), None)], 1).await[0];

    wait_for(Duration::from_secs(10), "the running job to finish", || async {
        (job(&pool, first).await.0 == "done").then_some(())
    })
    .await;
    assert_eq!(events_per_job(&pool, "finish").await.get(&first), Some(&1));
    // fast_env polls every 300 ms: a few polls later the job enqueued after the pause still waits.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(job(&pool, second).await, ("queued".into(), 0, json!([])));

    control::resume(&pool, TEST_KIND).await.expect("resume");
    wait_for(
        Duration::from_secs(5),
        "the waiting job to run after resume",
        || async { (job(&pool, second).await.0 == "done").then_some(()) },
    )
    .await;
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn resume_wakes_an_idle_worker_long_before_its_poll(pool: PgPool) {
    let _worker = WorkerProcess::spawn(&pool, &[("LINKPULSE_POLL_INTERVAL", "30s".into())]).await;
    control::pause(&pool, TEST_KIND, "test", None).await.expect("pause");
    // The insert's NOTIFY wakes the worker, whose claim passes over the paused job; then it
    // sleeps on its 30 s poll.
    let id = enqueue(&pool, &[(TestJob::default(), None)], 1).await[0];
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(job(&pool, id).await.0, "queued", "premise: the paused job waits");

    let resumed = Instant::now();
    control::resume(&pool, TEST_KIND).await.expect("resume");
    wait_for(Duration::from_secs(10), "the job to run after resume", || async {
        (job(&pool, id).await.0 == "done").then_some(())
    })
    .await;
    let took = resumed.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}: resume woke nobody, the poll did"
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn cancel_discards_only_queued_jobs_and_frees_their_links(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let links = app
        .add_links(&[app.url("/p/1"), app.url("/p/2"), app.url("/p/3"), app.url("/p/4")])
        .await;
    app.run_cycle().await;
    // Two jobs leased (one then done, one left running), two still queued.
    let owner = Uuid::new_v4();
    registry::register(&app.pool, owner, "cancel-test")
        .await
        .expect("register");
    let claimed = claim::claim_batch(&app.pool, owner, &[CHECK], 2, 8)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 2, "premise: two jobs leased");
    let policy = RetryPolicy::default();
    let done = Completion::new(lease_of(&claimed[0]), Outcome::Done);
    assert_eq!(ack::complete_many(&app.pool, &[done], &policy).await.expect("ack"), 1);
    let jobs = unfinished(&app.pool, CHECK).await;
    let queued: Vec<i64> = jobs.iter().filter(|(_, s, _)| s == "queued").map(|j| j.0).collect();
    assert_eq!(queued.len(), 2, "premise: {jobs:?}");

    let reason = "maintenance window";
    let selection = CancelSelection {
        kind: Some(CHECK.into()),
        ..CancelSelection::default()
    };
    let n = control::cancel(&app.pool, &selection, Some(reason), "test")
        .await
        .expect("cancel");
    assert_eq!(n, 2, "only the queued jobs");
    for id in &queued {
        assert_eq!(outcome(&app.pool, *id).await, cancelled(reason), "job {id}");
    }
    assert_eq!(
        outcome(&app.pool, claimed[0].id).await.state,
        "done",
        "the done job stays done"
    );
    assert_eq!(
        outcome(&app.pool, claimed[1].id).await.state,
        "running",
        "the running job runs on"
    );
    // The running one completes normally: its lease is untouched.
    let finish = Completion::new(lease_of(&claimed[1]), Outcome::Done);
    assert_eq!(ack::complete_many(&app.pool, &[finish], &policy).await.expect("ack"), 1);
    assert_eq!(outcome(&app.pool, claimed[1].id).await.state, "done");
    assert_eq!(
        control::cancel(&app.pool, &selection, None, "test")
            .await
            .expect("again"),
        0,
        "nothing queued is left"
    );
    assert!(matches!(
        control::cancel(&app.pool, &CancelSelection::default(), None, "test").await,
        Err(linkpulse_queue::QueueError::EmptySelection)
    ));

    // The cancelled links hold no dedupe key: the next cycle enqueues every link again.
    let report = app.run_cycle().await;
    assert_eq!(report.check.enqueued, 4, "{report:?}");
    let again = unfinished(&app.pool, CHECK).await;
    assert_eq!(again.len(), 4);

    // By job id: that job alone, whatever else is queued.
    let (one, _, _) = &again[0];
    let by_id = CancelSelection {
        id: Some(*one),
        ..CancelSelection::default()
    };
    assert_eq!(
        control::cancel(&app.pool, &by_id, None, "cli:tester")
            .await
            .expect("by id"),
        1
    );
    assert_eq!(outcome(&app.pool, *one).await, cancelled("cancelled by cli:tester"));
    assert_eq!(
        control::cancel(&app.pool, &by_id, None, "cli:tester")
            .await
            .expect("by id"),
        0
    );
    // By link (dedupe key): that link's job alone.
    let by_link = CancelSelection {
        dedupe_key: Some(dedupe_key(links[3])),
        ..CancelSelection::default()
    };
    assert_eq!(
        control::cancel(&app.pool, &by_link, None, "test")
            .await
            .expect("by link"),
        1
    );
    assert_eq!(unfinished(&app.pool, CHECK).await.len(), 2);
}

/// Runs `producer ARGS`; returns its exit code, stdout and stderr.
async fn producer(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = producer_command(app.settings.database_url.expose_secret(), args, env)
        .output()
        .await
        .expect("run producer");
    (
        output.status.code().expect("exit code"),
        String::from_utf8(output.stdout).expect("utf-8 stdout"),
        String::from_utf8(output.stderr).expect("utf-8 stderr"),
    )
}

fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn cli_pauses_resumes_and_cancels_and_refuses_unknown_kinds_and_an_unfiltered_cancel(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let env = [("USER", "alice")];

    let (code, out, err) = producer(
        &app,
        &["queue", "pause", "check", "--reason", "DNS outage", "--json"],
        &env,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_of(&out), json!({"kind": "check", "paused": true}));
    let paused = control::paused(&app.pool).await.expect("paused");
    assert_eq!(paused.len(), 1);
    assert_eq!(
        (
            paused[0].kind.as_str(),
            paused[0].paused_by.as_str(),
            paused[0].reason.as_deref()
        ),
        ("check", "cli:alice", Some("DNS outage"))
    );
    let (code, out, _) = producer(&app, &["queue", "stats"], &[]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("check is paused since") && out.contains("by cli:alice: DNS outage"),
        "{out}"
    );
    let (code, out, _) = producer(&app, &["queue", "stats", "--json"], &[]).await;
    assert_eq!(code, 0);
    assert!(
        json_of(&out)["kinds"]["check"].is_object(),
        "stats JSON keeps its shape: {out}"
    );

    let (code, out, _) = producer(&app, &["queue", "resume", "check", "--json"], &[]).await;
    assert_eq!(code, 0);
    assert_eq!(json_of(&out), json!({"kind": "check", "paused": false}));
    assert!(control::paused(&app.pool).await.expect("paused").is_empty());

    for args in [
        &["queue", "pause", "checks", "--json"][..],
        &["queue", "resume", "deliverables", "--json"],
        &["queue", "cancel", "--json"],
        &["queue", "cancel", "--reason", "why not", "--json"],
        &["queue", "cancel", "--kind", "nope", "--json"],
        &["queue", "cancel", "--job", "1", "--kind", "check", "--json"],
    ] {
        let (code, out, err) = producer(&app, args, &[]).await;
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: nothing on stdout: {out}");
        assert!(!err.trim().is_empty(), "{args:?}: a reason on stderr");
    }

    let links = app.add_links(&[app.url("/p/1"), app.url("/p/2")]).await;
    app.run_cycle().await;
    let link = links[0].to_string();
    let (code, out, err) = producer(
        &app,
        &["queue", "cancel", "--link", &link, "--reason", "bad link", "--json"],
        &env,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_of(&out), json!({"cancelled": 1}));
    let jobs = unfinished(&app.pool, CHECK).await;
    assert_eq!(jobs.len(), 1, "only the other link's job is left: {jobs:?}");
    let job_id = jobs[0].0.to_string();
    let (code, out, _) = producer(&app, &["queue", "cancel", "--job", &job_id, "--json"], &env).await;
    assert_eq!(code, 0);
    assert_eq!(json_of(&out), json!({"cancelled": 1}));
    assert_eq!(outcome(&app.pool, jobs[0].0).await, cancelled("cancelled by cli:alice"));
    let (code, out, _) = producer(&app, &["queue", "cancel", "--job", &job_id], &[]).await;
    assert_eq!(code, 0);
    assert!(out.contains("job") && out.contains("is failed, not queued"), "{out}");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn api_pause_resume_and_cancel_need_the_token_and_a_known_kind(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (addr, _stop) = admin(&app, Some(TOKEN)).await;

    for (path, body) in [
        ("/api/queue/pause/check", None),
        ("/api/queue/resume/check", None),
        ("/api/queue/cancel", Some(r#"{"kind":"check"}"#)),
    ] {
        let reply = http(addr, "POST", path, None, body).await;
        assert_eq!(reply.status, 401, "{path}: {}", reply.body);
        let reply = http(addr, "POST", path, Some("wrong"), body).await;
        assert_eq!(reply.status, 401, "{path}: {}", reply.body);
    }
    assert!(
        control::paused(&app.pool).await.expect("paused").is_empty(),
        "refused calls did nothing"
    );

    let reply = http(
        addr,
        "POST",
        "/api/queue/pause/check",
        Some(TOKEN),
        Some(r#"{"reason":"vendor down"}"#),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json(), json!({"kind": "check", "paused": true}));
    let reply = http(addr, "GET", "/api/queue/paused", None, None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let listed = reply.json();
    assert_eq!(
        (&listed[0]["kind"], &listed[0]["paused_by"], &listed[0]["reason"]),
        (&json!("check"), &json!("api"), &json!("vendor down")),
        "{listed}"
    );
    assert!(listed[0]["paused_at"].is_string(), "{listed}");

    for (path, body) in [
        ("/api/queue/pause/nope", None),
        ("/api/queue/resume/nope", None),
        ("/api/queue/cancel", Some(r#"{"kind":"nope"}"#)),
        ("/api/queue/cancel", Some("{}")),
        ("/api/queue/cancel", None),
        ("/api/queue/cancel", Some(r#"{"job":1,"kind":"check"}"#)),
        ("/api/queue/cancel", Some(r#"{"jobs":[1]}"#)),
    ] {
        let reply = http(addr, "POST", path, Some(TOKEN), body).await;
        assert_eq!(reply.status, 400, "{path} {body:?}: {}", reply.body);
        assert!(reply.json()["error"].is_string(), "{}", reply.body);
    }

    let ids = {
        let new = [
            NewJob::new(CHECK, json!({"link_id": 1, "url": "http://a.test/"}), 1),
            NewJob::new(CHECK, json!({"link_id": 2, "url": "http://b.test/"}), 1),
        ];
        insert_many(&app.pool, &new).await.expect("enqueue");
        unfinished(&app.pool, CHECK).await
    };
    let body = format!(r#"{{"job":{},"reason":"duplicate"}}"#, ids[0].0);
    let reply = http(addr, "POST", "/api/queue/cancel", Some(TOKEN), Some(&body)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json(), json!({"cancelled": 1}));
    assert_eq!(outcome(&app.pool, ids[0].0).await, cancelled("duplicate"));
    let reply = http(
        addr,
        "POST",
        "/api/queue/cancel",
        Some(TOKEN),
        Some(r#"{"kind":"check"}"#),
    )
    .await;
    assert_eq!(reply.json(), json!({"cancelled": 1}), "{}", reply.body);
    assert_eq!(outcome(&app.pool, ids[1].0).await, cancelled("cancelled by api"));

    let reply = http(addr, "POST", "/api/queue/resume/check", Some(TOKEN), None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json(), json!({"kind": "check", "paused": false}));
    assert_eq!(
        http(addr, "GET", "/api/queue/paused", None, None).await.json(),
        json!([])
    );
}
