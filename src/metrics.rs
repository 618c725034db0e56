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

/// A poll cycle completed: its duration, size and the source's current version.
pub fn cycle(connector: &str, seconds: f64, events: u64, version: i64) {
    CYCLES.with_label_values(&[connector]).inc();
    CYCLE_SECONDS
        .with_label_values(&[connector])
        .observe(seconds);
    CYCLE_EVENTS
        .with_label_values(&[connector])
        .observe(events as f64);
    SOURCE_VERSION.with_label_values(&[connector]).set(version);
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

pub fn applied(connector: &str, sink: &str, version: i64) {
    APPLIED_VERSION
        .with_label_values(&[connector, sink])
        .set(version);
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

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&prometheus::gather(), &mut buf)
        .expect("text encoding cannot fail");
    String::from_utf8(buf).expect("prometheus text is UTF-8")
}
