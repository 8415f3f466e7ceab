//! `producer webhooks add|list|remove|test|rotate|enable`: the endpoints that receive link events.

use std::io::Write;
use std::time::Duration;

use clap::Subcommand;
use sqlx::PgPool;

use linkpulse_shared::config::Settings;
use linkpulse_shared::webhooks::send::{PingResult, ping};
use linkpulse_shared::webhooks::store::{self, DEFAULT_ROTATION_GRACE};
use linkpulse_shared::webhooks::{Webhook, WebhookError, check_url, parse_events};

use super::links::io;
use super::schedules::cli_actor;
use crate::cli::{CliError, print_json};

/// `producer webhooks …`
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Register an endpoint; prints its signing secret (shown once).
    Add {
        /// Where deliveries are POSTed (http or https; a private address needs
        /// LINKPULSE_ALLOWED_HOSTS or LINKPULSE_ALLOW_PRIVATE_NETWORKS).
        url: String,
        /// Event types, comma-separated: link.down, link.up, link.changed (default: all).
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
    },
    /// Every endpoint: state (a disabled one with its reason), events, last success, last error.
    List,
    /// Remove an endpoint; its pending deliveries end without posting.
    Remove {
        /// Its id (from `webhooks list`).
        id: i64,
    },
    /// Send a signed `ping` now and print the endpoint's answer (exit 1 unless 2xx).
    Test {
        /// Its id.
        id: i64,
    },
    /// A new signing secret (printed once); the old one keeps signing during the grace period.
    Rotate {
        /// Its id.
        id: i64,
        /// How long the old secret still signs (default 24h; 0s stops it at once).
        #[arg(long, value_parser = humantime::parse_duration)]
        grace: Option<Duration>,
    },
    /// Turn a disabled endpoint back on (requeue its failed deliveries with
    /// `queue requeue --kind deliver`).
    Enable {
        /// Its id.
        id: i64,
    },
}

/// Runs one `webhooks` command.
///
/// # Errors
///
/// [`CliError::User`] for a bad URL or event type, an unknown id or a failed ping;
/// [`CliError::Internal`] for the database.
pub async fn execute(
    pool: &PgPool,
    settings: &Settings,
    command: WebhooksCommand,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        WebhooksCommand::Add { url, events } => add(pool, settings, &url, &events, json, out).await,
        WebhooksCommand::List => list(pool, json, out).await,
        WebhooksCommand::Remove { id } => {
            if !store::remove(pool, id).await.map_err(internal)? {
                return Err(not_found(id));
            }
            if json {
                print_json(out, &serde_json::json!({ "removed": id }))
            } else {
                writeln!(out, "webhook {id} removed").map_err(io)
            }
        }
        WebhooksCommand::Test { id } => test(pool, settings, id, json, out).await,
        WebhooksCommand::Rotate { id, grace } => {
            let grace = grace.unwrap_or(DEFAULT_ROTATION_GRACE);
            let rotated = store::rotate(pool, id, grace)
                .await
                .map_err(user_or_internal)?
                .ok_or_else(|| not_found(id))?;
            if json {
                return print_json(out, &rotated);
            }
            writeln!(out, "webhook {id}: new signing secret (shown once): {}", rotated.secret).map_err(io)?;
            match rotated.previous_secret_until {
                Some(until) => writeln!(out, "the previous secret also signs until {}", until.to_rfc3339()),
                None => writeln!(out, "the previous secret no longer signs"),
            }
            .map_err(io)
        }
        WebhooksCommand::Enable { id } => {
            if !store::enable(pool, id).await.map_err(internal)? {
                return Err(not_found(id));
            }
            if json {
                print_json(out, &serde_json::json!({ "id": id, "enabled": true }))
            } else {
                writeln!(out, "webhook {id} enabled").map_err(io)
            }
        }
    }
}

async fn add(
    pool: &PgPool,
    settings: &Settings,
    url: &str,
    events: &[String],
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let url = check_url(url, &settings.fetch.guard).map_err(user_or_internal)?;
    let events = parse_events(Some(events)).map_err(user_or_internal)?;
    let added = store::add(pool, &url, &events, &cli_actor()).await.map_err(internal)?;
    if json {
        return print_json(out, &added);
    }
    let webhook = &added.webhook;
    writeln!(
        out,
        "webhook {} added: {} (events: {})",
        webhook.id,
        webhook.url,
        webhook.events.join(", ")
    )
    .map_err(io)?;
    writeln!(
        out,
        "signing secret (shown once; give it to the receiver): {}",
        added.secret
    )
    .map_err(io)
}

async fn list(pool: &PgPool, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let webhooks = store::list(pool).await.map_err(internal)?;
    if json {
        return print_json(out, &webhooks);
    }
    if webhooks.is_empty() {
        return writeln!(out, "no webhooks (add one with `producer webhooks add URL`)").map_err(io);
    }
    writeln!(
        out,
        "{:>4}  {:<8}  {:<30}  {:<25}  {:<25}  url",
        "id", "state", "events", "last success", "failing since"
    )
    .map_err(io)?;
    for webhook in &webhooks {
        write_row(out, webhook)?;
    }
    Ok(())
}

fn write_row(out: &mut dyn Write, webhook: &Webhook) -> Result<(), CliError> {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339());
    writeln!(
        out,
        "{:>4}  {:<8}  {:<30}  {:<25}  {:<25}  {}",
        webhook.id,
        if webhook.enabled { "enabled" } else { "DISABLED" },
        webhook.events.join(","),
        time(webhook.last_success_at),
        time(webhook.failing_since),
        webhook.url
    )
    .map_err(io)?;
    if let Some(reason) = &webhook.disabled_reason {
        writeln!(out, "      disabled: {reason}").map_err(io)?;
    } else if let Some(error) = &webhook.last_error {
        writeln!(out, "      last error: {error}").map_err(io)?;
    }
    if let Some(until) = webhook.previous_secret_until {
        writeln!(out, "      previous secret signs until {}", until.to_rfc3339()).map_err(io)?;
    }
    Ok(())
}

async fn test(pool: &PgPool, settings: &Settings, id: i64, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let result: PingResult = ping(pool, &settings.fetch, id)
        .await
        .map_err(user_or_internal)?
        .ok_or_else(|| not_found(id))?;
    if json {
        print_json(out, &result)?;
    } else if result.ok {
        writeln!(
            out,
            "webhook {id} answered HTTP {} in {:.0} ms",
            result.status.unwrap_or_default(),
            result.duration_ms
        )
        .map_err(io)?;
    }
    match result.error {
        Some(error) if !result.ok => Err(CliError::User(format!("ping to webhook {id} failed: {error}"))),
        _ => Ok(()),
    }
}

fn not_found(id: i64) -> CliError {
    CliError::User(format!("no webhook {id}"))
}

fn internal(error: WebhookError) -> CliError {
    CliError::Internal(anyhow::Error::new(error))
}

/// The operator's mistakes (URL, events, grace) are user errors; the rest is ours.
fn user_or_internal(error: WebhookError) -> CliError {
    match error {
        WebhookError::Database(_) | WebhookError::Queue(_) | WebhookError::Send(_) => internal(error),
        other => CliError::User(linkpulse_util::errors::error_chain(&other)),
    }
}
