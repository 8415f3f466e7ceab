//! `producer config`: the effective settings, secrets redacted, and the schedules as stored (the
//! table is the truth for their timing once seeded, whatever the environment says now).

use std::io::Write;

use sqlx::PgPool;

use linkpulse_shared::config::Settings;
use linkpulse_shared::config::args::SettingsArgs;

use super::links::io;
use crate::cli::{CliError, print_json};

/// What stands for a secret that is set.
const REDACTED: &str = "[redacted]";

/// The settings as `(variable, effective value)`, secrets redacted: every variable of
/// [`args::VARIABLES`](linkpulse_shared::config::args::VARIABLES). The logging and tracing ones
/// come from `args` (they configure the telemetry, not [`Settings`]).
pub fn effective(settings: &Settings, args: &SettingsArgs) -> Vec<(&'static str, String)> {
    let d = |d: std::time::Duration| humantime::format_duration(d).to_string();
    let secret = |set: bool| if set { REDACTED.to_owned() } else { "(unset)".to_owned() };
    let q = &settings.queue;
    let unset_or = |value: Option<&str>| value.map_or_else(|| "(unset)".to_owned(), str::to_owned);
    vec![
        ("DATABASE_URL", REDACTED.to_owned()),
        ("LINKPULSE_CHECK_AFTER", d(settings.check_after)),
        ("LINKPULSE_REFRESH_AFTER", d(settings.refresh_after)),
        ("LINKPULSE_CYCLE_INTERVAL", d(settings.cycle_interval)),
        ("LINKPULSE_CYCLE_LIMIT", settings.cycle_limit.to_string()),
        ("LINKPULSE_CHECK_ENABLED", settings.check_enabled.to_string()),
        ("LINKPULSE_REFRESH_ENABLED", settings.refresh_enabled.to_string()),
        ("LINKPULSE_FAILURE_THRESHOLD", settings.failure_threshold.to_string()),
        ("LINKPULSE_MAX_ATTEMPTS", q.max_attempts.to_string()),
        ("LINKPULSE_RETRY_BASE", d(q.retry.base)),
        ("LINKPULSE_RETRY_MAX", d(q.retry.max)),
        ("LINKPULSE_HTTP_TIMEOUT", d(settings.fetch.timeout)),
        ("LINKPULSE_USER_AGENT", settings.fetch.user_agent.clone()),
        ("LINKPULSE_WORKER_CONCURRENCY", settings.worker_concurrency.to_string()),
        ("LINKPULSE_HOST_CONCURRENCY", q.host_concurrency.to_string()),
        ("LINKPULSE_HEARTBEAT_INTERVAL", d(q.heartbeat_interval)),
        ("LINKPULSE_RESCUE_AFTER", d(q.rescue_after)),
        ("LINKPULSE_POLL_INTERVAL", d(q.poll_interval)),
        ("LINKPULSE_SHUTDOWN_GRACE", d(settings.shutdown_grace)),
        ("LINKPULSE_HOST_INTERVAL", d(settings.host_interval)),
        ("LINKPULSE_RETAIN_DONE", d(q.retain_done)),
        ("LINKPULSE_RETAIN_FAILED", d(q.retain_failed)),
        ("LINKPULSE_RETAIN_RUNS", d(settings.retain_runs)),
        ("LINKPULSE_HISTORY_PER_LINK", settings.history_per_link.to_string()),
        ("LINKPULSE_RETAIN_EVENTS", d(settings.retain_events)),
        ("LINKPULSE_WEBHOOK_DISABLE_AFTER", d(settings.webhook_disable_after)),
        ("LINKPULSE_ADMIN_ADDR", settings.admin_addr.to_string()),
        ("LINKPULSE_WORKER_ADDR", settings.worker_addr.to_string()),
        (
            "LINKPULSE_ALLOW_PRIVATE_NETWORKS",
            settings.fetch.guard.allow_private_networks.to_string(),
        ),
        ("LINKPULSE_ALLOWED_HOSTS", {
            let mut hosts: Vec<&str> = settings.fetch.guard.allowed_hosts.iter().map(String::as_str).collect();
            hosts.sort_unstable();
            hosts.join(",")
        }),
        ("LINKPULSE_GITHUB_API_URL", settings.github_api_url.to_string()),
        (
            "LINKPULSE_JAEGER_URL",
            settings
                .jaeger_url
                .as_ref()
                .map_or_else(|| "(unset)".to_owned(), ToString::to_string),
        ),
        (
            "LINKPULSE_RULES_FILE",
            settings
                .rules
                .file()
                .map_or_else(|| "(unset)".to_owned(), |p| p.display().to_string()),
        ),
        ("LINKPULSE_ADMIN_TOKEN", secret(settings.admin_token.is_some())),
        ("LINKPULSE_READ_TOKEN", secret(settings.read_token.is_some())),
        ("GITHUB_TOKEN", secret(settings.github_token.is_some())),
        (
            "LINKPULSE_PUBLIC_URL",
            settings
                .public_url
                .as_ref()
                .map_or_else(|| "(unset)".to_owned(), ToString::to_string),
        ),
        ("LINKPULSE_SESSION_TTL", d(settings.session_ttl)),
        ("LINKPULSE_SESSION_KEY", secret(settings.session_key.is_some())),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            // An endpoint may carry credentials: shown without them.
            unset_or(
                args.otel_exporter_otlp_endpoint
                    .as_deref()
                    .map(linkpulse_shared::telemetry::redact)
                    .as_deref(),
            ),
        ),
        (
            "OTEL_SERVICE_NAME",
            args.otel_service_name
                .clone()
                .unwrap_or_else(|| crate::cli::SERVICE_NAME.to_owned()),
        ),
        ("OTEL_TRACES_SAMPLER", args.otel_traces_sampler.clone()),
        (
            "OTEL_TRACES_SAMPLER_ARG",
            unset_or(args.otel_traces_sampler_arg.as_deref()),
        ),
        ("RUST_LOG", args.rust_log.clone()),
        ("LINKPULSE_LOG_FORMAT", args.log_format.clone()),
    ]
}

