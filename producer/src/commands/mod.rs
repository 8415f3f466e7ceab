//! Command dispatch: each command gets the pool and writes its output to `out`.

pub mod config;
pub mod links;
pub mod queue;
pub mod schedules;

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
            LinksCommand::Add { urls, json } => links::add(&pool, &urls, json, out).await,
            LinksCommand::Import { file, json } => {
                let mut reader: Box<dyn std::io::BufRead> = match crate::cli::import_source(&file) {
                    Some(path) => {
                        Box::new(std::io::BufReader::new(std::fs::File::open(&path).map_err(|e| {
                            CliError::User(format!("cannot open {}: {e}", path.display()))
                        })?))
                    }
                    None => Box::new(std::io::BufReader::new(std::io::stdin())),
                };
                links::import(&pool, &mut reader, json, out).await
            }
            LinksCommand::List { status, limit, json } => links::list(&pool, status.as_deref(), limit, json, out).await,
            LinksCommand::Show { link, json } => links::show(&pool, &link, json, out).await,
            LinksCommand::Activate { link, json } => links::activate(&pool, &link, json, out).await,
        },
        Command::Queue(cmd) => match cmd {
            QueueCommand::Stats { json } => queue::stats(&pool, json, out).await,
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
