//! `GET /api/openapi.json` and `producer openapi`: the OpenAPI 3.1 document of the admin API,
//! generated from the handlers' `#[utoipa::path]` attributes and the types they answer with, so
//! the document changes with the code and cannot describe a route that is not there.
//!
//! Every route of [`super::router`] but the dashboard's HTML pages and forms is listed; a test
//! (`it::links_api`) compares the document's paths with the router's routes, and
//! `scripts/validate-openapi.sh` validates the document against the OpenAPI 3.1 schema.

use std::sync::OnceLock;

use axum::Json;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::cli::{CliError, print_json};

/// Every error answer: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, in one line (for a 500, only "internal error": the cause is logged).
    pub error: String,
}

/// Adds the two bearer schemes the operations name in their `security`.
#[derive(Debug)]
struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut admin = Http::new(HttpAuthScheme::Bearer);
        admin.description = Some(
            "LINKPULSE_ADMIN_TOKEN: every mutating call; reads too. Unset: every mutation is refused (403).".into(),
        );
        components.add_security_scheme("admin_token", SecurityScheme::Http(admin));
        let mut read = Http::new(HttpAuthScheme::Bearer);
        read.description = Some(
            "LINKPULSE_READ_TOKEN: the GET calls of /api/. Unset: reads are open while LINKPULSE_ADMIN_ADDR is a \
             loopback address, else refused (403) unless the admin token is presented."
                .into(),
        );
        components.add_security_scheme("read_token", SecurityScheme::Http(read));
    }
}

/// `GET /livez`: `ok` while the process runs (no database access). Documentation only: the route
/// is a closure in [`super::router`].
#[utoipa::path(
    get,
    path = "/livez",
    operation_id = "livez",
    tag = "probes",
    responses((status = 200, description = "The process runs", body = String, content_type = "text/plain"))
)]
#[allow(dead_code)]
fn livez() {}

/// `GET /readyz`. Documentation only: the handler is private to [`super`].
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "probes",
    responses(
        (status = 200, description = "The database answers", body = String, content_type = "text/plain"),
        (status = 503, description = "The database does not answer within 2 s", body = String, content_type = "text/plain"),
    )
)]
#[allow(dead_code)]
fn readyz() {}

/// `GET /metrics`. Documentation only: the handler is [`super::metrics::render`].
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "probes",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain; version=0.0.4"))
)]
#[allow(dead_code)]
fn metrics() {}

/// `GET /api/openapi.json`: this document (open to every client).
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "openapi",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of the admin API", body = Object))
)]
pub async fn document() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], Json(spec()))
}

/// The webhooks' routes ([`super::webhooks`]), described here until its handlers carry their own
/// `#[utoipa::path]` attributes. Documentation only.
mod webhook_routes {
    use super::ErrorBody;

    #[utoipa::path(
        get,
        path = "/api/webhooks",
        operation_id = "webhooks_list",
        tag = "webhooks",
        description = "The endpoints, as `webhooks list --json` (no secrets).",
        responses(
            (status = 200, description = "The endpoints", body = [Object]),
            (status = 401, description = "A read token is needed", body = ErrorBody),
        ),
        security((), ("read_token" = []), ("admin_token" = []))
    )]
    #[allow(dead_code)]
    fn list() {}

    #[utoipa::path(
        post,
        path = "/api/webhooks",
        operation_id = "webhooks_add",
        tag = "webhooks",
        description = "Registers an endpoint: `{\"url\": …, \"events\": [\"link.down\", …]}` (events optional, default \
                       all). Answers 201 with the endpoint and its signing `secret`, shown only this once.",
        request_body(content = Object, example = json!({"url": "https://hooks.example.com/linkpulse", "events": ["link.down", "link.up"]})),
        responses(
            (status = 201, description = "The endpoint and its secret", body = Object),
            (status = 400, description = "Bad body, URL or event type", body = ErrorBody),
            (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
            (status = 403, description = "No admin token configured", body = ErrorBody),
        ),
        security(("admin_token" = []))
    )]
    #[allow(dead_code)]
    fn add() {}

    #[utoipa::path(
        get,
        path = "/api/webhooks/{id}",
        operation_id = "webhooks_show",
        tag = "webhooks",
        description = "One endpoint (no secret).",
        params(("id" = i64, Path, description = "The endpoint's id")),
        responses(
            (status = 200, description = "The endpoint", body = Object),
            (status = 401, description = "A read token is needed", body = ErrorBody),
            (status = 404, description = "No such endpoint", body = ErrorBody),
        ),
        security((), ("read_token" = []), ("admin_token" = []))
    )]
    #[allow(dead_code)]
    fn show() {}

    #[utoipa::path(
        delete,
        path = "/api/webhooks/{id}",
        operation_id = "webhooks_remove",
        tag = "webhooks",
        description = "Removes an endpoint: `{\"removed\": id}`.",
        params(("id" = i64, Path, description = "The endpoint's id")),
        responses(
            (status = 200, description = "Removed", body = Object),
            (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
            (status = 403, description = "No admin token configured", body = ErrorBody),
            (status = 404, description = "No such endpoint", body = ErrorBody),
        ),
        security(("admin_token" = []))
    )]
    #[allow(dead_code)]
    fn remove() {}

    #[utoipa::path(
        post,
        path = "/api/webhooks/{id}/test",
        operation_id = "webhooks_test",
        tag = "webhooks",
        description = "Sends a `ping` event now and answers what the endpoint said, as `webhooks test --json`.",
        params(("id" = i64, Path, description = "The endpoint's id")),
        responses(
            (status = 200, description = "The endpoint's answer (`ok` says whether it took it)", body = Object),
            (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
            (status = 403, description = "No admin token configured", body = ErrorBody),
            (status = 404, description = "No such endpoint", body = ErrorBody),
        ),
        security(("admin_token" = []))
    )]
    #[allow(dead_code)]
    fn test() {}

    #[utoipa::path(
        post,
        path = "/api/webhooks/{id}/rotate",
        operation_id = "webhooks_rotate",
        tag = "webhooks",
        description = "A new signing secret, shown once; the old one still signs for the grace period (body \
                       `{\"grace\": \"24h\"}`, optional).",
        params(("id" = i64, Path, description = "The endpoint's id")),
        request_body(content = Option<Object>, example = json!({"grace": "24h"})),
        responses(
            (status = 200, description = "`{\"id\", \"secret\", \"previous_secret_until\"}`", body = Object),
            (status = 400, description = "Bad body or grace", body = ErrorBody),
            (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
            (status = 403, description = "No admin token configured", body = ErrorBody),
            (status = 404, description = "No such endpoint", body = ErrorBody),
        ),
        security(("admin_token" = []))
    )]
    #[allow(dead_code)]
    fn rotate() {}

    #[utoipa::path(
        post,
        path = "/api/webhooks/{id}/enable",
        operation_id = "webhooks_enable",
        tag = "webhooks",
        description = "Turns a disabled endpoint back on: `{\"id\", \"enabled\": true}`.",
        params(("id" = i64, Path, description = "The endpoint's id")),
        responses(
            (status = 200, description = "Enabled", body = Object),
            (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
            (status = 403, description = "No admin token configured", body = ErrorBody),
            (status = 404, description = "No such endpoint", body = ErrorBody),
        ),
        security(("admin_token" = []))
    )]
    #[allow(dead_code)]
    fn enable() {}
}

