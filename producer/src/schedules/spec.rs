//! When a schedule fires: an interval, or a cron expression read in an IANA time zone.
//!
//! Pure functions of the expression and a given instant (no clock inside), so the DST rules are
//! tested at chosen instants. Cron evaluation is `croner`'s, which follows the Open Cron Pattern
//! Specification on DST: an occurrence in a skipped hour (spring forward) runs once at the first
//! valid instant after the gap, and one in a repeated hour (fall back) runs once, at its first
//! instance. Wildcard and stepped fields keep firing through the repeated hour, as wall-clock
//! intervals should.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A schedule's trigger.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// Every so long, anchored at the previous planned occurrence (a late run does not shift the
    /// cadence).
    Every(Duration),
    /// A cron expression (5 fields, or 6 with seconds first) in a time zone.
    Cron {
        /// As written by the operator.
        expression: String,
        /// Parsed.
        cron: Box<Cron>,
        /// Where its wall-clock fields are read.
        timezone: Tz,
    },
}

/// Why an expression, a time zone or an interval is refused: the operator's input, shown as is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// Not a cron expression we accept.
    #[error("invalid cron expression {expression:?}: {reason}")]
    Cron {
        /// The input.
        expression: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Not an IANA time zone name.
    #[error("unknown time zone {0:?} (expected an IANA name such as UTC or Europe/Berlin)")]
    TimeZone(String),
    /// A zero interval would fire continuously.
    #[error("the interval must be longer than zero")]
    ZeroInterval,
    /// The expression never fires after the given instant (e.g. 30 February).
    #[error("cron expression {0:?} has no next occurrence")]
    NoOccurrence(String),
}

/// Parses an IANA time zone name.
///
/// # Errors
///
/// [`SpecError::TimeZone`] when unknown.
pub fn parse_timezone(name: &str) -> Result<Tz, SpecError> {
    name.parse::<Tz>().map_err(|_| SpecError::TimeZone(name.to_owned()))
}

