//! The audit trail of finished jobs: what each attempt found, in `queue list`, `queue stats` and
//! the API; and requeue of exactly one job.

use std::collections::HashMap;

use serde_json::{Value, json};
use sqlx::PgPool;

use linkpulse_queue::{JobState, NewJob, insert_many};
use linkpulse_shared::link_jobs::{CHECK, dedupe_key};
use producer::commands::queue::{self, Selection};

use crate::admin::{TOKEN, admin, http};
use crate::app::TestApp;

fn json_of(out: Vec<u8>) -> Value {
    serde_json::from_slice(&out).expect("CLI JSON")
}

/// `queue list --json --kind check`, keyed by dedupe key (`link:ID`, or `job:ID` for keyless jobs).
async fn checks_by_key(pool: &PgPool) -> HashMap<String, Value> {
    let mut out = Vec::new();
    queue::list(pool, None, Some(CHECK.into()), 100, true, &mut out)
        .await
        .expect("queue list");
    json_of(out)
        .as_array()
        .expect("array")
        .iter()
        .map(|job| {
            let key = job["dedupe_key"]
                .as_str()
                .map_or_else(|| format!("job:{}", job["id"]), str::to_owned);
            (key, job.clone())
        })
        .collect()
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn every_finished_job_leaves_its_result_code_and_duration_in_list_and_stats(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ids = app
        .add_links(&[app.url("/ok"), app.url("/gone"), app.url("/flaky")])
        .await;
    let poison = insert_many(&app.pool, &[NewJob::new(CHECK, json!({"link": "oops"}), 5)])
        .await
        .expect("insert poison");
    assert_eq!(poison.inserted, 1, "premise: the poison job is queued");
    app.cycle_and_work().await;

    let jobs = checks_by_key(&app.pool).await;
    let ok = &jobs[&dedupe_key(ids[0])];
    assert_eq!(
        (ok["state"].as_str(), ok["result_class"].as_str()),
        (Some("done"), Some("ok"))
    );
    assert_eq!(ok["status_code"], 200);
    assert!(ok["duration_ms"].is_i64(), "a handler that ran has a duration: {ok}");
    assert!(ok["finished_at"].is_string(), "{ok}");

    // A dead link is a finished check (done) whose result says dead.
    let gone = &jobs[&dedupe_key(ids[1])];
    assert_eq!(
        (
            gone["state"].as_str(),
            gone["result_class"].as_str(),
            gone["status_code"].as_i64()
        ),
        (Some("done"), Some("dead"), Some(404))
    );
    // Its reason is part of the trail, though the job itself had no error.
    assert!(
        gone["result_detail"].as_str().expect("detail").contains("HTTP 404"),
        "{gone}"
    );
    assert!(gone["last_error"].is_null(), "{gone}");
    assert!(ok["result_detail"].is_null(), "{ok}");

    // The 500 was retried; the row shows the latest attempt, which succeeded.
    let flaky = &jobs[&dedupe_key(ids[2])];
    assert_eq!(flaky["attempts"], 2);
    assert_eq!(
        (flaky["result_class"].as_str(), flaky["status_code"].as_i64()),
        (Some("ok"), Some(200))
    );
    assert!(
        flaky["last_error"]
            .as_str()
            .expect("first attempt's error")
            .contains("HTTP 500")
    );

    // The poison payload never reached a handler: failed, class `error`, no code, no duration.
    let (_, poisoned) = jobs
        .iter()
        .find(|(key, _)| key.starts_with("job:"))
        .expect("the poison job is listed");
    assert_eq!(
        (poisoned["state"].as_str(), poisoned["result_class"].as_str()),
        (Some("failed"), Some("error"))
    );
    assert!(
        poisoned["status_code"].is_null() && poisoned["duration_ms"].is_null(),
        "{poisoned}"
    );
    assert!(
        poisoned["last_error"]
            .as_str()
            .expect("error")
            .contains("malformed check payload")
    );

    // History from two days ago (a job that took 1,000 s, as the acknowledgement then recorded
    // it) counts in neither the last 24 hours nor their mean.
    sqlx::query(
        "INSERT INTO queue_finished_minutes (minute, kind, state, shard, n, duration_ms_sum, duration_n) \
         VALUES (date_trunc('minute', now() - interval '2 days'), 'check', 'done', 0, 1, 1000000, 1)",
    )
    .execute(&app.pool)
    .await
    .expect("old history");
    // And one job's finish moved back two days, for the recent history's order below (the
    // counters keep the minute its acknowledgement counted it in).
    sqlx::query("UPDATE queue_jobs SET finished_at = now() - interval '2 days' WHERE id = $1")
        .bind(ok["id"].as_i64().expect("id"))
        .execute(&app.pool)
        .await
        .expect("age one job");
    let mut out = Vec::new();
    queue::stats(&app.pool, true, &mut out).await.expect("stats");
    let stats = json_of(out);
    let check = &stats["kinds"]["check"];
    assert_eq!(
        (check["done"].as_i64(), check["failed"].as_i64()),
        (Some(3), Some(1)),
        "{stats}"
    );
    assert_eq!(
        (check["done_24h"].as_i64(), check["failed_24h"].as_i64()),
        (Some(3), Some(1)),
        "{stats}"
    );
    // The mean covers the jobs that ran in the last day; the old minute's huge duration is out.
    let (expected,): (f64,) = sqlx::query_as(
        "SELECT avg(duration_ms)::float8 FROM queue_jobs WHERE kind = 'check' AND state IN ('done', 'failed')",
    )
    .fetch_one(&app.pool)
    .await
    .expect("mean");
    let mean = check["mean_duration_ms_24h"].as_f64().expect("mean duration");
    assert!(
        (mean - expected).abs() < 1e-6 && mean < 1_000_000.0,
        "{mean} vs {expected}"
    );
    // A kind with nothing finished has no mean rather than a zero.
    assert!(stats["kinds"]["refresh"]["mean_duration_ms_24h"].is_null(), "{stats}");

    // The table form shows the same trail.
    let mut table = Vec::new();
    queue::list(&app.pool, Some(JobState::Done), None, 10, false, &mut table)
        .await
        .expect("list table");
    let table = String::from_utf8(table).expect("utf-8");
    assert!(
        table.contains("RESULT") && table.contains("dead") && table.contains(" 404 "),
        "{table}"
    );
    assert!(table.contains("HTTP 404: Not Found"), "{table}");

    // The dashboard's recent history goes by finish time, newest first, not by id: the job aged
    // two days (one of the lowest ids) comes last.
    let recent = linkpulse_queue::inspect::recently_finished(&app.pool, 10)
        .await
        .expect("recent");
    let ids: Vec<i64> = recent.iter().map(|j| j.id).collect();
    assert_eq!(recent.len(), 4, "{ids:?}");
    assert_eq!(recent.last().map(|j| j.id), ok["id"].as_i64(), "{ids:?}");
    assert!(
        recent.windows(2).all(|w| w[0].finished_at >= w[1].finished_at),
        "{ids:?}"
    );
    let two = linkpulse_queue::inspect::recently_finished(&app.pool, 2)
        .await
        .expect("recent");
    assert_eq!(two.len(), 2);
    assert_eq!(two[0].id, recent[0].id);
}

/// Fails every job of the test as if its attempts ran out.
async fn fail_everything(pool: &PgPool) {
    sqlx::query(
        "UPDATE queue_jobs SET state = 'failed', finished_at = now(), attempts = max_attempts, \
         result_class = 'transient', status_code = 503, duration_ms = 12, \
         errors = errors || '[{\"error\":\"HTTP 503\"}]'::jsonb",
    )
    .execute(pool)
    .await
    .expect("fail jobs");
    // SQL by hand bypasses the queue's counters: correct them as an operator would.
    linkpulse_queue::counts::recount(pool).await.expect("recount");
}

async fn states(pool: &PgPool) -> HashMap<i64, String> {
    sqlx::query_as::<_, (i64, String)>("SELECT id, state FROM queue_jobs")
        .fetch_all(pool)
        .await
        .expect("states")
        .into_iter()
        .collect()
}

/// `queue requeue --job ID` for failed jobs, in JSON or table form; what it printed.
async fn requeue_job(pool: &PgPool, id: i64, json: bool) -> String {
    let mut out = Vec::new();
    let selection = Selection {
        job: Some(id),
        ..Selection::default()
    };
    queue::requeue(pool, JobState::Failed, selection, json, &mut out)
        .await
        .expect("requeue");
    String::from_utf8(out).expect("utf-8")
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn requeue_by_job_id_moves_exactly_that_job_from_the_cli_and_the_api(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.add_links(&[app.url("/a"), app.url("/b"), app.url("/c")]).await;
    app.run_cycle().await;
    fail_everything(&app.pool).await;
    let ids: Vec<i64> = {
        let mut ids: Vec<i64> = states(&app.pool).await.into_keys().collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(ids.len(), 3, "premise: one check per link");

    let printed = requeue_job(&app.pool, ids[0], true).await;
    assert_eq!(json_of(printed.into_bytes()), json!({"requeued": 1}));
    let after = states(&app.pool).await;
    assert_eq!(after[&ids[0]], "queued");
    assert_eq!((after[&ids[1]].as_str(), after[&ids[2]].as_str()), ("failed", "failed"));
    // A requeued job starts a fresh trail: the old attempt's result is gone, its error kept.
    let (result, code, errors): (Option<String>, Option<i32>, Value) =
        sqlx::query_as("SELECT result_class, status_code, errors FROM queue_jobs WHERE id = $1")
            .bind(ids[0])
            .fetch_one(&app.pool)
            .await
            .expect("row");
    assert_eq!((result, code), (None, None));
    assert_eq!(errors[0]["error"], "HTTP 503");

    // The API takes the same selection; a job that is not failed any more moves nothing.
    let (addr, _stop) = admin(&app, Some(TOKEN)).await;
    let body = json!({"job": ids[1]}).to_string();
    let reply = http(addr, "POST", "/api/queue/requeue", Some(TOKEN), Some(&body)).await;
    assert_eq!(
        (reply.status, reply.json()),
        (200, json!({"requeued": 1})),
        "{}",
        reply.body
    );
    let body = json!({"job": ids[0]}).to_string();
    let reply = http(addr, "POST", "/api/queue/requeue", Some(TOKEN), Some(&body)).await;
    assert_eq!(
        (reply.status, reply.json()),
        (200, json!({"requeued": 0})),
        "{}",
        reply.body
    );
    let after = states(&app.pool).await;
    assert_eq!(
        (
            after[&ids[0]].as_str(),
            after[&ids[1]].as_str(),
            after[&ids[2]].as_str()
        ),
        ("queued", "queued", "failed")
    );

    // In the table form, a job that did not move says why.
    let text = requeue_job(&app.pool, ids[0], false).await;
    assert!(
        text.contains("requeued 0 job(s)") && text.contains(&format!("job {} is queued, not failed", ids[0])),
        "{text}"
    );
    let text = requeue_job(&app.pool, i64::MAX, false).await;
    assert!(text.contains("no job"), "{text}");
}
