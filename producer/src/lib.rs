//! The linkpulse producer: enqueues due checks and refreshes every cycle, and is the operator's
//! command line.
//!
//! # Layout
//!
//! - [`admin`]: the admin HTTP server (probes, metrics, API, dashboard).
//! - [`cli`]: the command-line contract (clap) and the exit-code rules; [`cli_values`]: its
//!   closed value sets (kinds, states, statuses).
//! - [`commands`]: one module per command group (`links`, `queue`).
//! - [`cycle`]: the set-based enqueue of due jobs.
//! - [`run`]: `producer run` and `serve` — the schedule loop with its leader lock, the admin server.
//! - [`schedules`]: schedules as data, their runs and history.

pub mod admin;
pub mod cli;
pub mod cli_values;
pub mod commands;
pub mod cycle;
pub mod run;
pub mod schedules;

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use linkpulse_shared::config::Settings;

/// The whole program: parse, configure, dispatch, map errors to exit codes.
pub async fn main_entry() -> ExitCode {
    let cli = match cli::Cli::parse_process() {
        Ok(cli) => cli,
        Err(e) => {
            // A bad argument is the operator's error: exit 1 like every user error (clap's own
            // `exit()` uses 2, our code for internal errors). Help and version exit 0.
            let _ = e.print();
            return ExitCode::from(u8::from(e.use_stderr()));
        }
    };
    if let cli::Command::Healthcheck { live } = cli.command {
        // The container's probe, every few seconds: no settings but the address, no telemetry.
        return linkpulse_shared::healthcheck::run(
            &cli.settings.env(),
            "LINKPULSE_ADMIN_ADDR",
            linkpulse_shared::config::DEFAULT_ADMIN_ADDR,
            live,
        )
        .await;
    }
    // Held to the end: dropping it at any return (SIGTERM included, after the drain) flushes the
    // last spans to the collector.
    // `--rust-log`, `--otel-…`: the collected values, flag else environment else default.
    let _telemetry = linkpulse_shared::telemetry::init_telemetry_with(cli::SERVICE_NAME, cli.settings.lookup());
    if let cli::Command::Completions { shell } = cli.command {
        // Generated from the argument definitions themselves, so it never drifts from them.
        let mut command = cli::Cli::full_command();
        // Into memory first: the generator panics on a write error (a closed pipe).
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command, "producer", &mut script);
        return match std::io::Write::write_all(&mut std::io::stdout().lock(), &script) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: writing the completion script: {e}");
                ExitCode::from(2)
            }
        };
    }
    if matches!(cli.command, cli::Command::Openapi) {
        // The document is the code's: no settings, no database.
        return match admin::openapi::print(&mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(e.exit_code())
            }
        };
    }
    let settings = match Settings::from_env(&cli.settings.env()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let result = match cli.command {
        cli::Command::Run | cli::Command::Serve => {
            let mode = if matches!(cli.command, cli::Command::Run) {
                run::Mode::Run
            } else {
                run::Mode::Serve
            };
            let stop = CancellationToken::new();
            if let Err(e) = linkpulse_shared::shutdown::cancel_on_signal(stop.clone()) {
                eprintln!("error: cannot install signal handlers: {e}");
                return ExitCode::from(2);
            }
            run::run(settings, mode, stop).await.map_err(cli::CliError::Internal)
        }
        command => {
            let globals = commands::Globals {
                json: cli.json,
                args: &cli.settings,
            };
            commands::execute(command, &settings, &globals, &mut std::io::stdout().lock()).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match &e {
                cli::CliError::User(reason) => eprintln!("error: {reason}"),
                cli::CliError::Internal(error) => eprintln!("error: {error:#}"),
            }
            ExitCode::from(e.exit_code())
        }
    }
}
