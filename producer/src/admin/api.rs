//! `/api/…`: the operator's commands over HTTP. Each handler makes the same library call as its
//! CLI command, so `GET /api/queue/stats` and `queue stats --json` print the same JSON. The links'
//! routes are in [`super::links_api`].

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use serde::Deserialize;

use linkpulse_queue::inspect::{self, JobSummary, QueueStats};
use linkpulse_queue::{JobFilter, JobState};
use linkpulse_shared::db::links::{self, LinkRef};
use linkpulse_shared::link_jobs::{KINDS, dedupe_key};

use super::auth::Admin;
use super::{AdminState, ApiError};

/// Default `limit` of `/api/jobs` (as `queue list`).
const DEFAULT_JOBS_LIMIT: i64 = 50;
/// Largest `limit` a listing accepts: a page, not the table (past it: 400).
pub const MAX_LIST_LIMIT: i64 = 1000;

/// `GET /api/queue/stats`.
///
/// # Errors
///
/// 500 if the database fails.
#[utoipa::path(
    get,
    path = "/api/queue/stats",
    operation_id = "queue_stats",
    tag = "queue",
    description = "Counts per kind and state and the age of the oldest queued job: the same JSON as `queue stats --json`.",
    responses(
        (status = 200, description = "Queue statistics per kind", body = Object),
        (status = 401, description = "A read token is needed", body = super::openapi::ErrorBody),
    ),
    security((), ("read_token" = []), ("admin_token" = []))
)]
pub async fn queue_stats(State(state): State<AdminState>) -> Result<Json<QueueStats>, ApiError> {
    Ok(Json(inspect::stats(&state.readers, &KINDS).await?))
}

/// Query of `GET /api/jobs`. Strings, parsed by hand, so a bad value gets our JSON error.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// Only this state: queued, running, done, failed.
    state: Option<String>,
    /// Only this kind.
    kind: Option<String>,
    /// At most this many (default 50, at most 1000).
    limit: Option<String>,
}

/// `GET /api/jobs?state=&kind=&limit=`.
///
/// # Errors
///
/// 400 for an unknown state or kind or a bad limit; 500 if the database fails.
#[utoipa::path(
    get,
    path = "/api/jobs",
    operation_id = "jobs_list",
    tag = "queue",
    description = "Jobs, newest first, with each job's audit trail: the same JSON as `queue list --json`.",
    params(JobsQuery),
    responses(
        (status = 200, description = "The jobs", body = [Object]),
        (status = 400, description = "Unknown state or kind, or a bad limit", body = super::openapi::ErrorBody),
        (status = 401, description = "A read token is needed", body = super::openapi::ErrorBody),
    ),
    security((), ("read_token" = []), ("admin_token" = []))
)]
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

/// Body of `POST /api/queue/requeue`; every field optional (state defaults to `failed`), all
/// given ones must match.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequeueBody {
    /// `failed` (default) or `done`.
    state: Option<String>,
    /// Only this kind.
    kind: Option<String>,
    /// A link id (number or string) or URL.
    #[schema(value_type = Option<String>)]
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
#[utoipa::path(
    post,
    path = "/api/queue/requeue",
    operation_id = "queue_requeue",
    tag = "queue",
    description = "Moves finished jobs back to queued with fresh attempts: `{\"requeued\": N}`.",
    request_body(content = Option<RequeueBody>, description = "Which jobs (optional)"),
    responses(
        (status = 200, description = "How many were requeued", body = Object, example = json!({"requeued": 3})),
        (status = 400, description = "Bad body, state or kind", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or wrong admin token", body = super::openapi::ErrorBody),
        (status = 403, description = "No admin token configured", body = super::openapi::ErrorBody),
        (status = 404, description = "Unknown link", body = super::openapi::ErrorBody),
    ),
    security(("admin_token" = []))
)]
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
        ..JobFilter::default()
    };
    let report = inspect::requeue(&state.pool, job_state, &filter).await?;
    Ok(Json(serde_json::json!({ "requeued": report.requeued })))
}

/// `POST /api/cycle` †: one cycle now, on this replica, leader or not (enqueueing is
/// idempotent per link and kind, so a concurrent leader cycle only finds fewer jobs to add).
///
/// # Errors
///
/// 401/403 without the token; 500 if the cycle fails.
#[utoipa::path(
    post,
    path = "/api/cycle",
    operation_id = "cycle_now",
    tag = "schedules",
    description = "Runs one cycle now (check and refresh) and answers what it enqueued, as `producer cycle --json`.",
    responses(
        (status = 200, description = "The cycle report", body = Object),
        (status = 401, description = "Missing or wrong admin token", body = super::openapi::ErrorBody),
        (status = 403, description = "No admin token configured", body = super::openapi::ErrorBody),
    ),
    security(("admin_token" = []))
)]
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
            "unknown kind {k:?} (expected check, refresh or deliver)"
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
