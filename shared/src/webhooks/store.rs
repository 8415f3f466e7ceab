//! The `webhooks` and `webhook_cursors` tables (see the migration for every column's why).
//!
//! Secrets leave this module in two ways only: returned once by [`add`] and [`rotate`] for the
//! operator to copy, and inside a [`Target`] for signing. [`Webhook`], what listings and the API
//! show, has none.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;

use super::WebhookError;
use super::payload::EventRow;
use super::signing::generate_secret;

/// An endpoint as operators see it (`webhooks list --json`, `GET /api/webhooks`): no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// Id (`webhooks remove ID`).
    pub id: i64,
    /// Where deliveries go.
    pub url: String,
    /// Subscribed event types.
    pub events: Vec<String>,
    /// False once disabled (see `disabled_reason`).
    pub enabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// Start of the current run of failed deliveries; null when the last one succeeded.
    pub failing_since: Option<DateTime<Utc>>,
    /// Last 2xx answer to a delivery.
    pub last_success_at: Option<DateTime<Utc>>,
    /// The last failed delivery's reason; null after a success.
    pub last_error: Option<String>,
    /// Until when the secret before the last rotation still signs; null when none does.
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// Added at (events before this are not delivered to it).
    pub created_at: DateTime<Utc>,
    /// Who added it (`cli:<user>`, `api`).
    pub created_by: String,
}

/// An endpoint as a delivery needs it: where, what, and the keys that sign.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// Id.
    pub id: i64,
    /// Where.
    pub url: String,
    /// Subscribed event types.
    pub events: Vec<String>,
    /// Whether deliveries may go out.
    pub enabled: bool,
    /// Why not, when disabled.
    pub disabled_reason: Option<String>,
    /// Events created before this are not owed.
    pub created_at: DateTime<Utc>,
    secret: String,
    previous_secret: Option<String>,
    previous_secret_until: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// The secrets that sign a delivery sent at `now`: the current one, then the previous one
    /// while its grace period lasts.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(previous), Some(until)) = (&self.previous_secret, self.previous_secret_until)
            && now < until
        {
            secrets.push(previous);
        }
        secrets
    }
}

/// A new endpoint and its secret, shown once.
#[derive(Debug, Clone, Serialize)]
pub struct Added {
    /// The endpoint.
    #[serde(flatten)]
    pub webhook: Webhook,
    /// Its signing secret.
    pub secret: String,
}

/// `webhook_insert`: a new endpoint with a fresh secret.
///
/// # Errors
///
/// [`WebhookError::Database`] if the insert fails.
pub async fn add<'e>(
    db: impl PgExecutor<'e>,
    url: &url::Url,
    events: &[String],
    created_by: &str,
) -> Result<Added, WebhookError> {
    let secret = generate_secret();
    let webhook = sqlx::query_as!(
        Webhook,
        "INSERT INTO webhooks (url, events, secret, created_by) VALUES ($1, $2, $3, $4)
         RETURNING id, url, events, enabled, disabled_reason, failing_since, last_success_at, last_error,
                   previous_secret_until, created_at, created_by",
        url.as_str(),
        events,
        secret,
        created_by,
    )
    .fetch_one(db)
    .await?;
    Ok(Added { webhook, secret })
}

/// `webhook_list`: every endpoint, oldest first.
///
/// # Errors
///
/// [`WebhookError::Database`] if the query fails.
pub async fn list<'e>(db: impl PgExecutor<'e>) -> Result<Vec<Webhook>, WebhookError> {
    Ok(sqlx::query_as!(
        Webhook,
        "SELECT id, url, events, enabled, disabled_reason, failing_since, last_success_at, last_error,
                previous_secret_until, created_at, created_by
         FROM webhooks ORDER BY id"
    )
    .fetch_all(db)
    .await?)
}

/// `webhook_get`: one endpoint, if it exists.
///
/// # Errors
///
/// [`WebhookError::Database`] if the query fails.
pub async fn get<'e>(db: impl PgExecutor<'e>, id: i64) -> Result<Option<Webhook>, WebhookError> {
    Ok(sqlx::query_as!(
        Webhook,
        "SELECT id, url, events, enabled, disabled_reason, failing_since, last_success_at, last_error,
                previous_secret_until, created_at, created_by
         FROM webhooks WHERE id = $1",
        id
    )
    .fetch_optional(db)
    .await?)
}

