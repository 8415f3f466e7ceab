//! The overview's throughput chart: jobs finished per minute over the last hour, as a small SVG
//! drawn on the server (bars of done jobs with failed ones stacked on top), from the per-minute
//! counters (`queue_finished_minutes`), never from the job table.

use chrono::{DateTime, DurationRound, Utc};
use maud::{Markup, html};

use linkpulse_queue::counts::MinuteCount;

/// Minutes shown.
pub const MINUTES: i64 = 60;
const WIDTH: i64 = 720;
const HEIGHT: i64 = 140;
const BAR: i64 = WIDTH / MINUTES;

/// Done and failed per minute for the `MINUTES` minutes up to `now`, oldest first, zeros filled in.
pub fn per_minute(counts: &[MinuteCount], now: DateTime<Utc>) -> Vec<(DateTime<Utc>, i64, i64)> {
    let end = now.duration_trunc(chrono::Duration::minutes(1)).unwrap_or(now);
    (0..MINUTES)
        .rev()
        .map(|back| {
            let minute = end - chrono::Duration::minutes(back);
            let (done, failed) = counts
                .iter()
                .filter(|c| c.minute == minute)
                .fold((0, 0), |(d, f), c| (d + c.done, f + c.failed));
            (minute, done, failed)
        })
        .collect()
}

/// The chart for `minutes` (from [`per_minute`]).
pub fn svg(minutes: &[(DateTime<Utc>, i64, i64)]) -> Markup {
    let peak = minutes.iter().map(|(_, d, f)| d + f).max().unwrap_or(0).max(1);
    let total: i64 = minutes.iter().map(|(_, d, f)| d + f).sum();
    let failed: i64 = minutes.iter().map(|(_, _, f)| f).sum();
    let scale = |n: i64| n * (HEIGHT - 20) / peak;
    html! {
        svg.chart #throughput xmlns="http://www.w3.org/2000/svg" width=(WIDTH) height=(HEIGHT) viewBox={ "0 0 " (WIDTH) " " (HEIGHT) }
            role="img" aria-label={ "Jobs finished per minute, last hour: " (total) " (" (failed) " failed), peak " (peak) " per minute" } {
            title { "Jobs finished per minute over the last hour" }
            text x="4" y="12" font-size="11" fill="#6b7280" { "peak " (peak) "/min" }
            @for (i, (minute, done, fail)) in minutes.iter().enumerate() {
                @let x = i64::try_from(i).unwrap_or(0) * BAR;
                @let done_h = scale(*done);
                @let fail_h = scale(*fail);
                g data-minute=(minute.to_rfc3339()) data-done=(done) data-failed=(fail) {
                    title { (minute.format("%H:%M").to_string()) " UTC: " (done) " done, " (fail) " failed" }
                    @if *done > 0 {
                        rect x=(x) y=(HEIGHT - done_h) width=(BAR - 1) height=(done_h) fill="#2e7d32" {}
                    }
                    @if *fail > 0 {
                        rect x=(x) y=(HEIGHT - done_h - fail_h) width=(BAR - 1) height=(fail_h) fill="#c62828" {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_are_filled_and_summed_across_kinds() {
        let now = Utc::now();
        let minute = now.duration_trunc(chrono::Duration::minutes(1)).unwrap_or(now);
        let counts = [
            MinuteCount {
                minute,
                kind: "check".into(),
                done: 5,
                failed: 1,
            },
            MinuteCount {
                minute,
                kind: "refresh".into(),
                done: 2,
                failed: 0,
            },
        ];
        let series = per_minute(&counts, now);
        assert_eq!(series.len(), 60);
        assert_eq!(series.last().map(|(_, d, f)| (*d, *f)), Some((7, 1)));
        assert!(series[..59].iter().all(|(_, d, f)| *d == 0 && *f == 0));
        let svg = svg(&series).into_string();
        assert!(svg.contains("data-done=\"7\" data-failed=\"1\""), "{svg}");
    }
}
