//! `/api/links…`: the links as a service. Add many at once, list with filters and keyset
//! pagination, show one with its history, pause or resume it, remove it, check or refresh it now.
//!
//! Every handler makes the same library call as its CLI command (`links add`, `list`, `show`,
//! `pause`, `resume`, `activate`, `remove`, `check`, `refresh`), so both print the same JSON.
//! Reads pass the read rule of [`super::auth::read_guard`]; mutations need the admin token
//! ([`Admin`]) and are recorded as `api` (or `api:<name>` with `X-Requested-By`).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header::LINK;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tower_http::limit::RequestBodyLimitLayer;

use linkpulse_shared::db::history::{self, LinkHistory, Verdict};
use linkpulse_shared::db::lifecycle::{self, Enqueued, LifecycleError, Removed};
use linkpulse_shared::db::links::{self, Link, LinkRef, ListFilter, StatusChange};
use linkpulse_shared::link_jobs::{CHECK, REFRESH};

use super::auth::Admin;
use super::openapi::ErrorBody;
use super::{AdminState, ApiError, MAX_BODY_BYTES};
use crate::commands::links::{AddOutcome, AddResult, add_urls, change_reason};

/// Most URLs one `POST /api/links` takes (more: 400). Bigger imports go through `links import`.
pub const MAX_ADD_URLS: usize = 10_000;
/// Largest body of `POST /api/links` (past it: 413): 10,000 URLs of 400 bytes on average, far
/// above real ones, while one request still costs at most a few megabytes.
pub const MAX_ADD_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Default page size of `GET /api/links`.
pub const DEFAULT_PAGE: i64 = 100;
/// Largest page of `GET /api/links` (past it: 400).
pub const MAX_PAGE: i64 = 1000;
/// Longest `q` and `host` filter accepted (a URL is at most 2,048 characters).
const MAX_FILTER_LEN: usize = 2048;
/// What a cursor says before the id: a version, so the encoding can change without old cursors
/// being read wrong.
const CURSOR_PREFIX: &str = "v1:";

/// The routes of the links, each with its body limit (see [`super::router`]).
pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/api/links/{id}", get(show).patch(change).delete(remove))
        .route("/api/links/{id}/activate", post(activate))
        .route("/api/links/{id}/check", post(check_now))
        .route("/api/links/{id}/refresh", post(refresh_now))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .route(
            "/api/links",
            get(list)
                .post(add)
                .layer(RequestBodyLimitLayer::new(MAX_ADD_BODY_BYTES)),
        )
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        Self::Internal(anyhow::Error::new(e))
    }
}

/// Query of `GET /api/links`. Strings, parsed by hand, so a bad value gets our JSON error.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this status: active, inaccessible, repo_unavailable, archived, paused.
    status: Option<String>,
    /// Only this host (exact, e.g. `example.com`).
    host: Option<String>,
    /// Only links whose URL or title contains this text (case-insensitive).
    q: Option<String>,
    /// Only links last checked before this time (RFC 3339, e.g. `2026-12-01T00:00:00Z`);
    /// never-checked links do not match.
    checked_before: Option<String>,
    /// Page size: 1 to 1000, default 100.
    limit: Option<String>,
    /// Where the page starts: the opaque `cursor` of the previous page's `Link` header.
    cursor: Option<String>,
}

/// A valid, parsed `GET /api/links` query.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Page {
    filter: ListFilter,
    limit: i64,
}

