//! Process shutdown: the signal, and the drain of a running worker.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use linkpulse_queue::Engine;

/// Cancels `token` on the first SIGTERM or SIGINT. Spawn it once per process.
///
/// # Errors
///
/// If the signal handlers cannot be installed.
pub fn cancel_on_signal(token: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received; draining"),
            _ = int.recv() => tracing::info!("SIGINT received; draining"),
        }
        token.cancel();
    });
    Ok(())
}

/// How a worker run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every in-flight job finished within the grace period.
    Clean,
    /// The grace period ran out; the remaining jobs were released to other workers.
    GraceExpired,
}

/// Runs `worker` (an apalis worker's `run()` future over `engine`) until `stop` is cancelled,
/// then drains it: no more claims, unstarted jobs released at once, in-flight jobs given `grace`
/// to finish (heartbeats go on meanwhile, so no other worker runs them a second time), then
/// completions flushed and whatever is still running released.
///
/// # Errors
///
/// The worker's own error, if it ended by itself.
pub async fn run_until_drained<F, E>(
    engine: &Engine,
    worker: F,
    stop: CancellationToken,
    grace: Duration,
) -> Result<Drained, E>
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: Send + 'static,
{
    let mut handle = tokio::spawn(worker);
    tokio::select! {
        joined = &mut handle => {
            engine.shutdown().await;
            return match joined {
                Ok(result) => result.map(|()| Drained::Clean),
                Err(join) => {
                    tracing::error!(error = %join, "worker task ended abnormally");
                    Ok(Drained::Clean)
                }
            };
        }
        () = stop.cancelled() => {}
    }
    // The backend reports end-of-stream once fetching stops; apalis then waits for in-flight
    // jobs and closes the backend, which flushes completions.
    engine.begin_drain().await;
    let outcome = match tokio::time::timeout(grace, &mut handle).await {
        Ok(_) => Drained::Clean,
        Err(_) => {
            tracing::warn!(grace = ?grace, "shutdown grace expired; releasing in-flight jobs");
            handle.abort();
            Drained::GraceExpired
        }
    };
    engine.shutdown().await;
    Ok(outcome)
}
