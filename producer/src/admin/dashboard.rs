//! The dashboard at `/` (not built yet: the router is empty).

use axum::Router;

use super::AdminState;

/// The dashboard's routes.
pub fn routes() -> Router<AdminState> {
    Router::new()
}
