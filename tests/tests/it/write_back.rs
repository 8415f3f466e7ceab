//! Batched check write-backs: the same rules as one statement per result, at any concurrency.

use sqlx::PgPool;

use linkpulse_shared::db::check_writer::CheckWriter;
use linkpulse_shared::db::links::{self, CheckRecord, Link, LinkRef, WriteLease};
use linkpulse_shared::link_url::parse_link;
use producer::commands::links::new_link;

const THRESHOLD: i32 = 3;

async fn add_links(pool: &PgPool, n: usize) -> Vec<i64> {
    let urls: Vec<_> = (0..n)
        .map(|i| parse_link(&format!("https://site{i}.example/page")).expect("url"))
        .collect();
    let new: Vec<_> = urls.iter().cloned().map(new_link).collect();
    links::insert_many(pool, &new).await.expect("insert");
    let mut ids = Vec::new();
    for url in urls {
        ids.push(link(pool, LinkRef::Url(url.url.to_string())).await.id);
    }
    ids
}

async fn link(pool: &PgPool, by: LinkRef) -> Link {
    links::find(pool, &by).await.expect("find").expect("link exists")
}

/// The lease of running job number `key` (a `check` job created for it on first use): the same
/// key gives the same lease, so writing twice with it is a replay.
async fn lease(pool: &PgPool, key: i64) -> WriteLease {
    let dedupe = format!("wb:{key}");
    let found: Option<(i64, uuid::Uuid, uuid::Uuid, i32)> =
        sqlx::query_as("SELECT id, lease_token, run_id, attempts FROM queue_jobs WHERE dedupe_key = $1")
            .bind(&dedupe)
            .fetch_optional(pool)
            .await
            .expect("find job");
    let (job_id, token, run, attempt) = match found {
        Some(row) => row,
        None => sqlx::query_as(
            "INSERT INTO queue_jobs (kind, dedupe_key, payload, state, attempts, max_attempts, lease_owner, \
             lease_token, started_at) \
             VALUES ('check', $1, '{}', 'running', 1, 5, gen_random_uuid(), gen_random_uuid(), now()) \
             RETURNING id, lease_token, run_id, attempts",
        )
        .bind(&dedupe)
        .fetch_one(pool)
        .await
        .expect("insert job"),
    };
    WriteLease {
        job_id,
        token,
        run,
        attempt,
    }
}

/// The next attempt of the same run (a retry): a new lease token, the same run.
async fn next_attempt(pool: &PgPool, lease: WriteLease) -> WriteLease {
    let (token, attempt): (uuid::Uuid, i32) = sqlx::query_as(
        "UPDATE queue_jobs SET lease_token = gen_random_uuid(), attempts = attempts + 1 WHERE id = $1 \
         RETURNING lease_token, attempts",
    )
    .bind(lease.job_id)
    .fetch_one(pool)
    .await
    .expect("next attempt");
    WriteLease {
        token,
        attempt,
        ..lease
    }
}

fn result(outcome: &'static str, status: u16) -> CheckRecord {
    CheckRecord {
        outcome,
        status_code: Some(status),
        error: (outcome != "ok").then(|| format!("HTTP {status}")),
        counts_as_failure: matches!(outcome, "dead" | "transient"),
        duration_ms: Some(12.5),
    }
}

