//! Every metric the process exports, declared in one place. Names carry the `edfi_cdc_` prefix
//! and their unit; counters end in `_total`; labels are bounded (component, sink, table, op,
//! kind, reason — never a key value). Each event is recorded by one function here, called from
//! the place that logs it.

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge_vec, HistogramVec,
    IntCounterVec, IntGaugeVec,
};

static RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edfi_cdc_retries_total",
        "Retries of transient faults",
        &["component"]
    )
    .unwrap()
});
static ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edfi_cdc_errors_total",
        "Errors by component and kind",
        &["component", "kind"]
    )
    .unwrap()
});
static EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edfi_cdc_source_events_total",
        "Change events read from the source",
        &["connector", "table", "op"]
    )
    .unwrap()
});
static APPLIED_VERSION: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "edfi_cdc_sink_applied_version",
        "Source CT version a sink has applied",
        &["connector", "sink"]
    )
    .unwrap()
});
static APPLIED_EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edfi_cdc_sink_events_applied_total",
        "Events applied by a sink",
        &["connector", "sink", "table"]
    )
    .unwrap()
});
static FLUSHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edfi_cdc_sink_flushes_total",
        "Sink transactions, by reason",
        &["connector", "sink", "reason"]
    )
    .unwrap()
});
static FLUSH_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "edfi_cdc_sink_flush_duration_seconds",
        "Duration of sink transactions",
        &["connector", "sink"],
        prometheus::exponential_buckets(0.001, 2.0, 16).unwrap()
    )
    .unwrap()
});
static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "edfi_cdc_end_to_end_latency_seconds",
        "Time from a change's source commit to its commit in the target",
        &["connector", "sink"],
        prometheus::exponential_buckets(0.01, 1.5, 24).unwrap()
    )
    .unwrap()
});
static SNAPSHOT_ROWS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edfi_cdc_snapshot_rows_total",
        "Rows loaded by snapshots",
        &["connector", "sink", "table"]
    )
    .unwrap()
});

static STREAM_LOST: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edfi_cdc_stream_lost_records_total",
        "Records a stream partition lost after acknowledging them (each loss re-snapshots the lane's tables)",
        &["connector", "sink", "part"]
    )
    .unwrap()
});

static SCHEMA_CHANGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edfi_cdc_schema_changes_total",
        "Source tables found changed (columns added, dropped or retyped, or another primary key): by the poller while running, or by a sink at start when its target had to change; each re-snapshots the table",
        &["connector", "table", "noticed_by"]
    )
    .unwrap()
});

static CYCLES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edfi_cdc_poll_cycles_total",
        "Completed poll cycles",
        &["connector"]
    )
    .unwrap()
});
static CYCLE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "edfi_cdc_poll_cycle_duration_seconds",
        "Duration of poll cycles (one snapshot transaction at the source)",
        &["connector"],
        prometheus::exponential_buckets(0.001, 2.0, 16).unwrap()
    )
    .unwrap()
});
static CYCLE_EVENTS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "edfi_cdc_poll_cycle_events",
        "Change events read per poll cycle",
        &["connector"],
        prometheus::exponential_buckets(1.0, 4.0, 10).unwrap()
    )
    .unwrap()
});
static SOURCE_VERSION: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "edfi_cdc_source_current_version",
        "CHANGE_TRACKING_CURRENT_VERSION() read by the last poll cycle",
        &["connector"]
    )
    .unwrap()
});

static STEP_STARTED: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "edfi_cdc_step_started_timestamp_seconds",
        "When the running poll cycle, snapshot step, sink flush or spill of its kind started (Unix time); 0 when none runs",
        &["connector", "step"]
    )
    .unwrap()
});

/// A step is running: `edfi_cdc_step_started_timestamp_seconds` says since when until the
/// returned guard is dropped (the step ended, failed or was cancelled).
pub fn step_running(connector: &str, step: &str) -> StepRunning {
    let gauge = STEP_STARTED.with_label_values(&[connector, step]);
    gauge.set(chrono::Utc::now().timestamp());
    StepRunning(gauge)
}

/// Clears a running step's start time when dropped.
pub struct StepRunning(prometheus::IntGauge);

impl Drop for StepRunning {
    fn drop(&mut self) {
        self.0.set(0);
    }
}

