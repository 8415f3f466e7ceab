//! A link's history: the events the write-backs write with their transitions (the webhooks'
//! outbox), the verdicts they keep, what `links show` makes of them, and the prune that trims
//! them.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::any;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tokio::process::{Child, Command};

use linkpulse_shared::db::check_writer::CheckWriter;
use linkpulse_shared::db::history::{self, LinkHistory};
use linkpulse_shared::db::links::{self, CheckRecord, GithubRecord, RefreshRecord, WriteLease};
use producer::schedules::runner;

use crate::app::TestApp;
use crate::helpers::{url_of, wait_for};
use crate::producer_loop::producer_command;

/// One event row as the tests read it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct EventRow {
    link_id: i64,
    seq: i64,
    #[sqlx(rename = "type")]
    kind: String,
    from_status: String,
    to_status: String,
    reason: Option<String>,
    job_id: Option<i64>,
}

async fn events(pool: &PgPool) -> Vec<EventRow> {
    sqlx::query_as(
        "SELECT link_id, seq, type, from_status, to_status, reason, job_id FROM link_events ORDER BY link_id, seq",
    )
    .fetch_all(pool)
    .await
    .expect("events")
}

/// `(outcome, status_code, job_id, duration_ms)` of a link's verdicts, oldest first.
async fn verdicts(pool: &PgPool, link_id: i64) -> Vec<(String, Option<i32>, Option<i64>, Option<f64>)> {
    sqlx::query_as("SELECT outcome, status_code, job_id, duration_ms FROM link_verdicts WHERE link_id = $1 ORDER BY id")
        .bind(link_id)
        .fetch_all(pool)
        .await
        .expect("verdicts")
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await.expect(sql);
    n
}

/// A running `check` job of its own and its lease: writing twice with it is a replay.
async fn running_job(pool: &PgPool) -> WriteLease {
    let (job_id, token, run, attempt): (i64, uuid::Uuid, uuid::Uuid, i32) = sqlx::query_as(
        "INSERT INTO queue_jobs (kind, payload, state, attempts, max_attempts, lease_owner, lease_token, started_at) \
         VALUES ('check', '{}', 'running', 1, 5, gen_random_uuid(), gen_random_uuid(), now()) \
         RETURNING id, lease_token, run_id, attempts",
    )
    .fetch_one(pool)
    .await
    .expect("job");
    WriteLease {
        job_id,
        token,
        run,
        attempt,
    }
}

fn dead() -> CheckRecord {
    CheckRecord {
        outcome: "dead",
        status_code: Some(404),
        error: Some("HTTP 404 Not Found".into()),
        counts_as_failure: true,
        duration_ms: Some(8.0),
    }
}

