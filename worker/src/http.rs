//! The worker's small HTTP server: `/livez` (the process answers) and `/readyz` (the database
//! answers and the worker is not draining), for Kubernetes probes.

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
struct Health {
    pool: PgPool,
    stop: CancellationToken,
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
        .with_state(Health {
            pool,
            stop: stop.clone(),
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
    match sqlx::query("SELECT 1").execute(&health.pool).await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
    }
}
