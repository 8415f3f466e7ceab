//! Host cool-downs across workers: one worker's 429 holds back every worker's jobs of that host.

use std::time::Duration;

use sqlx::PgPool;
use tokio::time::Instant;

use linkpulse_shared::politeness::Cooldowns;

const REFRESH: Duration = Duration::from_millis(200);

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_cooldown_started_by_one_worker_reaches_the_others_within_the_refresh(pool: PgPool) {
    let a = Cooldowns::new(pool.clone(), REFRESH);
    let b = Cooldowns::new(pool.clone(), REFRESH);
    assert_eq!(
        b.remaining("busy.test").await.expect("lookup"),
        None,
        "nothing cools down yet"
    );

    a.start("busy.test", Duration::from_secs(30), "HTTP 429")
        .await
        .expect("start");
    let (left, reason) = a
        .remaining("busy.test")
        .await
        .expect("lookup")
        .expect("own cool-down at once");
    assert!(left > Duration::from_secs(29), "{left:?}");
    assert_eq!(reason, "HTTP 429");

    // The other worker read its snapshot before the 429; it sees it once the snapshot is stale.
    tokio::time::sleep(REFRESH + Duration::from_millis(50)).await;
    let (left, reason) = b
        .remaining("busy.test")
        .await
        .expect("lookup")
        .expect("seen by the other worker");
    assert!(
        left > Duration::from_secs(28) && left <= Duration::from_secs(30),
        "{left:?}"
    );
    assert_eq!(reason, "HTTP 429");
    assert_eq!(
        b.remaining("calm.test").await.expect("lookup"),
        None,
        "other hosts are not held"
    );

    // A shorter cool-down never shortens a running one, in the database or locally.
    a.start("busy.test", Duration::from_secs(1), "short")
        .await
        .expect("start");
    let (left, _) = a.remaining("busy.test").await.expect("lookup").expect("still cooling");
    assert!(left > Duration::from_secs(28), "{left:?}");
    let fresh = Cooldowns::new(pool.clone(), REFRESH);
    let (left, _) = fresh.remaining("busy.test").await.expect("lookup").expect("stored");
    assert!(left > Duration::from_secs(28), "{left:?}");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_cooldown_holds_until_just_before_its_end_and_ends_on_time(pool: PgPool) {
    let length = Duration::from_secs(3);
    let a = Cooldowns::new(pool.clone(), REFRESH);
    let started = Instant::now();
    a.start("brief.test", length, "Retry-After: 3").await.expect("start");
    assert!(a.remaining("brief.test").await.expect("lookup").is_some());

    // A quarter of it left: still on, for this worker and for one that reads the table afresh,
    // and no longer than what is left.
    tokio::time::sleep_until(started + length * 3 / 4).await;
    let fresh = Cooldowns::new(pool.clone(), REFRESH);
    for (who, view) in [("own view", &a), ("fresh view", &fresh)] {
        let (left, reason) = view
            .remaining("brief.test")
            .await
            .expect("lookup")
            .unwrap_or_else(|| panic!("{who}: the cool-down ended early"));
        let most = (started + length).saturating_duration_since(Instant::now()) + Duration::from_millis(100);
        assert!(left <= most, "{who}: {left:?} left, at most {most:?} expected");
        assert_eq!(reason, "Retry-After: 3");
    }

    tokio::time::sleep_until(started + length + Duration::from_millis(100)).await;
    assert_eq!(a.remaining("brief.test").await.expect("lookup"), None);
    let other = Cooldowns::new(pool, REFRESH);
    assert_eq!(other.remaining("brief.test").await.expect("lookup"), None);
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_cooldown_view_without_its_database_says_so(pool: PgPool) {
    let view = Cooldowns::new(pool.clone(), REFRESH);
    pool.close().await;
    // Not "no cool-down": the handler retries the job rather than hammering a host it cannot
    // tell is cooling down.
    assert!(view.remaining("any.test").await.is_err());
    assert!(
        view.start("any.test", Duration::from_secs(5), "HTTP 429")
            .await
            .is_err()
    );
}

/// Lookups between refreshes are answered from the snapshot (one query per refresh, not per job),
/// and a refresh that does not see a cool-down this worker started keeps it: the row may have been
/// written after the refresh query read the table.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn lookups_use_the_snapshot_and_a_refresh_keeps_local_cooldowns(pool: PgPool) {
    let view = Cooldowns::new(pool.clone(), REFRESH);
    assert_eq!(view.remaining("cached.test").await.expect("lookup"), None);
    sqlx::query("INSERT INTO host_cooldowns (host, until, reason) VALUES ('cached.test', now() + interval '30 seconds', 'HTTP 429')")
        .execute(&pool)
        .await
        .expect("insert a cool-down behind the view's back");
    assert_eq!(
        view.remaining("cached.test").await.expect("lookup"),
        None,
        "the snapshot is fresh: no query"
    );
    tokio::time::sleep(REFRESH + Duration::from_millis(50)).await;
    assert!(
        view.remaining("cached.test").await.expect("lookup").is_some(),
        "re-read once stale"
    );

    view.start("local.test", Duration::from_secs(30), "HTTP 429")
        .await
        .expect("start");
    // As if the refresh query had run before the row was written.
    sqlx::query("DELETE FROM host_cooldowns WHERE host = 'local.test'")
        .execute(&pool)
        .await
        .expect("delete");
    tokio::time::sleep(REFRESH + Duration::from_millis(50)).await;
    let (left, reason) = view
        .remaining("local.test")
        .await
        .expect("lookup")
        .expect("the local cool-down survives the refresh");
    assert!(left > Duration::from_secs(28), "{left:?}");
    assert_eq!(reason, "HTTP 429");
}