/// Three 404s in a row: three verdicts and exactly one `link.down` event, written by the job of
/// the third check; a fourth 404 adds a verdict but no event; the recovery is one `link.up`.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn three_404s_make_one_down_event_and_a_recovery_one_up_event(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let id = app.add_links(&[app.url("/toggle")]).await[0];
    app.site.toggle.store(404, Ordering::SeqCst);
    for _ in 0..3 {
        app.cycle_and_work().await;
    }
    let link = app.link(id).await;
    assert_eq!(link.status, "inaccessible");
    let written = events(&app.pool).await;
    assert_eq!(written.len(), 1, "{written:?}");
    let down = &written[0];
    assert_eq!(
        (
            down.link_id,
            down.seq,
            down.kind.as_str(),
            down.from_status.as_str(),
            down.to_status.as_str()
        ),
        (id, 1, "link.down", "active", "inaccessible")
    );
    let third_job = sqlx::query_scalar::<_, Option<i64>>("SELECT last_check_job_id FROM links WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .expect("job");
    assert!(third_job.is_some());
    assert_eq!(
        down.job_id, third_job,
        "the event names the job that made the transition"
    );
    assert!(down.reason.as_deref().unwrap_or("").contains("404"), "{down:?}");
    let kept = verdicts(&app.pool, id).await;
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert!(
        kept.iter().all(|(o, c, _, _)| (o.as_str(), *c) == ("dead", Some(404))),
        "{kept:?}"
    );
    assert!(
        kept.iter().all(|(_, _, _, d)| d.is_some_and(|d| d > 0.0)),
        "timed: {kept:?}"
    );
    let mut jobs: Vec<_> = kept.iter().map(|(_, _, j, _)| *j).collect();
    jobs.dedup();
    assert_eq!(jobs.len(), 3, "one verdict per check job: {kept:?}");

    app.cycle_and_work().await;
    assert_eq!(events(&app.pool).await.len(), 1, "still dead: no new event");
    assert_eq!(verdicts(&app.pool, id).await.len(), 4);

    app.site.toggle.store(200, Ordering::SeqCst);
    app.cycle_and_work().await;
    let written = events(&app.pool).await;
    assert_eq!(written.len(), 2, "{written:?}");
    let up = &written[1];
    assert_eq!(
        (
            up.seq,
            up.kind.as_str(),
            up.from_status.as_str(),
            up.to_status.as_str(),
            up.reason.as_deref()
        ),
        (2, "link.up", "inaccessible", "active", Some("check ok"))
    );
    let (status, seq): (String, i64) = sqlx::query_as("SELECT status, event_seq FROM links WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .expect("link");
    assert_eq!((status.as_str(), seq), ("active", 2));
    let shown = history::for_link(&app.pool, id, 30).await.expect("history");
    assert_eq!(shown.dead_since, None, "alive again");
    assert_eq!(shown.verdicts.len(), 5);
    assert_eq!(shown.ok_share, Some(0.2));
    assert_eq!(shown.last_ok_at, Some(shown.verdicts[0].checked_at));
}

/// A write replayed under the same lease and run (a retry after a commit whose answer was lost)
/// adds neither a verdict nor an event; a result whose lease was taken over adds nothing either.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_replayed_or_fenced_off_write_adds_no_verdict_and_no_event(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let id = app.add_links(&[app.url("/gone")]).await[0];
    let writer = CheckWriter::start(app.pool.clone(), 1);
    let lease = running_job(&app.pool).await;
    assert!(
        writer.record(id, lease, dead()).await.expect("write"),
        "first write applies"
    );
    assert!(
        !writer.record(id, lease, dead()).await.expect("replay"),
        "the replay is not applied"
    );
    assert_eq!(verdicts(&app.pool, id).await.len(), 1);
    assert_eq!(events(&app.pool).await.len(), 1);

    // A stale handler whose lease is no longer the job's current one.
    let stale = running_job(&app.pool).await;
    sqlx::query("UPDATE queue_jobs SET lease_token = gen_random_uuid() WHERE id = $1")
        .bind(stale.job_id)
        .execute(&app.pool)
        .await
        .expect("take over");
    let ok = CheckRecord {
        outcome: "ok",
        status_code: Some(200),
        error: None,
        counts_as_failure: false,
        duration_ms: Some(3.0),
    };
    assert!(!writer.record(id, stale, ok).await.expect("fenced"));
    assert_eq!(verdicts(&app.pool, id).await.len(), 1);
    assert_eq!(events(&app.pool).await.len(), 1);
    assert_eq!(app.link(id).await.status, "inaccessible");
}

