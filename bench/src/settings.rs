//! What a run measures, read from the environment so other tools can drive the bench without
//! learning flags: `N`, `CONC` and `CHUNK` for `queue` and `fill`; `SIZES`, `DUE_PERCENT` and
//! `LIMIT` for `cycle`; `CONC`, `WORKERS`, `HOST_CONCURRENCY` and `UNGROUPED` for `links`.

use anyhow::{Context as _, ensure};
use linkpulse_shared::config::Env;

/// Jobs per run when `N` is unset: enough for a steady state, short enough for CI.
pub const DEFAULT_N: usize = 50_000;
/// Handlers at once when `CONC` is unset: the production worker's default.
pub const DEFAULT_CONC: usize = linkpulse_shared::config::DEFAULT_WORKER_CONCURRENCY;
/// Jobs per insert statement when `CHUNK` is unset.
pub const DEFAULT_CHUNK: usize = 5_000;

/// The sizes of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Jobs enqueued and processed.
    pub n: usize,
    /// Worker concurrency (engine prefetch and apalis limit).
    pub conc: usize,
    /// Jobs per `insert_many` statement.
    pub chunk: usize,
}

impl Settings {
    /// Reads `N`, `CONC` and `CHUNK` from the process environment.
    ///
    /// # Errors
    ///
    /// A variable that is set but not a positive integer; the message names it.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    /// Reads the settings from `lookup` (the environment in the binary, a map in tests).
    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let env = Env::new(lookup);
        Ok(Self {
            n: env.positive("N", DEFAULT_N).context("reading N")?,
            conc: env.positive("CONC", DEFAULT_CONC).context("reading CONC")?,
            chunk: env.positive("CHUNK", DEFAULT_CHUNK).context("reading CHUNK")?,
        })
    }
}

/// Link counts of a `cycle` run when `SIZES` is unset: the two sizes the benchmark document
/// compares, so the growth from one to the other shows whether the cycle scales with the due
/// links or with the whole table.
pub const DEFAULT_SIZES: [i64; 2] = [100_000, 1_000_000];
/// Share of the links whose check is due when `DUE_PERCENT` is unset.
pub const DEFAULT_DUE_PERCENT: u32 = 10;

/// The sizes of one `cycle` run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleSettings {
    /// Link counts, each measured in its own scratch database, in this order.
    pub sizes: Vec<i64>,
    /// Percentage (1..=100) of the links whose check is due.
    pub due_percent: u32,
    /// The producer's cycle limit; `None` means the due count, so one cycle enqueues every due
    /// link and compares with a bare insert of the same rows.
    pub limit: Option<i64>,
}

impl CycleSettings {
    /// Reads `SIZES`, `DUE_PERCENT` and `LIMIT` from the process environment.
    ///
    /// # Errors
    ///
    /// A variable that is set but invalid; the message names it.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    /// Reads the settings from `lookup` (the environment in the binary, a map in tests).
    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let env = Env::new(lookup);
        let sizes = match env.optional("SIZES") {
            None => DEFAULT_SIZES.to_vec(),
            Some(list) => parse_sizes(&list).with_context(|| format!("reading SIZES={list:?}"))?,
        };
        let due_percent = env
            .positive("DUE_PERCENT", DEFAULT_DUE_PERCENT)
            .context("reading DUE_PERCENT")?;
        ensure!(
            due_percent <= 100,
            "reading DUE_PERCENT: {due_percent} is not a percentage (1..=100)"
        );
        let limit = match env.optional("LIMIT") {
            None => None,
            Some(_) => Some(env.positive("LIMIT", 1_i64).context("reading LIMIT")?),
        };
        Ok(Self {
            sizes,
            due_percent,
            limit,
        })
    }
}

