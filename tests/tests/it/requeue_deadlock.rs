//! Requeue and the producer's cycle write the same dedupe keys: an operator requeueing done jobs
//! while the leader cycles over the same links must never deadlock either of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::time::Instant;

use linkpulse_queue::{JobFilter, JobState, inspect};

use crate::app::TestApp;

/// Links the cycles and requeues fight over: enough that every statement holds many keys.
const LINKS: usize = 400;
/// How long the storm lasts.
const STORM: Duration = Duration::from_secs(4);

/// Marks queued jobs done in id order, as workers finishing them would (the link ids of the jobs
/// a cycle inserts, so the next cycle and the requeues have keys to fight over again).
async fn finish_queued(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE queue_jobs SET state = 'done', finished_at = now() WHERE id IN ( \
         SELECT id FROM queue_jobs WHERE state = 'queued' ORDER BY id FOR UPDATE SKIP LOCKED)",
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Two cycles, two requeues (one per kind and one of both) and a finisher run back to back for a
/// few seconds over the same 400 links, each kind's keys taken by several statements at once. No
/// statement fails, and both sides did real work (the premise: they did overlap).
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn concurrent_requeues_and_cycles_over_the_same_links_never_fail(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.settings.refresh_enabled = true;
    app.settings.refresh_after = Duration::ZERO;
    let urls: Vec<String> = (0..LINKS).map(|i| app.url(&format!("/p/{i}"))).collect();
    app.add_links(&urls).await;
    let app = Arc::new(app);
    // A first round of finished jobs for the requeues to start from.
    let first = app.run_cycle().await;
    assert_eq!(
        first.check.enqueued,
        i64::try_from(LINKS).expect("fits"),
        "premise: every link is due"
    );
    finish_queued(&app.pool).await.expect("finish");

    let enqueued = Arc::new(AtomicI64::new(0));
    let requeued = Arc::new(AtomicI64::new(0));
    let until = Instant::now() + STORM;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let (app, enqueued) = (app.clone(), enqueued.clone());
        tasks.spawn(async move {
            while Instant::now() < until {
                let report = producer::cycle::run_cycle(&app.pool, &app.settings)
                    .await
                    .map_err(|e| format!("cycle: {e:?}"))?;
                enqueued.fetch_add(report.check.enqueued + report.refresh.enqueued, Ordering::Relaxed);
            }
            Ok::<(), String>(())
        });
    }
    for kind in [Some("check"), Some("refresh"), None] {
        let (app, requeued) = (app.clone(), requeued.clone());
        tasks.spawn(async move {
            let filter = JobFilter {
                kind: kind.map(str::to_owned),
                ..JobFilter::default()
            };
            while Instant::now() < until {
                let report = inspect::requeue(&app.pool, JobState::Done, &filter)
                    .await
                    .map_err(|e| format!("requeue {kind:?}: {e:?}"))?;
                requeued.fetch_add(i64::try_from(report.requeued).unwrap_or(i64::MAX), Ordering::Relaxed);
            }
            Ok(())
        });
    }
    {
        let app = app.clone();
        tasks.spawn(async move {
            while Instant::now() < until {
                finish_queued(&app.pool).await.map_err(|e| format!("finish: {e:?}"))?;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(())
        });
    }
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Err(failure) = joined.expect("task panicked") {
            failures.push(failure);
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let (enqueued, requeued) = (enqueued.load(Ordering::Relaxed), requeued.load(Ordering::Relaxed));
    assert!(
        enqueued > i64::try_from(LINKS).expect("fits") && requeued > i64::try_from(LINKS / 4).expect("fits"),
        "premise: both sides kept writing keys ({enqueued} enqueued, {requeued} requeued)"
    );
}