/// `webhook_get_target`: one endpoint with its signing keys, if it exists.
///
/// # Errors
///
/// [`WebhookError::Database`] if the query fails.
pub async fn target<'e>(db: impl PgExecutor<'e>, id: i64) -> Result<Option<Target>, WebhookError> {
    Ok(sqlx::query_as!(
        Target,
        "SELECT id, url, events, enabled, disabled_reason, created_at, secret, previous_secret, previous_secret_until
         FROM webhooks WHERE id = $1",
        id
    )
    .fetch_optional(db)
    .await?)
}

/// `webhook_delete`: removes an endpoint and its cursors; its pending jobs find it gone and end
/// without posting. Returns whether it existed.
///
/// # Errors
///
/// [`WebhookError::Database`] if the statement fails.
pub async fn remove<'e>(db: impl PgExecutor<'e>, id: i64) -> Result<bool, WebhookError> {
    let done = sqlx::query!("DELETE FROM webhooks WHERE id = $1", id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Default grace of a rotation: the previous secret signs for this long.
pub const DEFAULT_ROTATION_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Longest grace a rotation accepts: an old secret that signs for months is no rotation.
pub const MAX_ROTATION_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);

/// A rotation's result: the new secret, shown once, and until when the previous one signs too.
#[derive(Debug, Clone, Serialize)]
pub struct Rotated {
    /// The endpoint.
    pub id: i64,
    /// The new secret.
    pub secret: String,
    /// Until when the previous secret still signs (null with a zero grace).
    pub previous_secret_until: Option<DateTime<Utc>>,
}

/// `webhook_rotate_secret`: a new secret; the current one becomes the previous one and keeps
/// signing for `grace` (an earlier previous secret stops at once: only two keys ever sign).
/// Returns `None` if the endpoint does not exist.
///
/// # Errors
///
/// [`WebhookError::InvalidDuration`] for a grace over [`MAX_ROTATION_GRACE`];
/// [`WebhookError::Database`] if the statement fails.
pub async fn rotate<'e>(db: impl PgExecutor<'e>, id: i64, grace: Duration) -> Result<Option<Rotated>, WebhookError> {
    if grace > MAX_ROTATION_GRACE {
        return Err(WebhookError::InvalidDuration(format!(
            "grace {} is longer than {}",
            humantime::format_duration(grace),
            humantime::format_duration(MAX_ROTATION_GRACE)
        )));
    }
    let secret = generate_secret();
    let row = sqlx::query!(
        "UPDATE webhooks
         SET previous_secret = CASE WHEN $2::float8 > 0 THEN secret END,
             previous_secret_until = CASE WHEN $2::float8 > 0 THEN now() + make_interval(secs => $2::float8) END,
             secret = $3
         WHERE id = $1
         RETURNING previous_secret_until",
        id,
        grace.as_secs_f64(),
        secret,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| Rotated {
        id,
        secret,
        previous_secret_until: row.previous_secret_until,
    }))
}

