//! The page shell every dashboard page shares: head, navigation, session controls, notices, and
//! the small formatting helpers (times, badges, durations) the pages use.
//!
//! Everything goes through `maud`, which escapes every interpolated value; the only raw HTML is the
//! constant stylesheet below. Pages work without JavaScript (there is none: the
//! `Content-Security-Policy` of [`super::html`] forbids scripts outright, so an injected `<script>`
//! could not run even if escaping ever failed).

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::Viewer;
use super::session::CSRF_FIELD;

/// The stylesheet: small, inline (the CSP allows inline styles, not scripts).
const STYLE: &str = "\
body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}\
header{background:#1d2330;color:#fff;padding:.6em 1.5em;display:flex;gap:1.5em;align-items:center;flex-wrap:wrap}\
header a{color:#cfd6e4;text-decoration:none}header a.on{color:#fff;font-weight:600;border-bottom:2px solid #6ea8fe}\
header .brand{font-weight:700;color:#fff;margin-right:1em}header .who{margin-left:auto;display:flex;gap:.6em;align-items:center}\
main{padding:1em 1.5em;max-width:110em}h1{font-size:1.4em;margin:.4em 0 .6em}h2{font-size:1.1em;margin:1.4em 0 .5em}\
table{border-collapse:collapse;background:#fff;margin-bottom:1em;font-size:.92em}\
td,th{border:1px solid #dde1e8;padding:.3em .6em;text-align:left;vertical-align:top}th{background:#eef1f5}\
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}td.url{max-width:40em;overflow-wrap:anywhere}\
.badge{display:inline-block;padding:0 .5em;border-radius:.8em;font-size:.85em;color:#fff;background:#6b7280}\
.badge.ok,.badge.active,.badge.done,.badge.enabled{background:#2e7d32}.badge.failed,.badge.inaccessible,.badge.dead{background:#c62828}\
.badge.queued,.badge.running{background:#1565c0}.badge.repo_unavailable,.badge.blocked,.badge.missed,.badge.abandoned,.badge.transient{background:#e6a100;color:#222}\
.badge.archived,.badge.paused,.badge.disabled{background:#6b7280}\
.dead-url{text-decoration:line-through;color:#c62828}\
.notice{background:#e7f3e8;border:1px solid #9cc9a0;padding:.5em 1em;margin:.6em 0}\
.error{background:#fdecea;border:1px solid #e6a09a;padding:.5em 1em;margin:.6em 0}\
form.inline{display:inline}form.filters{display:flex;gap:.6em;flex-wrap:wrap;align-items:end;margin-bottom:1em}\
form.filters label{display:flex;flex-direction:column;font-size:.85em}\
button{cursor:pointer}pre{background:#fff;border:1px solid #dde1e8;padding:.6em;overflow:auto;max-width:80em}\
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em;background:#fff;padding:.8em;border:1px solid #dde1e8;max-width:80em}\
dl.facts dt{font-weight:600}dl.facts dd{margin:0;overflow-wrap:anywhere}\
.pager{display:flex;gap:1em;margin:.5em 0}.muted{color:#6b7280}svg.chart{background:#fff;border:1px solid #dde1e8}\
img.favicon{width:16px;height:16px;vertical-align:middle}img.preview{max-width:24em;max-height:14em;border:1px solid #dde1e8}";

/// The navigation's pages: (path, label).
const NAV: [(&str, &str); 4] = [
    ("/", "Overview"),
    ("/jobs", "Jobs"),
    ("/links", "Links"),
    ("/schedules", "Schedules"),
];

/// What a page contributes to the shell.
#[derive(Debug, Default)]
pub struct Page<'a> {
    /// The `<title>` and `<h1>`.
    pub title: String,
    /// The navigation entry to highlight (its path).
    pub nav: &'a str,
    /// Reload every this many seconds (the overview's auto-refresh), via `<meta http-equiv>`.
    pub refresh: Option<u32>,
    /// A success message above the content.
    pub notice: Option<String>,
    /// A failure message above the content (a form that could not be applied).
    pub error: Option<String>,
}

impl Page<'_> {
    /// The page's status: 409 when it shows a form that could not be applied, else 200.
    pub fn status(&self) -> axum::http::StatusCode {
        if self.error.is_some() {
            axum::http::StatusCode::CONFLICT
        } else {
            axum::http::StatusCode::OK
        }
    }
}

/// A whole page: `body` inside the shell.
pub fn page(viewer: &Viewer, page: &Page<'_>, body: &Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(seconds) = page.refresh {
                    meta http-equiv="refresh" content=(seconds);
                }
                title { (page.title) " · linkpulse" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a.brand href="/" { "linkpulse" }
                    nav {
                        @for (path, label) in NAV {
                            a class=@if path == page.nav { "on" } href=(path) style="margin-right:1em" { (label) }
                        }
                    }
                    div.who { (session_controls(viewer)) }
                }
                main {
                    h1 { (page.title) }
                    @if let Some(notice) = &page.notice {
                        p.notice #notice { (notice) }
                    }
                    @if let Some(error) = &page.error {
                        p.error #error role="alert" { (error) }
                    }
                    (body)
                }
            }
        }
    }
}

