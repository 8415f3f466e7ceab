//! linkpulse's shared library: everything the producer and the worker have in common.
//!
//! # Layout
//!
//! - [`config`]: settings from the environment, with named defaults.
//! - [`db`]: the pool and the migrations (ours and the queue's, one migrator); `db::links`, the
//!   links table and the write-back.
//! - [`link_url`]: validation and normalisation of saved URLs.
//! - [`jobs`]: the `check` and `refresh` job kinds.
//! - [`fetch`]: guarded HTTP fetching (SSRF guard, manual redirects, capped bodies).
//! - [`check`]: a check's verdict (ok, dead, transient, blocked).
//! - [`metrics`]: metric names, the process-wide Prometheus recorder, the job/fetch recorders.
//! - [`metadata`]: title, description, image, favicon and site name from a page.
//! - [`github`]: the GitHub API client for repository links.
//! - [`politeness`]: per-host pacing and pool-wide cool-downs.
//! - [`queue`]: the PostgreSQL job queue and its apalis backend.
//! - [`redact`]: URLs in error text without query strings or credentials.
//! - [`shutdown`]: signals and the drain of a worker.
//! - [`telemetry`]: logging setup.

pub mod check;
pub mod config;
pub mod db;
pub mod fetch;
pub mod github;
pub mod jobs;
pub mod link_url;
pub mod metadata;
#[cfg(test)]
mod metadata_hostile_tests;
pub mod metrics;
pub mod politeness;
pub mod queue;
pub mod redact;
pub mod shutdown;
pub mod telemetry;
