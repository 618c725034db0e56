//! Work that runs long says so while it runs: a poll cycle, snapshot step or sink flush still
//! going after [`FIRST`] logs a warning, and again every [`EVERY`], so a stalled source, target
//! or S3 call shows in the log while it lasts — not only when a timeout finally fires — and the
//! line after it says how long the step took. While it runs,
//! `edfi_cdc_step_started_timestamp_seconds` holds its start, for alerts and dashboards.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

/// The first warning: longer than a healthy cycle or flush of the sizes this runs at.
pub const FIRST: Duration = Duration::from_secs(20);
/// The warnings after it.
pub const EVERY: Duration = Duration::from_secs(30);

/// Run `work`, warning while it takes long. `connector` and `step` name it in the log.
pub async fn watched<F: Future>(connector: &str, step: &str, work: F) -> F::Output {
    watched_every(connector, step, FIRST, EVERY, work).await
}

async fn watched_every<F: Future>(
    connector: &str,
    step: &str,
    first: Duration,
    every: Duration,
    work: F,
) -> F::Output {
    let _running = crate::metrics::step_running(connector, step);
    let started = Instant::now();
    let mut warned = false;
    let mut next = started + first;
    tokio::pin!(work);
    loop {
        tokio::select! {
            // A warning that is due is logged before the step's end is taken.
            biased;
            _ = tokio::time::sleep_until(next) => {
                warned = true;
                warn!(connector, step, secs = started.elapsed().as_secs(),
                    "still running: a stalled source, target or network, or a very large step");
                next += every;
            }
            out = &mut work => {
                if warned {
                    info!(connector, step, secs = started.elapsed().as_secs(), "the slow step finished");
                }
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);

    impl Write for Log {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `watched_every` (first warning after 10 ms) logs around a step that takes `takes`,
    /// and the step's output.
    async fn run(takes: Duration) -> (String, u32) {
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let every = Duration::from_millis(10);
        let out = watched_every("c", "staging flush", every, every, async {
            tokio::time::sleep(takes).await;
            7
        })
        .await;
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        (text, out)
    }

    #[tokio::test]
    async fn a_long_step_warns_while_it_runs_and_says_when_it_finished() {
        let (log, out) = run(Duration::from_millis(300)).await;
        assert_eq!(out, 7);
        assert!(log.matches("still running").count() >= 1, "{log}");
        assert!(log.contains("step=\"staging flush\""), "{log}");
        assert!(log.contains("the slow step finished"), "{log}");
    }

    #[tokio::test]
    async fn a_step_done_at_once_logs_nothing() {
        let (log, out) = run(Duration::ZERO).await;
        assert_eq!(out, 7);
        assert_eq!(log, "");
    }
}
