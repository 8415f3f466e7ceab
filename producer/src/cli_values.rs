//! The closed sets of the command line — job kinds, job states, link and run statuses, schedule
//! names, import and export formats — as clap value enums, so `--help` lists the possible values
//! and clap refuses anything else with that list, before a database is touched.
//!
//! Each enum maps to the string the rest of the code (and every JSON output) already uses
//! (`as_str`); the unit tests check each name against its source of truth (the kinds of
//! `link_jobs`, [`JobState::ALL`], the schedule names of the store), so a value cannot be added
//! on one side only.

use clap::ValueEnum;
use clap::builder::{PossibleValuesParser, TypedValueParser};

use linkpulse_queue::JobState;
use linkpulse_shared::bookmarks::Format;
use linkpulse_shared::link_jobs;

use crate::commands::export::ExportFormat;

/// A job kind (`--kind`, `queue pause KIND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JobKind {
    /// Is the URL reachable?
    Check,
    /// Re-read the page's metadata (and GitHub's for repository links).
    Refresh,
    /// Post one event to one webhook.
    Deliver,
}

impl JobKind {
    /// The kind's stable name in the queue.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Check => link_jobs::CHECK,
            Self::Refresh => link_jobs::REFRESH,
            Self::Deliver => link_jobs::DELIVER,
        }
    }
}

/// A job state as operators see it (`--state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueueState {
    /// Ready, scheduled, or waiting out a retry backoff.
    Queued,
    /// Leased by a live worker.
    Running,
    /// Reached an answer (ok, dead, blocked, not modified).
    Done,
    /// Terminal: attempts exhausted, poison payload, or discarded.
    Failed,
}

impl From<QueueState> for JobState {
    fn from(state: QueueState) -> Self {
        match state {
            QueueState::Queued => Self::Queued,
            QueueState::Running => Self::Running,
            QueueState::Done => Self::Done,
            QueueState::Failed => Self::Failed,
        }
    }
}

/// A link's status (`links list --status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LinkStatus {
    /// Reachable, scheduled.
    Active,
    /// Failed the threshold of consecutive checks.
    Inaccessible,
    /// The GitHub repository is gone.
    #[value(name = "repo_unavailable")]
    RepoUnavailable,
    /// The GitHub repository is archived.
    Archived,
    /// Never scheduled until resumed.
    Paused,
}

impl LinkStatus {
    /// The status as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inaccessible => "inaccessible",
            Self::RepoUnavailable => "repo_unavailable",
            Self::Archived => "archived",
            Self::Paused => "paused",
        }
    }
}

/// A schedule run's status (`runs list --status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunStatus {
    /// Still going.
    Running,
    /// Finished.
    Ok,
    /// Finished with an error.
    Failed,
    /// Later than its misfire grace: skipped.
    Missed,
    /// Its producer went away mid-run.
    Abandoned,
}

impl RunStatus {
    /// The status as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Missed => "missed",
            Self::Abandoned => "abandoned",
        }
    }
}

/// A schedule (`cycle NAME`, `schedules show NAME`, `runs list --schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScheduleName {
    /// Enqueue due checks.
    Check,
    /// Enqueue due refreshes.
    Refresh,
    /// Delete what the retention settings say is old.
    Prune,
}

impl ScheduleName {
    /// The schedule's name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Check => "check",
            Self::Refresh => "refresh",
            Self::Prune => "prune",
        }
    }
}

/// `links export --format`: the names of [`ExportFormat`], listed in help, parsed by its
/// `FromStr` (the admin API's `?format=` parses the same way).
pub fn export_format() -> impl TypedValueParser<Value = ExportFormat> {
    PossibleValuesParser::new(ExportFormat::NAMES).try_map(|name| name.parse::<ExportFormat>())
}

/// `links import --format`: the names of the bookmarks reader's [`Format`].
pub fn import_format() -> impl TypedValueParser<Value = Format> {
    PossibleValuesParser::new(Format::NAMES).try_map(|name| name.parse::<Format>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names<T: ValueEnum>() -> Vec<String> {
        T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|v| v.get_name().to_owned())
            .collect()
    }

    #[test]
    fn value_names_are_the_strings_the_code_stores() {
        assert_eq!(names::<JobKind>(), link_jobs::KINDS.map(str::to_owned).to_vec());
        for kind in JobKind::value_variants() {
            assert_eq!(
                kind.to_possible_value().map(|v| v.get_name().to_owned()).as_deref(),
                Some(kind.as_str())
            );
        }
        let states: Vec<String> = JobState::ALL.iter().map(|s| s.as_str().to_owned()).collect();
        assert_eq!(names::<QueueState>(), states);
        for state in QueueState::value_variants() {
            let name = state.to_possible_value().map(|v| v.get_name().to_owned());
            assert_eq!(name.as_deref(), Some(JobState::from(*state).as_str()));
        }
        for status in LinkStatus::value_variants() {
            let name = status.to_possible_value().map(|v| v.get_name().to_owned());
            assert_eq!(name.as_deref(), Some(status.as_str()));
        }
        for status in RunStatus::value_variants() {
            let name = status.to_possible_value().map(|v| v.get_name().to_owned());
            assert_eq!(name.as_deref(), Some(status.as_str()));
        }
        assert_eq!(
            names::<ScheduleName>(),
            crate::schedules::store::NAMES.map(str::to_owned).to_vec()
        );
        for name in ScheduleName::value_variants() {
            let shown = name.to_possible_value().map(|v| v.get_name().to_owned());
            assert_eq!(shown.as_deref(), Some(name.as_str()));
        }
    }
}
