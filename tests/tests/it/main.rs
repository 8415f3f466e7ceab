//! Integration tests: one binary, one module per area, a fresh database per test.

mod admin;
mod app;
mod audit;
mod checks;
mod cooldowns;
mod dashboard;
mod deploy;
mod helpers;
mod otlp_receiver;
mod pipeline;
mod pipeline_process;
mod queue_claim;
mod queue_cluster;
mod queue_dedupe;
mod queue_retry;
mod queue_wakeup;
mod tracing;
mod write_back;