/// The source's current version as another process's poller stored it (split mode).
pub fn source_version(connector: &str, version: i64) {
    SOURCE_VERSION.with_label_values(&[connector]).set(version);
}

/// A poll cycle completed: its duration, size and the source's current version.
pub fn cycle(connector: &str, seconds: f64, events: u64, version: i64) {
    CYCLES.with_label_values(&[connector]).inc();
    CYCLE_SECONDS
        .with_label_values(&[connector])
        .observe(seconds);
    CYCLE_EVENTS
        .with_label_values(&[connector])
        .observe(events as f64);
    source_version(connector, version);
}

static SLOT_RETAINED: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "edfi_cdc_source_slot_retained_bytes",
        "PostgreSQL source: WAL the connector's replication slot keeps on the source's disk",
        &["connector"]
    )
    .unwrap()
});
static SLOT_RESETS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edfi_cdc_source_slot_resets_total",
        "PostgreSQL source: replication slots found missing, invalidated or past the sinks' positions (the tables affected are re-snapshotted)",
        &["connector"]
    )
    .unwrap()
});

/// The PostgreSQL source's slot holds back `bytes` of WAL.
pub fn slot_retained(connector: &str, bytes: i64) {
    SLOT_RESETS.with_label_values(&[connector]).inc_by(0);
    SLOT_RETAINED.with_label_values(&[connector]).set(bytes);
}

/// The PostgreSQL source's slot could not give every change the sinks need.
pub fn slot_reset(connector: &str) {
    SLOT_RESETS.with_label_values(&[connector]).inc();
}

static VERIFY_DIFFERING: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "edfi_cdc_verify_differing_rows",
        "Rows missing, extra or different in the target at the last `edfi-cdc verify` of the table",
        &["connector", "sink", "table"]
    )
    .unwrap()
});
static VERIFY_TIME: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "edfi_cdc_verify_timestamp_seconds",
        "When `edfi-cdc verify` last compared the table (Unix time)",
        &["connector", "sink", "table"]
    )
    .unwrap()
});

/// A stored `verify` result, read back from the target by a sink.
pub fn verify_result(connector: &str, r: &crate::checkpoint::VerifyResult) {
    let table = r.table.to_string();
    let labels = [connector, r.sink.as_str(), table.as_str()];
    VERIFY_DIFFERING.with_label_values(&labels).set(r.differing);
    VERIFY_TIME
        .with_label_values(&labels)
        .set(r.verified_at.timestamp());
}

static MIN_VALID_VERSION: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "edfi_cdc_source_min_valid_version",
        "CHANGE_TRACKING_MIN_VALID_VERSION of a table, read by the last poll cycle",
        &["connector", "table"]
    )
    .unwrap()
});
static HEADROOM_VERSIONS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "edfi_cdc_retention_headroom_versions",
        "Version the poller reads a table from minus the table's min valid version (negative: the table must be re-snapshotted)",
        &["connector", "table"]
    )
    .unwrap()
});

/// A poll cycle read `table`'s min valid version; the poller reads the table from `baseline`
/// (None while it waits for a snapshot: nothing to keep then).
pub fn table_retention(connector: &str, table: &str, min_valid: i64, baseline: Option<i64>) {
    MIN_VALID_VERSION
        .with_label_values(&[connector, table])
        .set(min_valid);
    match baseline {
        Some(b) => HEADROOM_VERSIONS
            .with_label_values(&[connector, table])
            .set(b - min_valid),
        None => {
            // Absent when there is no series yet: nothing to remove.
            let _ = HEADROOM_VERSIONS.remove_label_values(&[connector, table]);
        }
    }
}