/// Why the cycle variables may not be what runs.
const SCHEDULES_NOTE: &str = "LINKPULSE_CYCLE_INTERVAL, LINKPULSE_CYCLE_LIMIT, LINKPULSE_CHECK_ENABLED and \
LINKPULSE_REFRESH_ENABLED only seed a schedule that does not exist yet; the schedules table is the truth \
from then on (change it with `producer schedules set|enable|disable`)";

/// `producer config [--json]`.
///
/// # Errors
///
/// If the schedules cannot be read.
pub async fn show(
    pool: &PgPool,
    settings: &Settings,
    args: &SettingsArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    crate::schedules::store::seed(pool, settings).await?;
    let schedules = crate::schedules::store::list(pool).await?;
    let values = effective(settings, args);
    if json {
        let map: serde_json::Map<String, serde_json::Value> = values
            .into_iter()
            .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v)))
            .collect();
        return print_json(
            out,
            &serde_json::json!({
                "settings": map,
                "schedules": schedules,
                "note": SCHEDULES_NOTE,
                "rules": settings.rules.summary(),
            }),
        );
    }
    for (key, value) in values {
        writeln!(out, "{key}={value}").map_err(io)?;
    }
    writeln!(out, "\n# schedules (from the database): {SCHEDULES_NOTE}").map_err(io)?;
    for s in schedules {
        let trigger = match (&s.every, &s.cron) {
            (_, Some(cron)) => format!("cron {cron:?} in {}", s.timezone),
            (Some(every), None) => format!("every {every}"),
            (None, None) => "-".to_owned(),
        };
        writeln!(
            out,
            "# {:<8} {} limit {} misfire grace {} {}",
            s.name,
            trigger,
            s.limit,
            s.misfire_grace,
            if s.enabled { "enabled" } else { "disabled" }
        )
        .map_err(io)?;
    }
    show_rules(settings, out)
}

/// The rules file's summary, as comment lines after the settings.
fn show_rules(settings: &Settings, out: &mut dyn Write) -> Result<(), CliError> {
    let rules = settings.rules.summary();
    let Some(file) = &rules.file else {
        return writeln!(out, "\n# rules: none (LINKPULSE_RULES_FILE is not set)").map_err(io);
    };
    writeln!(
        out,
        "\n# rules (from {file}): {} exclude pattern(s), {} host(s) with accepted status codes",
        rules.exclude_patterns,
        rules.hosts.len()
    )
    .map_err(io)?;
    for pattern in &rules.patterns {
        writeln!(out, "# exclude {pattern:?}").map_err(io)?;
    }
    for host in &rules.hosts {
        let codes: Vec<String> = host.accept.iter().map(u16::to_string).collect();
        writeln!(out, "# host {} accepts {}", host.name, codes.join(", ")).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use linkpulse_shared::config::args::VARIABLES;

    use super::*;

    #[test]
    fn config_shows_every_setting_and_no_secret() {
        let mut settings = Settings::defaults("postgres://app:pa55word@db/links");
        settings.admin_token = Some(linkpulse_shared::config::AdminToken::new("adm1n-secret"));
        settings.read_token = Some(linkpulse_shared::config::AdminToken::new("r3ad-secret"));
        settings.github_token = Some("ghp_s3cret".to_owned().into());
        settings.session_key = Some("s3ssion-key-that-is-long-enough-to-sign".to_owned().into());
        let args = SettingsArgs {
            otel_exporter_otlp_endpoint: Some("https://user:otlp-pass@collector:4317".to_owned()),
            ..SettingsArgs::default()
        };
        let shown = effective(&settings, &args);
        let names: Vec<&str> = shown.iter().map(|(name, _)| *name).collect();
        for var in VARIABLES {
            assert!(names.contains(&var), "`producer config` does not show {var}");
        }
        let text = format!("{shown:?}");
        for secret in [
            "pa55word",
            "adm1n-secret",
            "r3ad-secret",
            "ghp_s3cret",
            "s3ssion-key",
            "otlp-pass",
        ] {
            assert!(!text.contains(secret), "{secret} shown: {text}");
        }
    }
}
