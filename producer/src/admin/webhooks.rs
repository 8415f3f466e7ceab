//! `/api/webhooks…`: `producer webhooks` over HTTP, with the same library calls and JSON as the
//! commands' `--json` output; the dashboard shows them on its overview.
//!
//! Reads follow the API's read rule ([`Reader`]: the read or admin token, or none while the server
//! listens on loopback); endpoint URLs may carry a receiver's token in their query. Everything
//! else needs the admin token (†). No call ever shows a secret except the answers of `POST
//! /api/webhooks` and `…/rotate`, once.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;

use linkpulse_shared::webhooks::send::{PingResult, ping};
use linkpulse_shared::webhooks::store::{self, Added, DEFAULT_ROTATION_GRACE, Rotated};
use linkpulse_shared::webhooks::{Webhook, WebhookError, check_url, parse_events};

use super::auth::{Admin, Reader};
use super::{AdminState, ApiError};

/// Who an endpoint added through the API is recorded as (the token names no person).
const API_ACTOR: &str = "api";

/// The routes, merged into the admin router.
pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/api/webhooks", get(list).post(add))
        .route("/api/webhooks/{id}", get(show).delete(remove))
        .route("/api/webhooks/{id}/test", post(test))
        .route("/api/webhooks/{id}/rotate", post(rotate))
        .route("/api/webhooks/{id}/enable", post(enable))
}

/// `GET /api/webhooks`: the `webhooks list --json` array (no secrets).
///
/// # Errors
///
/// 401/403 without a read token off loopback; 500 if the database fails.
pub async fn list(_reader: Reader, State(state): State<AdminState>) -> Result<Json<Vec<Webhook>>, ApiError> {
    Ok(Json(store::list(&state.readers).await.map_err(api_error)?))
}

/// `GET /api/webhooks/{id}`: one endpoint.
///
/// # Errors
///
/// 404 for an unknown id; 401/403 without a token off loopback; 500 if the database fails.
pub async fn show(
    _reader: Reader,
    State(state): State<AdminState>,
    Path(id): Path<i64>,
) -> Result<Json<Webhook>, ApiError> {
    store::get(&state.readers, id)
        .await
        .map_err(api_error)?
        .map(Json)
        .ok_or_else(|| not_found(id))
}

/// Body of `POST /api/webhooks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    /// Where deliveries go.
    url: String,
    /// Event types (default: all).
    #[serde(default)]
    events: Option<Vec<String>>,
}

/// `POST /api/webhooks` † `{"url": …, "events": […]}` → 201 with the endpoint and its `secret`
/// (the only time it is shown).
///
/// # Errors
///
/// 400 for a bad body, URL (the network guard's refusal included) or event type; 401/403
/// without the admin token; 500 if the database fails.
pub async fn add(
    _admin: Admin,
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Added>), ApiError> {
    let body: AddBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    let url = check_url(&body.url, &state.settings.fetch.guard).map_err(api_error)?;
    let events = parse_events(body.events.as_deref()).map_err(api_error)?;
    let added = store::add(&state.pool, &url, &events, API_ACTOR)
        .await
        .map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(added)))
}

/// `DELETE /api/webhooks/{id}` † → `{"removed": id}`.
///
/// # Errors
///
/// 404 for an unknown id; 401/403 without the admin token; 500 if the database fails.
pub async fn remove(
    _admin: Admin,
    State(state): State<AdminState>,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !store::remove(&state.pool, id).await.map_err(api_error)? {
        return Err(not_found(id));
    }
    Ok(Json(serde_json::json!({ "removed": id })))
}

/// `POST /api/webhooks/{id}/test` † → the `webhooks test --json` object (200 whatever the
/// endpoint answered: `ok` says).
///
/// # Errors
///
/// 404 for an unknown id; 401/403 without the admin token; 500 if the database fails.
pub async fn test(
    _admin: Admin,
    State(state): State<AdminState>,
    Path(id): Path<i64>,
) -> Result<Json<PingResult>, ApiError> {
    ping(&state.pool, &state.settings.fetch, id)
        .await
        .map_err(api_error)?
        .map(Json)
        .ok_or_else(|| not_found(id))
}

/// Body of `POST /api/webhooks/{id}/rotate`; optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// How long the old secret still signs (`"24h"`, `"0s"`; default 24h).
    grace: Option<String>,
}

/// `POST /api/webhooks/{id}/rotate` † `{"grace": "24h"}` → `{"id", "secret",
/// "previous_secret_until"}` (the new secret, shown once).
///
/// # Errors
///
/// 400 for a bad body or grace; 404 for an unknown id; 401/403 without the admin token; 500 if
/// the database fails.
pub async fn rotate(
    _admin: Admin,
    State(state): State<AdminState>,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Json<Rotated>, ApiError> {
    let body: RotateBody = if body.iter().all(u8::is_ascii_whitespace) {
        RotateBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    let grace = match body.grace {
        None => DEFAULT_ROTATION_GRACE,
        Some(text) => humantime::parse_duration(text.trim())
            .map_err(|e| ApiError::BadRequest(format!("invalid grace {text:?}: {e}")))?,
    };
    store::rotate(&state.pool, id, grace)
        .await
        .map_err(api_error)?
        .map(Json)
        .ok_or_else(|| not_found(id))
}

/// `POST /api/webhooks/{id}/enable` † → `{"id", "enabled": true}`.
///
/// # Errors
///
/// 404 for an unknown id; 401/403 without the admin token; 500 if the database fails.
pub async fn enable(
    _admin: Admin,
    State(state): State<AdminState>,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !store::enable(&state.pool, id).await.map_err(api_error)? {
        return Err(not_found(id));
    }
    Ok(Json(serde_json::json!({ "id": id, "enabled": true })))
}

fn not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!("no webhook {id}"))
}

/// The caller's mistakes are 400s; the database's failures 500s.
pub(crate) fn api_error(error: WebhookError) -> ApiError {
    match error {
        WebhookError::Database(_) | WebhookError::Queue(_) | WebhookError::Send(_) => {
            ApiError::Internal(anyhow::Error::new(error))
        }
        other => ApiError::BadRequest(other.to_string()),
    }
}
