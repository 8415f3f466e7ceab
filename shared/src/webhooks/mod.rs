//! Webhooks: endpoints that receive a link's status transitions, signed, in order, at least once.
//!
//! The path of an event: a transition writes its row in `link_events` in the same transaction
//! (the outbox, written by the write-backs and the manual transitions); the producer's leader
//! turns undispatched events into `deliver` jobs ([`dispatch`]); a worker's `deliver` handler posts
//! a link's undelivered events to one endpoint in `seq` order ([`store::pending_events`],
//! [`send`]), advancing a per endpoint-and-link cursor after each 2xx; a failure stops the job
//! there and the queue retries it with its persisted backoff, so a later event never overtakes an
//! earlier one. The event id is the delivery's `Idempotency-Key`: a retry after a lost answer
//! re-sends the same id, and receivers dedupe by it.
//!
//! # Layout
//!
//! - [`payload`]: the JSON body (`{"id","type","link","from","to","reason","at","seq"}`), pings.
//! - [`signing`]: secrets and `X-Linkpulse-Signature` (HMAC-SHA256 over `"<t>.<body>"`).
//! - [`store`]: the `webhooks` and `webhook_cursors` tables: add, list, remove, rotate, enable,
//!   the failure accounting that disables a dead endpoint, the events a delivery owes.
//! - [`dispatch`]: the outbox dispatcher the producer's leader runs every pass.
//! - [`send`]: one signed `POST` through the guarded fetcher, and what its answer means.

pub mod dispatch;
pub mod payload;
pub mod send;
pub mod signing;
pub mod store;

pub use dispatch::{DispatchReport, dispatch};
pub use payload::Delivery;
pub use store::{Target, Webhook};

/// Event types an endpoint may subscribe to, in display order (`ping` needs no subscription).
pub const EVENT_TYPES: [&str; 3] = ["link.down", "link.up", "link.changed"];
/// The type of a test delivery (`webhooks test ID`).
pub const PING: &str = "ping";

