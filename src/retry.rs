//! Retries of transient faults: exponential backoff with jitter (`backon`), bounded by
//! `retry.max_attempts`; past that the error is returned and the process exits non-zero so that
//! its supervisor (ECS) restarts it.

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::RetryConfig;

pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    attempt: usize,
    max_attempts: usize,
}

impl Backoff {
    pub fn new(cfg: &RetryConfig) -> Backoff {
        let builder = ExponentialBuilder::default()
            .with_min_delay(cfg.initial_delay)
            .with_max_delay(cfg.max_delay)
            .with_max_times(cfg.max_attempts)
            .with_jitter();
        Backoff {
            delays: builder.build(),
            builder,
            attempt: 0,
            max_attempts: cfg.max_attempts,
        }
    }

    /// A success: the next fault starts a fresh budget.
    pub fn reset(&mut self) {
        if self.attempt > 0 {
            self.delays = self.builder.build();
            self.attempt = 0;
        }
    }

    /// After a transient fault: log it, then wait the next delay. Returns `false` when the
    /// budget is spent (the caller gives up with the error) or when `stop` was cancelled.
    pub async fn pause(
        &mut self,
        component: &str,
        error: &(dyn std::fmt::Display + Sync),
        stop: &CancellationToken,
    ) -> bool {
        let Some(delay) = self.delays.next() else {
            return false;
        };
        self.attempt += 1;
        warn!(component, attempt = self.attempt, max_attempts = self.max_attempts,
              retry_in_ms = delay.as_millis() as u64, error = %error, "transient fault; retrying");
        crate::metrics::retry(component);
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = stop.cancelled() => false,
        }
    }
}
