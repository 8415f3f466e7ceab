//! `/api/queue/pause|resume|cancel|paused`: the flow controls of `producer queue pause`, `resume`
//! and `cancel` over HTTP, with the same library calls and JSON as their `--json` output.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use linkpulse_queue::{CancelSelection, PausedKind, control};
use linkpulse_shared::link_jobs::{KINDS, dedupe_key};

use super::auth::Admin;
use super::{AdminState, ApiError};

/// Who a pause or cancel through the API is recorded as. The token names no person, so this only
/// tells the API from the command line (`cli:<user>`).
const API_ACTOR: &str = "api";

/// Body of `POST /api/queue/pause/{kind}`; optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    /// Why (shown by `queue stats` and `GET /api/queue/paused`).
    reason: Option<String>,
}

/// Body of `POST /api/queue/cancel`: one job, or a kind and/or a link; all given must match.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// One job's id.
    job: Option<i64>,
    /// Only this kind.
    kind: Option<String>,
    /// A link id (number or string) or URL.
    link: Option<serde_json::Value>,
    /// Why (stored as the jobs' last error; default "cancelled by api").
    reason: Option<String>,
}

/// `POST /api/queue/pause/{kind}` †: `{"kind": K, "paused": true}`; pausing a paused kind is a
/// no-op that answers the same.
///
/// # Errors
///
/// 401/403 without the token; 400 for an unknown kind or a bad body; 500 if the database fails.
#[utoipa::path(
    post,
    path = "/api/queue/pause/{kind}",
    operation_id = "queue_pause",
    tag = "queue",
    description = "Workers stop claiming a kind within one poll interval: `{\"kind\": K, \"paused\": true}`.",
    params(("kind" = String, Path, description = "check, refresh or deliver")),
    request_body(content = Option<Object>, description = "Optional `{\"reason\": \"...\"}`"),
    responses(
        (status = 200, description = "Paused", body = Object),
        (status = 400, description = "Unknown kind or bad body", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or wrong admin token", body = super::openapi::ErrorBody),
        (status = 403, description = "No admin token configured", body = super::openapi::ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn pause(
    _admin: Admin,
    State(state): State<AdminState>,
    Path(kind): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_kind(&kind)?;
    let body: PauseBody = parse_body(&body)?;
    control::pause(&state.pool, &kind, API_ACTOR, body.reason.as_deref()).await?;
    Ok(Json(serde_json::json!({ "kind": kind, "paused": true })))
}

/// `POST /api/queue/resume/{kind}` †: `{"kind": K, "paused": false}`, whether it was paused or
/// not; idle workers are woken at once.
///
/// # Errors
///
/// 401/403 without the token; 400 for an unknown kind; 500 if the database fails.
#[utoipa::path(
    post,
    path = "/api/queue/resume/{kind}",
    operation_id = "queue_resume",
    tag = "queue",
    description = "Workers claim a paused kind again, at once: `{\"kind\": K, \"paused\": false}`.",
    params(("kind" = String, Path, description = "check, refresh or deliver")),
    responses(
        (status = 200, description = "Resumed", body = Object),
        (status = 400, description = "Unknown kind", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or wrong admin token", body = super::openapi::ErrorBody),
        (status = 403, description = "No admin token configured", body = super::openapi::ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn resume(
    _admin: Admin,
    State(state): State<AdminState>,
    Path(kind): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_kind(&kind)?;
    control::resume(&state.pool, &kind).await?;
    Ok(Json(serde_json::json!({ "kind": kind, "paused": false })))
}

/// `POST /api/queue/cancel` †: `{"cancelled": N}`, the queued jobs that became failed with class
/// `cancelled`.
///
/// # Errors
///
/// 401/403 without the token; 400 for a bad body, no filter at all, a job id with other filters,
/// or an unknown kind; 404 for an unknown link; 500 if the database fails.
#[utoipa::path(
    post,
    path = "/api/queue/cancel",
    operation_id = "queue_cancel",
    tag = "queue",
    description = "Discards queued jobs (they end `failed`, class `cancelled`): body `{\"job\": ID}` or \
                   `{\"kind\": K, \"link\": ID|URL}`, optional `reason` → `{\"cancelled\": N}`.",
    request_body(content = Object),
    responses(
        (status = 200, description = "How many were cancelled", body = Object),
        (status = 400, description = "Bad body or no filter", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or wrong admin token", body = super::openapi::ErrorBody),
        (status = 403, description = "No admin token configured", body = super::openapi::ErrorBody),
        (status = 404, description = "Unknown link", body = super::openapi::ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn cancel(
    _admin: Admin,
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body: CancelBody = parse_body(&body)?;
    let kind = body.kind.filter(|k| !k.is_empty());
    if let Some(kind) = &kind {
        check_kind(kind)?;
    }
    let link = match body.link {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(serde_json::Value::String(s)) if s.is_empty() => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "link must be an id or a URL, not {other}"
            )));
        }
    };
    if body.job.is_some() && (kind.is_some() || link.is_some()) {
        return Err(ApiError::BadRequest(
            "cancel takes either a job or a kind and/or a link, not both".into(),
        ));
    }
    if body.job.is_none() && kind.is_none() && link.is_none() {
        return Err(ApiError::BadRequest(
            "cancel needs a job, a kind or a link (it never cancels every queued job)".into(),
        ));
    }
    let dedupe = match link {
        Some(link) => Some(dedupe_key(super::api::find(&state, &link).await?.id)),
        None => None,
    };
    let selection = CancelSelection {
        id: body.job,
        kind,
        dedupe_key: dedupe,
    };
    let cancelled = control::cancel(&state.pool, &selection, body.reason.as_deref(), API_ACTOR).await?;
    Ok(Json(serde_json::json!({ "cancelled": cancelled })))
}

/// `GET /api/queue/paused`: the paused kinds, by name (`[]` when none is).
///
/// # Errors
///
/// 500 if the database fails.
#[utoipa::path(
    get,
    path = "/api/queue/paused",
    operation_id = "queue_paused",
    tag = "queue",
    description = "The paused kinds: `[{\"kind\", \"paused_at\", \"paused_by\", \"reason\"}]`.",
    responses(
        (status = 200, description = "The paused kinds", body = [Object]),
        (status = 401, description = "A read token is needed", body = super::openapi::ErrorBody),
    ),
    security((), ("read_token" = []), ("admin_token" = []))
)]
pub async fn paused(State(state): State<AdminState>) -> Result<Json<Vec<PausedKind>>, ApiError> {
    Ok(Json(control::paused(&state.readers).await?))
}

/// A body that may be empty (then the type's default), else JSON.
fn parse_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Only the application's kinds: the queue would pause any string, and a typo would silently
/// pause nothing.
fn check_kind(kind: &str) -> Result<(), ApiError> {
    if KINDS.contains(&kind) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "unknown kind {kind:?} (expected one of {})",
            KINDS.join(", ")
        )))
    }
}
