//! Command dispatch: each command gets the pool and writes its output to `out`.

pub mod config;
pub mod export;
pub mod import;
pub mod links;
pub mod queue;
pub mod schedules;
pub mod webhooks;

use std::io::Write;

use linkpulse_shared::config::{ExposeSecret, Settings};

use crate::cli::{CliError, Command, LinksCommand, QueueCommand, RunsCommand};

/// Runs `command` (anything but `migrate` and `run`, which main handles) against `settings`.
///
/// # Errors
///
/// [`CliError::User`] for the operator's mistakes, [`CliError::Internal`] for ours.
pub async fn execute(command: Command, settings: &Settings, out: &mut dyn Write) -> Result<(), CliError> {
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
        Command::Cycle { name, json } => schedules::cycle(&pool, settings, name.as_deref(), json, out).await,
        Command::Config { json } => config::show(&pool, settings, json, out).await,
        Command::Schedules(cmd) => schedules::schedules(&pool, settings, cmd, out).await,
        Command::Runs(RunsCommand::List {
            schedule,
            status,
            limit,
            json,
        }) => {
            let filter = crate::schedules::store::RunFilter {
                schedule,
                status,
                limit: Some(limit),
            };
            schedules::runs(&pool, filter, json, out).await
        }
        Command::Links(cmd) => match cmd {
            LinksCommand::Add { urls, json } => links::add(&pool, &urls, settings, json, out).await,
            LinksCommand::Import { file, format, json } => {
                import::run_cli(&pool, settings, &file, format, json, out).await
            }
            LinksCommand::Export { format } => export::export(&pool, format, out).await,
            LinksCommand::ApplyRules { json } => import::apply_rules(&pool, settings, json, out).await,
            LinksCommand::List {
                status,
                host,
                q,
                checked_before,
                limit,
                json,
            } => {
                let filter = linkpulse_shared::db::links::ListFilter {
                    status,
                    host,
                    text: q,
                    checked_before: checked_before.map(|t| t.to_utc()),
                    after_id: None,
                };
                links::list_filtered(&pool, &filter, limit, json, out).await
            }
            LinksCommand::Show { link, json } => links::show(&pool, &link, settings.history_per_link, json, out).await,
            LinksCommand::Activate { link, json } => links::activate(&pool, &link, json, out).await,
            LinksCommand::Pause { link, reason, json } => {
                links::set_status(&pool, &link, "paused", reason.as_deref(), json, out).await
            }
            LinksCommand::Resume { link, json } => links::set_status(&pool, &link, "active", None, json, out).await,
            LinksCommand::Remove { link, json } => links::remove(&pool, &link, json, out).await,
            LinksCommand::Check { link, json } => {
                let kind = linkpulse_shared::link_jobs::CHECK;
                links::enqueue(&pool, &link, kind, settings.queue.max_attempts, json, out).await
            }
            LinksCommand::Refresh { link, json } => {
                let kind = linkpulse_shared::link_jobs::REFRESH;
                links::enqueue(&pool, &link, kind, settings.queue.max_attempts, json, out).await
            }
        },
        Command::Webhooks(cmd) => webhooks::execute(&pool, settings, cmd, out).await,
        Command::Queue(cmd) => match cmd {
            QueueCommand::Stats { json } => queue::stats(&pool, json, out).await,
            QueueCommand::Recount { json } => queue::recount(&pool, json, out).await,
            QueueCommand::List {
                state,
                kind,
                limit,
                json,
            } => queue::list(&pool, state, kind, limit, json, out).await,
            QueueCommand::Requeue {
                state,
                kind,
                link,
                job,
                older_than,
                json,
            } => {
                let selection = queue::Selection {
                    kind,
                    link,
                    job,
                    older_than,
                };
                queue::requeue(&pool, state, selection, json, out).await
            }
            QueueCommand::Prune { older_than, json } => queue::prune(&pool, settings, older_than, json, out).await,
            QueueCommand::Pause { kind, reason, json } => {
                queue::pause(&pool, &kind, reason.as_deref(), json, out).await
            }
            QueueCommand::Resume { kind, json } => queue::resume(&pool, &kind, json, out).await,
            QueueCommand::Cancel {
                job,
                kind,
                link,
                reason,
                json,
            } => {
                let selection = queue::Selection {
                    kind,
                    link,
                    job,
                    older_than: None,
                };
                queue::cancel(&pool, selection, reason.as_deref(), json, out).await
            }
        },
    }
}