impl Page {
    fn parse(query: ListQuery) -> Result<Self, ApiError> {
        let given = |v: Option<String>| v.filter(|s| !s.is_empty());
        let status = given(query.status);
        if let Some(s) = &status
            && !links::STATUSES.contains(&s.as_str())
        {
            return Err(ApiError::BadRequest(format!(
                "unknown status {s:?} (expected one of {})",
                links::STATUSES.join(", ")
            )));
        }
        let host = given(query.host).map(|h| h.to_ascii_lowercase());
        let text = given(query.q);
        for (name, value) in [("host", &host), ("q", &text)] {
            if value.as_ref().is_some_and(|v| v.chars().count() > MAX_FILTER_LEN) {
                return Err(ApiError::BadRequest(format!(
                    "{name} must be at most {MAX_FILTER_LEN} characters"
                )));
            }
        }
        let checked_before = given(query.checked_before).map(|t| parse_time(&t)).transpose()?;
        let after_id = given(query.cursor).map(|c| decode_cursor(&c)).transpose()?;
        let limit = parse_page_limit(query.limit.as_deref())?;
        Ok(Self {
            filter: ListFilter {
                status,
                host,
                text,
                checked_before,
                after_id,
            },
            limit,
        })
    }

    /// The query of the page after `last_id`, as a path with its query string.
    fn next(&self, last_id: i64) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        let f = &self.filter;
        if let Some(s) = &f.status {
            query.append_pair("status", s);
        }
        if let Some(h) = &f.host {
            query.append_pair("host", h);
        }
        if let Some(q) = &f.text {
            query.append_pair("q", q);
        }
        if let Some(t) = f.checked_before {
            query.append_pair(
                "checked_before",
                &t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            );
        }
        query.append_pair("limit", &self.limit.to_string());
        query.append_pair("cursor", &encode_cursor(last_id));
        format!("/api/links?{}", query.finish())
    }
}

/// An RFC 3339 time. A `+` of the offset that arrived as a space (an unencoded query string)
/// is read as the `+` it was.
fn parse_time(text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|e| DateTime::parse_from_rfc3339(&text.replace(' ', "+")).map_err(|_| e))
        .map(|t| t.to_utc())
        .map_err(|e| {
            ApiError::BadRequest(format!(
                "checked_before must be an RFC 3339 time like 2026-12-01T00:00:00Z, not {text:?} ({e})"
            ))
        })
}

fn parse_page_limit(limit: Option<&str>) -> Result<i64, ApiError> {
    let Some(text) = limit.filter(|l| !l.is_empty()) else {
        return Ok(DEFAULT_PAGE);
    };
    match text.parse::<i64>() {
        Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Ok(n) if n > MAX_PAGE => Err(ApiError::BadRequest(format!(
            "limit must be at most {MAX_PAGE}, not {n}"
        ))),
        _ => Err(ApiError::BadRequest(format!(
            "limit must be an integer from 1 to {MAX_PAGE}, not {text:?}"
        ))),
    }
}

/// The cursor of the page after link `id`: opaque to clients, so what it holds may change.
pub fn encode_cursor(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{id}"))
}

fn decode_cursor(cursor: &str) -> Result<i64, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix(CURSOR_PREFIX)?.parse::<i64>().ok())
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "invalid cursor {cursor:?}: use the one of a `Link: <…>; rel=\"next\"` header"
            ))
        })
}

/// `GET /api/links`: one page, by id, as the array `links list --json` prints; the next page's
/// URL in a `Link: <…>; rel="next"` header, absent on the last page.
///
/// # Errors
///
/// 400 for an unknown status, a bad time, limit or cursor; 500 if the database fails.
#[utoipa::path(
    get,
    path = "/api/links",
    operation_id = "links_list",
    tag = "links",
    description = "Links by id, one page at a time (keyset pagination): the same array as `links list --json`. \
                   Follow the `Link: <…>; rel=\"next\"` header for the next page; the last page has none.",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of links", body = [Link],
         headers(("Link" = String, description = "`</api/links?…&cursor=…>; rel=\"next\"` while more links match"))),
        (status = 400, description = "Unknown status, bad time, limit or cursor", body = ErrorBody),
        (status = 401, description = "A read token is needed", body = ErrorBody),
        (status = 403, description = "Reads are disabled: no read token on a non-loopback address", body = ErrorBody),
    ),
    security((), ("read_token" = []), ("admin_token" = []))
)]
pub async fn list(State(state): State<AdminState>, Query(query): Query<ListQuery>) -> Result<Response, ApiError> {
    let page = Page::parse(query)?;
    // One more than the page: whether a next page exists, without a count.
    let mut links = links::list_page(&state.readers, &page.filter, page.limit + 1).await?;
    let more = usize::try_from(page.limit).is_ok_and(|limit| links.len() > limit);
    let mut headers = HeaderMap::new();
    if more {
        links.pop();
        if let Some(last) = links.last() {
            let next = format!("<{}>; rel=\"next\"", page.next(last.id));
            let value = HeaderValue::from_str(&next)
                .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("Link header")))?;
            headers.insert(LINK, value);
        }
    }
    Ok((headers, Json(links)).into_response())
}

