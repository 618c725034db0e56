//! When a batch is old enough to flush (`max_age`).
//!
//! A batch's age counts from its first watermark or, when a flush came before it, from that
//! flush's start: the sink reads nothing while it flushes, so the changes that reached the
//! stream meanwhile have waited since then. Counting from the first watermark read after the
//! flush instead would add the flush's own duration to every change's wait, so a reporting row
//! would become visible up to `max_age` plus two flushes after its commit; this way it is
//! `max_age` plus one. After a quiet spell the first batch is so due at once: at most one flush
//! per `max_age` still holds.
//!
//! A batch that is due takes in what already waits in the stream before it flushes, for at
//! most a quarter of `max_age` more (`latest`; a timer flushes it then even if the stream never
//! pauses), so that flushes slower than `max_age` run back to back, each taking in what queued
//! during the last, rather than one flush per poll cycle.
//!
//! While a snapshot streams in, a batch counts from its first watermark: the snapshot's rows
//! come through the same stream and are loaded while the sink reads, so counting from the
//! flush's start would leave them a quarter of `max_age` between flushes slower than `max_age`
//! (1,000,000 students: 15 s of loading per 100-s flush, and 20 million assessment rows would
//! have taken hours). Changes then wait up to `max_age` plus two flushes, as before.

use std::time::{Duration, Instant};

pub struct AgeClock {
    max_age: Duration,
    /// When the sink last stopped reading to flush, until a watermark starts the next batch.
    stopped: Option<Instant>,
    /// When the batch being collected began.
    since: Option<Instant>,
    /// When its first watermark was read.
    first: Option<Instant>,
}

impl AgeClock {
    pub fn new(max_age: Duration) -> AgeClock {
        AgeClock {
            max_age,
            stopped: None,
            since: None,
            first: None,
        }
    }

    /// A watermark arrived at `now`: the first after a flush begins the batch. `snapshotting`:
    /// a snapshot's rows are still to come through the stream.
    pub fn watermark(&mut self, now: Instant, snapshotting: bool) {
        if self.since.is_none() {
            let stopped = self.stopped.take().filter(|_| !snapshotting);
            self.since = Some(stopped.map_or(now, |s| s.min(now)));
            self.first = Some(now);
        }
    }

    /// When the batch is `max_age` old (none without a batch).
    pub fn due(&self) -> Option<Instant> {
        self.since.map(|s| s + self.max_age)
    }

    /// When a due batch is flushed even if more waits in the stream: a quarter of `max_age`
    /// after it is due or, if it was due when the sink began reading it, after it began.
    pub fn latest(&self) -> Option<Instant> {
        Some(self.due()?.max(self.first?) + self.max_age / 4)
    }

    /// Whether to flush the batch at `now`, `waiting` telling whether more of the stream is
    /// already there to be read.
    pub fn flush_now(&self, now: Instant, waiting: bool) -> bool {
        match (self.due(), self.latest()) {
            (Some(due), Some(latest)) => now >= due && (!waiting || now >= latest),
            _ => false,
        }
    }

    /// A flush began at `now` (the sink reads nothing until it ends).
    pub fn flushing(&mut self, now: Instant) {
        self.stopped = Some(now);
        self.since = None;
        self.first = None;
    }

    /// The batch turned out empty: nothing was flushed.
    pub fn empty(&mut self) {
        self.since = None;
        self.first = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_AGE: Duration = Duration::from_secs(60);

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn the_first_batch_counts_from_its_first_watermark() {
        let t0 = Instant::now();
        let mut c = AgeClock::new(MAX_AGE);
        assert_eq!(c.due(), None);
        c.watermark(secs(t0, 5), false);
        c.watermark(secs(t0, 30), false);
        assert_eq!(c.due(), Some(secs(t0, 65)));
        assert!(!c.flush_now(secs(t0, 64), false));
        assert!(c.flush_now(secs(t0, 65), false));
    }

    #[test]
    fn what_queued_during_a_flush_counts_from_when_the_sink_stopped_reading() {
        let t0 = Instant::now();
        let mut c = AgeClock::new(MAX_AGE);
        c.watermark(t0, false);
        // A 20-s flush: the next batch is due 60 s after the flush began, not after it ended.
        c.flushing(secs(t0, 60));
        assert_eq!(c.due(), None);
        c.watermark(secs(t0, 80), false);
        assert_eq!(c.due(), Some(secs(t0, 120)));
        // The clock stopped once is used once: the batch after the next flush counts anew.
        c.flushing(secs(t0, 120));
        c.watermark(secs(t0, 125), false);
        assert_eq!(c.due(), Some(secs(t0, 180)));
    }

    #[test]
    fn an_empty_batch_uses_up_the_stopped_clock() {
        let t0 = Instant::now();
        let mut c = AgeClock::new(MAX_AGE);
        c.flushing(t0);
        // A quiet source: the first watermark after the flush brings nothing.
        c.watermark(secs(t0, 600), false);
        assert!(c.flush_now(secs(t0, 600), false));
        c.empty();
        // A change ten minutes later waits its max_age from its own watermark.
        c.watermark(secs(t0, 601), false);
        assert_eq!(c.due(), Some(secs(t0, 661)));
    }

    #[test]
    fn a_due_batch_reads_what_waits_for_a_quarter_of_max_age_at_most() {
        let t0 = Instant::now();
        let mut c = AgeClock::new(MAX_AGE);
        c.flushing(t0);
        // The flush took 90 s, longer than max_age: due at once, but the stream has more.
        c.watermark(secs(t0, 90), false);
        assert!(c.flush_now(secs(t0, 90), false));
        assert!(!c.flush_now(secs(t0, 90), true));
        assert!(!c.flush_now(secs(t0, 104), true));
        assert!(c.flush_now(secs(t0, 105), true));
        assert_eq!(c.latest(), Some(secs(t0, 105)));
        // A batch that became due while read waits a quarter of max_age past its due time.
        c.flushing(secs(t0, 105));
        c.watermark(secs(t0, 110), false);
        assert!(!c.flush_now(secs(t0, 164), false));
        assert!(!c.flush_now(secs(t0, 179), true));
        assert!(c.flush_now(secs(t0, 180), true));
        assert_eq!(c.latest(), Some(secs(t0, 180)));
        c.empty();
        assert_eq!(c.latest(), None);
    }

    #[test]
    fn while_a_snapshot_streams_in_a_batch_counts_from_its_first_watermark() {
        let t0 = Instant::now();
        let mut c = AgeClock::new(MAX_AGE);
        // A 100-s flush during a load: the next batch gets max_age of reading (and loading).
        c.flushing(t0);
        c.watermark(secs(t0, 100), true);
        assert_eq!(c.due(), Some(secs(t0, 160)));
        assert!(!c.flush_now(secs(t0, 159), false));
        // Once the load is done, the flush's start counts again.
        c.flushing(secs(t0, 160));
        c.watermark(secs(t0, 260), false);
        assert_eq!(c.due(), Some(secs(t0, 220)));
    }
}
