//! The job kinds of linkpulse and their queue names: `check` and `refresh` of a link, and
//! `deliver` of a link's events to one webhook.

use serde::{Deserialize, Serialize};

use linkpulse_queue::{DecodeError, JobArgs};

/// Kind name of a health check (stable: stored in queued rows).
pub const CHECK: &str = "check";
/// Kind name of a metadata refresh (stable: stored in queued rows).
pub const REFRESH: &str = "refresh";
/// Kind name of a webhook delivery (stable: stored in queued rows).
pub const DELIVER: &str = "deliver";
/// Every kind, in display order.
pub const KINDS: [&str; 3] = [CHECK, REFRESH, DELIVER];

/// Is this link reachable?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckLink {
    /// `links.id`.
    pub link_id: i64,
    /// The URL as stored when the job was enqueued.
    pub url: String,
}

/// Re-read the link's title, description, images and GitHub metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshLink {
    /// `links.id`.
    pub link_id: i64,
    /// The URL as stored when the job was enqueued.
    pub url: String,
}

/// Post a link's undelivered events to one webhook, in order (see `crate::webhooks`). The events
/// are read when the job runs, not carried here: one pending job per webhook and link delivers
/// whatever happened to the link since its last delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverEvents {
    /// `webhooks.id`.
    pub webhook_id: i64,
    /// `links.id` (`link_events.link_id`).
    pub link_id: i64,
    /// The webhook's URL when the job was enqueued (for traces; the delivery reads the row).
    pub url: String,
}

/// Any job, as one worker runs every kind under one concurrency budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkJob {
    /// A health check.
    Check(CheckLink),
    /// A metadata refresh.
    Refresh(RefreshLink),
    /// A webhook delivery.
    Deliver(DeliverEvents),
}

impl LinkJob {
    /// The link this job is about.
    pub fn link_id(&self) -> i64 {
        match self {
            Self::Check(j) => j.link_id,
            Self::Refresh(j) => j.link_id,
            Self::Deliver(j) => j.link_id,
        }
    }

    /// The URL this job fetches (a delivery: the webhook it posts to).
    pub fn url(&self) -> &str {
        match self {
            Self::Check(j) => &j.url,
            Self::Refresh(j) => &j.url,
            Self::Deliver(j) => &j.url,
        }
    }
}

/// [`dedupe_key`] as SQL over a link's `id` column (or the column named, e.g. `"l.id"`): what the
/// producer's set-based cycle selects and probes. `it::queue_dedupe` checks that both forms agree.
#[macro_export]
macro_rules! link_dedupe_key_sql {
    () => {
        $crate::link_dedupe_key_sql!("id")
    };
    ($column:literal) => {
        concat!("'link:' || ", $column)
    };
}

/// A link job's payload as SQL over a link's `id` and `url` columns: what [`LinkJob`] decodes
/// (`CheckLink` and `RefreshLink` have the same fields). `it::queue_dedupe` checks the round trip.
#[macro_export]
macro_rules! link_payload_sql {
    () => {
        "jsonb_build_object('link_id', id, 'url', url)"
    };
}

/// Dedupe key of a link's job: at most one unfinished job per link and kind.
pub fn dedupe_key(link_id: i64) -> String {
    format!("link:{link_id}")
}

impl JobArgs for LinkJob {
    fn kinds() -> &'static [&'static str] {
        &KINDS
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Check(_) => CHECK,
            Self::Refresh(_) => REFRESH,
            Self::Deliver(_) => DELIVER,
        }
    }

    fn encode(&self) -> Result<serde_json::Value, serde_json::Error> {
        match self {
            Self::Check(j) => serde_json::to_value(j),
            Self::Refresh(j) => serde_json::to_value(j),
            Self::Deliver(j) => serde_json::to_value(j),
        }
    }

    fn decode(kind: &str, payload: serde_json::Value) -> Result<Self, DecodeError> {
        let malformed = |source| DecodeError::Malformed {
            kind: kind.to_owned(),
            source,
        };
        match kind {
            CHECK => serde_json::from_value(payload).map(Self::Check).map_err(malformed),
            REFRESH => serde_json::from_value(payload).map(Self::Refresh).map_err(malformed),
            DELIVER => serde_json::from_value(payload).map(Self::Deliver).map_err(malformed),
            other => Err(DecodeError::UnknownKind(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_round_trip_through_their_kind() {
        let job = LinkJob::Refresh(RefreshLink {
            link_id: 7,
            url: "https://example.com/".into(),
        });
        let payload = job.encode().expect("encode");
        assert_eq!(LinkJob::decode(job.kind(), payload).expect("decode"), job);
    }

    #[test]
    fn a_delivery_round_trips_and_decodes_from_the_dispatchers_payload() {
        let job = LinkJob::Deliver(DeliverEvents {
            webhook_id: 3,
            link_id: 7,
            url: "https://hooks.example.com/".into(),
        });
        assert_eq!(job.kind(), DELIVER);
        assert_eq!(
            LinkJob::decode(DELIVER, job.encode().expect("encode")).expect("decode"),
            job
        );
        // what `webhooks::dispatch` selects: jsonb_build_object('webhook_id', …, 'link_id', …, 'url', …)
        let payload = serde_json::json!({"webhook_id": 3, "link_id": 7, "url": "https://hooks.example.com/"});
        assert_eq!(LinkJob::decode(DELIVER, payload).expect("decode"), job);
    }

    #[test]
    fn a_payload_of_the_wrong_shape_is_a_decode_error() {
        let err = LinkJob::decode(CHECK, serde_json::json!({"link_id": "seven"})).expect_err("malformed");
        assert!(err.to_string().starts_with("malformed check payload"), "{err}");
        assert!(matches!(
            LinkJob::decode("nope", serde_json::json!({})),
            Err(DecodeError::UnknownKind(_))
        ));
    }
}
