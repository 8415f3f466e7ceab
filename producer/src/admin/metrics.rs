//! `/metrics`: the queue and link gauges are read from the database when Prometheus scrapes, so
//! every replica reports the same current numbers without a background task, and a replica that
//! cannot reach the database keeps serving its last values (and says so in its log).

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use sqlx::PgPool;

use linkpulse_queue::inspect;
use linkpulse_shared::link_jobs::KINDS;
use linkpulse_shared::metrics::{LINKS, QUEUE_JOBS, QUEUE_OLDEST_QUEUED_AGE, SCHEDULE_LAST_SUCCESS};

use super::AdminState;

/// Link statuses always reported (zero when no link has one), so alerts see a stable series set.
const STATUSES: [&str; 5] = ["active", "inaccessible", "repo_unavailable", "archived", "paused"];

/// Serialises refresh-and-render: the gauges are process-wide, so two concurrent scrapes (two
/// Prometheus replicas, or two admin servers in one test process) could otherwise render a mix of
/// two refreshes.
static SCRAPE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `GET /metrics` in the Prometheus text format.
pub async fn render(State(state): State<AdminState>) -> impl IntoResponse {
    let _scrape = SCRAPE.lock().await;
    if let Err(error) = refresh(&state.readers).await {
        tracing::warn!(
            error = format!("{error:#}"),
            "cannot refresh queue metrics; serving the last values"
        );
    }
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

/// Sets the queue-depth, oldest-age and link-status gauges from the database.
///
/// # Errors
///
/// If a query fails; gauges already set keep their new values.
pub async fn refresh(pool: &PgPool) -> anyhow::Result<()> {
    let stats = inspect::stats(pool, &KINDS).await?;
    for (kind, s) in &stats.kinds {
        for (state, n) in [
            ("queued", s.queued),
            ("running", s.running),
            ("done", s.done),
            ("failed", s.failed),
        ] {
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!(QUEUE_JOBS, "kind" => kind.clone(), "state" => state).set(n as f64);
        }
        metrics::gauge!(QUEUE_OLDEST_QUEUED_AGE, "kind" => kind.clone())
            .set(s.oldest_queued_age_seconds.unwrap_or(0.0));
    }
    let counts = sqlx::query!(r#"SELECT status, count(*) AS "n!" FROM links GROUP BY status"#)
        .fetch_all(pool)
        .await?;
    for status in STATUSES {
        let n = counts.iter().find(|c| c.status == status).map_or(0, |c| c.n);
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!(LINKS, "status" => status).set(n as f64);
    }
    // From the schedules rows, so every replica (leader or not) reports the same last success.
    let schedules = sqlx::query!(r#"SELECT name, extract(epoch FROM last_success_at)::float8 AS "at" FROM schedules"#)
        .fetch_all(pool)
        .await?;
    for schedule in schedules {
        if let Some(at) = schedule.at {
            metrics::gauge!(SCHEDULE_LAST_SUCCESS, "schedule" => schedule.name).set(at);
        }
    }
    Ok(())
}