/// Errors of the webhooks' store and dispatcher.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The URL cannot be an endpoint (unparsable, not http(s), credentials in it).
    #[error("invalid webhook URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The network guard refuses the URL (a private address without `LINKPULSE_ALLOWED_HOSTS`).
    #[error("webhook URL {url:?} {refusal}")]
    Refused {
        /// The URL as given.
        url: String,
        /// The guard's reason (in the message: not a separate cause).
        refusal: crate::fetch::Refused,
    },
    /// An event type that does not exist, or none at all.
    #[error("{0}")]
    InvalidEvents(String),
    /// A duration out of range (a rotation's grace).
    #[error("{0}")]
    InvalidDuration(String),
    /// A ping could not be sent at all (no HTTP client, body not encodable): our side.
    #[error("cannot send: {0}")]
    Send(String),
    /// A statement failed.
    #[error("webhooks database error")]
    Database(#[from] sqlx::Error),
    /// The dispatcher's enqueue failed.
    #[error("enqueueing deliveries failed")]
    Queue(#[from] linkpulse_queue::QueueError),
}

/// Parses `--events link.down,link.up` (comma-separated, spaces ignored, duplicates dropped);
/// `None` or an empty list means every type.
///
/// # Errors
///
/// [`WebhookError::InvalidEvents`] naming the unknown type and the known ones.
pub fn parse_events<S: AsRef<str>>(events: Option<&[S]>) -> Result<Vec<String>, WebhookError> {
    let mut chosen: Vec<String> = Vec::new();
    for name in events
        .unwrap_or_default()
        .iter()
        .flat_map(|e| e.as_ref().split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        if !EVENT_TYPES.contains(&name) {
            return Err(WebhookError::InvalidEvents(format!(
                "unknown event type {name:?} (expected {}; ping needs no subscription)",
                EVENT_TYPES.join(", ")
            )));
        }
        if !chosen.iter().any(|c| c == name) {
            chosen.push(name.to_owned());
        }
    }
    if chosen.is_empty() {
        chosen = EVENT_TYPES.iter().map(|&e| e.to_owned()).collect();
    }
    // Display order, whatever order they were given in.
    chosen.sort_by_key(|e| EVENT_TYPES.iter().position(|t| t == e));
    Ok(chosen)
}

/// Checks an endpoint's URL: http(s), no credentials, and allowed by the network guard as far
/// as it can tell without resolving (IP literals, `localhost`, metadata names); names are checked
/// again when each delivery resolves them.
///
/// # Errors
///
/// [`WebhookError::InvalidUrl`] or [`WebhookError::Refused`] with the reason.
pub fn check_url(url: &str, guard: &crate::fetch::GuardPolicy) -> Result<url::Url, WebhookError> {
    let invalid = |reason: String| WebhookError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let parsed = url::Url::parse(url.trim()).map_err(|e| invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!("scheme {:?} is not http or https", parsed.scheme())));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("credentials in the URL are not allowed".into()));
    }
    guard.check_url(&parsed).map_err(|refusal| WebhookError::Refused {
        url: url.to_owned(),
        refusal,
    })?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::GuardPolicy;

    #[test]
    fn events_default_to_every_type_and_unknown_ones_are_refused() {
        assert_eq!(parse_events::<&str>(None).expect("default"), EVENT_TYPES);
        assert_eq!(
            parse_events(Some(&["link.up, link.down", "link.up"])).expect("two"),
            ["link.down", "link.up"]
        );
        let err = parse_events(Some(&["link.gone"])).expect_err("unknown");
        assert!(err.to_string().contains("unknown event type \"link.gone\""), "{err}");
        assert!(parse_events(Some(&["ping"])).is_err());
    }

    #[test]
    fn the_disable_window_defaults_to_three_days_and_reads_durations() {
        use crate::config::{Env, Settings};
        let env = |window: Option<&'static str>| {
            Env::new(move |k| match k {
                "DATABASE_URL" => Some("postgres://x/y".to_owned()),
                "LINKPULSE_WEBHOOK_DISABLE_AFTER" => window.map(str::to_owned),
                _ => None,
            })
        };
        let three_days = std::time::Duration::from_secs(3 * 24 * 3600);
        assert_eq!(
            Settings::from_env(&env(None)).expect("settings").webhook_disable_after,
            three_days
        );
        let hours = Settings::from_env(&env(Some("12h"))).expect("settings");
        assert_eq!(hours.webhook_disable_after.as_secs(), 12 * 3600);
        let err = Settings::from_env(&env(Some("soon"))).expect_err("invalid");
        assert!(
            err.to_string().starts_with("LINKPULSE_WEBHOOK_DISABLE_AFTER=\"soon\""),
            "{err}"
        );
    }

    #[test]
    fn urls_must_be_http_without_credentials_and_pass_the_guard() {
        let closed = GuardPolicy::default();
        assert!(check_url("https://hooks.example.com/x", &closed).is_ok());
        for bad in ["ftp://example.com/", "https://u:p@example.com/", "not a url"] {
            assert!(
                matches!(check_url(bad, &closed), Err(WebhookError::InvalidUrl { .. })),
                "{bad}"
            );
        }
        let refused = check_url("http://127.0.0.1:9/hook", &closed).expect_err("loopback");
        assert!(
            refused.to_string().contains("refused by the network guard"),
            "{refused}"
        );
        let open = GuardPolicy {
            allow_private_networks: true,
            ..GuardPolicy::default()
        };
        assert!(check_url("http://127.0.0.1:9/hook", &open).is_ok());
        // metadata stays closed unless the host is named
        assert!(check_url("http://169.254.169.254/", &open).is_err());
        let named = GuardPolicy {
            allowed_hosts: ["169.254.169.254".to_owned()].into_iter().collect(),
            ..GuardPolicy::default()
        };
        assert!(check_url("http://169.254.169.254/", &named).is_ok());
    }
}
