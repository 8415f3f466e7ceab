//! A link's history: its status transitions (`link_events`) and its recent check verdicts
//! (`link_verdicts`), with what an operator asks first about a failing link: since when is it
//! dead, when did it last work, and how often does it work at all.
//!
//! The rows are written by the write-backs ([`super::check_writer`], [`super::links::record_refresh`])
//! and the manual transitions, in the same statement as the transition they record, each typed by
//! the SQL function `link_event_type` (migration `…14`); the prune
//! schedule trims them ([`prune_verdicts`], [`prune_events`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;

/// One check's verdict, as kept in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// When the result was written.
    pub checked_at: DateTime<Utc>,
    /// `ok`, `dead`, `transient` (attempts exhausted) or `blocked`.
    pub outcome: String,
    /// HTTP status, if a response arrived.
    pub status_code: Option<i32>,
    /// How long the check took (all its requests), in milliseconds.
    pub duration_ms: Option<f64>,
    /// Reason of a failed or blocked check.
    pub error: Option<String>,
}

/// One status transition of a link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Event id (also the webhooks' idempotency key).
    pub id: i64,
    /// Position among the link's events (increases by one per event).
    pub seq: i64,
    /// `link.down`, `link.up` or `link.changed` (`type` in JSON).
    #[serde(rename = "type")]
    pub kind: String,
    /// Status before.
    pub from: String,
    /// Status after.
    pub to: String,
    /// Why: the check's error, `check ok`, the refresh's finding, or the operator's reason.
    pub reason: Option<String>,
    /// The job whose result made the transition; `None` for a manual one.
    pub job_id: Option<i64>,
    /// Who asked, for a manual transition.
    pub actor: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// What `links show` and `GET /api/links/{id}` show of a link's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkHistory {
    /// When the link last became `inaccessible` or `repo_unavailable`, if it still is: from its
    /// events, or, when they do not tell (written by a previous release, or pruned), the first
    /// failed verdict after the last ok one.
    pub dead_since: Option<DateTime<Utc>>,
    /// The last ok check (kept verdicts, or the link's own last check if that was ok).
    pub last_ok_at: Option<DateTime<Utc>>,
    /// Share of `ok` verdicts among all kept ones (0.0–1.0); `None` without verdicts.
    pub ok_share: Option<f64>,
    /// The newest verdicts, newest first.
    pub verdicts: Vec<Verdict>,
    /// The newest events, newest first.
    pub events: Vec<Event>,
}

/// The history of link `link_id` with at most `limit` verdicts and `limit` events, in one
/// statement (one snapshot: the figures and the lists agree). A link without history, or an
/// unknown one, gets an empty history (events outlive their link).
///
/// # Errors
///
/// If the query fails.
pub async fn for_link(
    executor: impl sqlx::PgExecutor<'_>,
    link_id: i64,
    limit: i64,
) -> Result<LinkHistory, sqlx::Error> {
    let row = sqlx::query!(
        r#"
WITH l AS (SELECT status, last_outcome, last_checked_at FROM links WHERE id = $1),
last_up AS (
    -- the latest event out of the dead statuses: dead-since events before it are over
    SELECT coalesce(max(seq), 0) AS seq FROM link_events
    WHERE link_id = $1 AND to_status NOT IN ('inaccessible', 'repo_unavailable')
),
last_ok AS (
    SELECT max(checked_at) AS at FROM link_verdicts WHERE link_id = $1 AND outcome = 'ok'
)
SELECT
    (SELECT CASE WHEN l.status IN ('inaccessible', 'repo_unavailable') THEN coalesce(
        (SELECT min(e.created_at) FROM link_events e
         WHERE e.link_id = $1 AND e.seq > (SELECT seq FROM last_up)
           AND e.to_status IN ('inaccessible', 'repo_unavailable')
           AND e.from_status NOT IN ('inaccessible', 'repo_unavailable')),
        (SELECT min(v.checked_at) FROM link_verdicts v
         WHERE v.link_id = $1 AND v.outcome IN ('dead', 'transient')
           AND v.checked_at > coalesce((SELECT at FROM last_ok), '-infinity')))
     END FROM l) AS dead_since,
    greatest((SELECT at FROM last_ok),
             (SELECT l.last_checked_at FROM l WHERE l.last_outcome = 'ok')) AS last_ok_at,
    (SELECT avg((outcome = 'ok')::int::float8) FROM link_verdicts WHERE link_id = $1) AS ok_share,
    (SELECT coalesce(jsonb_agg(jsonb_build_object(
                'checked_at', v.checked_at, 'outcome', v.outcome, 'status_code', v.status_code,
                'duration_ms', v.duration_ms, 'error', v.error) ORDER BY v.checked_at DESC, v.id DESC), '[]')
     FROM (SELECT * FROM link_verdicts WHERE link_id = $1 ORDER BY checked_at DESC, id DESC LIMIT $2) v)
        AS "verdicts!: Json<Vec<Verdict>>",
    (SELECT coalesce(jsonb_agg(jsonb_build_object(
                'id', e.id, 'seq', e.seq, 'type', e.type, 'from', e.from_status, 'to', e.to_status,
                'reason', e.reason, 'job_id', e.job_id, 'actor', e.actor, 'at', e.created_at)
                ORDER BY e.seq DESC), '[]')
     FROM (SELECT * FROM link_events WHERE link_id = $1 ORDER BY seq DESC LIMIT $2) e)
        AS "events!: Json<Vec<Event>>"
"#,
        link_id,
        limit.max(0),
    )
    .fetch_one(executor)
    .await?;
    Ok(LinkHistory {
        dead_since: row.dead_since,
        last_ok_at: row.last_ok_at,
        ok_share: row.ok_share,
        verdicts: row.verdicts.0,
        events: row.events.0,
    })
}

