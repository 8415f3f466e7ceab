//! Schedules as data: the producer's periodic tasks (`check`, `refresh`, `prune`), each with an
//! interval or a cron expression in a time zone, a toggle, a job limit and a misfire grace, kept
//! in the `schedules` table, with a `schedule_runs` row for every run.
//!
//! - [`spec`]: when a trigger fires (pure; DST rules tested at chosen instants).
//! - [`store`]: the tables: seeding from the environment, reading, changing, listing, statistics.
//! - [`runner`]: running a schedule (leader's due runs, run-now) with coalescing, misfire grace
//!   and abandoned-run recovery.

pub mod runner;
pub mod spec;
pub mod store;