/// Writes `record_of(i)` for the i-th link as job `first_job + i`, all at once; answers in order.
async fn write_all(
    pool: &PgPool,
    writer: &CheckWriter,
    ids: &[i64],
    first_job: i64,
    record_of: impl Fn(usize) -> CheckRecord,
) -> Vec<Result<bool, linkpulse_shared::db::check_writer::WriteError>> {
    let mut leases = Vec::new();
    for i in 0..ids.len() {
        leases.push(lease(pool, first_job + i64::try_from(i).expect("small")).await);
    }
    let tasks: Vec<_> = ids
        .iter()
        .zip(leases)
        .enumerate()
        .map(|(i, (&link_id, lease))| {
            let writer = writer.clone();
            let record = record_of(i);
            tokio::spawn(async move { writer.record(link_id, lease, record).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    answers
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn hundreds_of_concurrent_results_are_each_written_once(pool: PgPool) {
    let ids = add_links(&pool, 300).await;
    let writer = CheckWriter::start(pool.clone(), THRESHOLD);
    let answers = write_all(&pool, &writer, &ids, 1000, |i| {
        if i % 3 == 0 {
            result("dead", 404)
        } else {
            result("ok", 200)
        }
    })
    .await;
    for answer in answers {
        assert!(answer.expect("written"));
    }
    let (ok, dead, failures): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE last_outcome = 'ok' AND last_status_code = 200),
                count(*) FILTER (WHERE last_outcome = 'dead' AND last_status_code = 404 AND last_error = 'HTTP 404'),
                sum(consecutive_failures)
         FROM links",
    )
    .fetch_one(&pool)
    .await
    .expect("counts");
    assert_eq!((ok, dead, failures), (200, 100, 100));

    // A replay of a job already written changes nothing and says so.
    assert!(
        !writer
            .record(ids[0], lease(&pool, 1000).await, result("dead", 404))
            .await
            .expect("replay")
    );
    assert_eq!(link(&pool, LinkRef::Id(ids[0])).await.consecutive_failures, 1);
    // A link deleted meanwhile is not an error: there is nothing to write.
    sqlx::query("DELETE FROM links WHERE id = $1")
        .bind(ids[1])
        .execute(&pool)
        .await
        .expect("delete");
    assert!(
        !writer
            .record(ids[1], lease(&pool, 5000).await, result("ok", 200))
            .await
            .expect("deleted link")
    );
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn failures_count_up_to_inaccessible_blocked_is_neutral_and_a_success_restores(pool: PgPool) {
    let ids = add_links(&pool, 2).await;
    let (id, archived) = (ids[0], ids[1]);
    let writer = CheckWriter::start(pool.clone(), THRESHOLD);
    let mut job = 0;
    let mut write = |outcome, status| {
        job += 1;
        let writer = writer.clone();
        let pool = pool.clone();
        let job_id = job;
        async move {
            let lease = lease(&pool, job_id).await;
            writer.record(id, lease, result(outcome, status)).await.expect("write")
        }
    };
    write("dead", 404).await;
    write("transient", 503).await;
    let now = link(&pool, LinkRef::Id(id)).await;
    assert_eq!((now.status.as_str(), now.consecutive_failures), ("active", 2));
    write("blocked", 403).await;
    let now = link(&pool, LinkRef::Id(id)).await;
    assert_eq!(
        (now.status.as_str(), now.consecutive_failures),
        ("active", 2),
        "blocked is no evidence"
    );
    assert_eq!(now.last_outcome.as_deref(), Some("blocked"));
    write("dead", 410).await;
    let now = link(&pool, LinkRef::Id(id)).await;
    assert_eq!((now.status.as_str(), now.consecutive_failures), ("inaccessible", 3));
    write("ok", 200).await;
    let now = link(&pool, LinkRef::Id(id)).await;
    assert_eq!((now.status.as_str(), now.consecutive_failures), ("active", 0));
    assert_eq!(now.last_error, None);

    // An archived link stays archived whatever its checks say.
    sqlx::query("UPDATE links SET status = 'archived' WHERE id = $1")
        .bind(archived)
        .execute(&pool)
        .await
        .expect("archive");
    for job_id in 100..104 {
        writer
            .record(archived, lease(&pool, job_id).await, result("dead", 404))
            .await
            .expect("write");
    }
    let now = link(&pool, LinkRef::Id(archived)).await;
    assert_eq!((now.status.as_str(), now.consecutive_failures), ("archived", 4));
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_result_the_database_refuses_fails_alone_not_its_whole_batch(pool: PgPool) {
    let ids = add_links(&pool, 50).await;
    let writer = CheckWriter::start(pool.clone(), THRESHOLD);
    // The table's CHECK refuses an unknown outcome: this one row fails the batch statement.
    // (Error text with a NUL byte, the other value PostgreSQL refuses, is cleaned before it is
    // written.)
    let answers = write_all(&pool, &writer, &ids, 100, |i| {
        if i == 7 {
            result("bogus", 404)
        } else {
            result("dead", 404)
        }
    })
    .await;
    let mut failed = Vec::new();
    for (i, answer) in answers.into_iter().enumerate() {
        match answer {
            Ok(applied) => assert!(applied, "result {i} written"),
            Err(error) => failed.push((i, error.to_string())),
        }
    }
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, 7);
    let (written,): (i64,) = sqlx::query_as("SELECT count(*) FROM links WHERE last_outcome = 'dead'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(written, 49);
    // And a NUL byte in a reason is stored without it.
    let mut nul = result("dead", 404);
    nul.error = Some("bad\0reason".into());
    assert!(
        writer
            .record(ids[7], lease(&pool, 900).await, nul)
            .await
            .expect("written")
    );
    let stored = link(&pool, LinkRef::Id(ids[7])).await.last_error;
    assert_eq!(stored.as_deref(), Some("badreason"));
    // A hostile server's endless reason is cut, like a job's error text.
    let mut long = result("dead", 404);
    long.error = Some("x".repeat(100_000));
    assert!(
        writer
            .record(ids[8], lease(&pool, 901).await, long)
            .await
            .expect("written")
    );
    let stored = link(&pool, LinkRef::Id(ids[8])).await.last_error.expect("reason");
    assert!(stored.chars().count() <= 2001, "{} chars", stored.chars().count());
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_write_back_with_the_database_gone_fails_instead_of_hanging(pool: PgPool) {
    let ids = add_links(&pool, 3).await;
    // The writer's own pool goes away; the test's pool still creates the jobs' leases.
    let writer_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(pool.connect_options().as_ref().clone())
        .await
        .expect("writer pool");
    let writer = CheckWriter::start(writer_pool.clone(), THRESHOLD);
    writer_pool.close().await;
    let answers = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        write_all(&pool, &writer, &ids, 1, |_| result("ok", 200)),
    )
    .await
    .expect("answers come, the handlers do not hang");
    for answer in answers {
        // An error the handler turns into a retry of the job: nothing is reported written.
        assert!(answer.is_err(), "{answer:?}");
    }
}

/// A batch that gets no answer in time fails its results instead of holding their handlers, the
/// writer goes on writing other links meanwhile, and the job's retry counts the failure once: if
/// the late statement committed after all, the retry is a replay that changes nothing.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_batch_without_an_answer_fails_in_time_and_its_retry_counts_once(pool: PgPool) {
    use std::time::{Duration, Instant};

    const LIMIT: Duration = Duration::from_secs(2);
    let ids = add_links(&pool, 3).await;
    let (locked, free, warm) = (ids[0], ids[1], ids[2]);
    let writer = CheckWriter::with_batch_timeout(pool.clone(), THRESHOLD, LIMIT);
    // Connections opened before the clock matters: only the lock should make a batch wait.
    assert!(
        writer
            .record(warm, lease(&pool, 1).await, result("ok", 200))
            .await
            .expect("warm-up write")
    );
    let first = lease(&pool, 2).await;
    let third = lease(&pool, 3).await;
    let mut holder = pool.begin().await.expect("begin");
    sqlx::query("SELECT id FROM links WHERE id = $1 FOR UPDATE")
        .bind(locked)
        .execute(&mut *holder)
        .await
        .expect("lock the link's row");

    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        writer.record(locked, first, result("dead", 404)),
    )
    .await
    .expect("the writer answers instead of hanging");
    let error = answer.expect_err("the row is locked: no answer within the batch timeout");
    assert!(error.to_string().contains("no answer within 2s"), "{error}");
    let waited = started.elapsed();
    assert!(waited >= LIMIT && waited < LIMIT * 4, "{waited:?}");

    // Other links are written while the late statement still waits for its lock.
    let other = tokio::time::timeout(Duration::from_secs(20), writer.record(free, third, result("ok", 200)))
        .await
        .expect("another link is not held up");
    assert!(other.expect("written"));

    holder.rollback().await.expect("release the lock");
    // Let the late statement finish, whichever way it ends, before the retry.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND state = 'active' AND query LIKE '%UPDATE links l%'
               AND pid <> pg_backend_pid()",
        )
        .fetch_one(&pool)
        .await
        .expect("activity");
        if waiting == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the late statement never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (late_committed,): (bool,) =
        sqlx::query_as("SELECT last_check_run IS NOT DISTINCT FROM $2 FROM links WHERE id = $1")
            .bind(locked)
            .bind(first.run)
            .fetch_one(&pool)
            .await
            .expect("row");
    // The job's retry: a new lease of the same run.
    let retry = next_attempt(&pool, first).await;
    let retried = tokio::time::timeout(
        Duration::from_secs(20),
        writer.record(locked, retry, result("dead", 404)),
    )
    .await
    .expect("the retry answers")
    .expect("the retry is written");
    assert_eq!(retried, !late_committed, "a replay changes nothing; a first write does");
    let after = link(&pool, LinkRef::Id(locked)).await;
    assert_eq!(after.last_outcome.as_deref(), Some("dead"));
    assert_eq!(after.consecutive_failures, 1, "one failed check counted once");
}

/// A batch that times out fails whole, at once: only a batch the database refuses for its data is
/// written again row by row. (Row by row after a timeout would wait the timeout again for every
/// row, while every other handler queued behind the two batches in flight.)
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_batch_that_times_out_fails_whole_instead_of_row_by_row(pool: PgPool) {
    use std::time::{Duration, Instant};

    const LIMIT: Duration = Duration::from_secs(1);
    let ids = add_links(&pool, 4).await;
    let (a, b, c, warm) = (ids[0], ids[1], ids[2], ids[3]);
    let writer = CheckWriter::with_batch_timeout(pool.clone(), THRESHOLD, LIMIT);
    assert!(
        writer
            .record(warm, lease(&pool, 1).await, result("ok", 200))
            .await
            .expect("warm-up write")
    );
    let mut leases = Vec::new();
    for key in 2..=5 {
        leases.push(lease(&pool, key).await);
    }
    let mut holder = pool.begin().await.expect("begin");
    sqlx::query("SELECT id FROM links WHERE id = ANY($1) FOR UPDATE")
        .bind(vec![a, b])
        .execute(&mut *holder)
        .await
        .expect("lock two links");

    let started = Instant::now();
    let spawn = |link_id: i64, lease: WriteLease| {
        let writer = writer.clone();
        tokio::spawn(async move { writer.record(link_id, lease, result("ok", 200)).await })
    };
    // Both batches in flight wait on link a, each alone...
    let first = spawn(a, leases[0]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = spawn(a, leases[1]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ...so b (locked) and c (free) wait for a slot and then go together, as one batch.
    let locked = spawn(b, leases[2]);
    let free = spawn(c, leases[3]);
    for task in [first, second] {
        let answer = task.await.expect("task");
        assert!(answer.is_err(), "link a is locked: {answer:?}");
    }
    let locked = locked.await.expect("task");
    let free = free.await.expect("task");
    let waited = started.elapsed();
    assert!(locked.is_err(), "link b is locked: {locked:?}");
    let error = free.expect_err("c shared b's batch, which got no answer: it fails with it");
    assert!(error.to_string().contains("no answer within"), "{error}");
    // Two waits (a's batches, then b and c's), not three (b alone, then c alone).
    assert!(waited < LIMIT * 2 + LIMIT * 7 / 10, "{waited:?}");
    holder.rollback().await.expect("release");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_requeued_job_writes_its_new_result_while_a_retry_of_one_run_counts_once(pool: PgPool) {
    let ids = add_links(&pool, 1).await;
    let writer = CheckWriter::start(pool.clone(), THRESHOLD);
    let first = lease(&pool, 1).await;
    assert!(writer.record(ids[0], first, result("dead", 404)).await.expect("write"));
    // A retry of the same run whose first write did commit: a replay.
    let retry = next_attempt(&pool, first).await;
    assert!(!writer.record(ids[0], retry, result("dead", 404)).await.expect("replay"));
    assert_eq!(link(&pool, LinkRef::Id(ids[0])).await.consecutive_failures, 1);
    // An operator requeues the job: same id, a new run, a new lease: its verdict is written.
    let (token, run): (uuid::Uuid, uuid::Uuid) = sqlx::query_as(
        "UPDATE queue_jobs SET run_id = gen_random_uuid(), lease_token = gen_random_uuid(), attempts = 1 \
         WHERE id = $1 RETURNING lease_token, run_id",
    )
    .bind(first.job_id)
    .fetch_one(&pool)
    .await
    .expect("requeue and re-claim");
    let requeued = WriteLease {
        job_id: first.job_id,
        token,
        run,
        attempt: 1,
    };
    assert!(writer.record(ids[0], requeued, result("ok", 200)).await.expect("write"));
    let now = link(&pool, LinkRef::Id(ids[0])).await;
    assert_eq!((now.last_outcome.as_deref(), now.consecutive_failures), (Some("ok"), 0));
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_handler_whose_lease_was_rescued_cannot_overwrite_the_newer_result(pool: PgPool) {
    let ids = add_links(&pool, 1).await;
    let writer = CheckWriter::start(pool.clone(), THRESHOLD);
    let stale = lease(&pool, 1).await;
    // The lease is rescued (its worker looked dead) and the job claimed again: a new token.
    let rescued = next_attempt(&pool, stale).await;
    assert_ne!(rescued.token, stale.token, "premise: a new lease");
    // The stale handler finishes first: its lease is gone, nothing is written.
    assert!(
        !writer
            .record(ids[0], stale, result("dead", 404))
            .await
            .expect("refused")
    );
    let before = link(&pool, LinkRef::Id(ids[0])).await;
    assert_eq!((before.last_outcome, before.consecutive_failures), (None, 0));
    // The new attempt writes; the stale handler's late retry of its write changes nothing.
    assert!(writer.record(ids[0], rescued, result("ok", 200)).await.expect("write"));
    assert!(
        !writer
            .record(ids[0], stale, result("dead", 404))
            .await
            .expect("refused")
    );
    let now = link(&pool, LinkRef::Id(ids[0])).await;
    assert_eq!((now.last_outcome.as_deref(), now.consecutive_failures), (Some("ok"), 0));
    // And a lease of a job no longer running writes nothing either.
    sqlx::query("UPDATE queue_jobs SET state = 'done', lease_owner = NULL, lease_token = NULL, finished_at = now() WHERE id = $1")
        .bind(rescued.job_id)
        .execute(&pool)
        .await
        .expect("finish");
    let replay_after_done = next_attempt_token_only(rescued);
    assert!(
        !writer
            .record(ids[0], replay_after_done, result("dead", 404))
            .await
            .expect("refused")
    );
}

/// `lease` with another token than any the job ever had.
fn next_attempt_token_only(lease: WriteLease) -> WriteLease {
    WriteLease {
        token: uuid::Uuid::new_v4(),
        run: uuid::Uuid::new_v4(),
        ..lease
    }
}

/// During a rolling upgrade the previous release's claims and rescues leave `lease_token` as it
/// was but always count the attempt: a late write-back of this release's earlier lease, whose
/// token the row still carries, must not pass the fence.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_lease_taken_over_by_a_previous_release_keeps_the_stale_handler_out(pool: PgPool) {
    let ids = add_links(&pool, 1).await;
    let writer = CheckWriter::start(pool.clone(), THRESHOLD);
    let stale = lease(&pool, 1).await;
    // An old worker rescues and claims the job again: attempts move on, the token stays.
    sqlx::query("UPDATE queue_jobs SET attempts = attempts + 1, lease_owner = gen_random_uuid() WHERE id = $1")
        .bind(stale.job_id)
        .execute(&pool)
        .await
        .expect("old release's claim");
    assert!(
        !writer
            .record(ids[0], stale, result("dead", 404))
            .await
            .expect("refused")
    );
    assert_eq!(link(&pool, LinkRef::Id(ids[0])).await.last_outcome, None);
}
