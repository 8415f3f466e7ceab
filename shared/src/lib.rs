//! linkpulse's shared library: everything the producer and the worker have in common.
//!
//! # Layout
//!
//! - [`config`]: settings from the environment, with named defaults.
//! - [`db`]: the pool and the migrations (ours and the queue's, one migrator); `db::links`, the
//!   links table and the write-back.
//! - [`link_url`]: validation and normalisation of saved URLs.
//! - [`bookmarks`]: the files links come in and go out as (lines, CSV, bookmarks HTML).
//! - [`rules`]: per-host rules (`LINKPULSE_RULES_FILE`): exclude patterns, accepted status codes.
//! - [`link_jobs`]: the `check` and `refresh` job kinds, their keys and payloads.
//! - [`fetch`]: the HTTP plumbing (SSRF guard, redirects hop by hop, capped bodies, typed
//!   errors, `Retry-After`), for user URLs and the GitHub API alike.
//! - [`check`]: HEAD then GET, and a check's verdict (ok, dead, transient, blocked).
//! - [`healthcheck`]: `producer healthcheck` / `worker healthcheck`, the image's probe of itself.
//! - [`metrics`]: metric names, the process-wide Prometheus recorder, the job/fetch recorders.
//! - [`scrape`]: title, description, image, favicon and site name from a page (head, charset,
//!   skimmer, challenge pages, extraction).
//! - [`refresh`]: a refresh's domain logic (the conditional page read, the GitHub decision tree).
//! - [`github`]: repository page URLs, and the GitHub API client on `fetch`'s plumbing.
//! - [`politeness`]: per-host pacing and pool-wide cool-downs.
//! - [`shutdown`]: signals and the drain of a worker.
//! - [`telemetry`]: logging setup.
//! - [`webhooks`]: endpoints, signed deliveries of link events, the outbox dispatcher.

pub mod bookmarks;
pub mod check;
pub mod config;
pub mod db;
pub mod fetch;
pub mod github;
pub mod healthcheck;
pub mod link_jobs;
pub mod link_url;
pub mod metrics;
pub mod politeness;
pub mod refresh;
pub mod rules;
pub mod scrape;
pub mod shutdown;
pub mod telemetry;
pub mod webhooks;