/// Body of `POST /api/links`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    /// 1 to 10,000 URLs.
    urls: Vec<String>,
}

/// Answer of `POST /api/links`: one result per given URL, in order, and the counts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AddAnswer {
    /// URLs saved now.
    pub accepted: usize,
    /// URLs already saved (or given twice).
    pub duplicate: usize,
    /// URLs refused, each with its reason.
    pub rejected: usize,
    /// One per given URL, in order.
    pub results: Vec<AddResult>,
}

/// `POST /api/links` †: saves the valid URLs (normalised as `links add` does) with their first
/// check and refresh enqueued at once, and answers per URL.
///
/// # Errors
///
/// 401/403 without the token; 400 for a malformed body, no URL or more than 10,000; 413 for a
/// body over 4 MiB; 500 if the database fails (nothing is saved then).
#[utoipa::path(
    post,
    path = "/api/links",
    operation_id = "links_add",
    tag = "links",
    description = "Adds 1 to 10,000 URLs with the rules of `links add`: each is accepted (saved, its first check and \
                   refresh enqueued at once), a duplicate (already saved) or rejected (with the reason).",
    request_body(content = AddBody, example = json!({"urls": ["https://example.com/", "not a url"]})),
    responses(
        (status = 200, description = "Per URL, in order, with counts", body = AddAnswer),
        (status = 400, description = "Malformed body, no URL or more than 10,000", body = ErrorBody),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "No admin token configured", body = ErrorBody),
        (status = 413, description = "Body over 4 MiB"),
    ),
    security(("admin_token" = []))
)]
pub async fn add(_admin: Admin, State(state): State<AdminState>, body: Bytes) -> Result<Json<AddAnswer>, ApiError> {
    let body: AddBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "invalid JSON body (expected {{\"urls\": [\"https://…\", …]}}): {e}"
        ))
    })?;
    if body.urls.is_empty() || body.urls.len() > MAX_ADD_URLS {
        return Err(ApiError::BadRequest(format!(
            "urls must hold 1 to {MAX_ADD_URLS} URLs, not {} (use `links import` for more)",
            body.urls.len()
        )));
    }
    let settings = &state.settings;
    let results = add_urls(&state.pool, &body.urls, &settings.rules, settings.queue.max_attempts).await?;
    let count = |outcome| results.iter().filter(|r| r.result == outcome).count();
    Ok(Json(AddAnswer {
        accepted: count(AddOutcome::Accepted),
        duplicate: count(AddOutcome::Duplicate),
        rejected: count(AddOutcome::Rejected),
        results,
    }))
}

/// One link with everything known about it: the link (as `links show --json`), its last
/// verdict, its recent history and its trace.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LinkDetail {
    /// The link's own fields, as in `GET /api/links`.
    #[serde(flatten)]
    pub link: Link,
    /// The last check's verdict: the newest kept one, or what the link row says of its last
    /// check when no verdict is kept; `null` if it was never checked.
    #[schema(value_type = Option<Object>)]
    pub last_verdict: Option<Verdict>,
    /// Dead since, last ok, ok share, the newest verdicts and events.
    #[schema(value_type = Object)]
    pub history: LinkHistory,
    /// The Jaeger UI page of the trace of its latest check or refresh, when
    /// `LINKPULSE_JAEGER_URL` is set.
    pub trace_url: Option<String>,
}