/// How far back a verdict trim starts behind its run: a write-back's `now()` is its transaction's
/// start, and it may commit this long after (its statement timeout is 30 s), so links checked in
/// the last moments before a trim are trimmed again by the next one.
pub const TRIM_MARGIN: Duration = Duration::from_secs(5 * 60);

/// What one [`prune_verdicts`] pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerdictTrim {
    /// Verdicts deleted.
    pub deleted: u64,
    /// Every link last checked before this keeps at most `keep` verdicts; the next pass with the
    /// same or a larger `keep` can start here.
    pub trimmed_until: DateTime<Utc>,
}

/// Deletes the verdicts of each link beyond its newest `keep`, for the links last checked at or
/// after `since` (`None`: all of them), `batch` links per statement, stopping once `max_deleted`
/// are deleted (the remaining links are left to the next pass: see
/// [`VerdictTrim::trimmed_until`]).
///
/// Only links checked since the previous pass can have gained a verdict, so a pass that starts
/// where the previous one ended walks those links alone, through the links' check-due index,
/// instead of every link's history every minute. Never-checked links have no verdicts and are
/// not visited.
///
/// # Errors
///
/// If a statement fails (the verdicts deleted by earlier statements stay deleted).
pub async fn prune_verdicts(
    conn: &mut sqlx::PgConnection,
    keep: i64,
    since: Option<DateTime<Utc>>,
    batch: i64,
    max_deleted: u64,
) -> Result<VerdictTrim, sqlx::Error> {
    let horizon = sqlx::query_scalar!(
        r#"SELECT now() - make_interval(secs => $1) AS "horizon!""#,
        TRIM_MARGIN.as_secs_f64()
    )
    .fetch_one(&mut *conn)
    .await?;
    let mut cursor = (since.unwrap_or(DateTime::UNIX_EPOCH), 0_i64);
    let mut deleted = 0_u64;
    loop {
        let row = sqlx::query!(
            r#"
WITH chunk AS (
    SELECT id, coalesce(last_checked_at, '-infinity'::timestamptz) AS at FROM links
    WHERE (coalesce(last_checked_at, '-infinity'::timestamptz), id) > ($1::timestamptz, $2::int8)
    ORDER BY coalesce(last_checked_at, '-infinity'::timestamptz), id
    LIMIT $3
),
gone AS (
    DELETE FROM link_verdicts v
    USING chunk c
          CROSS JOIN LATERAL (
              SELECT x.id FROM link_verdicts x WHERE x.link_id = c.id
              ORDER BY x.checked_at DESC, x.id DESC OFFSET $4) old
    WHERE v.id = old.id
    RETURNING 1
),
last AS (SELECT at, id FROM chunk ORDER BY at DESC, id DESC LIMIT 1)
SELECT (SELECT count(*) FROM chunk) AS "links!", (SELECT count(*) FROM gone) AS "deleted!",
       (SELECT at FROM last) AS last_at, (SELECT id FROM last) AS last_id
"#,
            cursor.0,
            cursor.1,
            batch,
            keep.max(0),
        )
        .fetch_one(&mut *conn)
        .await?;
        deleted += u64::try_from(row.deleted).unwrap_or(0);
        let (Some(at), Some(id)) = (row.last_at, row.last_id) else {
            break;
        };
        if row.links < batch {
            break;
        }
        cursor = (at, id);
        if deleted >= max_deleted {
            // Links checked at `at` may be half done: the next pass starts at `at` again.
            return Ok(VerdictTrim {
                deleted,
                trimmed_until: at.min(horizon),
            });
        }
    }
    Ok(VerdictTrim {
        deleted,
        trimmed_until: horizon,
    })
}

/// Deletes events created more than `retain` ago (delivered or not: an endpoint down for that
/// long has been disabled), `batch` per statement, at most `max_batches` statements. Events
/// the webhook dispatcher holds are passed over, not waited for.
///
/// # Errors
///
/// If a statement fails (the events deleted by earlier statements stay deleted).
pub async fn prune_events(
    conn: &mut sqlx::PgConnection,
    retain: Duration,
    batch: i64,
    max_batches: usize,
) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    for _ in 0..max_batches {
        let deleted = sqlx::query!(
            "DELETE FROM link_events WHERE id IN (
                 SELECT id FROM link_events WHERE created_at < now() - make_interval(secs => $1)
                 ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
            retain.as_secs_f64(),
            batch,
        )
        .execute(&mut *conn)
        .await?
        .rows_affected();
        total += deleted;
        if deleted < u64::try_from(batch).unwrap_or(0) {
            break;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_with_the_contract_names() {
        let event = Event {
            id: 7,
            seq: 2,
            kind: "link.down".into(),
            from: "active".into(),
            to: "inaccessible".into(),
            reason: Some("404 Not Found".into()),
            job_id: Some(42),
            actor: None,
            at: DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
        };
        let json = serde_json::to_value(&event).unwrap_or_default();
        assert_eq!(json["type"], "link.down");
        assert_eq!(json["from"], "active");
        assert_eq!(json["to"], "inaccessible");
        assert!(json.get("kind").is_none());
        // What the statement builds reads back into the same event.
        let back: Event = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, event);
    }

    #[test]
    fn postgres_timestamps_in_json_parse() {
        // jsonb renders timestamptz in the session's time zone, with microseconds.
        let v: Verdict = serde_json::from_str(
            r#"{"checked_at":"2026-12-07T11:00:00.123456+01:00","outcome":"ok","status_code":200,"duration_ms":12.5,"error":null}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.checked_at.to_rfc3339(), "2026-12-07T10:00:00.123456+00:00");
    }
}
