//! `/api/…`: the operator's commands over HTTP. Each handler makes the same library call as its
//! CLI command, so `GET /api/queue/stats` and `queue stats --json` print the same JSON.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use linkpulse_queue::inspect::{self, JobSummary, QueueStats};
use linkpulse_queue::{JobFilter, JobState};
use linkpulse_shared::db::links::{self, LinkRef};
use linkpulse_shared::link_jobs::{KINDS, dedupe_key};

use super::auth::Admin;
use super::{AdminState, ApiError};

/// Default `limit` of `/api/jobs` (as `queue list`).
const DEFAULT_JOBS_LIMIT: i64 = 50;
/// Default `limit` of `/api/links` (as `links list`).
const DEFAULT_LINKS_LIMIT: i64 = 1000;
/// Largest `limit` a listing accepts: a page, not the table (past it: 400).
pub const MAX_LIST_LIMIT: i64 = 1000;
/// Link statuses a filter may name.
const STATUSES: [&str; 4] = ["active", "inaccessible", "repo_unavailable", "archived"];

/// `GET /api/queue/stats`.
///
/// # Errors
///
/// 500 if the database fails.
pub async fn queue_stats(State(state): State<AdminState>) -> Result<Json<QueueStats>, ApiError> {
    Ok(Json(inspect::stats(&state.readers, &KINDS).await?))
}

/// Query of `GET /api/jobs`. Strings, parsed by hand, so a bad value gets our JSON error.
#[derive(Debug, Default, Deserialize)]
pub struct JobsQuery {
    state: Option<String>,
    kind: Option<String>,
    limit: Option<String>,
}

/// `GET /api/jobs?state=&kind=&limit=`.
///
/// # Errors
///
/// 400 for an unknown state or kind or a bad limit; 500 if the database fails.
pub async fn jobs(
    State(state): State<AdminState>,
    Query(query): Query<JobsQuery>,
) -> Result<Json<Vec<JobSummary>>, ApiError> {
    let filter = JobFilter {
        state: parse_state(query.state.as_deref())?,
        kind: parse_kind(query.kind)?,
        ..JobFilter::default()
    };
    let limit = parse_limit(query.limit.as_deref(), DEFAULT_JOBS_LIMIT, MAX_LIST_LIMIT)?;
    Ok(Json(inspect::list(&state.readers, &filter, limit).await?))
}

/// Query of `GET /api/links`.
#[derive(Debug, Default, Deserialize)]
pub struct LinksQuery {
    status: Option<String>,
    limit: Option<String>,
}

/// `GET /api/links?status=`.
///
/// # Errors
///
/// 400 for an unknown status or a bad limit; 500 if the database fails.
pub async fn links(
    State(state): State<AdminState>,
    Query(query): Query<LinksQuery>,
) -> Result<Json<Vec<links::Link>>, ApiError> {
    let status = query.status.filter(|s| !s.is_empty());
    if let Some(s) = &status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "unknown status {s:?} (expected one of {})",
            STATUSES.join(", ")
        )));
    }
    let limit = parse_limit(query.limit.as_deref(), DEFAULT_LINKS_LIMIT, MAX_LIST_LIMIT)?;
    Ok(Json(links::list(&state.readers, status.as_deref(), limit).await?))
}

/// Body of `POST /api/queue/requeue`; every field optional (state defaults to `failed`), all
/// given ones must match.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequeueBody {
    state: Option<String>,
    kind: Option<String>,
    /// A link id (number or string) or URL.
    link: Option<serde_json::Value>,
    /// One job's id.
    job: Option<i64>,
}

/// `POST /api/queue/requeue` †: `{"requeued": N}`.
///
/// # Errors
///
/// 401/403 without the token; 400 for a bad body, a state that is not finished or an unknown
/// kind; 404 for an unknown link; 500 if the database fails.
pub async fn requeue(
    _admin: Admin,
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body: RequeueBody = if body.iter().all(u8::is_ascii_whitespace) {
        RequeueBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    let job_state = parse_state(body.state.as_deref())?.unwrap_or(JobState::Failed);
    if !matches!(job_state, JobState::Failed | JobState::Done) {
        return Err(ApiError::BadRequest(format!(
            "only failed or done jobs can be requeued, not {job_state}"
        )));
    }
    let kind = parse_kind(body.kind)?;
    let link = match body.link {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "link must be an id or a URL, not {other}"
            )));
        }
    };
    let dedupe = match link {
        Some(link) => Some(dedupe_key(find(&state, &link).await?.id)),
        None => None,
    };
    let filter = JobFilter {
        state: Some(job_state),
        kind,
        dedupe_key: dedupe,
        older_than: None,
        id: body.job,
    };
    let report = inspect::requeue(&state.pool, job_state, &filter).await?;
    Ok(Json(serde_json::json!({ "requeued": report.requeued })))
}

/// `POST /api/links/{id}/activate` †: the link after the override, as `links activate --json`.
///
/// # Errors
///
/// 401/403 without the token; 400 for a malformed id; 404 for an unknown link.
pub async fn activate(
    _admin: Admin,
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<links::Link>, ApiError> {
    let reference = LinkRef::parse(&id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    links::activate(&state.pool, &reference)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no link {id}")))
}

/// `POST /api/cycle` †: one cycle now, on this replica, leader or not (enqueueing is
/// idempotent per link and kind, so a concurrent leader cycle only finds fewer jobs to add).
///
/// # Errors
///
/// 401/403 without the token; 500 if the cycle fails.
pub async fn cycle(
    _admin: Admin,
    State(state): State<AdminState>,
) -> Result<Json<crate::cycle::CycleReport>, ApiError> {
    let report = crate::schedules::runner::cycle(&state.pool, &state.settings, "api").await?;
    metrics::counter!(linkpulse_shared::metrics::CYCLES_TOTAL).increment(1);
    Ok(Json(report))
}

/// Finds a link by id or URL, for handlers that take one.
pub(super) async fn find(state: &AdminState, input: &str) -> Result<links::Link, ApiError> {
    let reference = LinkRef::parse(input).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    links::find(&state.pool, &reference)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no link {input}")))
}

fn parse_state(state: Option<&str>) -> Result<Option<JobState>, ApiError> {
    state
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<JobState>().map_err(ApiError::BadRequest))
        .transpose()
}

fn parse_kind(kind: Option<String>) -> Result<Option<String>, ApiError> {
    match kind.filter(|k| !k.is_empty()) {
        Some(k) if !KINDS.contains(&k.as_str()) => Err(ApiError::BadRequest(format!(
            "unknown kind {k:?} (expected check or refresh)"
        ))),
        kind => Ok(kind),
    }
}

fn parse_limit(limit: Option<&str>, default: i64, max: i64) -> Result<i64, ApiError> {
    let Some(text) = limit.filter(|l| !l.is_empty()) else {
        return Ok(default);
    };
    match text.parse::<i64>() {
        Ok(n) if (0..=max).contains(&n) => Ok(n),
        Ok(n) if n > max => Err(ApiError::BadRequest(format!("limit must be at most {max}, not {n}"))),
        _ => Err(ApiError::BadRequest(format!(
            "limit must be a non-negative integer, not {text:?}"
        ))),
    }
}
