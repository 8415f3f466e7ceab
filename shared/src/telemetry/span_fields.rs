//! Span fields for the JSON log lines, written once and appended to, never re-parsed.
//!
//! The log layer keeps each span's fields as text so that a line logged inside the span can show
//! them (its `span` object). tracing-subscriber's `JsonFields` builds a map of `serde_json`
//! values for every new span and, on every `Span::record`, parses the stored JSON back and
//! serialises it again. A worker opens several spans per job and records two fields on `job.run`
//! after it started; in a profile of 512 concurrent checks that bookkeeping took about a tenth of
//! the worker's CPU, for spans that almost never carry a log line.
//!
//! [`SpanFieldsJson`] writes the same JSON object directly and appends the members of a later
//! record before the closing brace. A field recorded twice then appears twice; the JSON event
//! formatter reads these fields with `serde_json`, which keeps the last value, as `JsonFields`
//! would.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::Writer;

/// The log layer's span-field formatter: a JSON object per span, as `JsonFields` writes it.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpanFieldsJson;

impl<'w> FormatFields<'w> for SpanFieldsJson {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        writer.write_char('{')?;
        let mut members = Members::new(&mut writer, true);
        fields.record(&mut members);
        members.result?;
        writer.write_char('}')
    }

    fn add_fields(&self, current: &'w mut FormattedFields<Self>, fields: &tracing::span::Record<'_>) -> fmt::Result {
        if current.fields.is_empty() {
            return self.format_fields(current.as_writer(), fields);
        }
        // `current` is an object this formatter wrote: reopen it before its closing brace. A value
        // whose `Debug` fails part-way leaves the object as it was, never half a member.
        if !current.fields.ends_with('}') {
            return Err(fmt::Error);
        }
        let before = current.fields.len();
        current.fields.pop();
        let first = current.fields.ends_with('{');
        let mut members = Members::new(&mut current.fields, first);
        fields.record(&mut members);
        let result = members.result;
        if result.is_err() {
            current.fields.truncate(before - 1);
        }
        current.fields.push('}');
        result
    }
}

/// Writes `"name":value` members, comma-separated, to an object already opened.
struct Members<'a> {
    out: &'a mut dyn fmt::Write,
    first: bool,
    result: fmt::Result,
}

impl<'a> Members<'a> {
    fn new(out: &'a mut dyn fmt::Write, first: bool) -> Self {
        Self {
            out,
            first,
            result: Ok(()),
        }
    }

    /// Writes the separator, the key and, through `value`, the value of one member.
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut dyn fmt::Write) -> fmt::Result) {
        let name = field.name();
        // `log.*` fields are the metadata of a `log` record, shown elsewhere; `r#type` is the
        // field `type` (tracing strips the prefix itself today; `JsonFields` strips it too).
        if name.starts_with("log.") || self.result.is_err() {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        if !self.first {
            self.result = self.out.write_char(',');
        }
        self.first = false;
        self.result = self
            .result
            .and_then(|()| quoted(&mut *self.out, |escaped| escaped.write_str(name)))
            .and_then(|()| self.out.write_char(':'))
            .and_then(|()| value(&mut *self.out));
    }
}

impl Visit for Members<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity; `serde_json` writes them as null too.
        self.member(field, |out| {
            if value.is_finite() {
                // `{:?}` keeps the decimal point of `1.0` and the exponent of `1e16`, as serde_json.
                write!(out, "{value:?}")
            } else {
                out.write_str("null")
            }
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |out| quoted(out, |escaped| escaped.write_str(value)));
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.member(field, |out| {
            out.write_char('[')?;
            for (i, byte) in value.iter().enumerate() {
                write!(out, "{}{byte}", if i == 0 { "" } else { "," })?;
            }
            out.write_char(']')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |out| quoted(out, |escaped| write!(escaped, "{value:?}")));
    }
}