/// `GET /api/links/{id}` (an id, or a percent-encoded URL).
///
/// # Errors
///
/// 400 for a malformed URL; 404 for an unknown link; 500 if the database fails.
#[utoipa::path(
    get,
    path = "/api/links/{id}",
    operation_id = "links_show",
    tag = "links",
    description = "One link with everything known: its fields (as `links show --json`), its last verdict, \
                   its recent history (verdicts, status events, dead since, last ok, ok share) and its trace.",
    params(("id" = String, Path, description = "The link's id, or its URL percent-encoded")),
    responses(
        (status = 200, description = "The link", body = LinkDetail),
        (status = 400, description = "Malformed URL", body = ErrorBody),
        (status = 401, description = "A read token is needed", body = ErrorBody),
        (status = 404, description = "No such link", body = ErrorBody),
    ),
    security((), ("read_token" = []), ("admin_token" = []))
)]
pub async fn show(State(state): State<AdminState>, Path(id): Path<String>) -> Result<Json<LinkDetail>, ApiError> {
    let link = find(&state.readers, &id).await?;
    // As many as are kept (`LINKPULSE_HISTORY_PER_LINK`), as `links show` shows.
    let history = history::for_link(&state.readers, link.id, state.settings.history_per_link).await?;
    let last_verdict = history.verdicts.first().cloned().or_else(|| {
        Some(Verdict {
            checked_at: link.last_checked_at?,
            outcome: link.last_outcome.clone()?,
            status_code: link.last_status_code,
            duration_ms: None,
            error: link.last_error.clone(),
        })
    });
    let trace_url = super::trace_url(&state.settings, link.last_trace_id.as_deref());
    Ok(Json(LinkDetail {
        link,
        last_verdict,
        history,
        trace_url,
    }))
}

/// Body of `PATCH /api/links/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeBody {
    /// `paused` (never scheduled, never counted) or `active` (failures reset to 0).
    status: String,
    /// Why (kept as the link's status reason while paused, and in the event).
    reason: Option<String>,
}

/// `PATCH /api/links/{id}` † `{"status":"paused"|"active"}`: the link after the change (and its
/// event), as `links pause|resume --json`.
///
/// # Errors
///
/// 401/403 without the token; 400 for a bad body or status; 404 for an unknown link.
#[utoipa::path(
    patch,
    path = "/api/links/{id}",
    operation_id = "links_change",
    tag = "links",
    description = "Pauses a link (never checked or refreshed on schedule, never counted) or makes it active \
                   (failures reset to 0). The change and its `link_events` row are written together.",
    params(("id" = String, Path, description = "The link's id, or its URL percent-encoded")),
    request_body(content = ChangeBody, example = json!({"status": "paused", "reason": "site under maintenance"})),
    responses(
        (status = 200, description = "The link after the change", body = Link),
        (status = 400, description = "Bad body or status", body = ErrorBody),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "No admin token configured", body = ErrorBody),
        (status = 404, description = "No such link", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn change(
    _admin: Admin,
    State(state): State<AdminState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Link>, ApiError> {
    let body: ChangeBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "invalid JSON body (expected {{\"status\": \"paused\"|\"active\"}}): {e}"
        ))
    })?;
    let verb = match body.status.as_str() {
        "paused" => "paused",
        "active" => "resumed",
        other => {
            return Err(ApiError::BadRequest(format!(
                "status must be \"paused\" or \"active\", not {other:?}"
            )));
        }
    };
    let actor = super::schedules::actor(&headers);
    let reason = change_reason(verb, &actor, body.reason.as_deref());
    let change = StatusChange {
        status: &body.status,
        actor: &actor,
        reason: &reason,
    };
    links::set_status(&state.pool, &parse_ref(&id)?, &change)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no link {id}")))
}