/// No transition without its event: while the event cannot be written, the check's whole
/// write-back fails (status, failures and verdict unchanged), the job retries and ends failed;
/// once events can be written again the next check writes the transition and its event.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_transition_whose_event_cannot_be_written_is_not_made(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.settings.failure_threshold = 1;
    let id = app.add_links(&[app.url("/gone")]).await[0];
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_event() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'events refused by the test'; END $$; \
         CREATE TRIGGER refuse_event BEFORE INSERT ON link_events FOR EACH ROW EXECUTE FUNCTION refuse_event();",
    )
    .execute(&app.pool)
    .await
    .expect("trigger");
    app.cycle_and_work().await;
    let link = app.link(id).await;
    assert_eq!(
        (link.status.as_str(), link.consecutive_failures, link.last_checked_at),
        ("active", 0, None),
        "nothing of the check was written"
    );
    assert_eq!(verdicts(&app.pool, id).await.len(), 0);
    assert_eq!(count(&app.pool, "SELECT count(*) FROM link_events").await, 0);
    let (state, errors): (String, String) =
        sqlx::query_as("SELECT state, errors::text FROM queue_jobs WHERE kind = 'check'")
            .fetch_one(&app.pool)
            .await
            .expect("job");
    assert_eq!(state, "failed");
    assert!(errors.contains("events refused by the test"), "{errors}");

    sqlx::raw_sql("DROP TRIGGER refuse_event ON link_events")
        .execute(&app.pool)
        .await
        .expect("drop");
    app.cycle_and_work().await;
    assert_eq!(app.link(id).await.status, "inaccessible");
    assert_eq!(verdicts(&app.pool, id).await.len(), 1);
    let written = events(&app.pool).await;
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!(written[0].kind, "link.down");
}

/// No event without its transition: a link update the database refuses leaves no event and no
/// verdict behind.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn an_event_whose_transition_fails_is_not_written(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let id = app.add_links(&[app.url("/gone")]).await[0];
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_down() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN IF NEW.status <> OLD.status THEN RAISE EXCEPTION 'transition refused by the test'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER refuse_down BEFORE UPDATE ON links FOR EACH ROW EXECUTE FUNCTION refuse_down();",
    )
    .execute(&app.pool)
    .await
    .expect("trigger");
    let writer = CheckWriter::start(app.pool.clone(), 1);
    let lease = running_job(&app.pool).await;
    let refused = writer.record(id, lease, dead()).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(count(&app.pool, "SELECT count(*) FROM link_events").await, 0);
    assert_eq!(count(&app.pool, "SELECT count(*) FROM link_verdicts").await, 0);
    let (status, seq): (String, i64) = sqlx::query_as("SELECT status, event_seq FROM links WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .expect("link");
    assert_eq!((status.as_str(), seq), ("active", 0));
}

/// The refresh's transitions (repository missing, archived, found again) write their events in
/// the same statement, with the job; a replay writes none.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn refresh_transitions_write_their_events_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let id = app.add_links(&["https://github.com/octo/thing".to_owned()]).await[0];
    let missing = RefreshRecord {
        repo_missing: true,
        ..RefreshRecord::default()
    };
    let repo = |archived: bool| RefreshRecord {
        github: Some(GithubRecord {
            owner: "octo".into(),
            repo: "thing".into(),
            stars: 1,
            description: None,
            archived,
            pushed_at: None,
            etag: None,
        }),
        ..RefreshRecord::default()
    };
    let first = running_job(&app.pool).await;
    assert!(
        links::record_refresh(&app.pool, id, first, &missing)
            .await
            .expect("write")
    );
    assert!(
        !links::record_refresh(&app.pool, id, first, &missing)
            .await
            .expect("replay")
    );
    // Still missing: no transition, no event.
    let again = running_job(&app.pool).await;
    assert!(
        links::record_refresh(&app.pool, id, again, &missing)
            .await
            .expect("write")
    );
    let archived = running_job(&app.pool).await;
    assert!(
        links::record_refresh(&app.pool, id, archived, &repo(true))
            .await
            .expect("write")
    );
    let back = running_job(&app.pool).await;
    assert!(
        links::record_refresh(&app.pool, id, back, &repo(false))
            .await
            .expect("write")
    );

    let written: Vec<_> = events(&app.pool)
        .await
        .into_iter()
        .map(|e| (e.seq, e.kind, e.from_status, e.to_status, e.job_id))
        .collect();
    let row = |seq, kind: &str, from: &str, to: &str, job: i64| {
        (seq, kind.to_owned(), from.to_owned(), to.to_owned(), Some(job))
    };
    assert_eq!(
        written,
        [
            row(1, "link.down", "active", "repo_unavailable", first.job_id),
            row(2, "link.changed", "repo_unavailable", "archived", archived.job_id),
            row(3, "link.up", "archived", "active", back.job_id),
        ]
    );
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM link_verdicts").await,
        0,
        "refreshes are not checks"
    );
}

