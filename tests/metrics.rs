//! The HTTP port: /metrics, /healthz, /readyz against a running replication.

mod support;

use std::time::Duration;

use support::*;
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_and_readiness_follows_the_source() {
    let Rig {
        sim,
        staging: _staging,
        mut connector,
        source,
        target,
    } = Rig::new(100, 21).await;
    // A Redshift sink too (COPY FROM STDIN into a database of its own) with the shipped
    // models, for their metrics.
    let reporting = TestDb::create("metrics_reporting").await;
    connector.use_shipped_models();
    for (k, v) in [
        ("REDSHIFT_ENABLED", "true"),
        ("REDSHIFT_LOAD_MODE", "stdin"),
        ("REDSHIFT_DATABASE_URL", reporting.url().as_str()),
        ("REDSHIFT_MAX_AGE", "1s"),
    ] {
        connector.env.push((k.into(), v.into()));
    }
    let rep = connector.run();
    let addr = rep.metrics_addr().await;
    wait_caught_up(&source, &target, 37, Duration::from_secs(120)).await;
    let (_stop_tx, stop) = watch::channel(false);
    let cfg = ods_sim::edfi::WorkloadConfig {
        rate: 200.0,
        seed: 3,
        writers: 1,
        max_changes: Some(300),
        duration: Some(Duration::from_secs(30)),
        bursts: false,
    };
    ods_sim::edfi::run_workload(&sim.backing_url(), cfg, stop)
        .await
        .unwrap();
    let v = wait_caught_up(&source, &target, 37, Duration::from_secs(120)).await;

    assert_eq!(http_get(&addr, "/healthz").0, 200);
    // The container health check's probe (`edfi-cdc healthcheck`) agrees.
    let probe = std::process::Command::new(bin("edfi-cdc"))
        .args(["healthcheck", "--addr", &addr])
        .status()
        .unwrap();
    assert!(probe.success(), "edfi-cdc healthcheck: {probe}");
    assert_eq!(http_get(&addr, "/readyz").0, 200);
    let (status, body) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    for name in [
        "edfi_cdc_sink_applied_version",
        "edfi_cdc_end_to_end_latency_seconds_count",
        "edfi_cdc_source_events_total",
        "edfi_cdc_sink_events_applied_total",
        "edfi_cdc_sink_flushes_total",
        "edfi_cdc_snapshot_rows_total",
        "edfi_cdc_poll_cycles_total",
        "edfi_cdc_poll_cycle_duration_seconds_bucket",
        "edfi_cdc_poll_cycle_events_bucket",
        "edfi_cdc_source_current_version",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics:\n{body}");
    }
    let applied: i64 = body
        .lines()
        .find(|l| l.starts_with("edfi_cdc_sink_applied_version{") && l.contains("sink=\"staging\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("applied version sample");
    assert!(applied >= v, "applied version {applied} < source {v}");

    // The source goes away: unready; it comes back on the same port: ready again.
    let port = sim.port();
    let database = sim.stop();
    wait_for(
        "/readyz to turn unready",
        Duration::from_secs(60),
        || async { (http_get(&addr, "/readyz").0 == 503).then_some(()) },
    )
    .await;
    let sim = Simulator::start_at(&database, port, 100, 21);
    wait_for(
        "/readyz to turn ready again",
        Duration::from_secs(60),
        || async { (http_get(&addr, "/readyz").0 == 200).then_some(()) },
    )
    .await;

    // Every metric the dashboards and alert rules use is exported (the outage above produced
    // the error and retry counters too).
    let (_, body) = http_get(&addr, "/metrics");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut used = std::collections::BTreeSet::new();
    for file in ["edfi-cdc.json", "alerts.yml"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for (i, _) in text.match_indices("edfi_cdc_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            used.insert(name);
        }
    }
    assert!(used.len() >= 10, "{used:?}");
    // The slot's metrics come from a PostgreSQL source only (tests/postgres_source.rs), the
    // verify results after an `edfi-cdc verify` (tests/verify.rs).
    for name in used
        .iter()
        .filter(|n| !n.starts_with("edfi_cdc_source_slot_") && !n.starts_with("edfi_cdc_verify_"))
    {
        assert!(
            body.lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "{name}, used by the dashboards or alert rules, is not exported:\n{body}"
        );
    }
    drop(rep);
    drop(sim);
}
