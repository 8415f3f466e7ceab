//! The linkpulse worker: runs `check` and `refresh` jobs from the PostgreSQL queue with bounded
//! concurrency, and writes their results back to `links`.
//!
//! # Layout
//!
//! - [`app`]: builds the worker from settings (pool, fetcher, engine, apalis worker).
//! - [`handlers`]: `check` and `refresh`.
//! - [`http`]: `/livez` and `/readyz`.

pub mod app;
pub mod handlers;
pub mod http;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};
use tokio_util::sync::CancellationToken;

use linkpulse_shared::config::Settings;
use linkpulse_shared::config::args::SettingsArgs;

/// The service name traces carry unless `OTEL_SERVICE_NAME` says otherwise.
pub const SERVICE_NAME: &str = "linkpulse-worker";

/// `worker [--concurrency N] [--until-empty]`: run until SIGTERM/SIGINT (or, with
/// `--until-empty`, until nothing is due); drain in-flight jobs first. `worker healthcheck`:
/// probe a running worker's `/readyz`.
#[derive(Debug, Parser)]
#[command(name = "worker", version, about)]
pub struct Cli {
    /// Jobs this process runs at once (default LINKPULSE_WORKER_CONCURRENCY, 16).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Exit (0) once no check or refresh job is due and this worker has none in flight, draining
    /// as on SIGTERM: for ad-hoc runs and CI. Jobs scheduled for later (retry backoff, future
    /// run_at), jobs of paused kinds and jobs held by other workers do not keep it running.
    #[arg(long)]
    pub until_empty: bool,
    /// Every setting, flag or environment variable (the worker reads them all: it builds the
    /// same settings as the producer).
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Without a subcommand: run the worker.
    #[command(subcommand)]
    pub command: Option<WorkerCommand>,
}

/// `worker …` subcommands (none: run the worker).
#[derive(Debug, clap::Subcommand)]
pub enum WorkerCommand {
    /// Container health check: GET /readyz (or /livez) on LINKPULSE_WORKER_ADDR; exit 0 when it
    /// answers 2xx, else 1. Needs no database.
    Healthcheck {
        /// Probe /livez (the process answers) instead of /readyz (reaches the database, not draining).
        #[arg(long)]
        live: bool,
    },
    /// Print a shell completion script, e.g. `worker completions zsh`; needs no database.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

impl Cli {
    /// The command line as clap sees it, with this binary's defaults filled in: what `--help`,
    /// parsing and the completion scripts all use.
    pub fn full_command() -> clap::Command {
        SettingsArgs::with_service_name(Self::command(), SERVICE_NAME)
    }
}

/// The whole program: parse, configure, run, map errors to exit codes.
pub async fn main_entry() -> ExitCode {
    let cli = match Cli::full_command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches))
    {
        Ok(cli) => cli,
        // clap's own exit codes, as `Cli::parse` had them: 0 for help and version, 2 otherwise.
        Err(e) => e.exit(),
    };
    if let Some(WorkerCommand::Completions { shell }) = cli.command {
        // Generated from the argument definitions themselves, so it never drifts from them.
        let mut command = Cli::full_command();
        // Into memory first: the generator panics on a write error (a closed pipe).
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command, "worker", &mut script);
        return match std::io::Write::write_all(&mut std::io::stdout().lock(), &script) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: writing the completion script: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(WorkerCommand::Healthcheck { live }) = cli.command {
        // The container's probe, every few seconds: no settings but the address, no telemetry.
        return linkpulse_shared::healthcheck::run(
            &cli.settings.env(),
            "LINKPULSE_WORKER_ADDR",
            linkpulse_shared::config::DEFAULT_WORKER_ADDR,
            live,
        )
        .await;
    }
    // Held to the end: dropping it at any return (SIGTERM included, after the drain) flushes the
    // last spans to the collector.
    // `--rust-log`, `--otel-…`: the collected values, flag else environment else default.
    let _telemetry = linkpulse_shared::telemetry::init_telemetry_with(SERVICE_NAME, cli.settings.lookup());
    let settings = match Settings::from_env(&cli.settings.env()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let stop = CancellationToken::new();
    if let Err(e) = linkpulse_shared::shutdown::cancel_on_signal(stop.clone()) {
        eprintln!("error: cannot install signal handlers: {e}");
        return ExitCode::from(2);
    }
    let concurrency = cli.concurrency.unwrap_or(settings.worker_concurrency);
    let mode = if cli.until_empty {
        app::RunMode::UntilEmpty
    } else {
        app::RunMode::UntilStopped
    };
    match app::run_with(settings, concurrency, mode, stop).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
