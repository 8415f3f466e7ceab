//! The outbox dispatcher: undispatched `link_events` become `deliver` jobs, once per pass of the
//! producer leader's loop.
//!
//! One transaction per batch:
//!
//! 1. `link_event_claim_undispatched`: the oldest undispatched events, `FOR UPDATE SKIP LOCKED`
//!    (a second dispatcher — two leaders for a moment — takes other rows or none);
//! 2. `link_event_deferred`: of those, the events owed to an endpoint whose job for the same link
//!    is *running*. That job may have read the link's events before this one committed, and the
//!    dedupe index would skip a new job while it runs: the event stays undispatched and is taken
//!    again next pass, when the job has finished. A *queued* job is no such problem: it reads the
//!    events when it starts, after this event committed;
//! 3. `deliver_insert_select` (the queue's [`insert_select`]): one job per (endpoint, link) of the
//!    remaining events, dedupe key `deliver:<webhook>:<link>`, concurrency group `webhook:<id>` (at
//!    most `LINKPULSE_HOST_CONCURRENCY` deliveries to one endpoint at once, however many links
//!    changed);
//! 4. `link_event_mark_dispatched`: the same events, in the same transaction as the enqueue.
//!
//! Before the batches, `webhook_disable_failing` sweeps the endpoints past
//! `LINKPULSE_WEBHOOK_DISABLE_AFTER`, so they get no new jobs.

use sqlx::PgPool;

use linkpulse_queue::{EnqueueSelect, insert_select};

use super::WebhookError;
use super::store::disable_failing;
use crate::config::Settings;
use crate::link_jobs::DELIVER;

/// Events claimed per transaction.
pub const DISPATCH_BATCH: i64 = 1000;
/// Batches per pass at most: a backlog drains over a few passes instead of holding up the
/// leader's loop (its schedules run between passes).
pub const MAX_BATCHES_PER_PASS: usize = 10;

/// The dedupe key of the delivery job of `webhook_id` and `link_id`, as the dispatcher writes it.
pub fn dedupe_key(webhook_id: i64, link_id: i64) -> String {
    format!("deliver:{webhook_id}:{link_id}")
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DispatchReport {
    /// Events marked dispatched (with or without an endpoint to go to).
    pub dispatched: u64,
    /// Events left for the next pass: their endpoint's job for the link was running.
    pub deferred: u64,
    /// `deliver` jobs inserted (the rest were already queued: that job delivers them).
    pub enqueued: u64,
    /// Endpoints disabled by the failure rule.
    pub disabled: u64,
}

/// The jobs of the events `$1`: one per enabled endpoint subscribed to an event's type (and
/// added before the event) and link. See the module docs for the columns' meaning.
const DELIVER_SELECT: &str = "SELECT DISTINCT 'deliver:' || w.id || ':' || e.link_id AS dedupe_key,
       'webhook:' || w.id AS group_key,
       jsonb_build_object('webhook_id', w.id, 'link_id', e.link_id, 'url', w.url) AS payload
FROM link_events e
JOIN webhooks w ON w.enabled AND e.type = ANY (w.events) AND e.created_at >= w.created_at
WHERE e.id = ANY ($1::int8[])";

/// Runs one pass: the disable sweep, then up to [`MAX_BATCHES_PER_PASS`] batches.
///
/// # Errors
///
/// [`WebhookError`] if a statement fails; batches already committed stay dispatched, and the
/// failed batch's events stay in the outbox for the next pass.
pub async fn dispatch(pool: &PgPool, settings: &Settings) -> Result<DispatchReport, WebhookError> {
    let mut report = DispatchReport {
        disabled: disable_failing(pool, settings.webhook_disable_after, None).await?.len() as u64,
        ..DispatchReport::default()
    };
    for _ in 0..MAX_BATCHES_PER_PASS {
        let (claimed, batch) = dispatch_batch(pool, settings.queue.max_attempts).await?;
        report.dispatched += batch.dispatched;
        report.deferred += batch.deferred;
        report.enqueued += batch.enqueued;
        // A short batch emptied the outbox; a full one made of deferred events only would just
        // claim the same rows again.
        if claimed < DISPATCH_BATCH || batch.dispatched == 0 {
            break;
        }
    }
    if report.dispatched > 0 || report.disabled > 0 {
        tracing::debug!(?report, "webhook events dispatched");
    }
    Ok(report)
}

/// One batch in one transaction; returns how many events it claimed, and what it did.
async fn dispatch_batch(pool: &PgPool, max_attempts: i32) -> Result<(i64, DispatchReport), WebhookError> {
    let mut tx = pool.begin().await?;
    let claimed: Vec<i64> = sqlx::query_scalar!(
        "SELECT id FROM link_events WHERE dispatched_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        DISPATCH_BATCH
    )
    .fetch_all(&mut *tx)
    .await?;
    if claimed.is_empty() {
        return Ok((0, DispatchReport::default()));
    }
    let deferred: Vec<i64> = sqlx::query_scalar!(
        r#"SELECT DISTINCT e.id AS "id!"
           FROM link_events e
           JOIN webhooks w ON w.enabled AND e.type = ANY (w.events) AND e.created_at >= w.created_at
           JOIN queue_jobs j ON j.kind = $2 AND j.state = 'running'
                            AND j.dedupe_key = 'deliver:' || w.id || ':' || e.link_id
           WHERE e.id = ANY ($1)"#,
        &claimed,
        DELIVER,
    )
    .fetch_all(&mut *tx)
    .await?;
    let ready: Vec<i64> = claimed.iter().copied().filter(|id| !deferred.contains(id)).collect();
    let mut report = DispatchReport {
        deferred: deferred.len() as u64,
        ..DispatchReport::default()
    };
    if !ready.is_empty() {
        let spec = EnqueueSelect {
            kind: DELIVER,
            max_attempts,
            trace_context: crate::telemetry::current_trace_context(),
            select: DELIVER_SELECT,
            params: 1,
        };
        let ids = ready.clone();
        let enqueued = insert_select(&mut *tx, &spec, move |query| query.bind(ids)).await?;
        let marked = sqlx::query!(
            "UPDATE link_events SET dispatched_at = now() WHERE id = ANY ($1)",
            &ready
        )
        .execute(&mut *tx)
        .await?;
        report.enqueued = u64::try_from(enqueued.inserted).unwrap_or(0);
        report.dispatched = marked.rows_affected();
    }
    tx.commit().await?;
    Ok((i64::try_from(claimed.len()).unwrap_or(i64::MAX), report))
}
