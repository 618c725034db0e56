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
    // The fault counters the alert rules use are exported at 0 before any fault.
    for series in [
        "edfi_cdc_errors_total{component=\"source\",kind=\"transient\"} 0",
        "edfi_cdc_errors_total{component=\"staging\",kind=\"fatal\"} 0",
        "edfi_cdc_errors_total{component=\"redshift\",kind=\"transient\"} 0",
        "edfi_cdc_retries_total{component=\"source\"} 0",
        "edfi_cdc_retries_total{component=\"staging\"} 0",
    ] {
        assert!(
            body.lines().any(|l| l == series),
            "{series} missing from a healthy /metrics:\n{body}"
        );
    }
    let applied: i64 = body
        .lines()
        .find(|l| l.starts_with("edfi_cdc_sink_applied_version{") && l.contains("sink=\"staging\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("applied version sample");
    assert!(applied >= v, "applied version {applied} < source {v}");

    // A client that connects and sends nothing is dropped by the server (header timeout, 10 s).
    {
        use tokio::io::AsyncReadExt;
        let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(30), idle.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "an idle connection was kept open: {read:?}"
        );
    }

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
    // verify results after an `edfi-cdc verify` (tests/verify.rs), the heartbeat lag with the
    // heartbeat on (the test below).
    for name in used.iter().filter(|n| {
        !n.starts_with("edfi_cdc_source_slot_")
            && !n.starts_with("edfi_cdc_verify_")
            && !n.starts_with("edfi_cdc_heartbeat_")
    }) {
        assert!(
            body.lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "{name}, used by the dashboards or alert rules, is not exported:\n{body}"
        );
    }
    drop(rep);
    drop(sim);
}

/// The value of the first sample in `body` whose line starts with `series`.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// On a quiet source the change lag reads 0 whether replication runs or is stuck; the heartbeat
/// tells them apart. Without its table the heartbeat is refused (said once, counted) and
/// replication goes on; with the table, a sink blocked on a lock shows as a growing heartbeat
/// lag while no table has a change to lag on, and the lag falls back once it is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_on_a_quiet_source_shows_in_the_heartbeat_lag() {
    let Rig {
        sim,
        staging,
        mut connector,
        source,
        target,
    } = Rig::new(20, 23).await;
    connector
        .env
        .push(("ODS_HEARTBEAT_INTERVAL".into(), "1s".into()));
    let print = connector
        .command(&["enable-ct", "--print"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&print.stdout);
    assert!(
        printed.contains(
            "CREATE TABLE [edfi_cdc].[Heartbeat] ([Connector] nvarchar(128) NOT NULL PRIMARY KEY"
        ) && printed.contains("ALTER TABLE [edfi_cdc].[Heartbeat] ENABLE CHANGE_TRACKING")
            && printed.contains("GRANT SELECT, INSERT, UPDATE ON [edfi_cdc].[Heartbeat]"),
        "{printed}"
    );

    // 1. No heartbeat table yet: refused, said once, counted; replication unaffected.
    let mut rep = connector.run();
    let addr = rep.metrics_addr().await;
    wait_caught_up(&source, &target, 37, Duration::from_secs(120)).await;
    let refused = "edfi_cdc_errors_total{component=\"heartbeat\",kind=\"refused\"}";
    wait_for(
        "three refused heartbeats",
        Duration::from_secs(60),
        || async { (sample(&http_get(&addr, "/metrics").1, refused)? >= 3.0).then_some(()) },
    )
    .await;
    assert_eq!(
        rep.log().matches("cannot write the heartbeat").count(),
        1,
        "{}",
        rep.log()
    );

    let check = connector.command(&["check"]).output().unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(3), "{text}");
    assert!(
        text.contains("FAIL heartbeat table edfi_cdc.Heartbeat: absent or not change-tracked"),
        "{text}"
    );

    // 2. The DBA creates the table: the heartbeat commits, the version moves on a quiet source.
    tsql(
        &sim,
        "CREATE SCHEMA edfi_cdc; \
         CREATE TABLE edfi_cdc.Heartbeat ([Connector] nvarchar(128) NOT NULL PRIMARY KEY, [BeatAt] datetime2(3) NOT NULL); \
         ALTER TABLE edfi_cdc.Heartbeat ENABLE CHANGE_TRACKING",
    )
    .await
    .unwrap();
    wait_for(
        "the heartbeat to be written",
        Duration::from_secs(60),
        || async { rep.log().contains("heartbeat written again").then_some(()) },
    )
    .await;
    let check = connector.command(&["check"]).output().unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        text.contains("PASS heartbeat table edfi_cdc.Heartbeat: Change Tracking on, SELECT, INSERT and UPDATE granted"),
        "{text}"
    );
    let v0 = source_version(&source).await;
    let lag = "edfi_cdc_heartbeat_lag_seconds{connector=\"edfi-ods\",sink=\"staging\"}";
    wait_for(
        "a heartbeat lag under 3 s",
        Duration::from_secs(60),
        || async { (sample(&http_get(&addr, "/metrics").1, lag)? < 3.0).then_some(()) },
    )
    .await;
    wait_for(
        "the heartbeat to move the version on",
        Duration::from_secs(30),
        || async { (source_version(&source).await > v0).then_some(()) },
    )
    .await;

    // 3. Staging blocked on a lock: the heartbeat lag grows while every table's lag reads 0.
    let locker = connect(&staging.url()).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE edfi_cdc.table_state IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    wait_for(
        "a heartbeat lag over 8 s",
        Duration::from_secs(60),
        || async { (sample(&http_get(&addr, "/metrics").1, lag)? > 8.0).then_some(()) },
    )
    .await;
    let body = http_get(&addr, "/metrics").1;
    let table_lags: Vec<f64> = body
        .lines()
        .filter(|l| l.starts_with("edfi_cdc_sink_lag_seconds{") && l.contains("sink=\"staging\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(
        !table_lags.is_empty() && table_lags.iter().all(|s| *s == 0.0),
        "table lags: {table_lags:?}"
    );
    locker.batch_execute("ROLLBACK").await.unwrap();
    wait_for(
        "the heartbeat lag back under 3 s",
        Duration::from_secs(60),
        || async { (sample(&http_get(&addr, "/metrics").1, lag)? < 3.0).then_some(()) },
    )
    .await;
    assert!(rep.is_running(), "edfi-cdc stopped:\n{}", rep.log());
}

