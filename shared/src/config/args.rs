//! Every setting as a clap argument, so `producer --help` and `worker --help` list each variable
//! with its meaning and default, and a flag (`--check-after 2d`) can stand in for a variable.
//!
//! # Why values stay strings here
//!
//! clap only *collects* a value (flag, else environment, else default) and says where it came
//! from; [`SettingsArgs::lookup`] then hands the strings to [`Settings::from_env`] through the same
//! [`Env`] readers as before. So validation, error messages (`LINKPULSE_X="…": reason`) and
//! the empty-means-default rule live in one place, and tests keep building settings from a map.
//!
//! # Why the defaults are computed
//!
//! Each `default_value_t` is rendered from the named constant the settings use ([`human`] for
//! durations), never typed a second time, so the help cannot drift from what the process does;
//! `help_defaults_are_the_settings_defaults` below checks the whole mapping once more.
//!
//! Secrets (`DATABASE_URL`, which may carry a password, the tokens and the session key) carry
//! `hide_env_values`: help never echoes a value set in the environment. Prefer the environment
//! for them: a flag's value is visible to anyone who can list processes.

use std::time::Duration;

use super::{
    DEFAULT_ADMIN_ADDR, DEFAULT_CHECK_AFTER, DEFAULT_CYCLE_INTERVAL, DEFAULT_CYCLE_LIMIT, DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_GITHUB_API_URL, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HISTORY_PER_LINK, DEFAULT_HOST_CONCURRENCY,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_POLL_INTERVAL, DEFAULT_REFRESH_AFTER, DEFAULT_RESCUE_AFTER, DEFAULT_RETAIN_DONE,
    DEFAULT_RETAIN_EVENTS, DEFAULT_RETAIN_FAILED, DEFAULT_RETAIN_RUNS, DEFAULT_SESSION_TTL, DEFAULT_SHUTDOWN_GRACE,
    DEFAULT_WEBHOOK_DISABLE_AFTER, DEFAULT_WORKER_ADDR, DEFAULT_WORKER_CONCURRENCY, Env,
};
use crate::fetch::client::{DEFAULT_HTTP_TIMEOUT, DEFAULT_USER_AGENT};
use crate::politeness::DEFAULT_HOST_INTERVAL;
use crate::telemetry::{DEFAULT_LOG_FILTER, DEFAULT_SAMPLER};
use linkpulse_queue::backoff::{DEFAULT_RETRY_BASE, DEFAULT_RETRY_MAX};

/// The heading the settings appear under in `--help`.
const HEADING: &str = "Settings (each flag defaults to its environment variable)";

/// The id of the `OTEL_SERVICE_NAME` argument, whose default each binary sets to its own name
/// ([`SettingsArgs::with_service_name`]).
const SERVICE_NAME_ID: &str = "otel_service_name";

