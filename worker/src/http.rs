//! The worker's small HTTP server: `/livez` (the process answers) and `/readyz` (the database
//! answers and the worker is not draining), for Kubernetes probes; `/metrics` (job counters and
//! durations recorded by the queue's ack layer, fetch durations) for Prometheus.

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
struct Health {
    pool: PgPool,
    stop: CancellationToken,
    metrics: PrometheusHandle,
}

/// Binds `addr` and serves until `stop`; returns the bound address (port 0 picks one).
///
/// # Errors
///
/// If the address cannot be bound.
pub async fn serve(addr: SocketAddr, pool: PgPool, stop: CancellationToken) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(render_metrics))
        .with_state(Health {
            pool,
            stop: stop.clone(),
            metrics: linkpulse_shared::metrics::install(),
        });
    tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(error) = server.await {
            tracing::error!(%error, "health server failed");
        }
    });
    Ok(bound)
}

async fn ready(State(health): State<Health>) -> (StatusCode, &'static str) {
    if health.stop.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    // Through `Executor`: a checked query with a result column has no `execute` of its own. The
    // handlers' one connection may be busy with a batch: a probe answers in bounded time anyway.
    let probe = sqlx::Executor::execute(&health.pool, sqlx::query_scalar!("SELECT 1"));
    match tokio::time::timeout(std::time::Duration::from_secs(2), probe).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
    }
}

async fn render_metrics(State(health): State<Health>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], health.metrics.render())
}
