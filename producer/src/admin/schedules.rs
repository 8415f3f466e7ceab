//! `/api/schedules…` and `/api/runs`: the same library calls and JSON as `producer schedules …
//! --json` and `producer runs list --json`. Changes and run-now need the admin token.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};

use crate::schedules::runner::{self, RunError};
use crate::schedules::store::{self, Change, ChangeError, Run, RunFilter, Schedule, Stats};

use super::auth::Admin;
use super::{AdminState, ApiError};

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Unknown(_) => Self::NotFound(e.to_string()),
            ChangeError::Invalid(reason) => Self::BadRequest(reason),
            ChangeError::Database(e) => e.into(),
        }
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Busy(_) => Self::Conflict(e.to_string()),
            RunError::Unknown(_) => Self::NotFound(e.to_string()),
            RunError::Database(e) => e.into(),
            failed @ RunError::Failed { .. } => Self::Internal(anyhow::Error::new(failed)),
        }
    }
}

/// Who a change or a run asked through the API is recorded as: `api`, or `api:<name>` when the
/// caller names itself in `X-Requested-By` (the dashboard sends `dashboard`).
pub fn actor(headers: &HeaderMap) -> String {
    let named = headers
        .get("x-requested-by")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_graphic()));
    named.map_or_else(|| "api".to_owned(), |name| format!("api:{name}"))
}

/// `GET /api/schedules`.
///
/// # Errors
///
/// 500 if the database fails.
#[utoipa::path(
    get,
    path = "/api/schedules",
    operation_id = "schedules_list",
    tag = "schedules",
    description = "Every schedule with its trigger, toggle, next and last run, as `schedules list --json`.",
    responses(
        (status = 200, description = "The schedules", body = [Object]),
        (status = 401, description = "A read token is needed", body = super::openapi::ErrorBody),
    ),
    security((), ("read_token" = []), ("admin_token" = []))
)]
pub async fn list(State(state): State<AdminState>) -> Result<Json<Vec<Schedule>>, ApiError> {
    Ok(Json(store::list(&state.readers).await?))
}

/// `GET /api/schedules/{name}`.
///
/// # Errors
///
/// 404 for an unknown schedule.
#[utoipa::path(
    get,
    path = "/api/schedules/{name}",
    operation_id = "schedules_show",
    tag = "schedules",
    description = "One schedule, as `schedules show NAME --json`.",
    params(("name" = String, Path, description = "check, refresh or prune")),
    responses(
        (status = 200, description = "The schedule", body = Object),
        (status = 401, description = "A read token is needed", body = super::openapi::ErrorBody),
        (status = 404, description = "Unknown schedule", body = super::openapi::ErrorBody),
    ),
    security((), ("read_token" = []), ("admin_token" = []))
)]
pub async fn show(State(state): State<AdminState>, Path(name): Path<String>) -> Result<Json<Schedule>, ApiError> {
    store::get(&state.readers, &name)
        .await?
        .map(Json)
        .ok_or_else(|| ChangeError::Unknown(name).into())
}

