//! The poll loop both pollers run: take re-snapshot requests, run a cycle, read snapshot chunks
//! for at most `poll.snapshot_slice`, wait for the next interval unless busy; transient faults
//! retried with one backoff.

use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::ConnectorConfig;
use crate::event::TableId;
use crate::http::Health;
use crate::retry::Backoff;
use crate::source::position::PollerPosition;
use crate::source::tables::Tables;
use crate::source::SourceError;
use crate::stream::Producer;

/// What a poller gives the loop. On an error of `cycle` or `snapshot_step` the poller drops its
/// connection, and the step is simply run again: sinks apply nothing without a watermark, and a
/// later copy of an event supersedes an earlier one.
pub(crate) trait Source {
    fn config(&self) -> &ConnectorConfig;
    fn health(&self) -> &Health;
    fn out(&self) -> &Producer;
    fn tables(&mut self) -> &mut Tables;
    /// Operators' re-snapshot requests: from the sinks in this process, and, with a durable
    /// stream, from the poller's position.
    fn requests(
        &mut self,
    ) -> (
        &mut mpsc::UnboundedReceiver<TableId>,
        &mut Option<PollerPosition>,
    );
    /// One poll cycle; the number of change events sent.
    async fn cycle(&mut self) -> Result<u64, SourceError>;
    /// One snapshot chunk; whether snapshot work remains.
    async fn snapshot_step(&mut self) -> Result<bool, SourceError>;
}

#[derive(Clone, Copy)]
enum Step {
    Cycle,
    Snapshot,
}

/// Poll until `stop` is cancelled or a fault outlasts the retry budget; then let the records
/// still on their way to the stream arrive (see [`Producer::settle`]).
pub(crate) async fn run<S: Source>(s: &mut S, stop: CancellationToken) -> Result<(), SourceError> {
    let result = poll(s, stop).await;
    s.out().settle().await;
    result
}

async fn poll<S: Source>(s: &mut S, stop: CancellationToken) -> Result<(), SourceError> {
    let mut backoff = Backoff::new(&s.config().retry);
    while !stop.is_cancelled() {
        let started = Instant::now();
        let mut asked = Vec::new();
        let (rx, position) = s.requests();
        while let Ok(t) = rx.try_recv() {
            asked.push(t);
        }
        if let Some(position) = position {
            match position.requests().await {
                Ok(tables) => asked.extend(tables),
                Err(e) => {
                    warn!(error = %e, "cannot read re-snapshot requests; trying again next cycle")
                }
            }
        }
        for t in asked {
            s.tables().request_snapshot(&t);
        }
        let Some(events) = step(s, Step::Cycle, &mut backoff, &stop).await? else {
            break;
        };
        let poll = s.config().poll.clone();
        let slice_end = Instant::now() + poll.snapshot_slice;
        let mut snapshot_pending = !s.tables().queue.is_empty();
        while snapshot_pending && Instant::now() < slice_end && !stop.is_cancelled() {
            let Some(pending) = step(s, Step::Snapshot, &mut backoff, &stop).await? else {
                break;
            };
            snapshot_pending = pending > 0;
        }
        if events >= poll.busy_threshold || snapshot_pending {
            continue;
        }
        let next = started + poll.interval;
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = stop.cancelled() => {}
        }
    }
    Ok(())
}

/// Run one step, retrying transient faults. `None` when stopped while waiting to retry.
async fn step<S: Source>(
    s: &mut S,
    step: Step,
    backoff: &mut Backoff,
    stop: &CancellationToken,
) -> Result<Option<u64>, SourceError> {
    let name = s.config().name.clone();
    loop {
        let result = match step {
            Step::Cycle => crate::slow::watched(&name, "poll cycle", s.cycle()).await,
            Step::Snapshot => crate::slow::watched(&name, "snapshot step", s.snapshot_step())
                .await
                .map(u64::from),
        };
        match result {
            Ok(n) => {
                backoff.reset();
                if matches!(step, Step::Cycle) {
                    s.health().cycle_ok(&name);
                }
                return Ok(Some(n));
            }
            Err(e) if e.is_retriable() => {
                s.health().cycle_failed(&name);
                crate::metrics::error("source", "transient");
                if !backoff.pause("source", &e, stop).await {
                    return if stop.is_cancelled() {
                        Ok(None)
                    } else {
                        Err(e)
                    };
                }
            }
            Err(e) => return Err(e),
        }
    }
}
