//! The producer's admin HTTP: probes, Prometheus metrics, the operator API and the dashboard.
//!
//! Served by `producer run` on every replica, leader or not, so any replica behind a Service can
//! answer; only mutating calls need the admin token (see [`auth`]).
//!
//! # Layout
//!
//! - [`api`]: `/api/…`, the same library calls and JSON as the CLI's `--json` output.
//! - [`auth`]: the bearer-token checks of mutating calls and of reads.
//! - [`console`]: the dashboard: its pages, forms and sessions.
//! - [`host_guard`]: the `Host` allowlist and the origin check of state-changing requests.
//! - [`export`]: `GET /api/links/export`, the whole collection streamed (json, csv, html).
//! - [`queue_control`]: pausing and resuming a kind, cancelling queued jobs.
//! - [`links_api`]: `/api/links…`, the links as a service (add, list, show, pause, remove, check now).
//! - [`metrics`]: gauges refreshed from the database at scrape time, rendered at `/metrics`.
//! - [`openapi`]: the OpenAPI 3.1 document of every route, generated from the handlers.
//! - [`schedules`]: `/api/schedules…` and `/api/runs`.
//! - [`webhooks`]: `/api/webhooks…` and the dashboard's webhooks table.

pub mod api;
pub mod auth;
pub mod console;
pub mod export;
pub mod host_guard;
pub mod links_api;
pub mod metrics;
pub mod openapi;
pub mod queue_control;
pub mod schedules;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use linkpulse_shared::config::{ExposeSecret, Settings};

/// Most requests the admin server handles at once; more wait their turn (and time out), so a burst
/// costs queueing, not memory or database connections.
pub const MAX_CONCURRENT_REQUESTS: usize = 32;
/// Longest one admin request may take, waiting for its turn included (then 503).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest request body any route accepts (the biggest real one is a small JSON object or form).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Connections of the readers' pool ([`linkpulse_shared::db::connect_readers`]).
pub const READER_CONNECTIONS: u32 = 3;

/// What every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The producer's pool: mutations (requeue, activate, cycle now), shared with the cycles.
    pub pool: PgPool,
    /// Read-only connections with a statement timeout for pages, listings, stats, scrapes and
    /// probes, apart from `pool`, so readers can never starve the leader's cycles.
    pub readers: PgPool,
    /// Settings (cycle parameters, the admin token).
    pub settings: Arc<Settings>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Signs dashboard sessions ([`console::session::signing_key`]).
    pub session_key: axum_extra::extract::cookie::Key,
}

impl AdminState {
    /// The state of an admin server over `pool` and `readers`.
    pub fn new(pool: PgPool, readers: PgPool, settings: Arc<Settings>, metrics: PrometheusHandle) -> Self {
        let session_key = console::session::signing_key(&settings);
        Self {
            pool,
            readers,
            settings,
            metrics,
            session_key,
        }
    }
}

/// An admin call's failure, rendered as `{"error": "..."}` with its status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Malformed input: 400.
    #[error("{0}")]
    BadRequest(String),
    /// No such link: 404.
    #[error("{0}")]
    NotFound(String),
    /// The resource is busy (a schedule already running): 409.
    #[error("{0}")]
    Conflict(String),
    /// Missing or wrong token: 401.
    #[error("missing or invalid admin token")]
    Unauthorized,
    /// No token configured, so no mutation is allowed: 403.
    #[error("mutating admin calls are disabled: LINKPULSE_ADMIN_TOKEN is not set")]
    Forbidden,
    /// A read without the read (or admin) token where one is needed: 401.
    #[error("missing or invalid read token (LINKPULSE_READ_TOKEN or LINKPULSE_ADMIN_TOKEN)")]
    ReadUnauthorized,
    /// A read on a non-loopback address with no token configured to read with: 403.
    #[error(
        "admin API reads are disabled: LINKPULSE_ADMIN_ADDR is not a loopback address and LINKPULSE_READ_TOKEN is not set"
    )]
    ReadForbidden,
    /// Our side failed (database): 500. The cause is logged, not sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unauthorized | Self::ReadUnauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::ReadForbidden => StatusCode::FORBIDDEN,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(e).context("database error"))
    }
}