/// `PATCH /api/schedules/{name}` with a JSON body of the fields to change (`enabled`, `every` or
/// `cron`, `timezone`, `limit`, `misfire_grace`).
///
/// # Errors
///
/// 401/403 without the token, 400 for bad input, 404 for an unknown schedule.
#[utoipa::path(
    patch,
    path = "/api/schedules/{name}",
    operation_id = "schedules_change",
    tag = "schedules",
    description = "Changes a schedule: any of `enabled`, `every` or `cron`, `timezone`, `limit`, `misfire_grace`.",
    params(("name" = String, Path, description = "check, refresh or prune")),
    request_body(content = Object, example = json!({"cron": "30 2 * * *", "timezone": "Europe/Berlin"})),
    responses(
        (status = 200, description = "The schedule after the change", body = Object),
        (status = 400, description = "Bad input", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or wrong admin token", body = super::openapi::ErrorBody),
        (status = 403, description = "No admin token configured", body = super::openapi::ErrorBody),
        (status = 404, description = "Unknown schedule", body = super::openapi::ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn change(
    _admin: Admin,
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Schedule>, ApiError> {
    let change: Change =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))?;
    Ok(Json(
        store::update(&state.pool, &name, &change, &actor(&headers)).await?,
    ))
}

/// `POST /api/schedules/{name}/run`: runs it now (a manual run; its plan is unchanged) and answers
/// the finished run, 201.
///
/// # Errors
///
/// 401/403 without the token, 404 for an unknown schedule, 409 while it runs already.
#[utoipa::path(
    post,
    path = "/api/schedules/{name}/run",
    operation_id = "schedules_run",
    tag = "schedules",
    description = "Runs a schedule now (a manual run; its plan is unchanged) and answers the finished run.",
    params(("name" = String, Path, description = "check, refresh or prune")),
    responses(
        (status = 201, description = "The finished run", body = Object),
        (status = 401, description = "Missing or wrong admin token", body = super::openapi::ErrorBody),
        (status = 403, description = "No admin token configured", body = super::openapi::ErrorBody),
        (status = 404, description = "Unknown schedule", body = super::openapi::ErrorBody),
        (status = 409, description = "It runs already", body = super::openapi::ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn run_now(
    _admin: Admin,
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Run>), ApiError> {
    let run = runner::run_now(&state.pool, &state.settings, &name, &actor(&headers)).await?;
    Ok((StatusCode::CREATED, Json(run)))
}

/// `GET /api/runs?schedule=&status=&limit=`.
///
/// # Errors
///
/// 400 for a bad filter; 500 if the database fails.
#[utoipa::path(
    get,
    path = "/api/runs",
    operation_id = "runs_list",
    tag = "schedules",
    description = "Schedule runs, newest first, as `runs list --json`.",
    params(
        ("schedule" = Option<String>, Query, description = "Only this schedule"),
        ("status" = Option<String>, Query, description = "running, ok, failed, missed or abandoned"),
        ("limit" = Option<i64>, Query, description = "At most this many"),
    ),
    responses(
        (status = 200, description = "The runs", body = [Object]),
        (status = 400, description = "Bad filter", body = super::openapi::ErrorBody),
        (status = 401, description = "A read token is needed", body = super::openapi::ErrorBody),
    ),
    security((), ("read_token" = []), ("admin_token" = []))
)]
pub async fn runs(
    State(state): State<AdminState>,
    Query(filter): Query<RunFilter>,
) -> Result<Json<Vec<Run>>, ApiError> {
    if let Some(status) = &filter.status
        && !["running", "ok", "failed", "missed", "abandoned"].contains(&status.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "unknown status {status:?} (expected running, ok, failed, missed or abandoned)"
        )));
    }
    if let Some(limit) = filter.limit
        && !(1..=store::MAX_RUNS_LIMIT).contains(&limit)
    {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {}, not {limit}",
            store::MAX_RUNS_LIMIT
        )));
    }
    Ok(Json(store::runs(&state.readers, &filter).await?))
}

/// `GET /api/schedules/stats`: totals, successes and failures (overall and in the last 24 h), and
/// per schedule its last and next run, in one statement.
///
/// # Errors
///
/// 500 if the database fails.
#[utoipa::path(
    get,
    path = "/api/schedules/stats",
    operation_id = "schedules_stats",
    tag = "schedules",
    description = "Totals, successes and failures (overall and in the last 24 h) and per schedule its last and next run.",
    responses(
        (status = 200, description = "Schedule statistics", body = Object),
        (status = 401, description = "A read token is needed", body = super::openapi::ErrorBody),
    ),
    security((), ("read_token" = []), ("admin_token" = []))
)]
pub async fn stats(State(state): State<AdminState>) -> Result<Json<Stats>, ApiError> {
    Ok(Json(store::stats(&state.readers).await?))
}