/// Inserts a verdict `minutes_ago` with `outcome`.
async fn verdict_at(pool: &PgPool, link_id: i64, outcome: &str, minutes_ago: i32) {
    sqlx::query(
        "INSERT INTO link_verdicts (link_id, checked_at, outcome, status_code) \
         VALUES ($1, now() - make_interval(mins => $2), $3, 200)",
    )
    .bind(link_id)
    .bind(minutes_ago)
    .bind(outcome)
    .execute(pool)
    .await
    .expect("verdict");
}

/// Inserts an event `minutes_ago`; returns its time.
async fn event_at(pool: &PgPool, link_id: i64, seq: i64, from: &str, to: &str, minutes_ago: i32) -> DateTime<Utc> {
    sqlx::query_scalar(
        "INSERT INTO link_events (link_id, seq, url, type, from_status, to_status, created_at) \
         VALUES ($1, $2, 'https://x.example/', 'link.changed', $3, $4, now() - make_interval(mins => $5)) \
         RETURNING created_at",
    )
    .bind(link_id)
    .bind(seq)
    .bind(from)
    .bind(to)
    .bind(minutes_ago)
    .fetch_one(pool)
    .await
    .expect("event")
}

/// "Dead since" is when the current dead spell began (a dead-to-dead change does not restart
/// it), from the events, else from the first failed verdict after the last ok one (blocked
/// verdicts are neither); the last good check and the share of ok checks come from the verdicts.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn history_tells_dead_since_the_last_good_check_and_the_ok_share(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ids = app.add_links(&[app.url("/a"), app.url("/b")]).await;
    let (id, other) = (ids[0], ids[1]);
    for (outcome, ago) in [("ok", 50), ("ok", 40), ("dead", 30), ("blocked", 25), ("dead", 20)] {
        verdict_at(&app.pool, id, outcome, ago).await;
    }
    event_at(&app.pool, id, 1, "active", "inaccessible", 100).await;
    event_at(&app.pool, id, 2, "inaccessible", "active", 90).await;
    let down = event_at(&app.pool, id, 3, "active", "inaccessible", 20).await;
    event_at(&app.pool, id, 4, "inaccessible", "repo_unavailable", 10).await;
    sqlx::query("UPDATE links SET status = 'repo_unavailable', event_seq = 4 WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .expect("status");

    let h: LinkHistory = history::for_link(&app.pool, id, 3).await.expect("history");
    assert_eq!(h.dead_since, Some(down), "from the event that began the spell");
    assert_eq!(h.ok_share, Some(0.4), "2 ok of 5 kept, whatever the limit");
    let outcomes: Vec<_> = h.verdicts.iter().map(|v| v.outcome.as_str()).collect();
    assert_eq!(outcomes, ["dead", "blocked", "dead"], "the newest 3, newest first");
    let seqs: Vec<_> = h.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [4, 3, 2]);
    let last_ok: DateTime<Utc> =
        sqlx::query_scalar("SELECT max(checked_at) FROM link_verdicts WHERE link_id = $1 AND outcome = 'ok'")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .expect("last ok");
    assert_eq!(h.last_ok_at, Some(last_ok));

    // Without events (a previous release's transitions, or pruned ones): the first failed
    // verdict after the last ok one.
    sqlx::query("DELETE FROM link_events")
        .execute(&app.pool)
        .await
        .expect("delete");
    let h = history::for_link(&app.pool, id, 30).await.expect("history");
    let first_failed = h.verdicts.iter().rfind(|v| v.outcome == "dead").map(|v| v.checked_at);
    assert_eq!(h.dead_since, first_failed);
    assert_eq!(h.verdicts.len(), 5);

    // A live link is not dead since anything; a link checked ok before verdicts were kept has
    // its last good check from the link itself; an unknown link has an empty history.
    let h = history::for_link(&app.pool, other, 30).await.expect("history");
    assert_eq!((h.dead_since, h.last_ok_at, h.ok_share), (None, None, None));
    assert!(h.verdicts.is_empty() && h.events.is_empty());
    let checked: DateTime<Utc> = sqlx::query_scalar(
        "UPDATE links SET last_outcome = 'ok', last_checked_at = now() - interval '1 hour' WHERE id = $1 \
         RETURNING last_checked_at",
    )
    .bind(other)
    .fetch_one(&app.pool)
    .await
    .expect("checked");
    let h = history::for_link(&app.pool, other, 30).await.expect("history");
    assert_eq!(h.last_ok_at, Some(checked));
    let none = history::for_link(&app.pool, i64::MAX, 30).await.expect("history");
    assert_eq!(
        none,
        LinkHistory {
            dead_since: None,
            last_ok_at: None,
            ok_share: None,
            verdicts: Vec::new(),
            events: Vec::new(),
        }
    );
}