/// The document's root: the routes in the order of the README.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "linkpulse admin API",
        description = "The producer's admin HTTP (`LINKPULSE_ADMIN_ADDR`): probes, metrics, the queue, schedules \
                       and the links as a service. Errors are `{\"error\": \"...\"}`. Mutations need \
                       `Authorization: Bearer $LINKPULSE_ADMIN_TOKEN`; reads of `/api/` need the read or admin \
                       token unless the server listens on a loopback address without a read token."
    ),
    paths(
        livez,
        readyz,
        metrics,
        document,
        super::api::queue_stats,
        super::api::jobs,
        super::api::requeue,
        super::queue_control::pause,
        super::queue_control::resume,
        super::queue_control::cancel,
        super::queue_control::paused,
        super::api::cycle,
        super::schedules::list,
        super::schedules::stats,
        super::schedules::show,
        super::schedules::change,
        super::schedules::run_now,
        super::schedules::runs,
        super::links_api::list,
        super::links_api::add,
        super::links_api::show,
        super::links_api::change,
        super::links_api::remove,
        super::links_api::activate,
        super::links_api::check_now,
        super::links_api::refresh_now,
        super::export::export,
        webhook_routes::list,
        webhook_routes::add,
        webhook_routes::show,
        webhook_routes::remove,
        webhook_routes::test,
        webhook_routes::rotate,
        webhook_routes::enable,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerSchemes),
    tags(
        (name = "probes", description = "Liveness, readiness and metrics; always open"),
        (name = "queue", description = "The job queue: depth, jobs, requeue, pause, cancel"),
        (name = "schedules", description = "Schedules, their runs, and a cycle now"),
        (name = "links", description = "Saved links: add, list, show, pause, remove, check now"),
        (name = "webhooks", description = "Endpoints that receive link status events"),
        (name = "meta", description = "This document"),
    )
)]
struct ApiDoc;

/// The document, built once per process.
pub fn spec() -> &'static utoipa::openapi::OpenApi {
    static SPEC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    SPEC.get_or_init(ApiDoc::openapi)
}

/// `producer openapi`: the document as one line of JSON on `out`.
///
/// # Errors
///
/// If `out` cannot be written.
pub fn print(out: &mut dyn std::io::Write) -> Result<(), CliError> {
    print_json(out, spec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_both_bearer_schemes() {
        let doc = serde_json::to_value(spec()).unwrap_or_default();
        assert!(
            doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")),
            "{}",
            doc["openapi"]
        );
        for scheme in ["admin_token", "read_token"] {
            assert_eq!(
                doc["components"]["securitySchemes"][scheme]["scheme"], "bearer",
                "{scheme}"
            );
        }
        assert!(doc["paths"]["/api/links/{id}"]["patch"].is_object());
        assert!(doc["components"]["schemas"]["Link"]["properties"]["status_reason"].is_object());
    }
}