/// `edfi_cdc_retention_headroom_seconds{connector}`, computed when scraped: the source's Change
/// Tracking retention minus the age of the oldest change still needed — the older of the
/// oldest commit after the poller's lowest baseline (a snapshot in progress holds its start
/// version) and the oldest change a sink has been sent but not committed (the sink lag). Cleanup
/// removes changes older than the retention, so at zero the next cleanup can invalidate a
/// baseline and force a re-snapshot.
mod headroom {
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex};

    use chrono::{DateTime, Utc};
    use prometheus::core::{Collector, Desc};
    use prometheus::proto::MetricFamily;
    use prometheus::{GaugeVec, Opts};

    /// Retention in seconds, and the commit time of the oldest change after the poller's
    /// lowest baseline.
    type Needed = (f64, Option<DateTime<Utc>>);

    /// Per connector.
    pub static STATE: LazyLock<Mutex<HashMap<String, Needed>>> = LazyLock::new(Mutex::default);

    pub struct HeadroomCollector(GaugeVec);

    impl HeadroomCollector {
        pub fn new() -> HeadroomCollector {
            HeadroomCollector(
                GaugeVec::new(
                    Opts::new(
                        "edfi_cdc_retention_headroom_seconds",
                        "Change Tracking retention minus the age of the oldest source change still needed",
                    ),
                    &["connector"],
                )
                .unwrap(),
            )
        }
    }

    impl Collector for HeadroomCollector {
        fn desc(&self) -> Vec<&Desc> {
            self.0.desc()
        }

        fn collect(&self) -> Vec<MetricFamily> {
            let now = Utc::now();
            let lags = super::lag::STATE.lock().expect("lag state").lags(now);
            let state = STATE.lock().expect("headroom state").clone();
            self.0.reset();
            for (connector, (retention, oldest)) in state {
                let poller_age = oldest.map_or(0.0, |t| {
                    ((now - t).num_milliseconds() as f64 / 1000.0).max(0.0)
                });
                let sink_age = lags
                    .iter()
                    .filter(|l| l.0 == connector)
                    .map(|l| l.3)
                    .fold(0.0, f64::max);
                self.0
                    .with_label_values(&[&connector])
                    .set(retention - poller_age.max(sink_age));
            }
            self.0.collect()
        }
    }
}

static HEADROOM_COLLECTOR: LazyLock<()> = LazyLock::new(|| {
    prometheus::register(Box::new(headroom::HeadroomCollector::new())).unwrap();
});

/// A poll cycle read the source's retention; `oldest_needed` is the commit time of the oldest
/// change after the poller's lowest baseline (None when it has read everything committed).
pub fn retention(
    connector: &str,
    retention_seconds: i64,
    oldest_needed: Option<chrono::DateTime<chrono::Utc>>,
) {
    LazyLock::force(&HEADROOM_COLLECTOR);
    headroom::STATE.lock().expect("headroom state").insert(
        connector.to_string(),
        (retention_seconds as f64, oldest_needed),
    );
}

/// Export the fault counters of every component this process runs at 0, so that a healthy
/// scrape already has the series the alert rules compute rates over.
pub fn components(components: &[&str]) {
    for c in components {
        RETRIES.with_label_values(&[c]).inc_by(0);
        errors_at_zero(c, &["transient", "fatal"]);
    }
}

/// Export `component`'s error counters of `kinds` at 0.
pub fn errors_at_zero(component: &str, kinds: &[&str]) {
    for kind in kinds {
        ERRORS.with_label_values(&[component, kind]).inc_by(0);
    }
}

pub fn retry(component: &str) {
    RETRIES.with_label_values(&[component]).inc();
}

pub fn error(component: &str, kind: &str) {
    ERRORS.with_label_values(&[component, kind]).inc();
}

pub fn source_events(connector: &str, table: &str, op: &str, n: u64) {
    EVENTS.with_label_values(&[connector, table, op]).inc_by(n);
}

/// A sink committed a transaction (`reason`: watermark, snapshot_chunk, snapshot_start, …).
pub fn flush(connector: &str, sink: &str, reason: &str, seconds: f64) {
    FLUSHES.with_label_values(&[connector, sink, reason]).inc();
    FLUSH_SECONDS
        .with_label_values(&[connector, sink])
        .observe(seconds);
}

/// A sink committed everything up to a watermark: its version, and the source commit time
/// the version names (for the heartbeat lag).
pub fn applied(
    connector: &str,
    sink: &str,
    version: i64,
    commit_time: Option<chrono::DateTime<chrono::Utc>>,
) {
    APPLIED_VERSION
        .with_label_values(&[connector, sink])
        .set(version);
    if let Some(t) = commit_time {
        LazyLock::force(&LAG_COLLECTOR);
        lag::STATE
            .lock()
            .expect("lag state")
            .applied_commit(connector, sink, t);
    }
}

/// A sink stopped in this process (a worker's lane handed over or ended): its series go, so a
/// lane another worker now applies does not age here and page for lag.
pub fn sink_gone(connector: &str, sink: &str) {
    let _ = APPLIED_VERSION.remove_label_values(&[connector, sink]);
    LazyLock::force(&LAG_COLLECTOR);
    lag::STATE
        .lock()
        .expect("lag state")
        .forget(connector, sink);
}