/// `links show` prints the history; `--json` keeps every field of the link and adds `history`
/// with at most `LINKPULSE_HISTORY_PER_LINK` verdicts.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn links_show_prints_dead_since_last_ok_and_the_recent_history(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.settings.failure_threshold = 1;
    let id = app.add_links(&[app.url("/toggle")]).await[0];
    app.cycle_and_work().await;
    app.site.toggle.store(404, Ordering::SeqCst);
    app.cycle_and_work().await;
    app.cycle_and_work().await;
    let url = url_of(&app.pool).await;
    let env = [("LINKPULSE_HISTORY_PER_LINK", "2")];
    let output = producer_command(&url, &["links", "show", &id.to_string(), "--json"], &env)
        .output()
        .await
        .expect("links show");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let shown: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    for field in [
        "id",
        "url",
        "status",
        "consecutive_failures",
        "last_status_code",
        "last_error",
        "last_checked_at",
        "refreshed_at",
        "title",
        "description",
        "favicon_url",
        "image_url",
        "github",
    ] {
        assert!(shown.get(field).is_some(), "{field} missing: {shown}");
    }
    assert_eq!(shown["status"], "inaccessible");
    let h = &shown["history"];
    assert_eq!(h["verdicts"].as_array().map(Vec::len), Some(2), "{h}");
    assert_eq!(h["verdicts"][0]["outcome"], "dead");
    assert!((h["ok_share"].as_f64().unwrap_or(0.0) - 1.0 / 3.0).abs() < 1e-9, "{h}");
    assert_eq!(h["events"][0]["type"], "link.down");
    assert_eq!(h["events"][0]["from"], "active");
    assert_eq!(h["events"][0]["to"], "inaccessible");
    assert_eq!(h["dead_since"], h["events"][0]["at"], "{h}");
    assert!(h["last_ok_at"].is_string(), "{h}");

    let output = producer_command(&url, &["links", "show", &id.to_string()], &env)
        .output()
        .await
        .expect("links show");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "dead since: 20",
        "last ok: 20",
        "ok share: 33%",
        "recent checks:",
        "link.down",
        "active -> inaccessible",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
}