/// A JSON string: the quotes, and whatever `body` writes escaped.
fn quoted(out: &mut dyn fmt::Write, body: impl FnOnce(&mut Escaped<'_>) -> fmt::Result) -> fmt::Result {
    out.write_char('"')?;
    body(&mut Escaped(&mut *out))?;
    out.write_char('"')
}

/// Escapes what is written through it for the inside of a JSON string.
struct Escaped<'a>(&'a mut dyn fmt::Write);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, c) in s.char_indices() {
            let escape = match c {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                '\u{8}' => "\\b",
                '\u{c}' => "\\f",
                c if c < ' ' => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{:04x}", u32::from(c))?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + c.len_utf8();
        }
        self.0.write_str(&s[plain..])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Captures what the log layer writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// The `span` object of one line logged inside a span, with our fields or tracing-subscriber's.
    fn logged_span(ours: bool, inside: impl FnOnce()) -> serde_json::Value {
        let captured = Captured::default();
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(captured.clone());
        if ours {
            let subscriber = tracing_subscriber::registry().with(layer.fmt_fields(SpanFieldsJson));
            tracing::subscriber::with_default(subscriber, inside);
        } else {
            let subscriber = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(subscriber, inside);
        }
        let bytes = captured.0.lock().expect("lock").clone();
        let line = String::from_utf8(bytes).expect("utf-8");
        let value: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
        value["span"].clone()
    }

    fn job_like_span() {
        let span = tracing::info_span!(
            "job.run",
            job.id = 42_i64,
            job.attempt = 3_u32,
            ratio = 0.5_f64,
            whole = 1.0_f64,
            huge = 1e16_f64,
            not_a_number = f64::NAN,
            last = true,
            url.host = "example.org",
            reason = "a \"quoted\"\\ line\nwith\ttabs, \u{1} and ünïcode",
            debugged = ?vec!["a", "b\"c"],
            r#type = "check",
            verdict = tracing::field::Empty,
            job.outcome = tracing::field::Empty,
        );
        span.record("verdict", "dead");
        span.record("job.outcome", "retry");
        span.record("job.outcome", "failed");
        span.in_scope(|| tracing::info!("inside"));
    }

    #[test]
    fn fields_match_tracing_subscribers_json() {
        let ours = logged_span(true, job_like_span);
        let theirs = logged_span(false, job_like_span);
        assert_eq!(ours, theirs);
        assert_eq!(ours["verdict"], "dead");
        assert_eq!(ours["job.outcome"], "failed", "the last record wins");
        assert_eq!(ours["type"], "check");
        assert_eq!(ours["not_a_number"], serde_json::Value::Null);
        assert_eq!(ours["reason"], "a \"quoted\"\\ line\nwith\ttabs, \u{1} and ünïcode");
    }

    #[test]
    fn a_span_without_fields_then_recorded() {
        let body = || {
            let span = tracing::info_span!("empty", later = tracing::field::Empty);
            span.in_scope(|| tracing::info!("before"));
            span.record("later", 7_i64);
            span.in_scope(|| tracing::info!("after"));
        };
        let captured = Captured::default();
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(captured.clone())
            .fmt_fields(SpanFieldsJson);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), body);
        let bytes = captured.0.lock().expect("lock").clone();
        let lines: Vec<serde_json::Value> = String::from_utf8(bytes)
            .expect("utf-8")
            .lines()
            .map(|line| serde_json::from_str(line).expect("JSON line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["span"], serde_json::json!({"name": "empty"}));
        assert_eq!(lines[1]["span"], serde_json::json!({"name": "empty", "later": 7}));
    }

    /// A `Debug` that fails part-way.
    struct Failing;

    impl fmt::Debug for Failing {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("half")?;
            Err(fmt::Error)
        }
    }

    #[test]
    fn a_failing_value_leaves_the_recorded_fields_as_they_were() {
        let span = logged_span(true, || {
            let span = tracing::info_span!("s", a = 1_i64, b = tracing::field::Empty);
            span.record("b", tracing::field::debug(Failing));
            span.in_scope(|| tracing::info!("inside"));
        });
        assert_eq!(span, serde_json::json!({"name": "s", "a": 1}));
    }

    #[test]
    fn escaping_matches_serde_json() {
        let samples = [
            "plain",
            "",
            "\"",
            "\\",
            "\u{0}\u{7}\u{8}\u{c}\u{1f}\u{7f}",
            "é\n€\r𝄞\t",
            "</script>",
        ];
        for sample in samples {
            let mut out = String::new();
            quoted(&mut out, |escaped| escaped.write_str(sample)).expect("write");
            let back: String = serde_json::from_str(&out).expect("valid JSON string");
            assert_eq!(back, sample);
            assert_eq!(out, serde_json::to_string(sample).expect("serialise"), "{sample:?}");
        }
    }
}