/// `POST /api/links/{id}/activate` †: the link after the override, as `links activate --json`.
///
/// # Errors
///
/// 401/403 without the token; 400 for a malformed id; 404 for an unknown link.
#[utoipa::path(
    post,
    path = "/api/links/{id}/activate",
    operation_id = "links_activate",
    tag = "links",
    description = "Manual override: status active, failures reset to 0 (with its event), as `links activate --json`.",
    params(("id" = String, Path, description = "The link's id, or its URL percent-encoded")),
    responses(
        (status = 200, description = "The link after the override", body = Link),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "No admin token configured", body = ErrorBody),
        (status = 404, description = "No such link", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn activate(
    _admin: Admin,
    State(state): State<AdminState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Link>, ApiError> {
    let actor = super::schedules::actor(&headers);
    links::activate(&state.pool, &parse_ref(&id)?, &actor)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no link {id}")))
}

/// `DELETE /api/links/{id}` †: removes the link and cancels its queued jobs; a running job
/// finishes and its write-back finds no row.
///
/// # Errors
///
/// 401/403 without the token; 400 for a malformed URL; 404 for an unknown link.
#[utoipa::path(
    delete,
    path = "/api/links/{id}",
    operation_id = "links_remove",
    tag = "links",
    description = "Removes the link and cancels its queued jobs (they end `failed`, class `cancelled`); a running \
                   job finishes and writes nothing. Its events stay in the history.",
    params(("id" = String, Path, description = "The link's id, or its URL percent-encoded")),
    responses(
        (status = 200, description = "What was removed", body = Removed),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "No admin token configured", body = ErrorBody),
        (status = 404, description = "No such link", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn remove(
    _admin: Admin,
    State(state): State<AdminState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Removed>, ApiError> {
    let actor = super::schedules::actor(&headers);
    lifecycle::remove(&state.pool, &parse_ref(&id)?, &actor)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no link {id}")))
}

/// `POST /api/links/{id}/check` †: a check now, ahead of scheduled work.
///
/// # Errors
///
/// 401/403 without the token; 404 for an unknown link; 409 for a paused one.
#[utoipa::path(
    post,
    path = "/api/links/{id}/check",
    operation_id = "links_check",
    tag = "links",
    description = "Enqueues a check now, ahead of scheduled work (priority -10; the schedules use 0). \
                   Deduplicated like every job: when one is already queued or running, that one is the answer (200).",
    params(("id" = String, Path, description = "The link's id, or its URL percent-encoded")),
    responses(
        (status = 202, description = "A job was enqueued", body = Enqueued, example = json!({"enqueued": true, "job_id": 42})),
        (status = 200, description = "The link already had one queued or running", body = Enqueued,
         example = json!({"enqueued": false, "job_id": 41})),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "No admin token configured", body = ErrorBody),
        (status = 404, description = "No such link", body = ErrorBody),
        (status = 409, description = "The link is paused", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn check_now(
    _admin: Admin,
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Enqueued>), ApiError> {
    enqueue(&state, &id, CHECK).await
}

/// `POST /api/links/{id}/refresh` †: a metadata refresh now, ahead of scheduled work.
///
/// # Errors
///
/// 401/403 without the token; 404 for an unknown link; 409 for a paused one.
#[utoipa::path(
    post,
    path = "/api/links/{id}/refresh",
    operation_id = "links_refresh",
    tag = "links",
    description = "Enqueues a metadata refresh now, ahead of scheduled work; deduplicated like `/check`.",
    params(("id" = String, Path, description = "The link's id, or its URL percent-encoded")),
    responses(
        (status = 202, description = "A job was enqueued", body = Enqueued),
        (status = 200, description = "The link already had one queued or running", body = Enqueued),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "No admin token configured", body = ErrorBody),
        (status = 404, description = "No such link", body = ErrorBody),
        (status = 409, description = "The link is paused", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn refresh_now(
    _admin: Admin,
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Enqueued>), ApiError> {
    enqueue(&state, &id, REFRESH).await
}

/// 202 with the new job, or 200 with the one already waiting or running.
pub(crate) async fn enqueue(
    state: &AdminState,
    id: &str,
    kind: &str,
) -> Result<(StatusCode, Json<Enqueued>), ApiError> {
    let link = find(&state.pool, id).await?;
    if link.status == "paused" {
        return Err(ApiError::Conflict(format!(
            "link {} is paused: resume it first (PATCH {{\"status\":\"active\"}})",
            link.id
        )));
    }
    let max_attempts = state.settings.queue.max_attempts;
    let answer = lifecycle::enqueue_now(&state.pool, kind, link.id, &link.url, &link.host, max_attempts).await?;
    let status = if answer.enqueued {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(answer)))
}

fn parse_ref(input: &str) -> Result<LinkRef, ApiError> {
    LinkRef::parse(input).map_err(|e| ApiError::BadRequest(e.to_string()))
}

async fn find(pool: &sqlx::PgPool, input: &str) -> Result<Link, ApiError> {
    links::find(pool, &parse_ref(input)?)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no link {input}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        for id in [0, 1, 42, i64::MAX] {
            assert_eq!(decode_cursor(&encode_cursor(id)).ok(), Some(id));
        }
        let cursor = encode_cursor(42);
        assert!(
            cursor
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "URL-safe: {cursor}"
        );
        for junk in [
            "",
            "42",
            "!!!",
            &URL_SAFE_NO_PAD.encode("v2:42"),
            &URL_SAFE_NO_PAD.encode("v1:x"),
        ] {
            assert!(matches!(decode_cursor(junk), Err(ApiError::BadRequest(_))), "{junk:?}");
        }
    }

    #[test]
    fn page_limits_are_bounded() {
        assert_eq!(parse_page_limit(None).ok(), Some(DEFAULT_PAGE));
        assert_eq!(parse_page_limit(Some("")).ok(), Some(DEFAULT_PAGE));
        assert_eq!(parse_page_limit(Some("1000")).ok(), Some(1000));
        for bad in ["0", "-1", "1001", "x", "99999999999999999999"] {
            let err = parse_page_limit(Some(bad))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("limit"), "{bad}: {err}");
        }
    }

    #[test]
    fn times_are_rfc3339_even_with_a_plus_that_became_a_space() {
        let t = parse_time("2026-12-01T10:00:00+01:00").ok();
        assert_eq!(t, parse_time("2026-12-01T10:00:00 01:00").ok());
        assert_eq!(t.map(|t| t.to_rfc3339()), Some("2026-12-01T09:00:00+00:00".to_owned()));
        assert!(matches!(parse_time("yesterday"), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn the_next_page_keeps_every_filter() {
        let page = Page::parse(ListQuery {
            status: Some("active".into()),
            host: Some("Example.COM".into()),
            q: Some("a&b c".into()),
            checked_before: Some("2026-12-01T00:00:00Z".into()),
            limit: Some("10".into()),
            cursor: None,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let next = page.next(7);
        let query = next.strip_prefix("/api/links?").unwrap_or_default();
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let get = |k: &str| pairs.iter().find(|(name, _)| name == k).map(|(_, v)| v.as_str());
        assert_eq!(get("status"), Some("active"));
        assert_eq!(get("host"), Some("example.com"));
        assert_eq!(get("q"), Some("a&b c"));
        assert_eq!(get("checked_before"), Some("2026-12-01T00:00:00Z"));
        assert_eq!(get("limit"), Some("10"));
        assert_eq!(get("cursor").map(decode_cursor).and_then(Result::ok), Some(7));
    }
}
