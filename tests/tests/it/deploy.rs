//! Deployment: the KEDA ScaledObject's query (read from the manifest the overlays render) counts
//! exactly what `producer queue stats` counts as queued, and its read-only role can run it.

use std::path::PathBuf;
use std::process::Stdio;

use linkpulse_queue::{NewJob, insert_many, inspect};
use linkpulse_shared::link_jobs::{CHECK, KINDS, REFRESH};
use serde_yaml::Value;
use sqlx::{AssertSqlSafe, PgPool};
use tokio::process::Command;

use crate::helpers::url_of;

/// The ScaledObject of `k8s/components/keda`, which the prod overlay renders unchanged (the
/// validation script checks that the rendered query is this file's).
const SCALEDOBJECT: &str = "k8s/components/keda/scaledobject.yaml";
/// The read-only role KEDA logs in with.
const READONLY_ROLE_SQL: &str = "k8s/components/keda/readonly-role.sql";

fn repo_file(path: &str) -> String {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

/// The `postgresql` trigger's query, checking on the way that KEDA gets its metadata as strings.
fn scaledobject_query() -> String {
    let doc: Value = serde_yaml::from_str(&repo_file(SCALEDOBJECT)).expect("ScaledObject YAML");
    assert_eq!(doc["kind"].as_str(), Some("ScaledObject"), "{SCALEDOBJECT}");
    let triggers = doc["spec"]["triggers"].as_sequence().expect("spec.triggers");
    let postgres: Vec<&Value> = triggers
        .iter()
        .filter(|t| t["type"].as_str() == Some("postgresql"))
        .collect();
    assert_eq!(postgres.len(), 1, "one postgresql trigger in {SCALEDOBJECT}");
    let metadata = postgres[0]["metadata"].as_mapping().expect("trigger metadata");
    for (key, value) in metadata {
        assert!(
            value.is_string(),
            "KEDA metadata {key:?} must be a string, got {value:?}"
        );
    }
    postgres[0]["metadata"]["query"]
        .as_str()
        .expect("metadata.query")
        .to_owned()
}

/// Jobs in every state, with known counts: 8 queued (due, scheduled, backing off, of three
/// kinds), 2 running, 2 done, 1 failed.
async fn known_jobs(pool: &PgPool) {
    let due = |kind: &str, key: &str| NewJob::new(kind, serde_json::json!({"link_id": 0}), 5).dedupe_key(key);
    let mut jobs = vec![
        due(CHECK, "due-1"),
        due(CHECK, "due-2"),
        due(CHECK, "due-3"),
        due(REFRESH, "due-4"),
        due(REFRESH, "due-5"),
        // A kind no longer (or not yet) known to this build still counts as queued work.
        due("legacy", "due-6"),
    ];
    let mut later = due(CHECK, "scheduled");
    later.run_at = Some(chrono::Utc::now() + chrono::Duration::hours(1));
    jobs.push(later);
    for key in ["backoff", "running-1", "running-2", "done-1", "done-2", "failed"] {
        jobs.push(due(if key.ends_with('2') { REFRESH } else { CHECK }, key));
    }
    let report = insert_many(pool, &jobs).await.expect("insert jobs");
    assert_eq!(report.inserted, 13);

    for sql in [
        // Waiting out a retry backoff: still `queued`, but not due.
        r#"UPDATE queue_jobs SET attempts = 1, run_at = now() + interval '5 minutes',
               errors = '[{"attempt": 1, "at": "2026-01-01T00:00:00Z", "error": "timeout", "kind": "retry"}]'
           WHERE dedupe_key = 'backoff'"#,
        "UPDATE queue_jobs SET state = 'running', attempts = 1, started_at = now(), lease_owner = gen_random_uuid()
           WHERE dedupe_key LIKE 'running-%'",
        "UPDATE queue_jobs SET state = 'done', attempts = 1, started_at = now(), finished_at = now()
           WHERE dedupe_key LIKE 'done-%'",
        "UPDATE queue_jobs SET state = 'failed', attempts = 5, started_at = now(), finished_at = now()
           WHERE dedupe_key = 'failed'",
    ] {
        sqlx::query(sql).execute(pool).await.expect(sql);
    }
}

/// The QUEUED column of `producer queue stats --json`, run as the real binary, summed over kinds.
async fn producer_queue_stats_queued(pool: &PgPool) -> i64 {
    let output = Command::new(env!("CARGO_BIN_EXE_linkpulse-producer"))
        .args(["queue", "stats", "--json"])
        .env("DATABASE_URL", url_of(pool).await)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run producer queue stats");
    assert!(
        output.status.success(),
        "producer queue stats failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&output.stdout).expect("queue stats JSON");
    let kinds = stats["kinds"].as_object().expect("kinds");
    for kind in KINDS {
        assert!(kinds.contains_key(kind), "{kind} missing from {stats}");
    }
    kinds
        .values()
        .map(|k| k["queued"].as_i64().expect("queued is a number"))
        .sum()
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn keda_query_counts_what_producer_queue_stats_counts(pool: PgPool) {
    let query = scaledobject_query();
    known_jobs(&pool).await;

    let keda: i64 = sqlx::query_scalar(AssertSqlSafe(query.clone()))
        .fetch_one(&pool)
        .await
        .expect("ScaledObject query");
    let library: i64 = inspect::stats(&pool, &KINDS)
        .await
        .expect("stats")
        .kinds
        .values()
        .map(|k| k.queued)
        .sum();
    let cli = producer_queue_stats_queued(&pool).await;

    assert_eq!(
        keda, 8,
        "due, scheduled and backing-off jobs of every kind; not running/done/failed"
    );
    assert_eq!(keda, library, "ScaledObject query vs inspect::stats");
    assert_eq!(keda, cli, "ScaledObject query vs `producer queue stats --json`");
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn keda_readonly_role_runs_the_query_and_nothing_else(pool: PgPool) {
    let query = scaledobject_query();
    known_jobs(&pool).await;
    // Roles are server-wide: run the file under a name of this process's own, and roll it back.
    let role = format!("linkpulse_keda_test_{}", std::process::id());
    let role_sql = repo_file(READONLY_ROLE_SQL);
    assert!(
        role_sql.contains("linkpulse_keda"),
        "{READONLY_ROLE_SQL} names the role"
    );
    let role_sql = role_sql.replace("linkpulse_keda", &role);

    let mut tx = pool.begin().await.expect("begin");
    sqlx::raw_sql(AssertSqlSafe(role_sql))
        .execute(&mut *tx)
        .await
        .expect("readonly-role.sql");
    sqlx::query(AssertSqlSafe(format!("SET LOCAL ROLE {role}")))
        .execute(&mut *tx)
        .await
        .expect("set role");
    let n: i64 = sqlx::query_scalar(AssertSqlSafe(query))
        .fetch_one(&mut *tx)
        .await
        .expect("the ScaledObject query as the read-only role");
    assert_eq!(n, 8);

    for forbidden in [
        "SELECT count(*) FROM links",
        "DELETE FROM queue_jobs",
        "UPDATE queue_jobs SET priority = 1",
    ] {
        sqlx::query("SAVEPOINT forbidden")
            .execute(&mut *tx)
            .await
            .expect("savepoint");
        let error = sqlx::query(forbidden).execute(&mut *tx).await.expect_err(forbidden);
        assert!(error.to_string().contains("permission denied"), "{forbidden}: {error}");
        sqlx::query("ROLLBACK TO SAVEPOINT forbidden")
            .execute(&mut *tx)
            .await
            .expect("rollback to savepoint");
    }
    tx.rollback().await.expect("rollback");
}