/// Every setting the producer and the worker read, flag or environment variable.
///
/// Flattened into both command lines, before the subcommand (`producer --check-after 2h run`):
/// not global, so each subcommand's help and the completion scripts stay short (the environment
/// variables work everywhere). The help text is the meaning from the configuration table.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = HEADING)]
pub struct SettingsArgs {
    /// PostgreSQL connection string (required by every command that uses the database).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// A link's check is due this long after the last one (0s = every cycle).
    #[arg(long, env = "LINKPULSE_CHECK_AFTER", default_value_t = human(DEFAULT_CHECK_AFTER))]
    pub check_after: String,
    /// Metadata refresh is due this long after the last one.
    #[arg(long, env = "LINKPULSE_REFRESH_AFTER", default_value_t = human(DEFAULT_REFRESH_AFTER))]
    pub refresh_after: String,
    /// Seeds the interval of the check and refresh schedules.
    #[arg(long, env = "LINKPULSE_CYCLE_INTERVAL", default_value_t = human(DEFAULT_CYCLE_INTERVAL))]
    pub cycle_interval: String,
    /// Seeds the schedules' limit: most jobs enqueued per kind per run (oldest first).
    #[arg(long, env = "LINKPULSE_CYCLE_LIMIT", default_value_t = DEFAULT_CYCLE_LIMIT.to_string())]
    pub cycle_limit: String,
    /// Consecutive failed checks that make a link inaccessible.
    #[arg(long, env = "LINKPULSE_FAILURE_THRESHOLD", default_value_t = DEFAULT_FAILURE_THRESHOLD.to_string())]
    pub failure_threshold: String,
    /// Attempts per job before it is failed (snoozes do not count).
    #[arg(long, env = "LINKPULSE_MAX_ATTEMPTS", default_value_t = DEFAULT_MAX_ATTEMPTS.to_string())]
    pub max_attempts: String,
    /// Retry backoff base: base·2^(attempt-1), capped by LINKPULSE_RETRY_MAX, jittered.
    #[arg(long, env = "LINKPULSE_RETRY_BASE", default_value_t = human(DEFAULT_RETRY_BASE))]
    pub retry_base: String,
    /// Retry backoff cap.
    #[arg(long, env = "LINKPULSE_RETRY_MAX", default_value_t = human(DEFAULT_RETRY_MAX))]
    pub retry_max: String,
    /// Total deadline of one fetch (all redirects and the body).
    #[arg(long, env = "LINKPULSE_HTTP_TIMEOUT", default_value_t = human(DEFAULT_HTTP_TIMEOUT))]
    pub http_timeout: String,
    /// Sent with every request.
    #[arg(long, env = "LINKPULSE_USER_AGENT", default_value = DEFAULT_USER_AGENT)]
    pub user_agent: String,
    /// Jobs a worker process runs at once (`worker --concurrency N` overrides).
    #[arg(long, env = "LINKPULSE_WORKER_CONCURRENCY", default_value_t = DEFAULT_WORKER_CONCURRENCY.to_string())]
    pub worker_concurrency: String,
    /// Running jobs per host across the whole pool.
    #[arg(long, env = "LINKPULSE_HOST_CONCURRENCY", default_value_t = DEFAULT_HOST_CONCURRENCY.to_string())]
    pub host_concurrency: String,
    /// How often a worker renews the leases of its jobs (at most half of the rescue threshold).
    #[arg(long, env = "LINKPULSE_HEARTBEAT_INTERVAL", default_value_t = human(DEFAULT_HEARTBEAT_INTERVAL))]
    pub heartbeat_interval: String,
    /// A worker silent this long is dead; its jobs go back to queued.
    #[arg(long, env = "LINKPULSE_RESCUE_AFTER", default_value_t = human(DEFAULT_RESCUE_AFTER))]
    pub rescue_after: String,
    /// Fallback poll of an idle worker (NOTIFY normally wakes it at once).
    #[arg(long, env = "LINKPULSE_POLL_INTERVAL", default_value_t = human(DEFAULT_POLL_INTERVAL))]
    pub poll_interval: String,
    /// How long SIGTERM waits for in-flight jobs before releasing them.
    #[arg(long, env = "LINKPULSE_SHUTDOWN_GRACE", default_value_t = human(DEFAULT_SHUTDOWN_GRACE))]
    pub shutdown_grace: String,
    /// Seeds the check schedule enabled or not.
    #[arg(long, env = "LINKPULSE_CHECK_ENABLED", default_value = "true")]
    pub check_enabled: String,
    /// Seeds the refresh schedule enabled or not.
    #[arg(long, env = "LINKPULSE_REFRESH_ENABLED", default_value = "true")]
    pub refresh_enabled: String,
    /// How long done jobs are kept (the prune schedule deletes older ones).
    #[arg(long, env = "LINKPULSE_RETAIN_DONE", default_value_t = human(DEFAULT_RETAIN_DONE))]
    pub retain_done: String,
    /// How long failed jobs are kept (the prune schedule deletes older ones).
    #[arg(long, env = "LINKPULSE_RETAIN_FAILED", default_value_t = human(DEFAULT_RETAIN_FAILED))]
    pub retain_failed: String,
    /// How long schedule runs are kept.
    #[arg(long, env = "LINKPULSE_RETAIN_RUNS", default_value_t = human(DEFAULT_RETAIN_RUNS))]
    pub retain_runs: String,
    /// Recent check verdicts kept per link (`links show`: dead since, last ok, ok share).
    #[arg(long, env = "LINKPULSE_HISTORY_PER_LINK", default_value_t = DEFAULT_HISTORY_PER_LINK.to_string())]
    pub history_per_link: String,
    /// How long link status events are kept (delivered or not).
    #[arg(long, env = "LINKPULSE_RETAIN_EVENTS", default_value_t = human(DEFAULT_RETAIN_EVENTS))]
    pub retain_events: String,
    /// A webhook whose deliveries all failed this long is disabled.
    #[arg(long, env = "LINKPULSE_WEBHOOK_DISABLE_AFTER", default_value_t = human(DEFAULT_WEBHOOK_DISABLE_AFTER))]
    pub webhook_disable_after: String,
    /// The producer's admin HTTP (API, dashboard, metrics).
    #[arg(long, env = "LINKPULSE_ADMIN_ADDR", default_value = DEFAULT_ADMIN_ADDR)]
    pub admin_addr: String,
    /// Bearer token for mutating admin calls; unset = mutations refused.
    #[arg(long, env = "LINKPULSE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Bearer token for the admin API's reads (the admin token reads too); unset = reads open
    /// only on a loopback LINKPULSE_ADMIN_ADDR without LINKPULSE_PUBLIC_URL.
    #[arg(long, env = "LINKPULSE_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,
    /// The admin server's public URL: its host joins the Host allowlist, its origin passes the
    /// origin check, reads are no longer open on loopback (a proxy may forward the world from
    /// there), and an https URL makes the session cookie Secure (default: unset).
    #[arg(long, env = "LINKPULSE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// How long a dashboard session lasts after sign-in.
    #[arg(long, env = "LINKPULSE_SESSION_TTL", default_value_t = human(DEFAULT_SESSION_TTL))]
    pub session_ttl: String,
    /// Key that signs dashboard session cookies (at least 32 characters, the same on every
    /// producer replica); unset = a random key per process, sessions end at restart.
    #[arg(long, env = "LINKPULSE_SESSION_KEY", hide_env_values = true)]
    pub session_key: Option<String>,
    /// The worker's /livez, /readyz, /metrics.
    #[arg(long, env = "LINKPULSE_WORKER_ADDR", default_value = DEFAULT_WORKER_ADDR)]
    pub worker_addr: String,
    /// Let fetches reach loopback/private addresses (tests, self-hosting); link-local ranges and
    /// cloud metadata endpoints stay refused.
    #[arg(long, env = "LINKPULSE_ALLOW_PRIVATE_NETWORKS", default_value = "false")]
    pub allow_private_networks: String,
    /// Comma-separated hosts exempt from the whole network guard, metadata endpoints included
    /// (default: none).
    #[arg(long, env = "LINKPULSE_ALLOWED_HOSTS")]
    pub allowed_hosts: Option<String>,
    /// GitHub API base.
    #[arg(long, env = "LINKPULSE_GITHUB_API_URL", default_value = DEFAULT_GITHUB_API_URL)]
    pub github_api_url: String,
    /// GitHub token, optional (raises the rate limit).
    #[arg(long, env = "GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<String>,
    /// Minimum gap between two requests to one host from one worker.
    #[arg(long, env = "LINKPULSE_HOST_INTERVAL", default_value_t = human(DEFAULT_HOST_INTERVAL))]
    pub host_interval: String,
    /// Jaeger UI base, to print a job's trace link in `links show` (default: unset).
    #[arg(long, env = "LINKPULSE_JAEGER_URL")]
    pub jaeger_url: Option<String>,
    /// TOML: per-host exclude patterns and accepted status codes (default: unset).
    #[arg(long, env = "LINKPULSE_RULES_FILE")]
    pub rules_file: Option<String>,
    /// OTLP/gRPC endpoint for traces (e.g. http://jaeger:4317); unset = no export. The other
    /// OTEL_EXPORTER_OTLP_* variables (certificates, traces endpoint) are read from the
    /// environment only (docs/tracing.md).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// Service name in traces.
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub otel_service_name: Option<String>,
    /// Trace sampling: always_on, always_off, traceidratio, parentbased_always_on,
    /// parentbased_always_off, parentbased_traceidratio (set it on the producer: workers follow
    /// the parent).
    #[arg(long, env = "OTEL_TRACES_SAMPLER", default_value = DEFAULT_SAMPLER)]
    pub otel_traces_sampler: String,
    /// The sampler's ratio for the traceidratio samplers (0.0 to 1.0; default: 1.0).
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG")]
    pub otel_traces_sampler_arg: Option<String>,
    /// Log filter (logs go to stderr).
    #[arg(long, env = "RUST_LOG", default_value = DEFAULT_LOG_FILTER)]
    pub rust_log: String,
    /// auto: colored text when stderr is a terminal, JSON lines otherwise; text or json to force
    /// one.
    #[arg(long, env = "LINKPULSE_LOG_FORMAT", default_value = "auto")]
    pub log_format: String,
}

