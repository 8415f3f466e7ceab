//! linkpulse's shared library: everything the producer and the worker have in common.
//!
//! # Layout
//!
//! - [`config`]: settings from the environment, with named defaults.
//! - [`db`]: the pool and the migrations (ours and the queue's, one migrator).
//! - [`metadata`]: title, description, image, favicon and site name from a page.
//! - [`github`]: the GitHub API client for repository links.
//! - [`queue`]: the PostgreSQL job queue and its apalis backend.
//! - [`shutdown`]: signals and the drain of a worker.
//! - [`telemetry`]: logging setup.

pub mod config;
pub mod db;
pub mod github;
pub mod metadata;
pub mod queue;
pub mod shutdown;
pub mod telemetry;