/// Parses a cron expression: 5 fields (minute first), or 6 with seconds first; `@daily` and the
/// other nicknames too. Years are refused: a 7th field is more likely a mistake.
///
/// # Errors
///
/// [`SpecError::Cron`] with the parser's reason.
pub fn parse_cron(expression: &str) -> Result<Cron, SpecError> {
    let invalid = |reason: String| SpecError::Cron {
        expression: expression.to_owned(),
        reason,
    };
    let trimmed = expression.trim();
    let fields = trimmed.split_whitespace().count();
    if !trimmed.starts_with('@') && !(5..=6).contains(&fields) {
        return Err(invalid(format!(
            "{fields} fields; expected 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)"
        )));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(trimmed)
        .map_err(|e| invalid(e.to_string()))
}

impl Trigger {
    /// An interval trigger.
    ///
    /// # Errors
    ///
    /// [`SpecError::ZeroInterval`].
    pub fn every(every: Duration) -> Result<Self, SpecError> {
        if every.is_zero() {
            return Err(SpecError::ZeroInterval);
        }
        Ok(Self::Every(every))
    }

    /// A cron trigger in `timezone`.
    ///
    /// # Errors
    ///
    /// An invalid expression or time zone.
    pub fn cron(expression: &str, timezone: &str) -> Result<Self, SpecError> {
        Ok(Self::Cron {
            expression: expression.trim().to_owned(),
            cron: Box::new(parse_cron(expression)?),
            timezone: parse_timezone(timezone)?,
        })
    }

    /// The first occurrence strictly after `after`. For an interval, `anchor` (the previous
    /// planned occurrence, if any) keeps the cadence: the result is `anchor + k × every` for the
    /// smallest `k` that lands after `after`, so a run that started late, or occurrences skipped
    /// during downtime, never shift or multiply the later ones (coalescing).
    ///
    /// # Errors
    ///
    /// [`SpecError::NoOccurrence`] when a cron expression never fires again.
    pub fn next_after(&self, after: DateTime<Utc>, anchor: Option<DateTime<Utc>>) -> Result<DateTime<Utc>, SpecError> {
        match self {
            Self::Every(every) => {
                let step = chrono::Duration::from_std(*every).unwrap_or(chrono::Duration::MAX);
                let Some(anchor) = anchor else {
                    return Ok(after + step);
                };
                if anchor > after {
                    return Ok(anchor);
                }
                let behind = (after - anchor).num_milliseconds();
                let step_ms = step.num_milliseconds().max(1);
                let steps = behind / step_ms + 1;
                Ok(anchor + chrono::Duration::milliseconds(steps.saturating_mul(step_ms)))
            }
            Self::Cron {
                expression,
                cron,
                timezone,
            } => cron
                .find_next_occurrence(&after.with_timezone(timezone), false)
                .map(|next| next.with_timezone(&Utc))
                .map_err(|_| SpecError::NoOccurrence(expression.clone())),
        }
    }

    /// The trigger in words, for the dashboard and `schedules show`.
    pub fn describe(&self) -> String {
        match self {
            Self::Every(every) => format!("every {}", humantime::format_duration(*every)),
            Self::Cron { cron, timezone, .. } => format!("{} ({timezone})", cron.describe()),
        }
    }

    /// A misfire grace to use when none is given: half the interval (1 minute for cron).
    pub fn default_misfire_grace(&self) -> Duration {
        match self {
            Self::Every(every) => *every / 2,
            Self::Cron { .. } => Duration::from_secs(60),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn berlin(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        chrono_tz::Europe::Berlin
            .with_ymd_and_hms(y, mo, d, h, mi, 0)
            .earliest()
            .expect("valid local time")
            .with_timezone(&Utc)
    }

    /// Every occurrence in `(from, to]`.
    fn occurrences(trigger: &Trigger, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut at = from;
        loop {
            let next = trigger.next_after(at, out.last().copied()).expect("next");
            if next > to {
                return out;
            }
            out.push(next);
            at = next;
        }
    }

    #[test]
    fn spring_forward_runs_a_0230_job_once_at_0300() {
        // Europe/Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
        let daily = Trigger::cron("30 2 * * *", "Europe/Berlin").expect("valid");
        let runs = occurrences(&daily, berlin(2026, 3, 28, 12, 0), berlin(2026, 3, 30, 12, 0));
        let local: Vec<String> = runs
            .iter()
            .map(|t| t.with_timezone(&chrono_tz::Europe::Berlin).to_rfc3339())
            .collect();
        assert_eq!(
            local,
            ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"],
            "the skipped 02:30 runs once, at 03:00; the next day at 02:30 again"
        );
    }

    #[test]
    fn fall_back_runs_a_0230_job_once_not_twice() {
        // Europe/Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        let daily = Trigger::cron("30 2 * * *", "Europe/Berlin").expect("valid");
        let runs = occurrences(&daily, berlin(2026, 10, 24, 12, 0), berlin(2026, 10, 26, 12, 0));
        let local: Vec<String> = runs
            .iter()
            .map(|t| t.with_timezone(&chrono_tz::Europe::Berlin).to_rfc3339())
            .collect();
        assert_eq!(
            local,
            ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"],
            "02:30 runs once on the day it repeats (its first instance)"
        );
    }

    #[test]
    fn utc_cron_and_seconds_field() {
        let at = Utc.with_ymd_and_hms(2026, 3, 29, 1, 59, 0).unwrap();
        let daily = Trigger::cron("30 2 * * *", "UTC").expect("valid");
        assert_eq!(
            daily.next_after(at, None).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 29, 2, 30, 0).unwrap()
        );
        let every_ten_seconds = Trigger::cron("*/10 * * * * *", "UTC").expect("six fields");
        assert_eq!(
            every_ten_seconds.next_after(at, None).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 29, 1, 59, 10).unwrap()
        );
        let quarter = Trigger::cron("*/15 * * * *", "UTC").expect("valid");
        let runs = occurrences(&quarter, at, at + chrono::Duration::hours(1));
        assert_eq!(runs.len(), 4, "{runs:?}");
    }

    #[test]
    fn intervals_keep_their_cadence_and_coalesce() {
        let every = Trigger::every(Duration::from_secs(60)).expect("valid");
        let anchor = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        // On time: the next one is one interval later.
        assert_eq!(
            every.next_after(anchor, Some(anchor)).unwrap(),
            anchor + chrono::Duration::seconds(60)
        );
        // A run that started 20 s late keeps the cadence.
        let late = anchor + chrono::Duration::seconds(20);
        assert_eq!(
            every.next_after(late, Some(anchor)).unwrap(),
            anchor + chrono::Duration::seconds(60)
        );
        // A week of downtime: the next occurrence is the first one after now, not 10,080 behind.
        let week_later = anchor + chrono::Duration::days(7) + chrono::Duration::seconds(5);
        assert_eq!(
            every.next_after(week_later, Some(anchor)).unwrap(),
            anchor + chrono::Duration::days(7) + chrono::Duration::seconds(60)
        );
        // No anchor: one interval from now.
        assert_eq!(
            every.next_after(anchor, None).unwrap(),
            anchor + chrono::Duration::seconds(60)
        );
        assert_eq!(Trigger::every(Duration::ZERO).unwrap_err(), SpecError::ZeroInterval);
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        let err = Trigger::cron("61 * * * *", "UTC").unwrap_err();
        assert!(matches!(err, SpecError::Cron { .. }), "{err}");
        let err = Trigger::cron("* * * *", "UTC").unwrap_err();
        assert!(err.to_string().contains("4 fields"), "{err}");
        let err = Trigger::cron("0 0 1 1 * 2030 1", "UTC").unwrap_err();
        assert!(err.to_string().contains("7 fields"), "{err}");
        let err = Trigger::cron("30 2 * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(err, SpecError::TimeZone("Mars/Olympus".into()));
        assert!(Trigger::cron("@daily", "Europe/Berlin").is_ok());
    }

    #[test]
    fn described_in_words() {
        let daily = Trigger::cron("30 2 * * *", "Europe/Berlin").expect("valid");
        let words = daily.describe();
        assert!(words.contains("02:30") && words.contains("Europe/Berlin"), "{words}");
        assert_eq!(Trigger::every(Duration::from_secs(300)).unwrap().describe(), "every 5m");
        assert_eq!(
            Trigger::cron("0 * * * *", "UTC").unwrap().default_misfire_grace(),
            Duration::from_secs(60)
        );
        assert_eq!(
            Trigger::every(Duration::from_secs(60)).unwrap().default_misfire_grace(),
            Duration::from_secs(30)
        );
    }
}