impl SettingsArgs {
    /// `command` with the `OTEL_SERVICE_NAME` default set to `service` (each binary names
    /// itself), so help shows the name the traces will carry.
    pub fn with_service_name(command: clap::Command, service: &'static str) -> clap::Command {
        command.mut_arg(SERVICE_NAME_ID, |arg| arg.default_value(service))
    }

    /// The collected value of `var` (flag, else environment, else default), as the process
    /// environment would have given it: what [`Env`] reads.
    pub fn value(&self, var: &str) -> Option<&str> {
        Some(match var {
            "DATABASE_URL" => return self.database_url.as_deref(),
            "LINKPULSE_CHECK_AFTER" => &self.check_after,
            "LINKPULSE_REFRESH_AFTER" => &self.refresh_after,
            "LINKPULSE_CYCLE_INTERVAL" => &self.cycle_interval,
            "LINKPULSE_CYCLE_LIMIT" => &self.cycle_limit,
            "LINKPULSE_FAILURE_THRESHOLD" => &self.failure_threshold,
            "LINKPULSE_MAX_ATTEMPTS" => &self.max_attempts,
            "LINKPULSE_RETRY_BASE" => &self.retry_base,
            "LINKPULSE_RETRY_MAX" => &self.retry_max,
            "LINKPULSE_HTTP_TIMEOUT" => &self.http_timeout,
            "LINKPULSE_USER_AGENT" => &self.user_agent,
            "LINKPULSE_WORKER_CONCURRENCY" => &self.worker_concurrency,
            "LINKPULSE_HOST_CONCURRENCY" => &self.host_concurrency,
            "LINKPULSE_HEARTBEAT_INTERVAL" => &self.heartbeat_interval,
            "LINKPULSE_RESCUE_AFTER" => &self.rescue_after,
            "LINKPULSE_POLL_INTERVAL" => &self.poll_interval,
            "LINKPULSE_SHUTDOWN_GRACE" => &self.shutdown_grace,
            "LINKPULSE_CHECK_ENABLED" => &self.check_enabled,
            "LINKPULSE_REFRESH_ENABLED" => &self.refresh_enabled,
            "LINKPULSE_RETAIN_DONE" => &self.retain_done,
            "LINKPULSE_RETAIN_FAILED" => &self.retain_failed,
            "LINKPULSE_RETAIN_RUNS" => &self.retain_runs,
            "LINKPULSE_HISTORY_PER_LINK" => &self.history_per_link,
            "LINKPULSE_RETAIN_EVENTS" => &self.retain_events,
            "LINKPULSE_WEBHOOK_DISABLE_AFTER" => &self.webhook_disable_after,
            "LINKPULSE_ADMIN_ADDR" => &self.admin_addr,
            "LINKPULSE_ADMIN_TOKEN" => return self.admin_token.as_deref(),
            "LINKPULSE_READ_TOKEN" => return self.read_token.as_deref(),
            "LINKPULSE_PUBLIC_URL" => return self.public_url.as_deref(),
            "LINKPULSE_SESSION_TTL" => &self.session_ttl,
            "LINKPULSE_SESSION_KEY" => return self.session_key.as_deref(),
            "LINKPULSE_WORKER_ADDR" => &self.worker_addr,
            "LINKPULSE_ALLOW_PRIVATE_NETWORKS" => &self.allow_private_networks,
            "LINKPULSE_ALLOWED_HOSTS" => return self.allowed_hosts.as_deref(),
            "LINKPULSE_GITHUB_API_URL" => &self.github_api_url,
            "GITHUB_TOKEN" => return self.github_token.as_deref(),
            "LINKPULSE_HOST_INTERVAL" => &self.host_interval,
            "LINKPULSE_JAEGER_URL" => return self.jaeger_url.as_deref(),
            "LINKPULSE_RULES_FILE" => return self.rules_file.as_deref(),
            "OTEL_EXPORTER_OTLP_ENDPOINT" => return self.otel_exporter_otlp_endpoint.as_deref(),
            "OTEL_SERVICE_NAME" => return self.otel_service_name.as_deref(),
            "OTEL_TRACES_SAMPLER" => &self.otel_traces_sampler,
            "OTEL_TRACES_SAMPLER_ARG" => return self.otel_traces_sampler_arg.as_deref(),
            "RUST_LOG" => &self.rust_log,
            "LINKPULSE_LOG_FORMAT" => &self.log_format,
            _ => return None,
        })
    }