/// The connector's poller writes a heartbeat: its sinks export `edfi_cdc_heartbeat_lag_seconds`.
pub fn heartbeat_on(connector: &str) {
    LazyLock::force(&LAG_COLLECTOR);
    lag::STATE
        .lock()
        .expect("lag state")
        .heartbeat
        .insert(connector.to_string());
}

pub fn applied_events(connector: &str, sink: &str, table: &str, n: u64) {
    APPLIED_EVENTS
        .with_label_values(&[connector, sink, table])
        .inc_by(n);
}

pub fn latency(connector: &str, sink: &str, seconds: f64) {
    LATENCY
        .with_label_values(&[connector, sink])
        .observe(seconds);
}

pub fn snapshot_rows(connector: &str, sink: &str, table: &str, n: u64) {
    SNAPSHOT_ROWS
        .with_label_values(&[connector, sink, table])
        .inc_by(n);
}

pub fn schema_change(connector: &str, table: &str, noticed_by: &str) {
    SCHEMA_CHANGES
        .with_label_values(&[connector, table, noticed_by])
        .inc();
}

pub fn stream_lost(connector: &str, sink: &str, part: &str, n: u64) {
    STREAM_LOST
        .with_label_values(&[connector, sink, part])
        .inc_by(n);
}

static FLUSH_ROWS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "edfi_cdc_sink_flush_rows",
        "Rows per sink flush (after collapsing to the last change per key)",
        &["connector", "sink"],
        prometheus::exponential_buckets(1.0, 4.0, 12).unwrap()
    )
    .unwrap()
});
static FLUSH_BYTES: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "edfi_cdc_sink_flush_bytes",
        "Uncompressed CSV bytes per sink flush",
        &["connector", "sink"],
        prometheus::exponential_buckets(1024.0, 4.0, 12).unwrap()
    )
    .unwrap()
});

static MODEL_REFRESH_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "edfi_cdc_model_refresh_duration_seconds",
        "Duration of reporting model refreshes in a flush transaction, by mode (full or incremental)",
        &["connector", "model", "mode"],
        prometheus::exponential_buckets(0.001, 2.0, 16).unwrap()
    )
    .unwrap()
});

static MODEL_VALUES_TRUNCATED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edfi_cdc_model_values_truncated_total",
        "Values of reporting models cut to their column (on_overflow = \"truncate\"); each is logged with model, column and key",
        &["connector", "model"]
    )
    .unwrap()
});

/// A reporting model's values cut to their columns in a refresh (`n` may be 0: the model's
/// series then exists, at zero, for alert rules to watch).
pub fn model_values_truncated(connector: &str, model: &str, n: u64) {
    MODEL_VALUES_TRUNCATED
        .with_label_values(&[connector, model])
        .inc_by(n);
}

/// A reporting model was refreshed (only the changed students' rows when `incremental`).
pub fn model_refresh(connector: &str, model: &str, incremental: bool, seconds: f64) {
    MODEL_REFRESH_SECONDS
        .with_label_values(&[
            connector,
            model,
            if incremental { "incremental" } else { "full" },
        ])
        .observe(seconds);
}

/// Rows and bytes a flush loaded.
pub fn flush_size(connector: &str, sink: &str, rows: u64, bytes: u64) {
    FLUSH_ROWS
        .with_label_values(&[connector, sink])
        .observe(rows as f64);
    FLUSH_BYTES
        .with_label_values(&[connector, sink])
        .observe(bytes as f64);
}

/// Replication lag per sink and table, computed when scraped:
/// `edfi_cdc_sink_lag_seconds` is the age of the source commit of the oldest change the poller
/// has sent that the sink has not committed (0 when it holds everything sent), and
/// `edfi_cdc_sink_lag_versions` the source's current version minus the version the sink has
/// applied for the table. The poller records, per table and cycle, the first change it sent
/// ([`sent`]); sinks record what they committed ([`table_applied`]). Cycles are the grain: the
/// seconds are exact to within one poll interval. On a quiet source nothing is sent, so these
/// read 0 whether the source is quiet or replication is stuck; with the poller's heartbeat on,
/// `edfi_cdc_heartbeat_lag_seconds` is the age of the newest source commit a sink has applied,
/// which grows when anything between the source and the target stalls.
mod lag {
    use std::collections::{HashMap, HashSet, VecDeque};
    use std::sync::{LazyLock, Mutex};