/// Signed-in state and the sign-in / sign-out control.
fn session_controls(viewer: &Viewer) -> Markup {
    html! {
        @match &viewer.session {
            Some(session) => {
                span #session { @if session.is_admin() { "Signed in (admin)" } @else { "Signed in (read-only)" } }
                form.inline #signout method="post" action="/signout" {
                    input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                    button type="submit" #signout-button { "Sign out" }
                }
            }
            None => {
                a #signin-link href="/signin" { "Sign in" }
            }
        }
    }
}

/// A trace: a link to its Jaeger page when one is configured, else its id with a hint, else `-`.
pub fn trace_link(url: Option<&str>, trace_id: Option<&str>, label: &str) -> Markup {
    html! {
        @match (url, trace_id) {
            (Some(url), _) => { a #trace-link href=(url) { (label) } }
            (None, Some(id)) => { code { (id) } span.muted { " (set LINKPULSE_JAEGER_URL to link it)" } }
            (None, None) => { span.muted { "-" } }
        }
    }
}

/// A hidden CSRF field for a form of `viewer`'s session (empty without one: the post is refused).
pub fn csrf(viewer: &Viewer) -> Markup {
    let value = viewer.session.as_ref().map(|s| s.csrf.as_str()).unwrap_or_default();
    html! { input type="hidden" name=(CSRF_FIELD) value=(value); }
}

/// A state or status as a coloured badge. The class is one of the known names or `other`, never
/// the stored text itself.
pub fn badge(text: Option<&str>) -> Markup {
    const KNOWN: [&str; 20] = [
        "ok",
        "active",
        "done",
        "enabled",
        "failed",
        "inaccessible",
        "dead",
        "queued",
        "running",
        "repo_unavailable",
        "blocked",
        "missed",
        "abandoned",
        "transient",
        "archived",
        "paused",
        "disabled",
        "not_modified",
        "snoozed",
        "error",
    ];
    match text {
        None => html! { span.muted { "-" } },
        Some(text) => {
            let class = KNOWN.iter().find(|k| **k == text).copied().unwrap_or("other");
            html! { span class={ "badge " (class) } { (text) } }
        }
    }
}

/// A time as "3 min ago" (or "in 2 min"), with the exact UTC time as its tooltip.
pub fn when(at: Option<DateTime<Utc>>) -> Markup {
    match at {
        None => html! { span.muted { "-" } },
        Some(at) => html! {
            time datetime=(at.to_rfc3339()) title=(at.format("%Y-%m-%d %H:%M:%S UTC").to_string()) { (relative(at, Utc::now())) }
        },
    }
}

/// `at` relative to `now` in words.
pub fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds();
    let (n, future) = (seconds.unsigned_abs(), seconds < 0);
    let amount = match n {
        0..=59 => format!("{n} s"),
        60..=3599 => format!("{} min", n / 60),
        3600..=172_799 => format!("{} h", n / 3600),
        _ => format!("{} d", n / 86_400),
    };
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// A number of seconds as "4.2 s", "3 min", "2 h".
pub fn age(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".to_owned(),
        Some(s) if s < 60.0 => format!("{s:.1} s"),
        Some(s) if s < 3600.0 => format!("{:.0} min", s / 60.0),
        Some(s) => format!("{:.1} h", s / 3600.0),
    }
}

/// A URL from stored data, usable as an `href`/`src` only if it is http(s): a stored
/// `javascript:` URL is shown as text, never made clickable.
pub fn web_url(url: Option<&str>) -> Option<&str> {
    let url = url?;
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    (lower.starts_with("http://") || lower.starts_with("https://")).then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        let now = Utc::now();
        assert_eq!(relative(now - chrono::Duration::seconds(5), now), "5 s ago");
        assert_eq!(relative(now - chrono::Duration::minutes(3), now), "3 min ago");
        assert_eq!(relative(now + chrono::Duration::hours(2), now), "in 2 h");
    }

    #[test]
    fn badges_escape_and_never_use_stored_text_as_class() {
        let html = badge(Some("\"><script>alert(1)</script>")).into_string();
        assert!(html.starts_with("<span class=\"badge other\">"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
    }

    #[test]
    fn only_web_urls_become_links() {
        assert_eq!(web_url(Some("https://a.example/")), Some("https://a.example/"));
        assert_eq!(web_url(Some("javascript:alert(1)")), None);
        assert_eq!(web_url(Some("JAVASCRIPT:alert(1)")), None);
        assert_eq!(web_url(None), None);
    }
}
