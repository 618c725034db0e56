//! Benchmark, not a test (`scripts/bench metrics` runs it): the cost of the metric calls the
//! replicator makes for every change event — the poller's event counter and the sink's latency
//! histogram, each with its label look-up — in nanoseconds per event.

use std::time::Instant;

use edfi_cdc::metrics;

#[test]
#[ignore = "benchmark: scripts/bench metrics"]
fn metric_calls_per_event() {
    let tables = [
        "edfi.Student",
        "edfi.StudentAssessmentItem",
        "edfi.StudentSectionAssociation",
    ];
    let n = 2_000_000u64;
    // Warm up: the first call of each label set registers the series.
    for t in tables {
        metrics::source_events("edfi-ods", t, "u", 1);
    }
    metrics::latency("edfi-ods", "staging", 0.05);
    let started = Instant::now();
    for i in 0..n {
        let table = tables[(i % 3) as usize];
        metrics::source_events("edfi-ods", table, "u", 1);
        metrics::latency("edfi-ods", "staging", (i % 1000) as f64 / 1000.0);
    }
    let ns = started.elapsed().as_nanos() as f64 / n as f64;
    println!(
        "{{\"benchmark\": \"metric_calls_per_event\", \"events\": {n}, \"ns_per_event\": {ns:.1}}}"
    );
}