    use chrono::{DateTime, Utc};
    use prometheus::core::{Collector, Desc};
    use prometheus::proto::MetricFamily;
    use prometheus::{GaugeVec, IntGaugeVec, Opts};

    /// Unapplied cycles kept per table; past it the newest are not recorded (the oldest, which
    /// sets the lag, stays).
    const MAX_PENDING: usize = 100_000;

    /// (version, commit time) of the first change of each unapplied cycle, oldest first.
    type Cycles = VecDeque<(i64, DateTime<Utc>)>;

    #[derive(Default)]
    pub struct State {
        /// (connector, table) → its unapplied cycles.
        sent: HashMap<(String, String), Cycles>,
        /// (connector, sink, table) → applied version.
        applied: HashMap<(String, String, String), i64>,
        /// Connectors whose poller writes a heartbeat.
        pub heartbeat: HashSet<String>,
        /// (connector, sink) → the source commit time of the newest watermark applied.
        applied_commit: HashMap<(String, String), DateTime<Utc>>,
    }

    pub static STATE: LazyLock<Mutex<State>> = LazyLock::new(Mutex::default);

    impl State {
        pub fn sent(&mut self, connector: &str, table: &str, version: i64, at: DateTime<Utc>) {
            let q = self
                .sent
                .entry((connector.to_string(), table.to_string()))
                .or_default();
            if q.len() < MAX_PENDING && q.back().is_none_or(|(v, _)| *v < version) {
                q.push_back((version, at));
            }
        }

        pub fn applied(&mut self, connector: &str, sink: &str, table: &str, version: i64) {
            let v = self
                .applied
                .entry((connector.to_string(), sink.to_string(), table.to_string()))
                .or_insert(version);
            *v = (*v).max(version);
            let least = self
                .applied
                .iter()
                .filter(|((c, _, t), _)| c == connector && t == table)
                .map(|(_, v)| *v)
                .min()
                .unwrap_or(version);
            if let Some(q) = self
                .sent
                .get_mut(&(connector.to_string(), table.to_string()))
            {
                while q.front().is_some_and(|(v, _)| *v <= least) {
                    q.pop_front();
                }
            }
        }

        pub fn forget(&mut self, connector: &str, sink: &str) {
            self.applied
                .retain(|(c, s, _), _| !(c == connector && s == sink));
            self.applied_commit
                .remove(&(connector.to_string(), sink.to_string()));
        }

        pub fn applied_commit(&mut self, connector: &str, sink: &str, at: DateTime<Utc>) {
            let t = self
                .applied_commit
                .entry((connector.to_string(), sink.to_string()))
                .or_insert(at);
            *t = (*t).max(at);
        }

        /// (connector, sink, seconds since the newest applied commit) for every sink of a
        /// connector with the heartbeat on.
        pub fn heartbeat_lags(&self, now: DateTime<Utc>) -> Vec<(String, String, f64)> {
            self.applied_commit
                .iter()
                .filter(|((c, _), _)| self.heartbeat.contains(c))
                .map(|((c, s), at)| {
                    let secs = ((now - *at).num_milliseconds() as f64 / 1000.0).max(0.0);
                    (c.clone(), s.clone(), secs)
                })
                .collect()
        }

        /// (connector, sink, table, lag seconds, applied version) for every known sink table.
        pub fn lags(&self, now: DateTime<Utc>) -> Vec<(String, String, String, f64, i64)> {
            self.applied
                .iter()
                .map(|((c, s, t), applied)| {
                    let oldest = self
                        .sent
                        .get(&(c.clone(), t.clone()))
                        .and_then(|q| q.iter().find(|(v, _)| v > applied));
                    let secs = oldest.map_or(0.0, |(_, at)| {
                        ((now - *at).num_milliseconds() as f64 / 1000.0).max(0.0)
                    });
                    (c.clone(), s.clone(), t.clone(), secs, *applied)
                })
                .collect()
        }
    }

    /// Fills the three gauges from [`STATE`] at each scrape.
    pub struct LagCollector {
        seconds: GaugeVec,
        versions: IntGaugeVec,
        heartbeat: GaugeVec,
    }