/// Parses a comma-separated list of positive link counts (`100000,1000000`).
fn parse_sizes(list: &str) -> anyhow::Result<Vec<i64>> {
    let sizes = list
        .split(',')
        .map(|item| {
            let item = item.trim();
            match item.parse::<i64>() {
                Ok(size) if size > 0 => Ok(size),
                _ => anyhow::bail!("{item:?} is not a positive integer"),
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    ensure!(!sizes.is_empty(), "no size given");
    Ok(sizes)
}

/// In-flight checks of a `links` run when `CONC` is unset: lychee's default `--max-concurrency`,
/// the first point of the comparison.
pub const DEFAULT_LINKS_CONC: usize = 128;
/// Worker processes of a `links` run when `WORKERS` is unset: one process, like lychee.
pub const DEFAULT_LINKS_WORKERS: usize = 1;

/// The sizes of one `links` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinksSettings {
    /// Checks in flight across all worker processes: the number compared with lychee's
    /// `--max-concurrency`, and the per-host cap (so the queue's group limit never binds).
    pub conc: usize,
    /// Worker processes; `conc` is split between them.
    pub workers: usize,
    /// The queue's per-host cap (`HOST_CONCURRENCY`, default `conc`: the cap never binds, as with
    /// lychee's per-host limits off). Higher values show what the group bookkeeping costs when
    /// no group ever fills.
    pub host_concurrency: usize,
    /// `UNGROUPED=true`: a diagnostic, not production — the queued jobs lose their group (host)
    /// before the workers start, so the claim skips the per-host slot bookkeeping entirely. The
    /// difference to a normal run is what that bookkeeping costs; the line says `links_ungrouped`.
    pub ungrouped: bool,
    /// `RETAINED_DONE`: finished jobs written into the table before the run (default 0), to show
    /// that a check's database cost does not grow with the history retained.
    pub retained_done: i64,
}

impl LinksSettings {
    /// Reads `CONC` and `WORKERS` from the process environment.
    ///
    /// # Errors
    ///
    /// A variable that is set but not a positive integer, or more workers than checks in flight.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    /// Reads the settings from `lookup` (the environment in the binary, a map in tests).
    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let env = Env::new(lookup);
        let conc = env.positive("CONC", DEFAULT_LINKS_CONC).context("reading CONC")?;
        let workers = env
            .positive("WORKERS", DEFAULT_LINKS_WORKERS)
            .context("reading WORKERS")?;
        ensure!(
            workers <= conc,
            "reading WORKERS: {workers} workers cannot share {conc} checks in flight (CONC)"
        );
        let host_concurrency = env
            .positive("HOST_CONCURRENCY", conc)
            .context("reading HOST_CONCURRENCY")?;
        let ungrouped = env.parse("UNGROUPED", false).context("reading UNGROUPED")?;
        let retained_done = env.parse("RETAINED_DONE", 0_i64).context("reading RETAINED_DONE")?;
        Ok(Self {
            conc,
            workers,
            host_concurrency,
            ungrouped,
            retained_done,
        })
    }

    /// The `--concurrency` of each worker process: `conc` split as evenly as possible, so the
    /// pool as a whole runs exactly `conc` checks at once.
    pub fn per_worker(&self) -> Vec<usize> {
        (0..self.workers)
            .map(|i| self.conc / self.workers + usize::from(i < self.conc % self.workers))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_unset() {
        let settings = Settings::from_lookup(|_| None).expect("defaults are valid");
        assert_eq!(
            settings,
            Settings {
                n: 50_000,
                conc: 16,
                chunk: 5_000
            }
        );
    }

    #[test]
    fn zero_is_rejected_with_the_variable_name() {
        let err = Settings::from_lookup(|var| (var == "CHUNK").then(|| "0".to_owned())).expect_err("invalid");
        assert!(format!("{err:#}").contains("CHUNK"), "{err:#}");
    }

    #[test]
    fn cycle_defaults_apply_when_unset() {
        let settings = CycleSettings::from_lookup(|_| None).expect("defaults are valid");
        assert_eq!(
            settings,
            CycleSettings {
                sizes: vec![100_000, 1_000_000],
                due_percent: 10,
                limit: None
            }
        );
    }

    #[test]
    fn cycle_settings_are_read() {
        let settings = CycleSettings::from_lookup(|var| match var {
            "SIZES" => Some(" 1000, 20000 ".to_owned()),
            "DUE_PERCENT" => Some("100".to_owned()),
            "LIMIT" => Some("500".to_owned()),
            _ => None,
        })
        .expect("valid");
        assert_eq!(
            settings,
            CycleSettings {
                sizes: vec![1_000, 20_000],
                due_percent: 100,
                limit: Some(500)
            }
        );
    }

    #[test]
    fn invalid_cycle_settings_name_the_variable() {
        for (var, value) in [
            ("SIZES", "1000,,2000"),
            ("SIZES", "0"),
            ("SIZES", "1e6"),
            ("DUE_PERCENT", "0"),
            ("DUE_PERCENT", "101"),
            ("LIMIT", "-1"),
        ] {
            let err = CycleSettings::from_lookup(|v| (v == var).then(|| value.to_owned())).expect_err(value);
            assert!(format!("{err:#}").contains(var), "{var}={value}: {err:#}");
        }
    }

    #[test]
    fn links_defaults_and_split() {
        let settings = LinksSettings::from_lookup(|_| None).expect("defaults are valid");
        assert_eq!(
            settings,
            LinksSettings {
                conc: 128,
                workers: 1,
                host_concurrency: 128,
                ungrouped: false,
                retained_done: 0,
            }
        );
        assert_eq!(settings.per_worker(), vec![128]);
        let settings = LinksSettings::from_lookup(|var| match var {
            "CONC" => Some("512".to_owned()),
            "WORKERS" => Some("3".to_owned()),
            _ => None,
        })
        .expect("valid");
        assert_eq!(settings.per_worker(), vec![171, 171, 170]);
        assert_eq!(settings.per_worker().iter().sum::<usize>(), 512);
    }

    #[test]
    fn more_workers_than_checks_is_rejected() {
        let err = LinksSettings::from_lookup(|var| match var {
            "CONC" => Some("2".to_owned()),
            "WORKERS" => Some("3".to_owned()),
            _ => None,
        })
        .expect_err("invalid");
        assert!(format!("{err:#}").contains("WORKERS"), "{err:#}");
    }
}