    /// A lookup for [`Env::new`]: the collected values for the variables declared here, the
    /// process environment for any other (the telemetry's certificate paths, `OTEL_BSP_*`, which
    /// have no flag).
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |var| match self.value(var) {
            Some(value) => Some(value.to_owned()),
            None if VARIABLES.contains(&var) => None,
            None => std::env::var(var).ok(),
        }
    }

    /// The [`Env`] over [`SettingsArgs::lookup`], for [`super::Settings::from_env`].
    pub fn env(&self) -> Env<impl Fn(&str) -> Option<String> + '_> {
        Env::new(self.lookup())
    }
}

/// Every variable [`SettingsArgs`] declares, in help order.
pub const VARIABLES: [&str; 45] = [
    "DATABASE_URL",
    "LINKPULSE_CHECK_AFTER",
    "LINKPULSE_REFRESH_AFTER",
    "LINKPULSE_CYCLE_INTERVAL",
    "LINKPULSE_CYCLE_LIMIT",
    "LINKPULSE_FAILURE_THRESHOLD",
    "LINKPULSE_MAX_ATTEMPTS",
    "LINKPULSE_RETRY_BASE",
    "LINKPULSE_RETRY_MAX",
    "LINKPULSE_HTTP_TIMEOUT",
    "LINKPULSE_USER_AGENT",
    "LINKPULSE_WORKER_CONCURRENCY",
    "LINKPULSE_HOST_CONCURRENCY",
    "LINKPULSE_HEARTBEAT_INTERVAL",
    "LINKPULSE_RESCUE_AFTER",
    "LINKPULSE_POLL_INTERVAL",
    "LINKPULSE_SHUTDOWN_GRACE",
    "LINKPULSE_CHECK_ENABLED",
    "LINKPULSE_REFRESH_ENABLED",
    "LINKPULSE_RETAIN_DONE",
    "LINKPULSE_RETAIN_FAILED",
    "LINKPULSE_RETAIN_RUNS",
    "LINKPULSE_HISTORY_PER_LINK",
    "LINKPULSE_RETAIN_EVENTS",
    "LINKPULSE_WEBHOOK_DISABLE_AFTER",
    "LINKPULSE_ADMIN_ADDR",
    "LINKPULSE_ADMIN_TOKEN",
    "LINKPULSE_READ_TOKEN",
    "LINKPULSE_PUBLIC_URL",
    "LINKPULSE_SESSION_TTL",
    "LINKPULSE_SESSION_KEY",
    "LINKPULSE_WORKER_ADDR",
    "LINKPULSE_ALLOW_PRIVATE_NETWORKS",
    "LINKPULSE_ALLOWED_HOSTS",
    "LINKPULSE_GITHUB_API_URL",
    "GITHUB_TOKEN",
    "LINKPULSE_HOST_INTERVAL",
    "LINKPULSE_JAEGER_URL",
    "LINKPULSE_RULES_FILE",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "RUST_LOG",
    "LINKPULSE_LOG_FORMAT",
];

