//! The body of a delivery (the contract receivers parse):
//!
//! ```json
//! {"id":"42","type":"link.down","link":{"id":7,"url":"https://example.com/"},
//!  "from":"active","to":"inaccessible","reason":"HTTP 404 Not Found",
//!  "at":"2026-12-07T10:00:00.123456Z","seq":3}
//! ```
//!
//! `id` is the event's id as a string, and the delivery's `Idempotency-Key`; `seq` increases by one
//! per event of the link (an endpoint subscribed to some types sees gaps, never a decrease). A
//! ping has an id of its own (`ping_<uuid>`), `link`, `from`, `to` and `seq` null.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::PING;

/// The link an event is about, as it was when the event happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLink {
    /// `links.id` (the link may have been deleted since).
    pub id: i64,
    /// Its URL.
    pub url: String,
}

/// One delivery's JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The event's id (decimal), or `ping_<uuid>`: the idempotency key.
    pub id: String,
    /// `link.down`, `link.up`, `link.changed` or `ping`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The link; null for a ping.
    pub link: Option<EventLink>,
    /// Status before the transition; null for a ping.
    pub from: Option<String>,
    /// Status after; null for a ping.
    pub to: Option<String>,
    /// Why: the check's error, the refresh's finding, or the operator's reason.
    pub reason: Option<String>,
    /// When the transition happened (a ping: when it was sent).
    pub at: DateTime<Utc>,
    /// Position among the link's events; null for a ping.
    pub seq: Option<i64>,
}

/// A `link_events` row, as a delivery reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// `link_events.id`.
    pub id: i64,
    /// The link.
    pub link_id: i64,
    /// Per-link sequence number.
    pub seq: i64,
    /// The link's URL at the time.
    pub url: String,
    /// Event type.
    pub kind: String,
    /// Status before.
    pub from_status: String,
    /// Status after.
    pub to_status: String,
    /// Why.
    pub reason: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl Delivery {
    /// The body delivering `event`.
    pub fn of_event(event: &EventRow) -> Self {
        Self {
            id: event.id.to_string(),
            kind: event.kind.clone(),
            link: Some(EventLink {
                id: event.link_id,
                url: event.url.clone(),
            }),
            from: Some(event.from_status.clone()),
            to: Some(event.to_status.clone()),
            reason: event.reason.clone(),
            at: event.created_at,
            seq: Some(event.seq),
        }
    }

    /// A test delivery sent at `at`.
    pub fn ping(at: DateTime<Utc>) -> Self {
        Self {
            id: format!("ping_{}", uuid::Uuid::new_v4().simple()),
            kind: PING.to_owned(),
            link: None,
            from: None,
            to: None,
            reason: Some("test delivery from `producer webhooks test`".to_owned()),
            at,
            seq: None,
        }
    }

    /// The exact bytes posted (and signed).
    ///
    /// # Errors
    ///
    /// Never in practice: every field is a string, a number, a date or null.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_body_has_exactly_the_contract_fields() {
        let event = EventRow {
            id: 42,
            link_id: 7,
            seq: 3,
            url: "https://example.com/".into(),
            kind: "link.down".into(),
            from_status: "active".into(),
            to_status: "inaccessible".into(),
            reason: Some("HTTP 404 Not Found".into()),
            created_at: DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z")
                .expect("date")
                .with_timezone(&Utc),
        };
        let body: serde_json::Value =
            serde_json::from_slice(&Delivery::of_event(&event).to_bytes().expect("json")).expect("parse");
        assert_eq!(
            body,
            serde_json::json!({
                "id": "42", "type": "link.down", "link": {"id": 7, "url": "https://example.com/"},
                "from": "active", "to": "inaccessible", "reason": "HTTP 404 Not Found",
                "at": "2026-12-07T10:00:00Z", "seq": 3
            })
        );
    }

    #[test]
    fn a_ping_has_its_own_id_and_no_link() {
        let (a, b) = (Delivery::ping(Utc::now()), Delivery::ping(Utc::now()));
        assert!(a.id.starts_with("ping_") && a.id != b.id, "{} {}", a.id, b.id);
        assert_eq!(a.kind, "ping");
        assert!(a.link.is_none() && a.seq.is_none());
    }
}
