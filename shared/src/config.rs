//! Configuration: environment-first (12-factor), every setting defaulted except `DATABASE_URL`.
//!
//! Settings are read once at start by [`Settings::from_env`]; tests build them with
//! [`Settings::from_lookup`] or by editing [`Settings::defaults`], never through the process
//! environment. Defaults are the named constants below, shared by the docs and `--help`.
//!
//! The binaries collect the values with clap ([`args::SettingsArgs`]: flag, else environment,
//! else the default) and read them through the same [`Env`] as before, so `--help` lists every
//! variable while validation stays here.

pub mod args;

use std::time::Duration;

pub use secrecy::{ExposeSecret, SecretString};

use linkpulse_queue::RetryPolicy;
use linkpulse_queue::backoff::{DEFAULT_RETRY_BASE, DEFAULT_RETRY_MAX};
pub use linkpulse_queue::settings::{
    DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HOST_CONCURRENCY, DEFAULT_MAX_ATTEMPTS, DEFAULT_POLL_INTERVAL,
    DEFAULT_RESCUE_AFTER, DEFAULT_RETAIN_DONE, DEFAULT_RETAIN_FAILED, QueueSettings,
};

/// Jobs one worker process runs at once.
pub const DEFAULT_WORKER_CONCURRENCY: usize = 16;
/// How long SIGTERM waits for in-flight jobs before releasing them.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A setting that could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required variable is unset.
    #[error("{0} is not set")]
    Missing(&'static str),
    /// A variable is set to something unusable.
    #[error("{var}={value:?}: {reason}")]
    Invalid {
        /// Variable name.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Reads typed values from a variable lookup, naming the variable in every error.
#[derive(Debug)]
pub struct Env<F> {
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// Wraps a lookup function (`std::env::var(..).ok()` in binaries, a map in tests).
    pub fn new(lookup: F) -> Self {
        Self { lookup }
    }

    /// A required string.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Missing`] when unset or empty.
    pub fn required(&self, var: &'static str) -> Result<String, ConfigError> {
        (self.lookup)(var)
            .filter(|v| !v.is_empty())
            .ok_or(ConfigError::Missing(var))
    }

    /// An optional string (unset or empty = `None`).
    pub fn optional(&self, var: &'static str) -> Option<String> {
        (self.lookup)(var).filter(|v| !v.trim().is_empty())
    }

    /// A value parsed with `FromStr`, or `default`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] when set but unparsable.
    pub fn parse<T>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        match self.optional(var) {
            None => Ok(default),
            Some(value) => value.trim().parse().map_err(|e: T::Err| ConfigError::Invalid {
                var,
                reason: e.to_string(),
                value,
            }),
        }
    }

    /// A human-readable duration (`90s`, `15m`, `7d`, `500ms`), or `default`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] when set but unparsable.
    pub fn duration(&self, var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        match self.optional(var) {
            None => Ok(default),
            Some(value) => humantime::parse_duration(value.trim()).map_err(|e| ConfigError::Invalid {
                var,
                reason: format!("{e} (expected a duration such as 90s, 15m, 7d)"),
                value,
            }),
        }
    }

    /// A positive integer, or `default`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] when set but not a positive integer.
    pub fn positive<T>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + Default + Copy,
        T::Err: std::fmt::Display,
    {
        let value = self.parse(var, default)?;
        if value <= T::default() {
            return Err(ConfigError::Invalid {
                var,
                value: self.optional(var).unwrap_or_default(),
                reason: "must be greater than zero".to_owned(),
            });
        }
        Ok(value)
    }
}

/// Reads the queue's settings from `env` (the queue crate knows nothing of the environment).
///
/// # Errors
///
/// The first invalid variable.
pub fn queue_settings<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<QueueSettings, ConfigError> {
    {
        let settings = QueueSettings {
            max_attempts: env.positive("LINKPULSE_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS)?,
            host_concurrency: env.positive("LINKPULSE_HOST_CONCURRENCY", DEFAULT_HOST_CONCURRENCY)?,
            heartbeat_interval: env.duration("LINKPULSE_HEARTBEAT_INTERVAL", DEFAULT_HEARTBEAT_INTERVAL)?,
            rescue_after: env.duration("LINKPULSE_RESCUE_AFTER", DEFAULT_RESCUE_AFTER)?,
            retain_done: env.duration("LINKPULSE_RETAIN_DONE", DEFAULT_RETAIN_DONE)?,
            retain_failed: env.duration("LINKPULSE_RETAIN_FAILED", DEFAULT_RETAIN_FAILED)?,
            poll_interval: env.duration("LINKPULSE_POLL_INTERVAL", DEFAULT_POLL_INTERVAL)?,
            retry: RetryPolicy {
                base: env.duration("LINKPULSE_RETRY_BASE", DEFAULT_RETRY_BASE)?,
                max: env.duration("LINKPULSE_RETRY_MAX", DEFAULT_RETRY_MAX)?,
            },
            // The producer's `prune` schedule is the one pruner: workers only rescue.
            prune_in_maintenance: false,
        };
        if settings.heartbeat_interval.is_zero() || settings.heartbeat_interval * 2 > settings.rescue_after {
            return Err(ConfigError::Invalid {
                var: "LINKPULSE_HEARTBEAT_INTERVAL",
                value: humantime::format_duration(settings.heartbeat_interval).to_string(),
                reason: format!(
                    "must be non-zero and at most half of LINKPULSE_RESCUE_AFTER ({})",
                    humantime::format_duration(settings.rescue_after)
                ),
            });
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Env::new(move |k| map.get(k).cloned())
    }

    #[test]
    fn queue_settings_default_when_unset() {
        // The queue's defaults, except that the producer's prune schedule, not the workers'
        // maintenance, prunes.
        let expected = QueueSettings {
            prune_in_maintenance: false,
            ..QueueSettings::default()
        };
        assert_eq!(queue_settings(&env(&[])), Ok(expected));
    }

    #[test]
    fn durations_are_human_readable() {
        let s = queue_settings(&env(&[
            ("LINKPULSE_RETAIN_DONE", "7d"),
            ("LINKPULSE_POLL_INTERVAL", "250ms"),
        ]))
        .expect("valid settings");
        assert_eq!(s.retain_done, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(s.poll_interval, Duration::from_millis(250));
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let err = queue_settings(&env(&[("LINKPULSE_RESCUE_AFTER", "soon")])).expect_err("invalid");
        assert!(err.to_string().starts_with("LINKPULSE_RESCUE_AFTER=\"soon\""), "{err}");
        let err = queue_settings(&env(&[("LINKPULSE_MAX_ATTEMPTS", "0")])).expect_err("invalid");
        assert!(err.to_string().contains("greater than zero"), "{err}");
    }

    #[test]
    fn heartbeat_must_stay_well_under_rescue_threshold() {
        let err = queue_settings(&env(&[("LINKPULSE_HEARTBEAT_INTERVAL", "20s")])).expect_err("invalid");
        assert!(err.to_string().contains("half of LINKPULSE_RESCUE_AFTER"), "{err}");
    }
}

/// Default: a link's health check is due this long after the last one.
pub const DEFAULT_CHECK_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Default: metadata refresh is due this long after the last one.
pub const DEFAULT_REFRESH_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default producer cycle period.
pub const DEFAULT_CYCLE_INTERVAL: Duration = Duration::from_secs(60);
/// Default most jobs enqueued per kind per cycle.
pub const DEFAULT_CYCLE_LIMIT: i64 = 10_000;
/// Default consecutive failed checks that make a link `inaccessible`.
pub const DEFAULT_FAILURE_THRESHOLD: i32 = 3;
/// Default: how long schedule runs are kept.
pub const DEFAULT_RETAIN_RUNS: Duration = Duration::from_secs(60 * 24 * 3600);
/// Default: recent check verdicts kept per link.
pub const DEFAULT_HISTORY_PER_LINK: i64 = 30;
/// Default: how long link status events are kept.
pub const DEFAULT_RETAIN_EVENTS: Duration = Duration::from_secs(180 * 24 * 3600);
/// Default: a webhook whose deliveries all failed for this long is disabled.
pub const DEFAULT_WEBHOOK_DISABLE_AFTER: Duration = Duration::from_secs(3 * 24 * 3600);
/// Default GitHub API base.
pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";
/// Default producer admin address.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:8080";
/// Default worker health/metrics address.
pub const DEFAULT_WORKER_ADDR: &str = "0.0.0.0:9090";

/// Every setting of the producer and the worker.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `DATABASE_URL` (required). Secret: it may carry a password, and settings get logged.
    pub database_url: SecretString,
    /// Queue behaviour.
    pub queue: QueueSettings,
    /// `LINKPULSE_CHECK_AFTER`: a check is due this long after the last one (`0s` = every cycle).
    pub check_after: Duration,
    /// `LINKPULSE_REFRESH_AFTER`: a refresh is due this long after the last one.
    pub refresh_after: Duration,
    /// `LINKPULSE_CYCLE_INTERVAL`: producer cycle period.
    pub cycle_interval: Duration,
    /// `LINKPULSE_CYCLE_LIMIT`: most jobs enqueued per kind per cycle (oldest first).
    pub cycle_limit: i64,
    /// `LINKPULSE_FAILURE_THRESHOLD`: consecutive failed checks that make a link `inaccessible`.
    pub failure_threshold: i32,
    /// `LINKPULSE_WORKER_CONCURRENCY`: jobs one worker process runs at once (`--concurrency`
    /// overrides). Each holds at most one HTTP connection.
    pub worker_concurrency: usize,
    /// `LINKPULSE_SHUTDOWN_GRACE`: how long SIGTERM waits for in-flight jobs before releasing
    /// them. Keep Kubernetes' `terminationGracePeriodSeconds` above this plus the HTTP timeout.
    pub shutdown_grace: Duration,
    /// `LINKPULSE_CHECK_ENABLED`: the producer enqueues checks.
    pub check_enabled: bool,
    /// `LINKPULSE_REFRESH_ENABLED`: the producer enqueues refreshes.
    pub refresh_enabled: bool,
    /// Fetching (`LINKPULSE_HTTP_TIMEOUT`, `LINKPULSE_USER_AGENT`, `LINKPULSE_ALLOW_PRIVATE_NETWORKS`,
    /// `LINKPULSE_ALLOWED_HOSTS`).
    pub fetch: crate::fetch::FetchSettings,
    /// `LINKPULSE_HOST_INTERVAL`: minimum gap between two requests to one host from one worker.
    pub host_interval: Duration,
    /// `LINKPULSE_GITHUB_API_URL`.
    pub github_api_url: url::Url,
    /// `LINKPULSE_JAEGER_URL` (unset by default): base URL of the Jaeger UI; when set, `links show`
    /// and the dashboard print a link to a job's trace (`{base}/trace/{trace_id}`).
    pub jaeger_url: Option<url::Url>,
    /// `GITHUB_TOKEN` (optional; raises GitHub's rate limit). Secret.
    pub github_token: Option<SecretString>,
    /// `LINKPULSE_ADMIN_ADDR`: the producer's admin HTTP.
    pub admin_addr: std::net::SocketAddr,
    /// `LINKPULSE_WORKER_ADDR`: the worker's health and metrics HTTP.
    pub worker_addr: std::net::SocketAddr,
    /// `LINKPULSE_ADMIN_TOKEN` (unset by default): bearer token of the producer's mutating admin
    /// calls. Unset means those calls are refused (403): an admin API open to anyone who can
    /// reach the port is worse than none.
    pub admin_token: Option<AdminToken>,
    /// `LINKPULSE_READ_TOKEN` (unset by default): bearer token of the admin API's reads (the admin
    /// token reads too). Unset means reads are open only while `admin_addr` is a loopback address:
    /// a listing of every saved URL is the owner's data once the port leaves the machine.
    pub read_token: Option<AdminToken>,
    /// `LINKPULSE_RETAIN_RUNS`: how long schedule runs are kept (the `prune` schedule deletes
    /// older ones).
    pub retain_runs: Duration,
    /// `LINKPULSE_HISTORY_PER_LINK`: check verdicts kept per link (the `prune` schedule trims
    /// older ones; the write-back does not, it is the hot path). "Dead since", the last good
    /// check and the share of ok checks are computed over them.
    pub history_per_link: i64,
    /// `LINKPULSE_RETAIN_EVENTS`: how long link status events are kept (the `prune` schedule
    /// deletes older ones, delivered or not).
    pub retain_events: Duration,
    /// `LINKPULSE_WEBHOOK_DISABLE_AFTER`: a webhook with no successful delivery for this long since
    /// its deliveries started failing is disabled (with the reason in `webhooks list`), so a dead
    /// receiver stops costing attempts; `webhooks enable` turns it back on.
    pub webhook_disable_after: Duration,
    /// `LINKPULSE_RULES_FILE` (unset by default): per-host exclude patterns and accepted status
    /// codes, read and validated once at start (a bad file stops the process, naming the file
    /// and line). Shared, because settings are cloned per worker and per request.
    pub rules: std::sync::Arc<crate::rules::Rules>,
    /// `LINKPULSE_PUBLIC_URL` (unset by default): the admin server's public URL. Its host joins the
    /// loopback names in the `Host` allowlist (a DNS-rebinding page names its own host), and an
    /// `https` one marks the dashboard's session cookie `Secure`.
    pub public_url: Option<url::Url>,
    /// `LINKPULSE_SESSION_TTL`: how long a dashboard sign-in lasts.
    pub session_ttl: Duration,
    /// `LINKPULSE_SESSION_KEY` (unset by default): the key that signs dashboard sessions. Unset
    /// means a random key per process: sessions end at a restart and do not cross replicas. Secret.
    pub session_key: Option<SecretString>,
}

/// How long a dashboard sign-in lasts: a working day, so an open tab does not outlive its shift.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Shortest `LINKPULSE_SESSION_KEY` accepted: a signing key must not be guessable.
pub const MIN_SESSION_KEY_LEN: usize = 32;

/// A secret that must not reach logs: `Settings` is `Debug`, and settings get logged.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for comparison only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl Settings {
    /// Defaults for everything, against `database_url` (tests start here).
    ///
    /// # Panics
    ///
    /// Never: the default constants are valid.
    #[allow(clippy::expect_used)]
    pub fn defaults(database_url: impl Into<String>) -> Self {
        Self {
            database_url: SecretString::from(database_url.into()),
            queue: QueueSettings::default(),
            check_after: DEFAULT_CHECK_AFTER,
            refresh_after: DEFAULT_REFRESH_AFTER,
            cycle_interval: DEFAULT_CYCLE_INTERVAL,
            cycle_limit: DEFAULT_CYCLE_LIMIT,
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            worker_concurrency: DEFAULT_WORKER_CONCURRENCY,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            check_enabled: true,
            refresh_enabled: true,
            fetch: crate::fetch::FetchSettings::default(),
            host_interval: crate::politeness::DEFAULT_HOST_INTERVAL,
            github_api_url: url::Url::parse(DEFAULT_GITHUB_API_URL).expect("valid default URL"),
            jaeger_url: None,
            github_token: None,
            admin_addr: DEFAULT_ADMIN_ADDR.parse().expect("valid default address"),
            worker_addr: DEFAULT_WORKER_ADDR.parse().expect("valid default address"),
            admin_token: None,
            read_token: None,
            retain_runs: DEFAULT_RETAIN_RUNS,
            history_per_link: DEFAULT_HISTORY_PER_LINK,
            retain_events: DEFAULT_RETAIN_EVENTS,
            webhook_disable_after: DEFAULT_WEBHOOK_DISABLE_AFTER,
            rules: std::sync::Arc::default(),
            public_url: None,
            session_ttl: DEFAULT_SESSION_TTL,
            session_key: None,
        }
    }

    /// Reads every setting from `env`.
    ///
    /// # Errors
    ///
    /// The first missing or invalid variable.
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let mut s = Self::defaults(env.required("DATABASE_URL")?);
        s.queue = queue_settings(env)?;
        s.check_after = env.duration("LINKPULSE_CHECK_AFTER", DEFAULT_CHECK_AFTER)?;
        s.refresh_after = env.duration("LINKPULSE_REFRESH_AFTER", DEFAULT_REFRESH_AFTER)?;
        s.cycle_interval = env.duration("LINKPULSE_CYCLE_INTERVAL", DEFAULT_CYCLE_INTERVAL)?;
        s.cycle_limit = env.positive("LINKPULSE_CYCLE_LIMIT", DEFAULT_CYCLE_LIMIT)?;
        s.failure_threshold = env.positive("LINKPULSE_FAILURE_THRESHOLD", DEFAULT_FAILURE_THRESHOLD)?;
        s.worker_concurrency = env.positive("LINKPULSE_WORKER_CONCURRENCY", DEFAULT_WORKER_CONCURRENCY)?;
        s.shutdown_grace = env.duration("LINKPULSE_SHUTDOWN_GRACE", DEFAULT_SHUTDOWN_GRACE)?;
        s.check_enabled = env.parse("LINKPULSE_CHECK_ENABLED", true)?;
        s.refresh_enabled = env.parse("LINKPULSE_REFRESH_ENABLED", true)?;
        s.fetch.timeout = env.duration("LINKPULSE_HTTP_TIMEOUT", crate::fetch::client::DEFAULT_HTTP_TIMEOUT)?;
        if let Some(agent) = env.optional("LINKPULSE_USER_AGENT") {
            s.fetch.user_agent = agent;
        }
        s.fetch.guard.allow_private_networks = env.parse("LINKPULSE_ALLOW_PRIVATE_NETWORKS", false)?;
        s.fetch.guard.allowed_hosts = env
            .optional("LINKPULSE_ALLOWED_HOSTS")
            .map(|v| {
                v.split(',')
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        s.host_interval = env.duration("LINKPULSE_HOST_INTERVAL", crate::politeness::DEFAULT_HOST_INTERVAL)?;
        s.github_api_url = env.parse("LINKPULSE_GITHUB_API_URL", s.github_api_url.clone())?;
        s.jaeger_url = jaeger_url(env)?;
        s.github_token = env.optional("GITHUB_TOKEN").map(SecretString::from);
        s.admin_addr = env.parse("LINKPULSE_ADMIN_ADDR", s.admin_addr)?;
        s.worker_addr = env.parse("LINKPULSE_WORKER_ADDR", s.worker_addr)?;
        s.admin_token = env.optional("LINKPULSE_ADMIN_TOKEN").map(AdminToken::new);
        s.read_token = env.optional("LINKPULSE_READ_TOKEN").map(AdminToken::new);
        s.retain_runs = env.duration("LINKPULSE_RETAIN_RUNS", DEFAULT_RETAIN_RUNS)?;
        s.history_per_link = env.positive("LINKPULSE_HISTORY_PER_LINK", DEFAULT_HISTORY_PER_LINK)?;
        s.retain_events = env.duration("LINKPULSE_RETAIN_EVENTS", DEFAULT_RETAIN_EVENTS)?;
        s.webhook_disable_after = env.duration("LINKPULSE_WEBHOOK_DISABLE_AFTER", DEFAULT_WEBHOOK_DISABLE_AFTER)?;
        s.rules = std::sync::Arc::new(rules(env)?);
        s.public_url = url_setting(env, "LINKPULSE_PUBLIC_URL")?;
        s.session_ttl = env.duration("LINKPULSE_SESSION_TTL", DEFAULT_SESSION_TTL)?;
        s.session_key = match env.optional("LINKPULSE_SESSION_KEY") {
            Some(key) if key.len() < MIN_SESSION_KEY_LEN => {
                return Err(ConfigError::Invalid {
                    var: "LINKPULSE_SESSION_KEY",
                    value: "(redacted)".into(),
                    reason: format!("must be at least {MIN_SESSION_KEY_LEN} characters"),
                });
            }
            key => key.map(SecretString::from),
        };
        Ok(s)
    }
}

/// `LINKPULSE_RULES_FILE`, read and validated: no rules when unset.
///
/// # Errors
///
/// [`ConfigError::Invalid`] naming the file and the line at fault.
pub fn rules<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<crate::rules::Rules, ConfigError> {
    let Some(path) = env.optional(crate::rules::RULES_FILE_VAR) else {
        return Ok(crate::rules::Rules::default());
    };
    crate::rules::Rules::load(std::path::Path::new(path.trim())).map_err(|e| ConfigError::Invalid {
        var: crate::rules::RULES_FILE_VAR,
        reason: e.to_string(),
        value: path,
    })
}

/// `LINKPULSE_JAEGER_URL`, read alone: for output code that has no [`Settings`] at hand.
///
/// # Errors
///
/// [`ConfigError::Invalid`] when set but not a URL.
pub fn jaeger_url<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Option<url::Url>, ConfigError> {
    url_setting(env, "LINKPULSE_JAEGER_URL")
}

/// An optional absolute URL.
fn url_setting<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    var: &'static str,
) -> Result<Option<url::Url>, ConfigError> {
    env.optional(var)
        .map(|value| {
            url::Url::parse(value.trim()).map_err(|e| ConfigError::Invalid {
                var,
                reason: e.to_string(),
                value,
            })
        })
        .transpose()
}

#[cfg(test)]
mod admin_token_tests {
    use super::*;

    #[test]
    fn admin_token_is_read_but_never_printed() {
        let env = Env::new(|k| match k {
            "DATABASE_URL" => Some("postgres://x/y".to_owned()),
            "LINKPULSE_ADMIN_TOKEN" => Some("hunter2".to_owned()),
            _ => None,
        });
        let settings = Settings::from_env(&env).expect("settings");
        assert_eq!(settings.admin_token.as_ref().map(AdminToken::expose), Some("hunter2"));
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn read_token_is_read_but_never_printed() {
        let env = Env::new(|k| match k {
            "DATABASE_URL" => Some("postgres://x/y".to_owned()),
            "LINKPULSE_READ_TOKEN" => Some("r3ader".to_owned()),
            _ => None,
        });
        let settings = Settings::from_env(&env).expect("settings");
        assert_eq!(settings.read_token.as_ref().map(AdminToken::expose), Some("r3ader"));
        assert!(settings.admin_token.is_none(), "the read token is not an admin token");
        assert!(!format!("{settings:?}").contains("r3ader"));
    }

    #[test]
    fn the_database_password_and_github_token_never_show_in_debug_output() {
        let env = Env::new(|k| match k {
            "DATABASE_URL" => Some("postgres://app:pa55word@db/links".to_owned()),
            "GITHUB_TOKEN" => Some("ghp_s3cret".to_owned()),
            _ => None,
        });
        let settings = Settings::from_env(&env).expect("settings");
        assert_eq!(
            settings.database_url.expose_secret(),
            "postgres://app:pa55word@db/links"
        );
        assert_eq!(
            settings.github_token.as_ref().map(ExposeSecret::expose_secret),
            Some("ghp_s3cret")
        );
        let debug = format!("{settings:?}");
        assert!(!debug.contains("pa55word") && !debug.contains("ghp_s3cret"), "{debug}");
    }
}

#[cfg(test)]
mod history_settings_tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Settings::from_env(&Env::new(move |k| {
            if k == "DATABASE_URL" {
                return Some("postgres://x/y".to_owned());
            }
            vars.iter().find(|(name, _)| name == k).map(|(_, v)| v.clone())
        }))
    }

    #[test]
    fn history_settings_default_parse_and_refuse_nonsense() {
        let s = settings(&[]).expect("defaults");
        assert_eq!(
            (s.history_per_link, s.retain_events),
            (30, Duration::from_secs(180 * 24 * 3600))
        );
        let s = settings(&[("LINKPULSE_HISTORY_PER_LINK", "5"), ("LINKPULSE_RETAIN_EVENTS", "7d")]).expect("set");
        assert_eq!(
            (s.history_per_link, s.retain_events),
            (5, Duration::from_secs(7 * 24 * 3600))
        );
        for (var, value) in [
            ("LINKPULSE_HISTORY_PER_LINK", "0"),
            ("LINKPULSE_HISTORY_PER_LINK", "many"),
            ("LINKPULSE_RETAIN_EVENTS", "forever"),
        ] {
            let error = settings(&[(var, value)]).expect_err(value);
            assert!(error.to_string().contains(var), "{error}");
        }
    }
}
