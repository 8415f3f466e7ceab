//! A fair producer: a cycle fills its limit with links that can actually be enqueued, and one
//! host's backlog cannot crowd the other hosts out.

use std::time::Duration;

use sqlx::PgPool;

use linkpulse_shared::db::links;
use linkpulse_shared::link_url::parse_link;
use producer::commands::links::new_link;

use crate::app::TestApp;

/// Adds `n` links on `host`, all due, `age` seconds overdue (older links are more overdue).
async fn add_due_links(pool: &PgPool, host: &str, n: usize, age_secs: i64) {
    let urls: Vec<_> = (0..n)
        .map(|i| new_link(parse_link(&format!("https://{host}/page/{i}")).expect("url")))
        .collect();
    links::insert_many(pool, &urls).await.expect("insert");
    sqlx::query("UPDATE links SET last_checked_at = now() - make_interval(secs => $2) WHERE host = $1")
        .bind(host)
        .bind(age_secs as f64)
        .execute(pool)
        .await
        .expect("age");
}

async fn queued_per_host(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT group_key, count(*) FROM queue_jobs WHERE kind = 'check' AND state IN ('queued', 'running') \
         GROUP BY group_key ORDER BY group_key",
    )
    .fetch_all(pool)
    .await
    .expect("counts")
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn links_already_queued_are_skipped_so_every_cycle_fills_its_limit(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.settings.cycle_limit = 10;
    app.settings.check_after = Duration::from_secs(3600);
    // The reproduction from the issue: 20 links on one host, then 5 on others; no worker runs.
    add_due_links(&app.pool, "slow.example", 20, 7200).await;
    for host in ["b.example", "c.example", "d.example", "e.example", "f.example"] {
        add_due_links(&app.pool, host, 1, 3600 + 60).await;
    }
    let enqueued: Vec<i64> = {
        let mut counts = Vec::new();
        for _ in 0..3 {
            counts.push(app.run_cycle().await.check.enqueued);
        }
        counts
    };
    assert_eq!(enqueued, vec![10, 10, 5], "each cycle enqueues what can be enqueued");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_slow_hosts_backlog_delays_other_hosts_by_at_most_two_cycles(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.settings.cycle_limit = 40;
    app.settings.check_after = Duration::from_secs(3600);
    app.settings.queue.host_concurrency = 2;
    // A big import from one slow host, all more overdue than anything else...
    add_due_links(&app.pool, "slow.example", 2000, 86_400).await;
    // ...then the rest of the collection comes due, spread over other hosts.
    let others: Vec<String> = (0..30).map(|i| format!("site{i}.example")).collect();
    for host in &others {
        add_due_links(&app.pool, host, 1, 3600 + 60).await;
    }
    // Nothing drains the slow host's jobs (no worker runs): its backlog only grows.
    app.run_cycle().await;
    app.run_cycle().await;
    let queued = queued_per_host(&app.pool).await;
    for host in &others {
        let n = queued.iter().find(|(h, _)| h == host).map_or(0, |(_, n)| *n);
        assert_eq!(n, 1, "{host} waited more than two cycles: {queued:?}");
    }
    // The slow host got the first cycle (its links are the most overdue); with its share waiting
    // it got nothing more in the second.
    let slow = queued.iter().find(|(h, _)| h == "slow.example").map_or(0, |(_, n)| *n);
    assert!(
        producer::cycle::host_share(&app.settings) <= 40,
        "premise: the share is reached in one cycle"
    );
    assert_eq!(slow, 40, "{queued:?}");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn within_one_cycle_hosts_take_turns(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.settings.cycle_limit = 12;
    app.settings.check_after = Duration::from_secs(3600);
    // Three hosts with 10 due links each, host a's all older than the others'.
    add_due_links(&app.pool, "a.example", 10, 9000).await;
    add_due_links(&app.pool, "b.example", 10, 8000).await;
    add_due_links(&app.pool, "c.example", 10, 7000).await;
    assert_eq!(app.run_cycle().await.check.enqueued, 12);
    let queued = queued_per_host(&app.pool).await;
    assert_eq!(
        queued,
        vec![
            ("a.example".to_owned(), 4),
            ("b.example".to_owned(), 4),
            ("c.example".to_owned(), 4)
        ]
    );
}
