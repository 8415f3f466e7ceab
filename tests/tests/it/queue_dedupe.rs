//! Inserts: deduplicated among unfinished jobs, also under concurrent bulk inserts.

use integration_tests::{TEST_KIND, TestJob};
use linkpulse_queue::{JobArgs, NewJob, insert_many};
use sqlx::PgPool;

fn keyed(keys: impl Iterator<Item = usize>) -> Vec<NewJob> {
    let payload = TestJob::default().encode().expect("encode");
    keys.map(|k| NewJob::new(TEST_KIND, payload.clone(), 3).dedupe_key(format!("link-{k}")))
        .collect()
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn concurrent_bulk_inserts_of_the_same_keys_insert_each_once(pool: PgPool) {
    let n = 5000;
    // Opposite orders: without sorted inserts these two would deadlock.
    let forward = keyed(0..n);
    let backward = keyed((0..n).rev());
    let (a, b) = tokio::join!(insert_many(&pool, &forward), insert_many(&pool, &backward));
    let (a, b) = (a.expect("insert a"), b.expect("insert b"));
    assert_eq!(a.inserted + b.inserted, n as u64);
    assert_eq!(a.skipped + b.skipped, n as u64);
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_jobs")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(rows, n as i64);
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn duplicates_within_one_batch_are_skipped_not_an_error(pool: PgPool) {
    let report = insert_many(&pool, &keyed([1, 2, 1, 3, 2].into_iter()))
        .await
        .expect("insert");
    assert_eq!((report.inserted, report.skipped), (3, 2));
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_finished_job_does_not_block_a_new_one_with_its_key(pool: PgPool) {
    insert_many(&pool, &keyed(0..2)).await.expect("insert");
    sqlx::query("UPDATE queue_jobs SET state = 'done', finished_at = now() WHERE dedupe_key = 'link-0'")
        .execute(&pool)
        .await
        .expect("finish");
    let report = insert_many(&pool, &keyed(0..2)).await.expect("insert again");
    assert_eq!(
        (report.inserted, report.skipped),
        (1, 1),
        "done key reinserted, queued key skipped"
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn insert_inside_a_rolled_back_transaction_leaves_nothing(pool: PgPool) {
    let mut tx = pool.begin().await.expect("begin");
    let report = insert_many(&mut *tx, &keyed(0..10)).await.expect("insert");
    assert_eq!(report.inserted, 10);
    tx.rollback().await.expect("rollback");
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM queue_jobs")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(rows, 0);
}

/// The producer's set-based cycle spells a link job's dedupe key and payload in SQL
/// (`link_dedupe_key_sql!`, `link_payload_sql!`); the worker reads them through the Rust forms.
/// Both must agree, or a cycle's job would not dedupe against a job enqueued from Rust (`check now`)
/// and would not decode.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn the_cycles_sql_key_and_payload_are_the_rust_ones(pool: PgPool) {
    use linkpulse_shared::link_jobs::{CHECK, CheckLink, LinkJob, dedupe_key};

    let app = crate::app::TestApp::spawn(pool).await;
    let ids = app.add_links(&[app.url("/ok")]).await;
    assert_eq!(app.run_cycle().await.check.enqueued, 1);
    let (key, payload): (String, serde_json::Value) =
        sqlx::query_as("SELECT dedupe_key, payload FROM queue_jobs WHERE kind = 'check'")
            .fetch_one(&app.pool)
            .await
            .expect("the cycle's job");
    assert_eq!(key, dedupe_key(ids[0]));
    let decoded = LinkJob::decode(CHECK, payload).expect("the worker decodes the cycle's payload");
    assert_eq!(
        decoded,
        LinkJob::Check(CheckLink {
            link_id: ids[0],
            url: app.url("/ok"),
        })
    );
}
