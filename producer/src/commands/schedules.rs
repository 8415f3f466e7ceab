//! `producer schedules …`, `producer runs list` and `producer cycle [NAME]`.

use std::io::Write;

use sqlx::PgPool;

use linkpulse_shared::config::Settings;

use super::links::io;
use crate::cli::{CliError, SchedulesCommand, print_json};
use crate::schedules::runner::{self, RunError};
use crate::schedules::store::{self, Change, ChangeError, Run, RunFilter, Schedule};

/// Who a change or run from this command line is recorded as: `cli:<user>`.
pub fn cli_actor() -> String {
    match std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        Ok(user) if !user.is_empty() => format!("cli:{user}"),
        _ => "cli".to_owned(),
    }
}

impl From<ChangeError> for CliError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Database(e) => e.into(),
            other => Self::User(other.to_string()),
        }
    }
}

impl From<RunError> for CliError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Database(e) => e.into(),
            failed @ RunError::Failed { .. } => Self::Internal(anyhow::Error::new(failed)),
            other => Self::User(other.to_string()),
        }
    }
}

fn time(at: Option<chrono::DateTime<chrono::Utc>>) -> String {
    at.map_or_else(|| "-".to_owned(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

fn trigger_text(s: &Schedule) -> String {
    match (&s.every, &s.cron) {
        (_, Some(cron)) => format!("cron {cron} ({})", s.timezone),
        (Some(every), None) => format!("every {every}"),
        (None, None) => "-".to_owned(),
    }
}

fn print_schedules(out: &mut dyn Write, schedules: &[Schedule]) -> Result<(), CliError> {
    writeln!(
        out,
        "{:<8} {:<8} {:<32} {:>8}  {:<23}  LAST RUN",
        "NAME", "ENABLED", "TRIGGER", "LIMIT", "NEXT RUN"
    )
    .map_err(io)?;
    for s in schedules {
        writeln!(
            out,
            "{:<8} {:<8} {:<32} {:>8}  {:<23}  {} {}",
            s.name,
            if s.enabled { "yes" } else { "no" },
            trigger_text(s),
            s.limit,
            time(s.next_run_at),
            time(s.last_run_at),
            s.last_status.as_deref().unwrap_or(""),
        )
        .map_err(io)?;
    }
    Ok(())
}

fn print_schedule(out: &mut dyn Write, s: &Schedule) -> Result<(), CliError> {
    let lines = [
        ("schedule", s.name.clone()),
        ("enabled", s.enabled.to_string()),
        ("trigger", trigger_text(s)),
        ("in words", s.description.clone()),
        ("limit", s.limit.to_string()),
        ("misfire grace", s.misfire_grace.clone()),
        ("next run", time(s.next_run_at)),
        (
            "last run",
            format!("{} {}", time(s.last_run_at), s.last_status.as_deref().unwrap_or("")),
        ),
        ("last success", time(s.last_success_at)),
        ("updated", format!("{} by {}", time(Some(s.updated_at)), s.updated_by)),
    ];
    for (key, value) in lines {
        writeln!(out, "{key:<14} {value}").map_err(io)?;
    }
    Ok(())
}

fn print_runs(out: &mut dyn Write, runs: &[Run]) -> Result<(), CliError> {
    writeln!(
        out,
        "{:>6} {:<8} {:<9} {:<10} {:<23} {:>9} {:>8} {:>8}  ERROR",
        "ID", "SCHEDULE", "TRIGGER", "STATUS", "STARTED", "MS", "ENQUEUED", "SKIPPED"
    )
    .map_err(io)?;
    for r in runs {
        writeln!(
            out,
            "{:>6} {:<8} {:<9} {:<10} {:<23} {:>9} {:>8} {:>8}  {}",
            r.id,
            r.schedule,
            r.trigger,
            r.status,
            time(Some(r.started_at)),
            r.duration_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0}")),
            r.enqueued.map_or_else(|| "-".to_owned(), |n| n.to_string()),
            r.skipped.map_or_else(|| "-".to_owned(), |n| n.to_string()),
            r.error.as_deref().unwrap_or(""),
        )
        .map_err(io)?;
    }
    Ok(())
}

fn print_run(out: &mut dyn Write, run: &Run, json: bool) -> Result<(), CliError> {
    if json {
        return print_json(out, run);
    }
    print_runs(out, std::slice::from_ref(run))
}

/// `producer schedules …`.
///
/// # Errors
///
/// [`CliError::User`] for an unknown schedule, invalid input or a busy schedule.
pub async fn schedules(
    pool: &PgPool,
    settings: &Settings,
    command: SchedulesCommand,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    store::seed(pool, settings).await?;
    let by = cli_actor();
    match command {
        SchedulesCommand::List => {
            let all = store::list(pool).await?;
            if json {
                return print_json(out, &all);
            }
            print_schedules(out, &all)
        }
        SchedulesCommand::Show { name } => {
            let name = name.as_str().to_owned();
            let schedule = store::get(pool, &name)
                .await?
                .ok_or_else(|| CliError::User(ChangeError::Unknown(name.clone()).to_string()))?;
            let recent = store::runs(
                pool,
                &RunFilter {
                    schedule: Some(name),
                    status: None,
                    limit: Some(10),
                },
            )
            .await?;
            if json {
                return print_json(out, &serde_json::json!({ "schedule": schedule, "runs": recent }));
            }
            print_schedule(out, &schedule)?;
            writeln!(out).map_err(io)?;
            print_runs(out, &recent)
        }
        SchedulesCommand::Enable { name } => toggle(pool, name.as_str(), true, &by, json, out).await,
        SchedulesCommand::Disable { name } => toggle(pool, name.as_str(), false, &by, json, out).await,
        SchedulesCommand::Set {
            name,
            every,
            cron,
            timezone,
            limit,
            misfire_grace,
        } => {
            let change = Change {
                enabled: None,
                every,
                cron,
                timezone,
                limit,
                misfire_grace,
            };
            let schedule = store::update(pool, name.as_str(), &change, &by).await?;
            if json {
                return print_json(out, &schedule);
            }
            print_schedule(out, &schedule)
        }
        SchedulesCommand::Run { name } => {
            let run = runner::run_now(pool, settings, name.as_str(), &by).await?;
            print_run(out, &run, json)?;
            if run.status == "failed" {
                return Err(CliError::Internal(anyhow::anyhow!(
                    "run {} failed: {}",
                    run.id,
                    run.error.unwrap_or_default()
                )));
            }
            Ok(())
        }
    }
}

async fn toggle(
    pool: &PgPool,
    name: &str,
    enabled: bool,
    by: &str,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let change = Change {
        enabled: Some(enabled),
        ..Change::default()
    };
    let schedule = store::update(pool, name, &change, by).await?;
    if json {
        return print_json(out, &schedule);
    }
    let state = if enabled { "enabled" } else { "disabled" };
    writeln!(
        out,
        "schedule {} {state}; next run {}",
        schedule.name,
        time(schedule.next_run_at)
    )
    .map_err(io)
}

/// `producer runs list`.
///
/// # Errors
///
/// If the query fails.
pub async fn runs(pool: &PgPool, filter: RunFilter, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    if let Some(limit) = filter.limit
        && !(1..=store::MAX_RUNS_LIMIT).contains(&limit)
    {
        return Err(CliError::User(format!(
            "--limit must be between 1 and {}, not {limit}",
            store::MAX_RUNS_LIMIT
        )));
    }
    let runs = store::runs(pool, &filter).await?;
    if json {
        return print_json(out, &runs);
    }
    print_runs(out, &runs)
}

/// `producer cycle [NAME]`: one schedule's work (recorded as a manual run), or without NAME the
/// enabled ones of check and refresh, printed as the cycle report it always was.
///
/// # Errors
///
/// A busy schedule (exit 1), a failed run (exit 2).
pub async fn cycle(
    pool: &PgPool,
    settings: &Settings,
    name: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    store::seed(pool, settings).await?;
    // Cron mode has no leader loop: each cycle also turns the events since the last one into
    // webhook deliveries (the outbox), or nothing would ever be sent.
    if let Err(error) = linkpulse_shared::webhooks::dispatch(pool, settings).await {
        tracing::error!(error = %linkpulse_util::errors::error_chain(&error), "cannot dispatch webhook events");
    }
    let Some(name) = name else {
        let report = runner::cycle(pool, settings, "producer cycle").await?;
        if json {
            return print_json(out, &report);
        }
        for (kind, k) in [("check", report.check), ("refresh", report.refresh)] {
            if k.enabled {
                writeln!(
                    out,
                    "{kind:<8} enqueued {:>7}  already queued {:>7}",
                    k.enqueued, k.skipped
                )
                .map_err(io)?;
            } else {
                writeln!(out, "{kind:<8} disabled").map_err(io)?;
            }
        }
        return Ok(());
    };
    let run = runner::run_now(pool, settings, name, "producer cycle").await?;
    print_run(out, &run, json)?;
    if run.status == "failed" {
        return Err(CliError::Internal(anyhow::anyhow!(
            "run {} failed: {}",
            run.id,
            run.error.unwrap_or_default()
        )));
    }
    Ok(())
}