/// A source that goes silent (the simulator frozen: its connection open, nothing answered)
/// shows while it lasts: `/readyz` turns unready, the running poll cycle's start stays in
/// `edfi_cdc_step_started_timestamp_seconds`, the log warns that the step is still running,
/// and `source.query_timeout` cuts the query as a counted transient fault. Thawed, replication
/// resumes and the changes written meanwhile arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_source_shows_in_readiness_the_step_gauge_and_the_log_until_it_answers() {
    let rig = Rig::new(20, 29).await;
    rig.connector.edit(
        "heartbeat_interval = ",
        "query_timeout = \"25s\"\nheartbeat_interval = ",
    );
    let mut rep = rig.connector.run();
    let addr = rep.metrics_addr().await;
    wait_caught_up(&rig.source, &rig.target, 37, Duration::from_secs(120)).await;
    assert_eq!(http_get(&addr, "/readyz").0, 200);

    let (stop_tx, stop) = watch::channel(false);
    let writer = spawn_workload(&rig.sim, workload(50.0, 29, 1, 100_000), stop);
    let v0 = source_version(&rig.source).await;
    source_advanced(&rig.source, v0, 20).await;

    let transient = "edfi_cdc_errors_total{component=\"source\",kind=\"transient\"}";
    let step =
        "edfi_cdc_step_started_timestamp_seconds{connector=\"edfi-ods\",step=\"poll cycle\"}";
    let now = || chrono::Utc::now().timestamp() as f64;
    assert_eq!(sample(&http_get(&addr, "/metrics").1, transient), Some(0.0));
    rig.sim.freeze();
    wait_for(
        "/readyz to turn unready",
        Duration::from_secs(30),
        || async { (http_get(&addr, "/readyz").0 == 503).then_some(()) },
    )
    .await;
    let started = wait_for(
        "a poll cycle running for 10 s",
        Duration::from_secs(30),
        || async {
            let at = sample(&http_get(&addr, "/metrics").1, step)?;
            (at > 0.0 && now() - at >= 10.0).then_some(at)
        },
    )
    .await;
    wait_for(
        "the still-running warning",
        Duration::from_secs(30),
        || async {
            let log = rep.log();
            log.lines()
                .any(|l| l.contains("still running") && l.contains("step=\"poll cycle\""))
                .then_some(())
        },
    )
    .await;
    wait_for(
        "the query cut by query_timeout, counted",
        Duration::from_secs(30),
        || async { (sample(&http_get(&addr, "/metrics").1, transient)? >= 1.0).then_some(()) },
    )
    .await;
    assert!(
        now() - started >= 24.0,
        "the query was cut before query_timeout ({} s)",
        now() - started
    );
    assert!(
        rep.log().contains("the slow step finished"),
        "{}",
        rep.log()
    );
    assert_eq!(http_get(&addr, "/readyz").0, 503);

    rig.sim.resume();
    wait_for(
        "/readyz to turn ready again",
        Duration::from_secs(90),
        || async { (http_get(&addr, "/readyz").0 == 200).then_some(()) },
    )
    .await;
    stop_tx.send(true).unwrap();
    let stats = writer.await.unwrap().unwrap();
    assert!(stats.transactions > 0, "{stats:?}");
    wait_caught_up(&rig.source, &rig.target, 37, Duration::from_secs(120)).await;
    assert_rig_equal(&rig).await;
    wait_for(
        "no poll cycle left running long",
        Duration::from_secs(30),
        || async {
            let at = sample(&http_get(&addr, "/metrics").1, step)?;
            (at == 0.0 || now() - at < 5.0).then_some(())
        },
    )
    .await;
    assert!(rep.is_running(), "edfi-cdc stopped:\n{}", rep.log());
}

