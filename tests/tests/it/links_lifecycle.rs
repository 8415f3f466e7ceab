//! The link lifecycle: paused links are never scheduled nor counted, a removed link's running
//! job writes nothing, a check-now runs ahead of scheduled work, a new link gets its first check
//! and refresh at once, an inaccessible link is not refreshed; and the `links` commands answer like
//! the API.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use linkpulse_shared::db::links::{self, LinkRef};

use crate::app::TestApp;
use crate::helpers::wait_for;
use crate::links_api::{ADMIN, api, bulk_links, events, ids, jobs_of, scalar};

/// The id of the saved link with this (normalised) URL.
async fn link_id(app: &TestApp, url: &str) -> i64 {
    links::find(&app.pool, &LinkRef::Url(url.to_owned()))
        .await
        .expect("find")
        .expect("link exists")
        .id
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_running_job_of_a_removed_link_finishes_and_writes_nothing(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    // `/slow` answers after 3 s: long enough to delete the link while its check runs.
    app.settings.fetch.timeout = Duration::from_secs(10);
    let (api, _stop) = api(&app).await;
    let stop = CancellationToken::new();
    let worker = tokio::spawn(worker::app::run(app.settings.clone(), 4, stop.clone()));
    let id = api
        .call(
            Method::POST,
            "/api/links",
            Some(ADMIN),
            Some(&json!({"urls": [app.url("/slow")]})),
        )
        .await
        .json()["results"][0]["id"]
        .as_i64()
        .expect("id");
    wait_for(Duration::from_secs(20), "the link's check to run", || async {
        let running = scalar(
            &app.pool,
            &format!("SELECT count(*) FROM queue_jobs WHERE dedupe_key = 'link:{id}' AND kind = 'check' AND state = 'running'"),
        )
        .await;
        (running == 1).then_some(())
    })
    .await;
    let answer = api
        .call(Method::DELETE, &format!("/api/links/{id}"), Some(ADMIN), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    wait_for(Duration::from_secs(30), "the running jobs to finish", || async {
        let open = scalar(
            &app.pool,
            &format!(
                "SELECT count(*) FROM queue_jobs WHERE dedupe_key = 'link:{id}' AND state IN ('queued', 'running')"
            ),
        )
        .await;
        (open == 0).then_some(())
    })
    .await;
    stop.cancel();
    worker.await.expect("worker task").expect("worker ran");
    let (state,): (String,) = sqlx::query_as("SELECT state FROM queue_jobs WHERE dedupe_key = $1 AND kind = 'check'")
        .bind(format!("link:{id}"))
        .fetch_one(&app.pool)
        .await
        .expect("check job");
    assert_eq!(state, "done", "the write-back found no row, which is no error");
    assert_eq!(
        scalar(&app.pool, "SELECT count(*) FROM links").await,
        0,
        "nothing came back"
    );
    assert_eq!(scalar(&app.pool, "SELECT count(*) FROM link_verdicts").await, 0);
    assert!(app.site.hits("/slow") >= 1, "premise: the check did fetch");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn check_now_is_claimed_ahead_of_a_scheduled_backlog(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    bulk_links(&app.pool, 200, 20).await;
    let report = app.run_cycle().await;
    assert_eq!(report.check.enqueued, 200, "premise: a scheduled backlog");
    let urgent = app.add_links(&[app.url("/ok")]).await[0];
    let (api, _stop) = api(&app).await;

    let answer = api
        .call(Method::POST, &format!("/api/links/{urgent}/check"), Some(ADMIN), None)
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(answer.json()["enqueued"], true);
    let job_id = answer.json()["job_id"].as_i64().expect("job id");
    // Asked again while it waits: deduplicated, that job is the answer.
    let again = api
        .call(Method::POST, &format!("/api/links/{urgent}/check"), Some(ADMIN), None)
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json(), json!({"enqueued": false, "job_id": job_id}));
    // A link with a scheduled check waiting gets that one as the answer.
    let (scheduled_job, scheduled_link): (i64, String) =
        sqlx::query_as("SELECT id, dedupe_key FROM queue_jobs WHERE priority = 0 ORDER BY id LIMIT 1")
            .fetch_one(&app.pool)
            .await
            .expect("scheduled");
    let scheduled_link = scheduled_link.trim_start_matches("link:");
    let answer = api
        .call(
            Method::POST,
            &format!("/api/links/{scheduled_link}/check"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(answer.json(), json!({"enqueued": false, "job_id": scheduled_job}));

    // The first claim takes it, ahead of the 200 enqueued before it.
    let owner = uuid::Uuid::new_v4();
    linkpulse_queue::registry::register(&app.pool, owner, "test")
        .await
        .expect("register");
    let claimed = linkpulse_queue::claim::claim_batch(&app.pool, owner, &["check"], 1, 100)
        .await
        .expect("claim");
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), [job_id]);
    // Running: still the answer, still no second job.
    let answer = api
        .call(Method::POST, &format!("/api/links/{urgent}/check"), Some(ADMIN), None)
        .await;
    assert_eq!(answer.json(), json!({"enqueued": false, "job_id": job_id}));

    // A refresh now is its own kind.
    let answer = api
        .call(Method::POST, &format!("/api/links/{urgent}/refresh"), Some(ADMIN), None)
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let refresh_id = answer.json()["job_id"].as_i64().expect("job id");
    let (kind, priority): (String, i16) = sqlx::query_as("SELECT kind, priority FROM queue_jobs WHERE id = $1")
        .bind(refresh_id)
        .fetch_one(&app.pool)
        .await
        .expect("refresh job");
    assert_eq!((kind.as_str(), priority), ("refresh", -10));

    // Refused: no token, unknown link, paused link (never fetched until resumed).
    assert_eq!(
        api.call(Method::POST, &format!("/api/links/{urgent}/check"), None, None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.call(Method::POST, "/api/links/999999/check", Some(ADMIN), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    api.call(
        Method::PATCH,
        &format!("/api/links/{urgent}"),
        Some(ADMIN),
        Some(&json!({"status": "paused"})),
    )
    .await;
    let answer = api
        .call(Method::POST, &format!("/api/links/{urgent}/refresh"), Some(ADMIN), None)
        .await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert!(answer.json()["error"].as_str().expect("error").contains("paused"));

    // The command line answers the same shape.
    let mut out = Vec::new();
    producer::commands::links::enqueue(&app.pool, scheduled_link, "check", 5, true, &mut out)
        .await
        .expect("check");
    let cli: Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(cli, json!({"enqueued": false, "job_id": scheduled_job}));
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_paused_link_gets_no_job_from_three_cycles_until_resumed(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.settings.refresh_enabled = true;
    app.settings.refresh_after = Duration::ZERO;
    let ids = app.add_links(&[app.url("/ok"), app.url("/p/1")]).await;
    let (paused, other) = (ids[0], ids[1]);
    let (api, _stop) = api(&app).await;
    let answer = api
        .call(
            Method::PATCH,
            &format!("/api/links/{paused}"),
            Some(ADMIN),
            Some(&json!({"status": "paused"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    for _ in 0..3 {
        app.cycle_and_work().await;
    }
    assert!(
        jobs_of(&app.pool, paused).await.is_empty(),
        "{:?}",
        jobs_of(&app.pool, paused).await
    );
    let others = jobs_of(&app.pool, other).await;
    assert_eq!(others.iter().filter(|j| j.0 == "check").count(), 3, "{others:?}");
    assert_eq!(others.iter().filter(|j| j.0 == "refresh").count(), 3, "{others:?}");
    assert_eq!(app.link(paused).await.status, "paused");

    api.call(
        Method::PATCH,
        &format!("/api/links/{paused}"),
        Some(ADMIN),
        Some(&json!({"status": "active"})),
    )
    .await;
    let report = app.run_cycle().await;
    assert_eq!((report.check.enqueued, report.refresh.enqueued), (2, 2));
    assert_eq!(jobs_of(&app.pool, paused).await.len(), 2);
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_check_result_for_a_paused_link_keeps_it_paused_and_uncounted(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.settings.failure_threshold = 1;
    let id = app.add_links(&[app.url("/gone")]).await[0];
    let (api, _stop) = api(&app).await;
    // The check is queued, then the link is paused: the check still runs and is written.
    let answer = api
        .call(Method::POST, &format!("/api/links/{id}/check"), Some(ADMIN), None)
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    api.call(
        Method::PATCH,
        &format!("/api/links/{id}"),
        Some(ADMIN),
        Some(&json!({"status": "paused"})),
    )
    .await;
    app.run_until_idle(1, 4, Duration::from_secs(30)).await;
    let link = app.link(id).await;
    assert_eq!(
        link.last_outcome.as_deref(),
        Some("dead"),
        "premise: the 404 was written back"
    );
    assert_eq!(link.status, "paused", "a late result never unpauses");
    assert_eq!(link.consecutive_failures, 0, "nor counts");
    let kinds: Vec<String> = events(&app.pool, id).await.into_iter().map(|e| e.1).collect();
    assert_eq!(kinds, ["link.changed"], "only the pause");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_new_link_is_titled_within_seconds_by_a_running_worker(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (api, _stop) = api(&app).await;
    let stop = CancellationToken::new();
    let worker = tokio::spawn(worker::app::run(app.settings.clone(), 4, stop.clone()));
    // Let the worker settle into its idle wait: the new jobs must wake it, not its first poll.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = tokio::time::Instant::now();
    let answer = api
        .call(
            Method::POST,
            "/api/links",
            Some(ADMIN),
            Some(&json!({"urls": [app.url("/page")]})),
        )
        .await;
    let id = answer.json()["results"][0]["id"].as_i64().expect("id");
    wait_for(Duration::from_secs(5), "the new link's title", || async {
        (app.link(id).await.title.as_deref() == Some("Fixture & Friends")).then_some(())
    })
    .await;
    let took = started.elapsed();
    stop.cancel();
    worker.await.expect("worker task").expect("worker ran");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(app.link(id).await.last_checked_at.is_some(), "its check ran too");
    assert_eq!(
        scalar(&app.pool, "SELECT count(*) FROM schedule_runs").await,
        0,
        "no cycle was involved"
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn an_inaccessible_link_gets_no_refresh_until_it_recovers(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.settings.refresh_enabled = true;
    app.settings.refresh_after = Duration::ZERO;
    let ids = app
        .add_links(&[app.url("/ok"), app.url("/gone"), app.url("/p/1")])
        .await;
    let (up, dead, paused) = (ids[0], ids[1], ids[2]);
    sqlx::query("UPDATE links SET status = CASE id WHEN $1 THEN 'inaccessible' ELSE 'paused' END WHERE id IN ($1, $2)")
        .bind(dead)
        .bind(paused)
        .execute(&app.pool)
        .await
        .expect("statuses");
    let report = app.run_cycle().await;
    assert_eq!((report.check.enqueued, report.refresh.enqueued), (2, 1));
    assert_eq!(jobs_of(&app.pool, up).await.len(), 2);
    assert_eq!(
        jobs_of(&app.pool, dead).await,
        [("check".into(), "queued".into(), 0)],
        "checked, not refreshed"
    );
    assert!(jobs_of(&app.pool, paused).await.is_empty());

    sqlx::query("UPDATE links SET status = 'active' WHERE id = $1")
        .bind(dead)
        .execute(&app.pool)
        .await
        .expect("recovered");
    let report = app.run_cycle().await;
    assert_eq!(report.refresh.enqueued, 1, "its refresh is due again");
    assert!(jobs_of(&app.pool, dead).await.iter().any(|j| j.0 == "refresh"));
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn the_links_commands_speak_json_like_the_api(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let url = crate::helpers::url_of(&app.pool).await;
    let run = |args: Vec<String>| {
        let url = url.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let output = crate::producer_loop::producer_command(&url, &args, &[])
                .output()
                .await
                .expect("producer");
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
    };
    let (code, out, err) = run(vec!["links".into(), "add".into(), app.url("/ok"), "--json".into()]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("JSON")["added"],
        json!([app.url("/ok")])
    );
    let id = link_id(&app, &app.url("/ok")).await;
    assert_eq!(
        jobs_of(&app.pool, id).await.len(),
        2,
        "added with its first check and refresh"
    );

    let (code, out, err) = run(vec![
        "links".into(),
        "pause".into(),
        id.to_string(),
        "--reason".into(),
        "later".into(),
        "--json".into(),
    ])
    .await;
    assert_eq!(code, Some(0), "{err}");
    let link: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (link["status"].as_str(), link["id"].as_i64()),
        (Some("paused"), Some(id))
    );
    assert!(link["status_reason"].as_str().expect("reason").ends_with(": later"));
    let (code, _, err) = run(vec!["links".into(), "check".into(), id.to_string()]).await;
    assert_eq!(code, Some(1), "a paused link is not checked");
    assert!(err.contains("paused"), "{err}");
    let (code, out, _) = run(vec!["links".into(), "resume".into(), app.url("/ok"), "--json".into()]).await;
    assert_eq!(code, Some(0));
    assert_eq!(serde_json::from_str::<Value>(&out).expect("JSON")["status"], "active");
    let (code, out, _) = run(vec!["links".into(), "refresh".into(), id.to_string(), "--json".into()]).await;
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("JSON")["enqueued"],
        false,
        "its first refresh still waits"
    );
    let (code, out, _) = run(vec![
        "links".into(),
        "list".into(),
        "--status".into(),
        "active".into(),
        "--q".into(),
        "OK".into(),
        "--json".into(),
    ])
    .await;
    assert_eq!(code, Some(0));
    assert_eq!(ids(&serde_json::from_str(&out).expect("JSON")), [id]);
    let (code, out, _) = run(vec!["links".into(), "remove".into(), id.to_string(), "--json".into()]).await;
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("JSON"),
        json!({"id": id, "url": app.url("/ok"), "removed": true, "cancelled_jobs": 2})
    );
    let (code, _, err) = run(vec!["links".into(), "remove".into(), id.to_string()]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("no link {id}")), "{err}");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_url_an_exclude_rule_matches_is_accepted_paused_and_gets_no_job(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    let rules = linkpulse_shared::rules::Rules::parse("[[exclude]]\npattern = '/p/'\n").expect("rules");
    app.settings.rules = std::sync::Arc::new(rules);
    let (api, _stop) = api(&app).await;
    let body = json!({"urls": [app.url("/p/1"), app.url("/ok")]});
    let answer = api.call(Method::POST, "/api/links", Some(ADMIN), Some(&body)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let results = answer.json()["results"].clone();
    assert_eq!(
        (results[0]["result"].as_str(), results[1]["result"].as_str()),
        (Some("accepted"), Some("accepted"))
    );
    let excluded = results[0]["id"].as_i64().expect("id");
    let link = app.link(excluded).await;
    assert_eq!(link.status, "paused");
    assert_eq!(link.status_reason.as_deref(), Some("excluded by rule \"/p/\""));
    assert!(jobs_of(&app.pool, excluded).await.is_empty(), "never fetched");
    assert_eq!(
        jobs_of(&app.pool, results[1]["id"].as_i64().expect("id")).await.len(),
        2
    );
}
