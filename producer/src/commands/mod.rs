//! Command dispatch: each command gets the pool and writes its output to `out`.

pub mod links;
pub mod queue;

use std::io::Write;

use linkpulse_shared::config::{ExposeSecret, Settings};

use crate::cli::{CliError, Command, LinksCommand, QueueCommand, print_json};

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
        Command::Run => Err(CliError::User("`run` is not a one-shot command".into())),
        Command::Cycle { json } => {
            let report = crate::cycle::run_cycle(&pool, settings).await?;
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
                    .map_err(links::io)?;
                } else {
                    writeln!(out, "{kind:<8} disabled").map_err(links::io)?;
                }
            }
            Ok(())
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
        },
    }
}