/// A login without VIEW SERVER STATE (the simulator's `--no-view-server-state`: no commit in
/// `sys.dm_tran_commit_table` until a minute later, as SQL Server shows such a login commits
/// only after a checkpoint): `check` names the missing grant and its fix; replication goes on,
/// and the lag it cannot know is not recorded rather than recorded wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_without_view_server_state_fails_its_check_and_replicates_without_commit_times() {
    let sim = Simulator::start_with(&unique("odssim"), 0, 20, 31, &["--no-view-server-state"]);
    let staging = TestDb::create("staging").await;
    let connector = Connector::new(&sim, &staging, "");
    let source = connect(&sim.backing_url()).await;
    let target = connect(&staging.url()).await;

    let out = connector.command(&["check"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    let failed: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("FAIL"))
        .collect();
    assert_eq!(
        failed,
        ["FAIL source: sa lacks VIEW SERVER STATE: sys.dm_tran_commit_table shows it no commit times, so lag cannot be measured; in master: GRANT VIEW SERVER STATE TO [sa]"],
        "{text}"
    );

    let mut rep = connector.run();
    let addr = rep.metrics_addr().await;
    wait_caught_up(&source, &target, 37, Duration::from_secs(120)).await;
    let (_stop_tx, stop) = watch::channel(false);
    let stats = spawn_workload(&sim, workload(150.0, 31, 1, 300), stop)
        .await
        .unwrap()
        .unwrap();
    assert!(stats.total_changes() > 0);
    wait_caught_up(&source, &target, 37, Duration::from_secs(120)).await;
    let problems = compare_all(&source, &target, true).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let body = http_get(&addr, "/metrics").1;
    let applied = "edfi_cdc_sink_events_applied_total{connector=\"edfi-ods\",sink=\"staging\"";
    assert!(body.lines().any(|l| l.starts_with(applied)), "{body}");
    let latencies = sample(
        &body,
        "edfi_cdc_end_to_end_latency_seconds_count{connector=\"edfi-ods\",sink=\"staging\"}",
    );
    assert_eq!(latencies.unwrap_or(0.0), 0.0, "{body}");
    assert!(rep.is_running(), "edfi-cdc stopped:\n{}", rep.log());
}