impl From<linkpulse_queue::QueueError> for ApiError {
    fn from(e: linkpulse_queue::QueueError) -> Self {
        Self::Internal(anyhow::Error::new(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(error) = &self {
            tracing::error!(error = format!("{error:#}"), "admin call failed");
        }
        let status = self.status();
        let mut response = (status, Json(serde_json::json!({ "error": self.to_string() }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// The whole admin router with its limits: a request timeout, a concurrency limit and a body limit
/// on every route, and the read rule on every `GET /api/…` ([`auth::read_guard`]); tests mount it
/// directly.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics::render))
        .route("/api/queue/stats", get(api::queue_stats))
        .route("/api/jobs", get(api::jobs))
        .route("/api/queue/requeue", post(api::requeue))
        .route("/api/queue/pause/{kind}", post(queue_control::pause))
        .route("/api/queue/resume/{kind}", post(queue_control::resume))
        .route("/api/queue/cancel", post(queue_control::cancel))
        .route("/api/queue/paused", get(queue_control::paused))
        .route("/api/cycle", post(api::cycle))
        .route("/api/schedules", get(schedules::list))
        .route("/api/schedules/stats", get(schedules::stats))
        .route("/api/schedules/{name}", get(schedules::show).patch(schedules::change))
        .route("/api/schedules/{name}/run", post(schedules::run_now))
        .route("/api/runs", get(schedules::runs))
        .route("/api/openapi.json", get(openapi::document))
        .route("/api/links/export", get(export::export))
        .merge(webhooks::routes())
        .merge(console::routes())
        // Every route above takes small bodies. Routes merged below bring their own limits: adding
        // up to 10,000 URLs in one call needs more (`Router::layer` covers only the routes added
        // before it).
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .merge(links_api::routes())
        .fallback(not_found)
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::read_guard))
        // Outside the read guard: a foreign Host is refused before anything else looks at it.
        .layer(axum::middleware::from_fn_with_state(state, host_guard::guard))
        .layer(
            tower::ServiceBuilder::new()
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    REQUEST_TIMEOUT,
                ))
                // Global: `Router::layer` wraps each route on its own, and a plain concurrency limit
                // would give every route its own 32.
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(MAX_CONCURRENT_REQUESTS)),
        )
}

/// Binds `settings.admin_addr` and serves until `stop`; returns the bound address (port 0 picks
/// one). Installs the process's metrics recorder if nobody did yet.
///
/// # Errors
///
/// If the address cannot be bound.
pub async fn serve(pool: PgPool, settings: Arc<Settings>, stop: CancellationToken) -> anyhow::Result<SocketAddr> {
    let addr = settings.admin_addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr().context("no local address")?;
    let readers = linkpulse_shared::db::connect_readers(settings.database_url.expose_secret(), READER_CONNECTIONS)
        .await
        .context("failed to open the admin readers' pool")?;
    let app = router(AdminState::new(
        pool,
        readers,
        settings,
        linkpulse_shared::metrics::install(),
    ));
    tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(error) = server.await {
            tracing::error!(%error, "admin server failed");
        }
    });
    Ok(bound)
}

/// The Jaeger UI page of trace `trace_id`, when `LINKPULSE_JAEGER_URL` is set: what the API's
/// `trace_url` fields and the dashboard's trace links say.
pub(crate) fn trace_url(settings: &Settings, trace_id: Option<&str>) -> Option<String> {
    let base = settings.jaeger_url.as_ref()?;
    linkpulse_shared::telemetry::jaeger_trace_url(base, trace_id?).map(|u| u.to_string())
}

/// An unknown path: JSON under `/api/`, the dashboard's page elsewhere.
async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        ApiError::NotFound(format!("no route {}", uri.path())).into_response()
    } else {
        console::not_found().await.into_response()
    }
}

/// `/readyz` answers within this, whatever the database does (Kubernetes' probe waits 3 s).
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// On the cycles' pool, not the readers': a burst of dashboard readers must not make every
/// replica unready at once.
async fn ready(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    // Through `Executor`: a checked query with a result column has no `execute` of its own.
    let probe = sqlx::Executor::execute(&state.pool, sqlx::query_scalar!("SELECT 1"));
    match tokio::time::timeout(READY_TIMEOUT, probe).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
    }
}
