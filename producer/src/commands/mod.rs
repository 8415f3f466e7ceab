//! Command dispatch: each command gets the pool and writes its output to `out`.

pub mod config;
pub mod export;
pub mod import;
pub mod links;
pub mod queue;
pub mod schedules;
pub mod webhooks;

use std::io::Write;

use linkpulse_shared::config::args::SettingsArgs;
use linkpulse_shared::config::{ExposeSecret, Settings};

use crate::cli::{CliError, Command, LinksCommand, QueueCommand, RunsCommand};

/// What every command gets besides its own arguments: the global flags.
#[derive(Debug, Clone, Copy)]
pub struct Globals<'a> {
    /// `--json`, before or after the subcommand.
    pub json: bool,
    /// The settings as collected (for `config`, which shows the ones [`Settings`] does not hold).
    pub args: &'a SettingsArgs,
}

/// Runs `command` (anything but `migrate` and `run`, which main handles) against `settings`.
///
/// # Errors
///
/// [`CliError::User`] for the operator's mistakes, [`CliError::Internal`] for ours.
pub async fn execute(
    command: Command,
    settings: &Settings,
    globals: &Globals<'_>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let json = globals.json;
    let jaeger = settings.jaeger_url.as_ref();
    let pool = linkpulse_shared::db::connect(
        settings.database_url.expose_secret(),
        linkpulse_shared::db::COMMAND_CONNECTIONS,
    )
    .await
    .map_err(|e| CliError::Internal(anyhow::Error::new(e).context("failed to connect to the database")))?;
    match command {
        Command::Migrate => {
            linkpulse_shared::db::migrate(&pool)
                .await
                .map_err(|e| CliError::Internal(anyhow::Error::new(e).context("migration failed")))?;
            writeln!(out, "migrations applied").map_err(links::io)
        }
        Command::Run | Command::Serve => Err(CliError::User("`run` and `serve` are not one-shot commands".into())),
        Command::Healthcheck { .. } | Command::Completions { .. } => Err(CliError::User(
            "`healthcheck` and `completions` run without a database connection".into(),
        )),
        Command::Openapi => crate::admin::openapi::print(out),
        Command::Cycle { name } => schedules::cycle(&pool, settings, name.map(|n| n.as_str()), json, out).await,
        Command::Config => config::show(&pool, settings, globals.args, json, out).await,
        Command::Schedules(cmd) => schedules::schedules(&pool, settings, cmd, json, out).await,
        Command::Runs(RunsCommand::List {
            schedule,
            status,
            limit,
        }) => {
            let filter = crate::schedules::store::RunFilter {
                schedule: schedule.map(|s| s.as_str().to_owned()),
                status: status.map(|s| s.as_str().to_owned()),
                limit: Some(limit),
            };
            schedules::runs(&pool, filter, json, out).await
        }
        Command::Links(cmd) => match cmd {
            LinksCommand::Add { urls } => links::add(&pool, &urls, settings, json, out).await,
            LinksCommand::Import { file, format } => import::run_cli(&pool, settings, &file, format, json, out).await,
            LinksCommand::Export { format } => export::export(&pool, format, out).await,
            LinksCommand::ApplyRules => import::apply_rules(&pool, settings, json, out).await,
            LinksCommand::List {
                status,
                host,
                q,
                checked_before,
                limit,
            } => {
                let filter = linkpulse_shared::db::links::ListFilter {
                    status: status.map(|s| s.as_str().to_owned()),
                    host,
                    text: q,
                    checked_before: checked_before.map(|t| t.to_utc()),
                    after_id: None,
                };
                links::list_filtered(&pool, &filter, limit, json, out).await
            }
            LinksCommand::Show { link } => {
                links::show(&pool, &link, settings.history_per_link, jaeger, json, out).await
            }
            LinksCommand::Activate { link } => links::activate(&pool, &link, jaeger, json, out).await,
            LinksCommand::Pause { link, reason } => {
                links::set_status(&pool, &link, "paused", reason.as_deref(), jaeger, json, out).await
            }
            LinksCommand::Resume { link } => links::set_status(&pool, &link, "active", None, jaeger, json, out).await,
            LinksCommand::Remove { link } => links::remove(&pool, &link, json, out).await,
            LinksCommand::Check { link } => {
                let kind = linkpulse_shared::link_jobs::CHECK;
                links::enqueue(&pool, &link, kind, settings.queue.max_attempts, json, out).await
            }
            LinksCommand::Refresh { link } => {
                let kind = linkpulse_shared::link_jobs::REFRESH;
                links::enqueue(&pool, &link, kind, settings.queue.max_attempts, json, out).await
            }
        },
        Command::Webhooks(cmd) => webhooks::execute(&pool, settings, cmd, json, out).await,
        Command::Queue(cmd) => match cmd {
            QueueCommand::Stats => queue::stats(&pool, json, out).await,
            QueueCommand::Recount => queue::recount(&pool, json, out).await,
            QueueCommand::List { state, kind, limit } => {
                let kind = kind.map(|k| k.as_str().to_owned());
                queue::list(&pool, state.map(Into::into), kind, limit, json, out).await
            }
            QueueCommand::Requeue {
                state,
                kind,
                link,
                job,
                older_than,
            } => {
                let selection = queue::Selection {
                    kind: kind.map(|k| k.as_str().to_owned()),
                    link,
                    job,
                    older_than,
                };
                queue::requeue(&pool, state.into(), selection, json, out).await
            }
            QueueCommand::Prune { older_than } => queue::prune(&pool, settings, older_than, json, out).await,
            QueueCommand::Pause { kind, reason } => {
                queue::pause(&pool, kind.as_str(), reason.as_deref(), json, out).await
            }
            QueueCommand::Resume { kind } => queue::resume(&pool, kind.as_str(), json, out).await,
            QueueCommand::Cancel {
                job,
                kind,
                link,
                reason,
            } => {
                let selection = queue::Selection {
                    kind: kind.map(|k| k.as_str().to_owned()),
                    link,
                    job,
                    older_than: None,
                };
                queue::cancel(&pool, selection, reason.as_deref(), json, out).await
            }
        },
    }
}
