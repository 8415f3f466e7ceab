//! What a run measures, read from the environment so other tools can drive the bench without
//! learning flags: `N`, `CONC` and `CHUNK`.

use anyhow::Context as _;
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
}