/// The prune schedule keeps the newest `LINKPULSE_HISTORY_PER_LINK` verdicts of each link and the
/// events younger than `LINKPULSE_RETAIN_EVENTS`, records the counts, and next time visits only
/// the links checked since (unless the kept number went down).
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn prune_trims_verdicts_per_link_and_events_past_retention(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.settings.history_per_link = 30;
    app.settings.retain_events = Duration::from_secs(180 * 24 * 3600);
    let ids = app.add_links(&[app.url("/a"), app.url("/b"), app.url("/c")]).await;
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    let add_verdicts = |link: i64, n: i32, ago: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO link_verdicts (link_id, checked_at, outcome) \
                 SELECT $1, now() - $3::interval - make_interval(mins => g), CASE WHEN g % 2 = 0 THEN 'ok' ELSE 'dead' END \
                 FROM generate_series(1, $2) g",
            )
            .bind(link)
            .bind(n)
            .bind(ago)
            .execute(&pool)
            .await
            .expect("verdicts");
            sqlx::query("UPDATE links SET last_checked_at = now() - $2::interval WHERE id = $1")
                .bind(link)
                .bind(ago)
                .execute(&pool)
                .await
                .expect("checked");
        }
    };
    add_verdicts(a, 40, "1 day").await;
    add_verdicts(b, 12, "1 day").await;
    add_verdicts(c, 31, "2 days").await;
    sqlx::raw_sql(
        "INSERT INTO link_events (link_id, seq, url, type, from_status, to_status, created_at) \
         SELECT 1, g, 'https://x.example/', 'link.changed', 'active', 'archived', now() - interval '181 days' \
         FROM generate_series(1, 7) g; \
         INSERT INTO link_events (link_id, seq, url, type, from_status, to_status, created_at) \
         SELECT 1, g, 'https://x.example/', 'link.changed', 'active', 'archived', now() - interval '179 days' \
         FROM generate_series(8, 10) g",
    )
    .execute(&app.pool)
    .await
    .expect("events");
    let newest_of_a: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM link_verdicts WHERE link_id = $1 ORDER BY checked_at DESC LIMIT 30")
            .bind(a)
            .fetch_all(&app.pool)
            .await
            .expect("newest");

    let prune = |settings: linkpulse_shared::config::Settings| {
        let pool = app.pool.clone();
        async move {
            let run = runner::run_now(&pool, &settings, "prune", "test").await.expect("prune");
            assert_eq!(run.status, "ok", "{run:?}");
            run.details.expect("details")
        }
    };
    let details = prune(app.settings.clone()).await;
    assert_eq!(details["deleted_verdicts"], 10 + 1, "{details}");
    assert_eq!(details["deleted_events"], 7, "{details}");
    let per_link = |link: i64| count_for(&app.pool, link);
    assert_eq!((per_link(a).await, per_link(b).await, per_link(c).await), (30, 12, 30));
    let kept_of_a: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM link_verdicts WHERE link_id = $1 ORDER BY checked_at DESC")
            .bind(a)
            .fetch_all(&app.pool)
            .await
            .expect("kept");
    assert_eq!(kept_of_a, newest_of_a, "the newest are the ones kept");
    assert_eq!(count(&app.pool, "SELECT count(*) FROM link_events").await, 3);

    // A checked again since: trimmed. C gained verdicts without being checked since the last
    // prune (it cannot in real life): not visited, which shows the pass walks only new checks.
    add_verdicts(a, 5, "1 minute").await;
    sqlx::query(
        "INSERT INTO link_verdicts (link_id, checked_at, outcome) SELECT $1, now() - interval '3 days', 'ok' \
         FROM generate_series(1, 4)",
    )
    .bind(c)
    .execute(&app.pool)
    .await
    .expect("c");
    let details = prune(app.settings.clone()).await;
    assert_eq!(details["deleted_verdicts"], 5, "{details}");
    assert_eq!((per_link(a).await, per_link(c).await), (30, 34));

    // Fewer verdicts kept: every link is trimmed again.
    app.settings.history_per_link = 10;
    let details = prune(app.settings.clone()).await;
    assert_eq!(details["deleted_verdicts"], 20 + 2 + 24, "{details}");
    assert_eq!(details["verdicts_kept"], 10);
    assert_eq!((per_link(a).await, per_link(b).await, per_link(c).await), (10, 10, 10));
}