/// `webhook_enable`: turns an endpoint back on with a clean failure record (so the disable rule
/// gives it a full window again). Returns whether it exists.
///
/// # Errors
///
/// [`WebhookError::Database`] if the statement fails.
pub async fn enable<'e>(db: impl PgExecutor<'e>, id: i64) -> Result<bool, WebhookError> {
    let done = sqlx::query!(
        "UPDATE webhooks SET enabled = true, disabled_reason = NULL, failing_since = NULL WHERE id = $1",
        id
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// `webhook_events_owed`: the events of `link_id` that `target` is owed, in `seq` order: after
/// its cursor, of a subscribed type, created since the endpoint was added; at most `limit`.
/// Probes `link_events_seq_key` (link_id, seq).
///
/// # Errors
///
/// [`WebhookError::Database`] if the query fails.
pub async fn pending_events<'e>(
    db: impl PgExecutor<'e>,
    target: &Target,
    link_id: i64,
    limit: i64,
) -> Result<Vec<EventRow>, WebhookError> {
    Ok(sqlx::query_as!(
        EventRow,
        r#"SELECT e.id, e.link_id, e.seq, e.url, e.type AS kind, e.from_status, e.to_status, e.reason, e.created_at
           FROM link_events e
           WHERE e.link_id = $2
             AND e.seq > coalesce((SELECT c.last_seq FROM webhook_cursors c
                                   WHERE c.webhook_id = $1 AND c.link_id = $2), 0)
             AND e.type = ANY ($3)
             AND e.created_at >= $4
           ORDER BY e.seq
           LIMIT $5"#,
        target.id,
        link_id,
        &target.events,
        target.created_at,
        limit,
    )
    .fetch_all(db)
    .await?)
}

/// `webhook_mark_delivered`: the endpoint answered 2xx for event `seq` of `link_id`: the cursor
/// moves to it (never back: a late duplicate attempt cannot rewind it) and the endpoint's failure
/// record is cleared, in one statement.
///
/// # Errors
///
/// [`WebhookError::Database`] if the statement fails (the endpoint was removed meanwhile: the
/// cursor's foreign key).
pub async fn delivered<'e>(
    db: impl PgExecutor<'e>,
    webhook_id: i64,
    link_id: i64,
    seq: i64,
) -> Result<(), WebhookError> {
    sqlx::query!(
        "WITH moved AS (
             INSERT INTO webhook_cursors (webhook_id, link_id, last_seq) VALUES ($1, $2, $3)
             ON CONFLICT (webhook_id, link_id) DO UPDATE
             SET last_seq = greatest(webhook_cursors.last_seq, EXCLUDED.last_seq), delivered_at = now()
         )
         UPDATE webhooks SET last_success_at = now(), failing_since = NULL, last_error = NULL WHERE id = $1",
        webhook_id,
        link_id,
        seq,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// `webhook_mark_failed`: a delivery failed with `error`: starts the failure run if none is
/// under way and keeps the reason.
///
/// # Errors
///
/// [`WebhookError::Database`] if the statement fails.
pub async fn failed<'e>(db: impl PgExecutor<'e>, webhook_id: i64, error: &str) -> Result<(), WebhookError> {
    sqlx::query!(
        "UPDATE webhooks SET failing_since = coalesce(failing_since, now()), last_error = $2 WHERE id = $1",
        webhook_id,
        error,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// An endpoint the disable rule just turned off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disabled {
    /// Its id.
    pub id: i64,
    /// The reason stored.
    pub reason: String,
}

/// `webhook_disable_failing`: disables the enabled endpoints (all, or only `only`) whose
/// deliveries have all failed for at least `after`, with the reason. The dispatcher sweeps every
/// pass (an endpoint whose last job ended `failed` gets no more attempts to trip the rule); a
/// failed delivery checks its own endpoint at once.
///
/// # Errors
///
/// [`WebhookError::Database`] if the statement fails.
pub async fn disable_failing<'e>(
    db: impl PgExecutor<'e>,
    after: Duration,
    only: Option<i64>,
) -> Result<Vec<Disabled>, WebhookError> {
    let window = humantime::format_duration(after).to_string();
    let rows = sqlx::query!(
        r#"UPDATE webhooks
           SET enabled = false,
               disabled_reason = format('every delivery failed since %s (LINKPULSE_WEBHOOK_DISABLE_AFTER=%s); last error: %s',
                                        to_char(failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                                        $2::text, coalesce(last_error, 'none'))
           WHERE enabled AND failing_since <= now() - make_interval(secs => $1)
             AND ($3::int8 IS NULL OR id = $3)
           RETURNING id, disabled_reason AS "reason!""#,
        after.as_secs_f64(),
        window,
        only,
    )
    .fetch_all(db)
    .await?;
    for row in &rows {
        tracing::warn!(webhook.id = row.id, reason = %row.reason, "webhook disabled");
    }
    Ok(rows
        .into_iter()
        .map(|row| Disabled {
            id: row.id,
            reason: row.reason,
        })
        .collect())
}
