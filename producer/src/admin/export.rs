//! `GET /api/links/export?format=json|csv|html`: the whole collection, streamed: the same bytes
//! as `producer links export` (one stream, [`crate::commands::export::chunks`]), read in keyset
//! batches on the readers' pool, so an export neither holds the table in memory nor a reader
//! connection for longer than one batch. Reads pass the read rule of
//! [`super::auth::read_guard`] like every `GET /api/…`.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::HeaderValue;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;

use super::openapi::ErrorBody;
use super::{AdminState, ApiError};
use crate::commands::export::{ExportFormat, chunks};

/// Query of `GET /api/links/export`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `json` (default, the `links list --json` array), `csv` or `html` (Netscape bookmarks).
    format: Option<String>,
}

/// `GET /api/links/export?format=`.
///
/// # Errors
///
/// 400 for an unknown format. A database failure after the first bytes ends the body early (the
/// status is sent already) and is logged.
#[utoipa::path(
    get,
    path = "/api/links/export",
    tag = "links",
    description = "Every link, streamed: `json` (the `links list --json` array), `csv` (header `url,status,title,…`) \
                   or `html` (Netscape bookmarks, importable by browsers and `links import`); the same bytes as \
                   `producer links export --format …`.",
    params(ExportQuery),
    responses(
        (status = 200, description = "The whole collection", content(
            (String = "application/json"),
            (String = "text/csv"),
            (String = "text/html"),
        )),
        (status = 400, description = "Unknown format", body = ErrorBody),
        (status = 401, description = "A read token is needed", body = ErrorBody),
        (status = 403, description = "Reads are disabled: no read token on a non-loopback address", body = ErrorBody),
    ),
    security((), ("read_token" = []), ("admin_token" = []))
)]
pub async fn export(State(state): State<AdminState>, Query(query): Query<ExportQuery>) -> Result<Response, ApiError> {
    let format = match query.format.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
        None => ExportFormat::Json,
        Some(name) => name.parse::<ExportFormat>().map_err(ApiError::BadRequest)?,
    };
    let stream = chunks(state.readers.clone(), format).inspect(|chunk| {
        if let Err(error) = chunk {
            tracing::error!(error = %error, "links export failed mid-stream");
        }
    });
    let disposition = format!("attachment; filename=\"links.{}\"", format.extension());
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