/// A duration as help shows it and [`Env::duration`] reads it back: the largest unit that
/// divides it exactly (`1d`, `90s`, `500ms`), so `7d` reads as `7d`, not humantime's `7days`,
/// and 180 days not as months of 30.44 days.
pub fn human(duration: Duration) -> String {
    if duration.subsec_nanos() != 0 {
        return format!("{}ms", duration.as_millis());
    }
    let secs = duration.as_secs();
    match secs {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::{Args, Command, FromArgMatches};

    use super::*;
    use crate::config::Settings;

    fn command() -> Command {
        SettingsArgs::augment_args(Command::new("t"))
    }

    #[test]
    fn human_durations_read_back_as_themselves() {
        for d in [
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_millis(1500),
            Duration::from_secs(90),
            Duration::from_secs(60),
            Duration::from_secs(7200),
            Duration::from_secs(180 * 86_400),
        ] {
            assert_eq!(humantime::parse_duration(&human(d)), Ok(d), "{}", human(d));
        }
        assert_eq!(human(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(human(Duration::from_millis(500)), "500ms");
    }

    #[test]
    fn help_defaults_are_the_settings_defaults() {
        // The defaults as help prints them, read the way the binaries read them, give exactly
        // `Settings::defaults` (whose values are the constants): no second copy can drift.
        let defaults: HashMap<String, String> = command()
            .get_arguments()
            .filter_map(|arg| {
                let var = arg.get_env()?.to_str()?.to_owned();
                let value = arg.get_default_values().first()?.to_str()?.to_owned();
                Some((var, value))
            })
            .collect();
        let from_help = Settings::from_env(&Env::new(|k| match k {
            "DATABASE_URL" => Some("postgres://x/y".to_owned()),
            _ => defaults.get(k).cloned(),
        }))
        .expect("the help defaults are valid settings");
        let mut expected = Settings::defaults("postgres://x/y");
        // Read settings leave pruning to the producer's schedule (see `queue_settings`).
        expected.queue.prune_in_maintenance = false;
        assert_eq!(format!("{from_help:?}"), format!("{expected:?}"));
        assert_eq!(defaults.get("RUST_LOG").map(String::as_str), Some(DEFAULT_LOG_FILTER));
        assert_eq!(
            defaults.get("OTEL_TRACES_SAMPLER").map(String::as_str),
            Some(DEFAULT_SAMPLER)
        );
    }

    #[test]
    fn every_declared_variable_has_an_argument_and_a_value() {
        let declared: Vec<String> = command()
            .get_arguments()
            .filter_map(|arg| arg.get_env().and_then(|v| v.to_str()).map(str::to_owned))
            .collect();
        assert_eq!(declared, VARIABLES.map(str::to_owned).to_vec());
        // A flag's value reaches `value(var)`: the match in `value` names the right field.
        for arg in command().get_arguments() {
            let Some(var) = arg.get_env().and_then(|v| v.to_str()) else {
                continue;
            };
            let long = format!("--{}", arg.get_long().expect("a long flag"));
            let matches = command()
                .try_get_matches_from(["t", long.as_str(), "flag-value"])
                .expect("parses");
            let args = SettingsArgs::from_arg_matches(&matches).expect("args");
            assert_eq!(args.value(var), Some("flag-value"), "{var}");
        }
    }

    #[test]
    fn secrets_never_show_their_values_in_help() {
        for arg in command().get_arguments() {
            let var = arg.get_env().and_then(|v| v.to_str()).unwrap_or_default();
            let secret = matches!(
                var,
                "DATABASE_URL"
                    | "LINKPULSE_ADMIN_TOKEN"
                    | "LINKPULSE_READ_TOKEN"
                    | "LINKPULSE_SESSION_KEY"
                    | "GITHUB_TOKEN"
            );
            assert_eq!(arg.is_hide_env_values_set(), secret, "{var}");
        }
    }
}