    impl LagCollector {
        pub fn new() -> LagCollector {
            let labels = &["connector", "sink", "table"];
            LagCollector {
                seconds: GaugeVec::new(
                    Opts::new(
                        "edfi_cdc_sink_lag_seconds",
                        "Age of the source commit of the oldest change sent to a sink and not yet committed by it",
                    ),
                    labels,
                )
                .unwrap(),
                versions: IntGaugeVec::new(
                    Opts::new(
                        "edfi_cdc_sink_lag_versions",
                        "Source current version minus the version a sink has applied for a table",
                    ),
                    labels,
                )
                .unwrap(),
                heartbeat: GaugeVec::new(
                    Opts::new(
                        "edfi_cdc_heartbeat_lag_seconds",
                        "With the source heartbeat on: age of the newest source commit a sink has applied (end to end, also on a quiet source)",
                    ),
                    &["connector", "sink"],
                )
                .unwrap(),
            }
        }
    }

    impl Collector for LagCollector {
        fn desc(&self) -> Vec<&Desc> {
            self.seconds
                .desc()
                .into_iter()
                .chain(self.versions.desc())
                .chain(self.heartbeat.desc())
                .collect()
        }

        fn collect(&self) -> Vec<MetricFamily> {
            let now = Utc::now();
            let (lags, heartbeat) = {
                let state = STATE.lock().expect("lag state");
                (state.lags(now), state.heartbeat_lags(now))
            };
            self.seconds.reset();
            self.versions.reset();
            self.heartbeat.reset();
            for (c, s, secs) in heartbeat {
                self.heartbeat.with_label_values(&[&c, &s]).set(secs);
            }
            for (c, s, t, secs, applied) in lags {
                self.seconds.with_label_values(&[&c, &s, &t]).set(secs);
                let current = super::SOURCE_VERSION.with_label_values(&[&c]).get();
                self.versions
                    .with_label_values(&[&c, &s, &t])
                    .set((current - applied).max(0));
            }
            let mut out = self.seconds.collect();
            out.extend(self.versions.collect());
            out.extend(self.heartbeat.collect());
            out
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use chrono::TimeZone;

        #[test]
        fn lag_is_the_oldest_unapplied_cycle_per_sink() {
            let t = |s| Utc.timestamp_opt(s, 0).unwrap();
            let mut st = State::default();
            st.applied("c", "staging", "edfi.Student", 0);
            st.applied("c", "redshift", "edfi.Student", 0);
            st.sent("c", "edfi.Student", 5, t(100));
            st.sent("c", "edfi.Student", 9, t(110));
            st.applied("c", "staging", "edfi.Student", 9);
            st.applied("c", "redshift", "edfi.Student", 5);
            let mut lags = st.lags(t(130));
            lags.sort_by(|a, b| a.1.cmp(&b.1));
            assert_eq!(lags[0].1, "redshift");
            assert_eq!(
                lags[0].3, 20.0,
                "redshift still lacks the change committed at 110"
            );
            assert_eq!(lags[1].3, 0.0, "staging holds everything sent");
            st.applied("c", "redshift", "edfi.Student", 9);
            assert!(
                st.sent.values().all(|q| q.is_empty()),
                "applied cycles are dropped"
            );
        }
    }
}

static LAG_COLLECTOR: LazyLock<()> = LazyLock::new(|| {
    prometheus::register(Box::new(lag::LagCollector::new())).unwrap();
});

/// The poller sent changes of `table` starting at `version`, committed at `commit_time`.
pub fn sent(
    connector: &str,
    table: &str,
    version: i64,
    commit_time: chrono::DateTime<chrono::Utc>,
) {
    LazyLock::force(&LAG_COLLECTOR);
    lag::STATE
        .lock()
        .expect("lag state")
        .sent(connector, table, version, commit_time);
}

/// A sink committed every change of `table` up to `version`.
pub fn table_applied(connector: &str, sink: &str, table: &str, version: i64) {
    LazyLock::force(&LAG_COLLECTOR);
    lag::STATE
        .lock()
        .expect("lag state")
        .applied(connector, sink, table, version);
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&prometheus::gather(), &mut buf)
        .expect("text encoding cannot fail");
    String::from_utf8(buf).expect("prometheus text is UTF-8")
}