async fn count_for(pool: &PgPool, link: i64) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM link_verdicts WHERE link_id = $1")
        .bind(link)
        .fetch_one(pool)
        .await
        .expect("count")
}

/// A site whose `/flip/{n}` pages all answer 404 or 200 together, switching every `period`,
/// each answer after `delay` (so checks are in flight when a worker is killed).
async fn flipping_site(period: Duration, delay: Duration) -> String {
    let up = Arc::new(AtomicBool::new(true));
    let flipper = up.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            flipper.fetch_xor(true, Ordering::SeqCst);
        }
    });
    let app = Router::new()
        .route(
            "/{*path}",
            any(
                move |State(up): State<Arc<AtomicBool>>, Path(_): Path<String>| async move {
                    tokio::time::sleep(delay).await;
                    if up.load(Ordering::SeqCst) {
                        StatusCode::OK.into_response()
                    } else {
                        StatusCode::NOT_FOUND.into_response()
                    }
                },
            ),
        )
        .with_state(up);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The production worker binary, failing links at the first dead check.
fn spawn_worker(database_url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_linkpulse-worker"))
        .args(["--concurrency", "32"])
        .env("DATABASE_URL", database_url)
        .env("LINKPULSE_FAILURE_THRESHOLD", "1")
        .env("LINKPULSE_ALLOW_PRIVATE_NETWORKS", "true")
        .env("LINKPULSE_HTTP_TIMEOUT", "5s")
        .env("LINKPULSE_WORKER_ADDR", "127.0.0.1:0")
        .env("LINKPULSE_HOST_CONCURRENCY", "64")
        .env("LINKPULSE_HOST_INTERVAL", "0s")
        .env("LINKPULSE_HEARTBEAT_INTERVAL", "200ms")
        .env("LINKPULSE_RESCUE_AFTER", "1s")
        .env("LINKPULSE_POLL_INTERVAL", "100ms")
        .env("LINKPULSE_RETRY_BASE", "100ms")
        .env("LINKPULSE_RETRY_MAX", "500ms")
        .env("RUST_LOG", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn worker")
}

/// "Kill the worker between": workers SIGKILLed again and again while checks of links going
/// up and down are written. Afterwards every link's status is exactly where its chain of events
/// leads (no transition without its event, no event without its transition), each link's `seq`
/// runs 1, 2, 3… without a gap, every check event has the verdict of its job, and no job wrote
/// two verdicts (a retried write after a kill is a replay).
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn killing_workers_mid_batch_never_splits_a_transition_from_its_event(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.settings.failure_threshold = 1;
    let site = flipping_site(Duration::from_millis(170), Duration::from_millis(15)).await;
    let n = 150;
    app.add_links(&(0..n).map(|i| format!("{site}/flip/{i}")).collect::<Vec<_>>())
        .await;
    let database_url = url_of(&app.pool).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let cycles = {
        let (pool, settings, stop) = (app.pool.clone(), app.settings.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                producer::cycle::run_cycle(&pool, &settings).await.expect("cycle");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut kills_with_work_running = 0;
    // Rounds until enough kills hit running checks and enough transitions happened (a loaded
    // machine needs more of them), within a bound.
    for round in 0..40_u64 {
        if kills_with_work_running >= 8 && count(&app.pool, "SELECT count(*) FROM link_events").await >= 100 {
            break;
        }
        let mut worker = spawn_worker(&database_url);
        tokio::time::sleep(Duration::from_millis(600 + (round * 137) % 500)).await;
        let running = count(&app.pool, "SELECT count(*) FROM queue_jobs WHERE state = 'running'").await;
        if running > 0 {
            kills_with_work_running += 1;
        }
        worker.start_kill().expect("SIGKILL");
        worker.wait().await.expect("reaped");
    }
    stop.cancel();
    cycles.await.expect("cycles");
    // One last worker finishes what the killed ones left (their leases are rescued).
    let mut last = spawn_worker(&database_url);
    wait_for(Duration::from_secs(60), "the queue to drain", || async {
        (count(
            &app.pool,
            "SELECT count(*) FROM queue_jobs WHERE state IN ('queued', 'running')",
        )
        .await
            == 0)
            .then_some(())
    })
    .await;
    last.start_kill().expect("SIGKILL");
    last.wait().await.expect("reaped");

    assert!(
        kills_with_work_running >= 8,
        "premise: workers were killed while checks ran ({kills_with_work_running} times)"
    );
    let all = events(&app.pool).await;
    assert!(all.len() >= 100, "premise: many transitions ({} events)", all.len());
    let mut chains: HashMap<i64, Vec<EventRow>> = HashMap::new();
    for e in all {
        chains.entry(e.link_id).or_default().push(e);
    }
    let statuses: Vec<(i64, String, i64)> = sqlx::query_as("SELECT id, status, event_seq FROM links")
        .fetch_all(&app.pool)
        .await
        .expect("links");
    let jobs_with_verdicts: Vec<(i64, i64, String, i64)> =
        sqlx::query_as("SELECT link_id, job_id, min(outcome), count(*) FROM link_verdicts GROUP BY link_id, job_id")
            .fetch_all(&app.pool)
            .await
            .expect("verdicts");
    let twice: Vec<_> = jobs_with_verdicts.iter().filter(|v| v.3 != 1).collect();
    assert!(twice.is_empty(), "jobs with more than one verdict: {twice:?}");
    let verdict_of: HashMap<(i64, i64), String> = jobs_with_verdicts
        .into_iter()
        .map(|(link, job, outcome, _)| ((link, job), outcome))
        .collect();
    for (id, status, event_seq) in statuses {
        let chain = chains.remove(&id).unwrap_or_default();
        let seqs: Vec<i64> = chain.iter().map(|e| e.seq).collect();
        let expected: Vec<i64> = (1..=i64::try_from(chain.len()).expect("small")).collect();
        assert_eq!(seqs, expected, "link {id}: seq has gaps");
        assert_eq!(event_seq, i64::try_from(chain.len()).expect("small"), "link {id}");
        let mut at = "active".to_owned();
        for e in &chain {
            assert_eq!(
                e.from_status, at,
                "link {id}: event {} does not start where the last ended",
                e.seq
            );
            assert_ne!(e.from_status, e.to_status, "link {id}: an event without a change");
            let job = e.job_id.expect("a check's event names its job");
            let outcome = verdict_of.get(&(id, job)).map(String::as_str);
            let expected = if e.to_status == "active" { "ok" } else { "dead" };
            assert_eq!(
                outcome,
                Some(expected),
                "link {id}: event {} without its check's verdict",
                e.seq
            );
            at.clone_from(&e.to_status);
        }
        assert_eq!(status, at, "link {id}: status not where its events lead");
    }
}

/// Every statement that writes an event types it with `link_event_type`: down into a dead status
/// from a live one, up back to active other than by lifting a pause, changed otherwise.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn event_types_follow_the_transition(pool: PgPool) {
    for (from, to, expected) in [
        ("active", "inaccessible", "link.down"),
        ("active", "repo_unavailable", "link.down"),
        ("archived", "repo_unavailable", "link.down"),
        ("inaccessible", "active", "link.up"),
        ("repo_unavailable", "active", "link.up"),
        ("archived", "active", "link.up"),
        ("paused", "active", "link.changed"),
        ("inaccessible", "repo_unavailable", "link.changed"),
        ("active", "archived", "link.changed"),
        ("active", "paused", "link.changed"),
        ("inaccessible", "paused", "link.changed"),
    ] {
        let (kind,): (String,) = sqlx::query_as("SELECT link_event_type($1, $2)")
            .bind(from)
            .bind(to)
            .fetch_one(&pool)
            .await
            .expect("event type");
        assert_eq!(kind, expected, "{from} -> {to}");
    }
}
