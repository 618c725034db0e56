//! End-to-end replication against real servers: the ODS simulator over TDS, the local
//! PostgreSQL as staging, `edfi-cdc run` as a process.

mod support;

use std::time::Duration;

use rand::{Rng, SeedableRng};
use support::*;
use tokio::sync::watch;

const TABLES: usize = 37;
const CATCH_UP: Duration = Duration::from_secs(180);

async fn assert_equal(
    source: &tokio_postgres::Client,
    staging: &tokio_postgres::Client,
    lower: bool,
) {
    let problems = compare_all(source, staging, lower).await;
    assert!(
        problems.is_empty(),
        "staging differs from the source:\n{}",
        problems.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_concurrent_workload_replicates_exactly() {
    let Rig {
        sim,
        staging: _staging,
        connector,
        source,
        target,
    } = Rig::new(300, 7).await;
    let rep = connector.run();
    let (_stop_tx, stop) = watch::channel(false);
    let stats = ods_sim::edfi::run_workload(&sim.backing_url(), workload(400.0, 11, 4, 4000), stop)
        .await
        .unwrap();
    assert!(
        stats.total_changes() >= 4000,
        "workload wrote {} changes",
        stats.total_changes()
    );
    let v = wait_caught_up(&source, &target, TABLES, CATCH_UP).await;
    assert_equal(&source, &target, true).await;
    let applied: i64 = target
        .query_one("SELECT version FROM edfi_cdc.sink_state", &[])
        .await
        .unwrap()
        .get(0);
    assert!(applied >= v);
    assert!(
        rep.log().contains("snapshot published"),
        "log:\n{}",
        rep.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_of_staging_always_see_one_consistent_cut() {
    let Rig {
        sim,
        staging: _staging,
        connector,
        source,
        target,
    } = Rig::new(300, 8).await;
    let connector_text = std::fs::read_to_string(&connector.path)
        .unwrap()
        .replace("identifiers = \"lower\"", "identifiers = \"preserve\"");
    std::fs::write(&connector.path, connector_text).unwrap();
    let _rep = connector.run();
    wait_caught_up(&source, &target, TABLES, CATCH_UP).await;

    let (stop_tx, stop) = watch::channel(false);
    let load = spawn_workload(&sim, workload(300.0, 12, 3, 1_000_000), stop);
    let mut samples = 0;
    // One statement reads one snapshot of staging: it must never see a student enrolled in a
    // school without a section there (every workload transaction keeps that true).
    while samples < 40 {
        let violations = ods_sim::edfi::invariant_violations(&target, "edfi")
            .await
            .unwrap();
        assert_eq!(
            violations, 0,
            "a reader saw a student enrolled without a section (sample {samples})"
        );
        samples += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_tx.send(true).unwrap();
    load.await.unwrap().unwrap();
    wait_caught_up(&source, &target, TABLES, CATCH_UP).await;
    assert_equal(&source, &target, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_twenty_kill_9s_during_snapshots_and_streaming() {
    let Rig {
        sim,
        staging: _staging,
        connector,
        source,
        target,
    } = Rig::new(600, 9).await;
    let (stop_tx, stop) = watch::channel(false);
    let load = spawn_workload(&sim, workload(300.0, 13, 3, 1_000_000), stop);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    for _ in 0..20 {
        let rep = connector.run();
        // Kill at a random moment: within the first snapshot, mid-stream, or between.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..2500))).await;
        rep.kill();
    }
    stop_tx.send(true).unwrap();
    load.await.unwrap().unwrap();
    let _rep = connector.run();
    wait_caught_up(&source, &target, TABLES, CATCH_UP).await;
    assert_equal(&source, &target, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resnapshots_a_table_after_retention_cleanup_and_after_truncate() {
    let Rig {
        sim: _sim,
        staging: _staging,
        connector,
        source,
        target,
    } = Rig::new(200, 10).await;
    let rep = connector.run();
    wait_caught_up(&source, &target, TABLES, CATCH_UP).await;
    let started_at = |t: &'static str| {
        let target = &target;
        async move {
            target
                .query_one("SELECT snapshot_started_at::text FROM edfi_cdc.table_state WHERE source_table = $1", &[&t])
                .await
                .unwrap()
                .get::<_, Option<String>>(0)
        }
    };

    // The replicator is stopped while a change happens and retention cleanup then removes it
    // from CT (as when the replicator is down longer than the retention period): on restart
    // every table whose baseline fell below its min valid version is re-snapshotted.
    assert!(rep.terminate(Duration::from_secs(20)).success());
    source.batch_execute("UPDATE edfi.\"Student\" SET \"FirstName\" = 'Renamed' WHERE \"StudentUSI\" IN (SELECT \"StudentUSI\" FROM edfi.\"Student\" ORDER BY 1 LIMIT 3)").await.unwrap();
    source
        .query("SELECT sim.cleanup_change_tracking(0)", &[])
        .await
        .unwrap();
    source.batch_execute("UPDATE edfi.\"Student\" SET \"LastSurname\" = 'After-Cleanup' WHERE \"StudentUSI\" IN (SELECT \"StudentUSI\" FROM edfi.\"Student\" ORDER BY 1 DESC LIMIT 2)").await.unwrap();
    let rep = connector.run();
    wait_for("Student re-snapshot after cleanup", CATCH_UP, || async {
        rep.log()
            .contains("re-snapshotting the table")
            .then_some(())
    })
    .await;
    wait_caught_up(&source, &target, TABLES, CATCH_UP).await;
    assert_equal(&source, &target, true).await;

    // TRUNCATE resets tracking of one table; it is re-snapshotted alone while the others
    // stream on.
    let school_before = started_at("School").await;
    source
        .batch_execute("TRUNCATE edfi.\"StudentAssessmentScoreResult\"")
        .await
        .unwrap();
    let truncated_version = source_version(&source).await;
    wait_for("StudentAssessmentScoreResult re-snapshot after TRUNCATE", CATCH_UP, || async {
        let r = target
            .query_one("SELECT phase, version FROM edfi_cdc.table_state WHERE source_table = 'StudentAssessmentScoreResult'", &[])
            .await
            .ok()?;
        (r.get::<_, String>(0) == "streaming" && r.get::<_, i64>(1) >= truncated_version).then_some(())
    })
    .await;
    wait_caught_up(&source, &target, TABLES, CATCH_UP).await;
    assert_equal(&source, &target, true).await;
    assert_eq!(
        started_at("School").await,
        school_before,
        "School was not touched by the re-snapshots"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_cleanly_on_sigterm_and_resumes_without_a_new_snapshot() {
    let Rig {
        sim: _sim,
        staging: _staging,
        connector,
        source,
        target,
    } = Rig::new(200, 11).await;
    let rep = connector.run();
    wait_caught_up(&source, &target, TABLES, CATCH_UP).await;
    let status = rep.terminate(Duration::from_secs(20));
    assert!(status.success(), "SIGTERM must exit 0, got {status:?}");
    source.batch_execute("UPDATE edfi.\"School\" SET \"SchoolCategoryDescriptorId\" = \"SchoolCategoryDescriptorId\"").await.ok();
    source.batch_execute("DELETE FROM edfi.\"StudentSectionAssociation\" WHERE ctid IN (SELECT ctid FROM edfi.\"StudentSectionAssociation\" LIMIT 5)").await.unwrap();
    let rep = connector.run();
    wait_caught_up(&source, &target, TABLES, CATCH_UP).await;
    assert_equal(&source, &target, true).await;
    assert!(
        !rep.log().contains("snapshot started"),
        "a restart must resume, not re-snapshot:\n{}",
        rep.log()
    );
}

/// The `snapshot published` lines of `log` for `table`, each with whether the snapshot had
/// loaded the target itself.
fn publishes(log: &str, table: &str) -> Vec<bool> {
    log.lines()
        .filter(|l| l.contains("snapshot published") && l.contains(&format!("table={table} ")))
        .map(|l| l.contains("(loaded into the target)"))
        .collect()
}

/// An initial load fills the target itself (no shadow table, nothing copied at the publish).
/// Killed and restarted from scratch before it was published, it first removes what it had
/// loaded: rows the source deleted in between do not stay. A table that was published keeps
/// loading a shadow when it is snapshotted again, so its readers keep its rows meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_load_fills_the_target_itself_and_restarted_keeps_no_deleted_row() {
    let rig = Rig::new(300, 31).await;
    one_chunk_per_cycle(&rig, 50);
    let rep = rig.connector.run();
    // StudentSectionAssociation (~2,400 rows) loads 50 rows a cycle: seconds of loading.
    wait_for(
        "StudentSectionAssociation to be loading into its target",
        CATCH_UP,
        || async {
            let row = rig
                .target
                .query_opt(
                    "SELECT snapshot_into_target, snapshot_rows FROM edfi_cdc.table_state \
                 WHERE sink = 'staging' AND source_table = 'StudentSectionAssociation' \
                 AND phase = 'snapshot'",
                    &[],
                )
                .await
                .ok()
                .flatten()?;
            (row.get::<_, Option<bool>>(0) == Some(true) && row.get::<_, i64>(1) >= 100)
                .then_some(())
        },
    )
    .await;
    rig.sim.freeze();
    let shadows: i64 = rig
        .target
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'edfi_cdc_shadow'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let loaded: Vec<i32> = rig
        .target
        .query(
            "SELECT DISTINCT studentusi FROM edfi.studentsectionassociation LIMIT 3",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let log = rep.kill();
    rig.sim.resume();
    assert_eq!(
        shadows, 0,
        "an initial load made a shadow table; log:\n{log}"
    );
    assert_eq!(
        loaded.len(),
        3,
        "the target held no rows mid-load; log:\n{log}"
    );
    assert!(
        log.contains("initial load: the snapshot goes into the target itself"),
        "log:\n{log}"
    );
    rig.source
        .execute(
            "DELETE FROM edfi.\"StudentSectionAssociation\" WHERE \"StudentUSI\" = ANY($1)",
            &[&loaded],
        )
        .await
        .unwrap();
    // Started again from the beginning, not resumed.
    rig.connector.resnapshot("edfi.StudentSectionAssociation");
    let rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_equal(&rig.source, &rig.target, true).await;
    assert_eq!(
        publishes(&rep.log(), "edfi.StudentSectionAssociation"),
        [true],
        "log:\n{}",
        rep.log()
    );
    rig.connector.resnapshot("edfi.School");
    wait_for("edfi.School to be published again", CATCH_UP, || {
        let log = rep.log();
        async move { (!publishes(&log, "edfi.School").is_empty()).then_some(()) }
    })
    .await;
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_equal(&rig.source, &rig.target, true).await;
    assert_eq!(
        publishes(&rep.log(), "edfi.School"),
        [false],
        "log:\n{}",
        rep.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_switched_on_later_is_snapshotted_while_the_rest_resume() {
    let Rig {
        sim: _sim,
        staging: _staging,
        mut connector,
        source,
        target,
    } = Rig::new(150, 12).await;
    connector
        .env
        .push(("GROUP_ILLUMINATE_ENABLED".into(), "false".into()));
    let rep = connector.run();
    let ic = ods_sim::edfi::ic().len();
    wait_caught_up(&source, &target, ic, CATCH_UP).await;
    assert!(rep.terminate(Duration::from_secs(20)).success());

    connector
        .env
        .retain(|(k, _)| k != "GROUP_ILLUMINATE_ENABLED");
    let rep = connector.run();
    wait_caught_up(&source, &target, TABLES, CATCH_UP).await;
    assert_equal(&source, &target, true).await;
    let log = rep.log();
    assert!(
        log.contains("snapshot started table=edfi.StudentAssessment "),
        "{log}"
    );
    assert!(
        !log.contains("snapshot started table=edfi.Student "),
        "IC tables must resume:\n{log}"
    );

    // `status --json` reports every table, caught up.
    let out = connector.command(&["status", "--json"]).output().unwrap();
    assert!(out.status.success());
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tables = status["tables"].as_array().unwrap();
    assert_eq!(tables.len(), TABLES);
    for t in tables {
        assert_eq!(t["phase"], "streaming", "{t}");
        assert_eq!(t["lag_versions"], 0, "{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connectors_in_one_process_keep_their_checkpoints_apart() {
    // Two ODS databases (say, two school years) into one staging database, each mapped to a
    // schema of its own, run by one process from a directory of connector files.
    let Rig {
        sim,
        staging,
        connector,
        source,
        target,
    } = Rig::new(120, 13).await;
    let sim2 = Simulator::start(80, 14);
    let source2 = connect(&sim2.backing_url()).await;
    let first = std::fs::read_to_string(&connector.path).unwrap().replace(
        "identifiers = \"lower\"",
        "identifiers = \"lower\"\nschema_map = { edfi = \"edfi_2024\" }",
    );
    let second = first
        .replace("name = \"edfi-ods\"", "name = \"edfi-ods-2025\"")
        .replace("${ODS_", "${ODS2_")
        .replace("edfi_2024", "edfi_2025");
    std::fs::write(&connector.path, first).unwrap();
    std::fs::write(connector.dir.join("edfi-ods-2025.toml"), second).unwrap();
    let mut cmd = std::process::Command::new(bin("edfi-cdc"));
    cmd.args(["run", "--config"])
        .arg(&connector.dir)
        .envs(connector.env.iter().map(|(k, v)| (k, v)));
    cmd.env("ODS2_HOST", "127.0.0.1")
        .env("ODS2_PORT", sim2.port().to_string())
        .env("ODS2_DATABASE", &sim2.database);
    cmd.env("ODS2_USER", "sa")
        .env("ODS2_PASSWORD", SIM_PASSWORD);
    let _rep = Replicator::spawn(cmd);
    let (_stop_tx, stop) = watch::channel(false);
    ods_sim::edfi::run_workload(
        &sim.backing_url(),
        workload(200.0, 15, 2, 600),
        stop.clone(),
    )
    .await
    .unwrap();
    ods_sim::edfi::run_workload(&sim2.backing_url(), workload(200.0, 16, 2, 600), stop)
        .await
        .unwrap();
    wait_connector_caught_up(&source, &target, "edfi-ods", TABLES, CATCH_UP).await;
    wait_connector_caught_up(&source2, &target, "edfi-ods-2025", TABLES, CATCH_UP).await;
    for (src, schema) in [(&source, "edfi_2024"), (&source2, "edfi_2025")] {
        let problems = compare_all_in(src, &target, true, Some(schema)).await;
        assert!(
            problems.is_empty(),
            "{schema} differs from its source:\n{}",
            problems.join("\n")
        );
    }
    drop(staging);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_are_reached_over_tls_by_default() {
    let mut rig = Rig::new(20, 31).await;
    let url = format!("{}?application_name=edfi-cdc-tls", rig.staging.url());
    for (k, v) in rig.connector.env.iter_mut() {
        if k == "STAGING_DATABASE_URL" {
            *v = url.clone();
        }
    }
    let rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    let (sessions, encrypted): (i64, i64) = {
        let r = rig
            .target
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
                 JOIN pg_stat_ssl s USING (pid) WHERE a.datname = $1 AND a.application_name = 'edfi-cdc-tls'",
                &[&rig.staging.name],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(sessions > 0, "the sink is connected");
    assert_eq!(sessions, encrypted, "every sink connection is encrypted");
    drop(rep);
}

/// libpq's `sslmode` on a real server with a certificate of its own CA: `require` by default,
/// refused by a server without TLS; `verify-ca` checks the chain, `verify-full` the host name
/// too; a wrong CA or a name the certificate does not hold stops at once (fatal, not retried),
/// saying what to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_tls_is_verified_as_sslmode_says() {
    use edfi_cdc::sink::{pg, SinkError};
    let dir = std::env::temp_dir().join(unique("edfi-cdc-tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = certificates(&dir, "server", "DNS:localhost");
    let (other_ca, _, _) = certificates(&dir, "other", "DNS:localhost");
    std::fs::write(dir.join("ca.pem"), &ca).unwrap();
    std::fs::write(dir.join("other-ca.pem"), &other_ca).unwrap();
    let tls = pg_source::SourcePg::start_tls(&cert, &key);
    let plain = pg_source::SourcePg::start(false);
    let ca = dir.join("ca.pem").display().to_string();
    let other_ca = dir.join("other-ca.pem").display().to_string();

    let encrypted = |client: tokio_postgres::Client| async move {
        client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get::<_, bool>(0)
    };
    let fatal = |r: Result<tokio_postgres::Client, SinkError>, want: &str| match r {
        Err(e @ SinkError::Fatal { .. }) => {
            assert!(e.to_string().contains(want), "{e}")
        }
        Err(e) => panic!("not fatal: {e}"),
        Ok(_) => panic!("connected, expected: {want}"),
    };
    let on = |host: &str, query: &str| {
        format!("postgres://postgres@{host}:{}/postgres{query}", tls.port)
    };

    // No sslmode: require. TLS without verification, or no connection.
    assert!(encrypted(pg::connect("t", &on("127.0.0.1", "")).await.unwrap()).await);
    fatal(
        pg::connect("t", &plain.url("postgres").replace("sslmode=disable", "")).await,
        "does not offer TLS",
    );
    let plain_ok = pg::connect("t", &plain.url("postgres")).await.unwrap();
    assert!(!encrypted(plain_ok).await, "sslmode=disable is plain");

    // verify-ca: the chain, whatever the host name.
    let q = format!("?sslmode=verify-ca&sslrootcert={ca}");
    assert!(encrypted(pg::connect("t", &on("127.0.0.1", &q)).await.unwrap()).await);
    let q = format!("?sslmode=verify-ca&sslrootcert={other_ca}");
    fatal(
        pg::connect("t", &on("127.0.0.1", &q)).await,
        "does not verify against the CA file",
    );
    // require with a CA file verifies the chain too (libpq).
    let q = format!("?sslrootcert={other_ca}");
    fatal(
        pg::connect("t", &on("127.0.0.1", &q)).await,
        "invalid peer certificate",
    );

    // verify-full: the host name as well.
    let q = format!("?sslmode=verify-full&sslrootcert={ca}");
    assert!(encrypted(pg::connect("t", &on("localhost", &q)).await.unwrap()).await);
    fatal(
        pg::connect("t", &on("127.0.0.1", &q)).await,
        "not valid for name",
    );
    fatal(
        pg::connect("t", &on("localhost", "?sslmode=verify-full")).await,
        "needs the CA file",
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// SQL Server's TLS (the default, `encrypt = true`) against the simulator serving a certificate
/// of a CA of the test's own: with that CA as `source.ca_file` the connector snapshots and
/// streams over TLS, across a kill -9 under a workload; a wrong CA, no CA (the system roots),
/// or a host name the certificate does not hold stops it at once, naming `source.ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_is_read_over_tls_verified_with_a_ca_file() {
    let dir = std::env::temp_dir().join(unique("edfi-cdc-tds-tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = certificates(&dir, "ods", "DNS:localhost");
    let (other_ca, _, _) = certificates(&dir, "other", "DNS:localhost");
    let file = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).unwrap();
        dir.join(name).display().to_string()
    };
    let (ca, other_ca) = (file("ca.pem", &ca), file("other-ca.pem", &other_ca));
    let (cert, key) = (file("server.pem", &cert), file("server.key", &key));
    let sim = Simulator::start_with(
        &unique("odssim"),
        0,
        20,
        37,
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    let staging = TestDb::create("staging").await;
    let text = default_connector("").replace("encrypt = false", "encrypt = true");
    let mut connector = Connector::with_text(&sim, &staging, &text);
    let set = |c: &mut Connector, key: &str, value: &str| {
        c.env.retain(|(k, _)| k != key);
        c.env.push((key.into(), value.into()));
    };

    for (host, ca_file, want) in [
        ("localhost", other_ca.as_str(), "certificate was rejected"),
        ("localhost", "", "certificate was rejected"),
        ("127.0.0.1", ca.as_str(), "not valid for name"),
    ] {
        set(&mut connector, "ODS_HOST", host);
        set(&mut connector, "ODS_CA_FILE", ca_file);
        let started = std::time::Instant::now();
        let out = connector
            .command(&["run"])
            .stdout(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(
            text.contains(want) && text.contains("source.ca_file"),
            "{host} {ca_file}: {text}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a certificate that does not verify is not retried: {text}"
        );
    }

    set(&mut connector, "ODS_HOST", "localhost");
    set(&mut connector, "ODS_CA_FILE", &ca);
    let rep = connector.run();
    let source = connect(&sim.backing_url()).await;
    let target = connect(&staging.url()).await;
    // Killed while it streams a workload over TLS, and started again.
    wait_caught_up(&source, &target, TABLES, CATCH_UP).await;
    let (_stop_tx, stop) = watch::channel(false);
    let load = spawn_workload(&sim, workload(300.0, 38, 2, 1500), stop);
    let v0 = source_version(&source).await;
    source_advanced(&source, v0, 100).await;
    rep.kill();
    let rep = connector.run();
    assert!(load.await.unwrap().unwrap().total_changes() >= 1500);
    wait_caught_up(&source, &target, TABLES, CATCH_UP).await;
    let problems = compare_all(&source, &target, true).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    drop(rep);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn checkpoints_written_by_the_earlier_schema_still_load() {
    let db = TestDb::create("oldschema").await;
    let client = connect(&db.url()).await;
    // The first release kept snapshot keys as jsonb.
    client
        .batch_execute(
            "CREATE SCHEMA edfi_cdc; CREATE TABLE edfi_cdc.table_state (connector text NOT NULL, \
             sink text NOT NULL, source_schema text NOT NULL, source_table text NOT NULL, \
             target_schema text NOT NULL, target_table text NOT NULL, phase text NOT NULL, \
             version bigint NOT NULL, commit_time timestamptz, snapshot_last_key jsonb, \
             snapshot_rows bigint NOT NULL DEFAULT 0, snapshot_total_rows bigint, \
             snapshot_started_at timestamptz, updated_at timestamptz NOT NULL DEFAULT now(), \
             PRIMARY KEY (connector, sink, source_schema, source_table)); \
             INSERT INTO edfi_cdc.table_state (connector, sink, source_schema, source_table, target_schema, \
             target_table, phase, version, snapshot_last_key, snapshot_rows) VALUES ('edfi-ods', 'staging', \
             'edfi', 'Student', 'edfi', 'student', 'snapshot', 42, '[7]', 7)",
        )
        .await
        .unwrap();
    edfi_cdc::checkpoint::install(&client).await.unwrap();
    let key: String = client
        .query_one("SELECT snapshot_last_key FROM edfi_cdc.table_state", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(key, "[7]");
}

/// A restarted poller's barriers follow the dead one's whatever the hosts' clocks say: each
/// start takes its first run from the position store, past every run the previous start could
/// take after failed barriers, even with its clock an hour behind (before, a run was the
/// start's clock, and such a poller's barriers were ordered before the dead one's lone one).
#[tokio::test]
async fn a_restarted_pollers_runs_follow_the_dead_ones_whatever_its_clock_says() {
    use edfi_cdc::checkpoint::begin_run;
    use edfi_cdc::stream::lane::RUNS_PER_START;
    let db = TestDb::create("runs").await;
    let mut client = connect(&db.url()).await;
    edfi_cdc::checkpoint::install(&client).await.unwrap();
    let now = chrono::Utc::now();
    let ms = |t: chrono::DateTime<chrono::Utc>| t.timestamp_millis() as u64;
    let first = begin_run(&mut client, "edfi-ods", now).await.unwrap();
    assert_eq!(first, ms(now), "a first start's run is its clock");
    let last_of_first = first + RUNS_PER_START - 1;
    let behind = begin_run(&mut client, "edfi-ods", now - chrono::Duration::hours(1))
        .await
        .unwrap();
    assert!(
        behind > last_of_first,
        "a restart with its clock behind took run {behind}, not after {last_of_first}"
    );
    let later = now + chrono::Duration::days(365);
    let ahead = begin_run(&mut client, "edfi-ods", later).await.unwrap();
    assert_eq!(
        ahead,
        ms(later),
        "a clock past the last start's runs is taken as it is"
    );
    assert_eq!(
        begin_run(&mut client, "another", now).await.unwrap(),
        ms(now),
        "each connector's runs are its own"
    );
}

/// Two sinks, and the poller resumes a snapshot that only one of them needs (one sink's
/// checkpoint and shadow table are set back to a snapshot of StudentSectionAssociation begun at
/// its version, as a kill early in that snapshot leaves them): first the Redshift sink's, then
/// staging's. The poller sends none of the table's changes until the snapshot ends; rows deleted
/// at the source meanwhile must still leave the other sink, which already held the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_skips_anothers_snapshot_keeps_the_changes_made_meanwhile() {
    let mut rig = Rig::new(300, 33).await;
    let redshift_db = redshift_beside_staging(&mut rig).await;
    let redshift = connect(&redshift_db.url()).await;
    let rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    wait_connector_caught_up(&rig.source, &redshift, "edfi-ods", TABLES, CATCH_UP).await;
    rep.kill();
    one_chunk_per_cycle(&rig, 1);
    for (sink, db) in [("redshift", &redshift), ("staging", &rig.target)] {
        let set_back = db
            .execute(
                "UPDATE edfi_cdc.table_state SET phase = 'snapshot', snapshot_last_key = NULL, \
                 snapshot_rows = 0 WHERE sink = $1 AND source_table = 'StudentSectionAssociation'",
                &[&sink],
            )
            .await
            .unwrap();
        assert_eq!(set_back, 1);
        db.batch_execute(
            "CREATE TABLE edfi_cdc_shadow.\"edfi-ods__edfi__studentsectionassociation\" \
             (LIKE edfi.studentsectionassociation INCLUDING ALL)",
        )
        .await
        .unwrap();
        let rep = rig.connector.run();
        // One row a cycle: the snapshot of the table's ~2,800 rows lasts many seconds.
        wait_for("the snapshot to resume", CATCH_UP, || {
            let log = rep.log();
            async move {
                log.contains("snapshot progress table=edfi.StudentSectionAssociation")
                    .then_some(())
            }
        })
        .await;
        rig.source
            .batch_execute(
                "DELETE FROM edfi.\"StudentSectionAssociation\" WHERE ctid IN \
                 (SELECT ctid FROM edfi.\"StudentSectionAssociation\" LIMIT 7)",
            )
            .await
            .unwrap();
        wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
        wait_connector_caught_up(&rig.source, &redshift, "edfi-ods", TABLES, CATCH_UP).await;
        let log = rep.kill();
        assert!(
            log.matches("snapshot progress table=edfi.StudentSectionAssociation")
                .count()
                > 100,
            "{sink}: the snapshot was not under way when the rows were deleted:\n{log}"
        );
        assert_equal(&rig.source, &rig.target, true).await;
        assert_redshift_equal(&rig.source, &redshift).await;
    }
}

/// Which load may delete a target's rows before loading it again: only one that loaded the
/// target itself and was not published since. Once published — also when the table is then set
/// to await a re-snapshot (a stream that lost records) — the rows are the readers', and the next
/// load goes to a shadow table. A watermark that holds the table back leaves it as it was.
#[tokio::test]
async fn only_an_unpublished_load_into_the_target_may_empty_it_again() {
    use edfi_cdc::checkpoint::{self, unpublished_load_into_target};
    use edfi_cdc::event::{ColumnSchema, SourceType, TableId, TableSchema, Watermark};
    let db = TestDb::create("intotarget").await;
    let client = connect(&db.url()).await;
    checkpoint::install(&client).await.unwrap();
    let table = TableSchema {
        id: TableId::new("edfi", "Student"),
        columns: vec![ColumnSchema {
            name: "StudentUSI".into(),
            source_type: SourceType {
                name: "int".into(),
                max_length: None,
                precision: None,
                scale: None,
            },
            nullable: false,
        }],
        key: vec![0],
    };
    let id = &table.id;
    let (c, sink) = ("edfi-ods", "staging");
    let begin = |version| {
        checkpoint::begin_snapshot(&client, c, sink, &table, "edfi", "student", version, None)
    };
    begin(10).await.unwrap();
    assert!(
        !unpublished_load_into_target(&client, c, sink, id)
            .await
            .unwrap(),
        "a shadow load"
    );
    checkpoint::snapshot_into_target(&client, c, sink, id)
        .await
        .unwrap();
    assert!(unpublished_load_into_target(&client, c, sink, id)
        .await
        .unwrap());
    // Started again before its publish (the poller restarted it, or it awaits a re-snapshot).
    checkpoint::await_snapshot(&client, c, sink, id, 12)
        .await
        .unwrap();
    assert!(unpublished_load_into_target(&client, c, sink, id)
        .await
        .unwrap());
    checkpoint::snapshot_loaded(&client, c, sink, id, 5)
        .await
        .unwrap();
    assert!(unpublished_load_into_target(&client, c, sink, id)
        .await
        .unwrap());
    let w = Watermark {
        version: 20,
        commit_time: None,
    };
    // Held: this sink does not take a snapshot of the table in progress (the table stays).
    checkpoint::advance(&client, c, sink, &w, &[id])
        .await
        .unwrap();
    assert!(unpublished_load_into_target(&client, c, sink, id)
        .await
        .unwrap());
    checkpoint::advance(&client, c, sink, &w, &[])
        .await
        .unwrap();
    assert!(
        !unpublished_load_into_target(&client, c, sink, id)
            .await
            .unwrap(),
        "published"
    );
    checkpoint::await_snapshot(&client, c, sink, id, 30)
        .await
        .unwrap();
    assert!(
        !unpublished_load_into_target(&client, c, sink, id)
            .await
            .unwrap(),
        "published, then awaiting a re-snapshot"
    );
    begin(30).await.unwrap();
    assert!(!unpublished_load_into_target(&client, c, sink, id)
        .await
        .unwrap());
}

/// Terminate the replicator's staging connections every `every` until `stop`; returns how many
/// were terminated.
async fn terminate_backends(
    database: String,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> u64 {
    let admin = connect(&db_url("postgres")).await;
    let mut terminated = 0;
    while !*stop.borrow() {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = $1 AND application_name = 'edfi-cdc'",
                &[&database],
            )
            .await
            .unwrap()
            .get(0);
        terminated += n as u64;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
    }
    terminated
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_connections_terminated_during_snapshots_and_streaming_are_survived() {
    let rig = Rig::new(600, 71).await;
    // Reconnecting is under test, not the retry budget: on a loaded machine a flush can take
    // longer than the 400 ms between terminations, and eight failures in a row would end the
    // process as designed.
    rig.connector.edit("max_attempts = 8", "max_attempts = 40");
    let mut rep = rig.connector.run();
    let (stop_tx, stop) = watch::channel(false);
    let killer = tokio::spawn(terminate_backends(
        rig.staging.name.clone(),
        Duration::from_millis(400),
        stop.clone(),
    ));
    let stats =
        ods_sim::edfi::run_workload(&rig.sim.backing_url(), workload(300.0, 72, 2, 2500), stop)
            .await
            .unwrap();
    stop_tx.send(true).unwrap();
    let terminated = killer.await.unwrap();
    assert!(stats.total_changes() >= 2500);
    assert!(
        terminated >= 5,
        "only {terminated} connections were terminated"
    );
    // Its log if it does not catch up (once in a loaded whole-suite run it did not within
    // 180 s, and the reason was not kept).
    let caught_up = tokio::time::timeout(
        CATCH_UP,
        wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP * 2),
    )
    .await;
    let running = rep.is_running();
    assert!(
        caught_up.is_ok(),
        "staging did not catch up within {CATCH_UP:?}; edfi-cdc running: {running}\n{}",
        rep.log()
    );
    assert_equal(&rig.source, &rig.target, true).await;
    assert!(rep.is_running(), "edfi-cdc stopped:\n{}", rep.log());
    assert!(!rep.log().contains("does not exist"), "{}", rep.log());
}

/// What one snapshot of staging holds of `marker`: (items marked, items, students marked,
/// students). A reader must see all of a source transaction or none of it.
async fn marked(staging: &tokio_postgres::Client, marker: &str) -> (i64, i64, i64, i64) {
    let r = staging
        .query_one(
            "SELECT (SELECT count(*) FILTER (WHERE assessmentresponse = $1) FROM edfi.studentassessmentitem), \
                    (SELECT count(*) FROM edfi.studentassessmentitem), \
                    (SELECT count(*) FILTER (WHERE middlename = $1) FROM edfi.student), \
                    (SELECT count(*) FROM edfi.student)",
            &[&marker],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

/// Watch staging until `stop`: every observation must hold all of `marker`'s transaction or
/// none of it. Returns how many observations saw it whole.
fn watch_atomic(
    url: String,
    marker: &'static str,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let staging = connect(&url).await;
        let mut whole = 0;
        loop {
            // One more look after the stop: the transaction may have landed just before it.
            let last = *stop.borrow();
            let (items_marked, items, students_marked, students) = marked(&staging, marker).await;
            let none = items_marked == 0 && students_marked == 0;
            let all = items_marked == items && students_marked == students && items > 0;
            assert!(
                none || all,
                "a reader saw part of one source transaction: {items_marked} of {items} items, \
                 {students_marked} of {students} students marked `{marker}`"
            );
            whole += usize::from(all);
            if last {
                break whole;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_larger_than_memory_is_applied_whole_through_kills_in_spill_and_merge() {
    let rig = Rig::new(300, 21).await;
    rig.connector
        .edit("[sinks.staging]\n", "[sinks.staging]\nspill_rows = 250\n");
    let rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    let items: i64 = rig
        .target
        .query_one("SELECT count(*) FROM edfi.studentassessmentitem", &[])
        .await
        .unwrap()
        .get(0);
    assert!(items > 2_000, "too few items to spill: {items}");

    // 1. Spilled and merged, while readers watch.
    let (stop_tx, stop) = watch::channel(false);
    let watcher = watch_atomic(rig.staging.url(), "spill-1", stop);
    big_transaction(&rig.source, "spill-1").await;
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    stop_tx.send(true).unwrap();
    assert!(watcher.await.unwrap() > 0, "no reader saw the transaction");
    assert_rig_equal(&rig).await;
    let log = rep.log();
    assert!(log.contains("a large cycle"), "no spill logged:\n{log}");
    let tables = spill_tables(&rig.target, None).await;
    let items = spill_tables(&rig.target, Some("assessmentresponse")).await;
    let students = spill_tables(&rig.target, Some("middlename")).await;
    assert_eq!(
        (items.len(), students.len()),
        (1, 1),
        "spill tables: {tables:?}"
    );

    // 2. Killed while writing the next cycle's changes to the spill tables, after a first
    // write of them committed: the cycle reads the 300 students before the items, so the first
    // write (250 rows) holds students only, and the second one waits for the items' table.
    let locker = connect(&rig.staging.url()).await;
    let lock = format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", items[0]);
    kill_blocked(&rig, &locker, &lock, "COPY edfi_cdc_spill.", "spill-2", rep).await;
    assert_eq!(
        marked(&rig.target, "spill-2").await.0,
        0,
        "the cycle was applied before its watermark"
    );
    let held: i64 = rig
        .target
        .query_one(&format!("SELECT count(*) FROM {}", students[0]), &[])
        .await
        .unwrap()
        .get(0);
    assert!(held > 0, "no spill write had committed before the kill");

    // 3. Restarted: what the killed process spilled is dropped, the cycle read again and
    // applied whole; then killed inside the merge at the next large cycle's watermark.
    let rep = rig.connector.run();
    let (stop_tx, stop) = watch::channel(false);
    let watcher = watch_atomic(rig.staging.url(), "spill-2", stop);
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    stop_tx.send(true).unwrap();
    assert!(watcher.await.unwrap() > 0, "no reader saw the transaction");
    assert_rig_equal(&rig).await;
    let log = rep.log();
    assert!(
        log.contains("dropped the spill tables of an earlier process of this sink"),
        "left-over spill tables not dropped:\n{log}"
    );
    let now = spill_tables(&rig.target, None).await;
    assert!(
        tables.iter().all(|t| !now.contains(t)),
        "spill tables of the killed process are still there: {tables:?}, now {now:?}"
    );
    assert!(!now.is_empty(), "the cycle read again was not spilled");
    let tables = now;
    kill_blocked(
        &rig,
        &locker,
        "LOCK TABLE edfi.studentassessmentitem IN ACCESS EXCLUSIVE MODE",
        "DELETE FROM \"edfi\".\"studentassessmentitem\"",
        "spill-3",
        rep,
    )
    .await;

    // 4. Restarted again: applied whole.
    let rep = rig.connector.run();
    let (stop_tx, stop) = watch::channel(false);
    let watcher = watch_atomic(rig.staging.url(), "spill-3", stop);
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    stop_tx.send(true).unwrap();
    assert!(watcher.await.unwrap() > 0, "no reader saw the transaction");
    assert_rig_equal(&rig).await;
    let now = spill_tables(&rig.target, None).await;
    assert!(
        tables.iter().all(|t| !now.contains(t)),
        "spill tables of the second killed process are still there: {tables:?}, now {now:?}"
    );

    // 5. Staging connections terminated while large cycles are spilled and merged: retried.
    let mut rep = rep;
    let (stop_tx, stop) = watch::channel(false);
    let killer = tokio::spawn(terminate_backends(
        rig.staging.name.clone(),
        Duration::from_millis(400),
        stop.clone(),
    ));
    let watcher = watch_atomic(rig.staging.url(), "spill-5", stop);
    big_transaction(&rig.source, "spill-4").await;
    big_transaction(&rig.source, "spill-5").await;
    wait_for("the cycles in staging", CATCH_UP, || async {
        let (marked_items, items, _, _) = marked(&rig.target, "spill-5").await;
        (marked_items == items && items > 0).then_some(())
    })
    .await;
    stop_tx.send(true).unwrap();
    let terminated = killer.await.unwrap();
    assert!(watcher.await.unwrap() > 0, "no reader saw the transaction");
    assert!(
        terminated >= 2,
        "only {terminated} connections were terminated"
    );
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_rig_equal(&rig).await;
    assert!(rep.is_running(), "edfi-cdc stopped:\n{}", rep.log());
    rep.terminate(Duration::from_secs(20));
}

/// `edfi_cdc_poll_cycles_total` of the running connector.
async fn poll_cycles(rep: &Replicator) -> u64 {
    let metrics = http_get(&rep.metrics_addr().await, "/metrics").1;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("edfi_cdc_poll_cycles_total{connector=\"edfi-ods\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The oldest open transaction of the simulator's sessions (the replicator's, over TDS), in
/// seconds.
async fn oldest_ods_transaction(source: &tokio_postgres::Client) -> f64 {
    source
        .query_one(
            "SELECT coalesce(max(extract(epoch FROM now() - xact_start)), 0)::float8 \
             FROM pg_stat_activity WHERE application_name = 'ods-sim' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// A sink held back (its apply waits on a lock) fills its buffer; the poller then waits for
/// room before its next cycle, outside a SNAPSHOT transaction at the ODS, and goes on once
/// the sink does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_sink_holds_the_poller_back_no_transaction_stays_open_at_the_ods() {
    let rig = Rig::new(300, 81).await;
    rig.connector
        .edit("[stream]\n", "[stream]\ncapacity = 400\n");
    let rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    let holder = lock_table(&rig.staging.url(), "edfi.student", "ACCESS EXCLUSIVE").await;
    let (stop_tx, stop) = watch::channel(false);
    let load = spawn_workload(&rig.sim, workload(200.0, 82, 2, 1_000_000), stop);

    // Held back: the poller's cycles stop while the source goes on.
    let deadline = std::time::Instant::now() + CATCH_UP;
    let (mut cycles, mut since) = (poll_cycles(&rep).await, std::time::Instant::now());
    while since.elapsed() < Duration::from_secs(3) {
        assert!(
            std::time::Instant::now() < deadline,
            "the poller was never held back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = poll_cycles(&rep).await;
        if n != cycles {
            (cycles, since) = (n, std::time::Instant::now());
        }
    }
    let v0 = source_version(&rig.source).await;
    for _ in 0..20 {
        let age = oldest_ods_transaction(&rig.source).await;
        assert!(
            age < 2.0,
            "a transaction at the ODS open for {age:.1} s while the sink is held back"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(source_version(&rig.source).await > v0, "the source went on");

    holder.batch_execute("ROLLBACK").await.unwrap();
    stop_tx.send(true).unwrap();
    assert!(load.await.unwrap().unwrap().total_changes() > 0);
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_rig_equal(&rig).await;
}

/// The TCP connections to `port` on loopback whose keepalive timer runs (`/proc/net/tcp`:
/// established, timer 2), and all established ones.
fn keepalive_connections(port: u16) -> (usize, usize) {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!("0100007F:{port:04X}");
    let established: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 5 && f[2] == remote && f[3] == "01")
        .collect();
    let kept = established
        .iter()
        .filter(|f| f[5].starts_with("02:"))
        .count();
    (kept, established.len())
}

/// The poller's connection to SQL Server sends TCP keepalives (a silent peer is found between
/// queries, an idle connection is not dropped on the way), as the PostgreSQL connections do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_to_the_ods_keeps_itself_alive() {
    let rig = Rig::new(20, 83).await;
    let rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    let port = rig.sim.port();
    wait_for(
        "a keepalive timer on the connection to the ODS",
        Duration::from_secs(30),
        || async {
            let (kept, all) = keepalive_connections(port);
            (all > 0 && kept > 0).then_some(())
        },
    )
    .await;
    drop(rep);
}

/// A value the replicator's client (tiberius) read, as `tests/support/run_tsql.py` prints what
/// python-tds read; and a parameter as that script takes it.
fn plain(v: &edfi_cdc::event::Value) -> serde_json::Value {
    use edfi_cdc::event::Value;
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(i) => (*i).into(),
        Value::Float(f) => (*f).into(),
        // Without trailing fractional zeros, as run_tsql.py prints python-tds' decimals.
        Value::Decimal(s) if s.contains('.') => {
            s.trim_end_matches('0').trim_end_matches('.').into()
        }
        Value::Decimal(s) | Value::String(s) => s.clone().into(),
        Value::Bytes(b) => b
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
            .into(),
        Value::Date(d) => d.to_string().into(),
        Value::Timestamp(t) => t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string().into(),
        Value::TimestampTz(t) => t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string().into(),
        Value::Time(t) => t.to_string().into(),
        Value::Uuid(u) => u.to_string().into(),
    }
}

fn param(v: &edfi_cdc::event::Value) -> serde_json::Value {
    match v {
        edfi_cdc::event::Value::Date(d) => serde_json::json!({ "date": d.to_string() }),
        other => plain(other),
    }
}

/// Every statement the poller, `check` and `verify` send to SQL Server (the catalog, Change
/// Tracking, snapshot chunks, the verify hashes), run by an independent TDS client
/// (python-tds) and by the replicator's own (tiberius): the same rows, with the column names
/// SQL Server documents for CHANGETABLE and the catalog views.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_the_replicator_sends_reads_the_same_through_python_tds() {
    use edfi_cdc::event::Value;
    use edfi_cdc::source::mssql::{queries, Connection};

    let rig = Rig::new(30, 89).await;
    let (_stop_tx, stop) = watch::channel(false);
    spawn_workload(&rig.sim, workload(200.0, 89, 2, 300), stop)
        .await
        .unwrap()
        .unwrap();
    let env = rig.connector.env.clone();
    let lookup = move |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(k).ok())
    };
    let config = edfi_cdc::config::load(std::slice::from_ref(&rig.connector.path), &lookup)
        .unwrap()
        .remove(0);
    let stop = tokio_util::sync::CancellationToken::new();
    let schemas = edfi_cdc::source::discover(&config, &stop).await.unwrap();
    let mut conn = Connection::connect(&config.source).await.unwrap();
    let version = conn.current_version().await.unwrap().unwrap();

    let mut statements: Vec<(String, String, Vec<Value>)> = vec![
        ("begin".into(), queries::BEGIN_SNAPSHOT.into(), vec![]),
        ("version".into(), queries::CURRENT_VERSION.into(), vec![]),
        ("commit".into(), queries::COMMIT.into(), vec![]),
        ("tracked".into(), queries::TRACKED_TABLES.into(), vec![]),
        ("database_ct".into(), queries::DATABASE_CT.into(), vec![]),
        (
            "snapshot_isolation".into(),
            queries::SNAPSHOT_ISOLATION.into(),
            vec![],
        ),
        ("columns".into(), queries::COLUMNS.into(), vec![]),
        (
            "columns_of".into(),
            queries::columns_of(&[2]),
            ["edfi", "Student", "School"]
                .map(|s| Value::String(s.into()))
                .into(),
        ),
        ("primary_keys".into(), queries::PRIMARY_KEYS.into(), vec![]),
        (
            "permissions".into(),
            queries::PERMISSIONS.into(),
            vec![Value::String("edfi.Student".into())],
        ),
        (
            "heartbeat_permissions".into(),
            queries::HEARTBEAT_PERMISSIONS.into(),
            vec![Value::String("edfi.Student".into())],
        ),
        ("server_state".into(), queries::SERVER_STATE.into(), vec![]),
        (
            "commit_time".into(),
            queries::COMMIT_TIME.into(),
            vec![Value::Int(version)],
        ),
        (
            "oldest_commit_after".into(),
            queries::OLDEST_COMMIT_AFTER.into(),
            vec![Value::Int(0), Value::Int(version)],
        ),
    ];
    let tables = [
        "Student",
        "StudentSchoolAssociation",
        "Descriptor",
        "StudentAssessmentItem",
    ];
    for schema in schemas
        .iter()
        .filter(|s| tables.contains(&s.id.name.as_str()))
    {
        let t = &schema.id.name;
        let first = conn
            .rows(&queries::snapshot_chunk(schema, false), &[Value::Int(7)])
            .await
            .unwrap();
        let after: Vec<Value> = std::iter::once(Value::Int(7))
            .chain(schema.key.iter().map(|&i| first[6][i].clone()))
            .collect();
        let verify = queries::VerifyQueries::new(schema, &|_| 6);
        let buckets = [16, 3, 11].map(Value::Int);
        statements.extend([
            (
                format!("{t} changes"),
                queries::changes(schema),
                vec![Value::Int(0), Value::Int(version)],
            ),
            (format!("{t} count"), queries::count_rows(schema), vec![]),
            (
                format!("{t} first chunk"),
                queries::snapshot_chunk(schema, false),
                vec![Value::Int(7)],
            ),
            (
                format!("{t} next chunk"),
                queries::snapshot_chunk(schema, true),
                after,
            ),
            (
                format!("{t} verify buckets"),
                verify.buckets(),
                vec![Value::Int(16)],
            ),
            (
                format!("{t} verify bucket rows"),
                verify.bucket_rows(2),
                buckets.to_vec(),
            ),
            (
                format!("{t} verify full rows"),
                verify.bucket_full_rows(2),
                buckets.to_vec(),
            ),
            (
                format!("{t} verify changed keys"),
                verify.changed_keys(),
                vec![Value::Int(0)],
            ),
        ]);
    }
    assert_eq!(statements.len(), 14 + 8 * tables.len());

    let input: Vec<serde_json::Value> = statements
        .iter()
        .map(|(name, sql, params)| {
            serde_json::json!({
                "name": name, "sql": sql, "params": params.iter().map(param).collect::<Vec<_>>()
            })
        })
        .collect();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/run_tsql.py");
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .args([
            "127.0.0.1",
            &rig.sim.port().to_string(),
            &rig.sim.database,
            SIM_PASSWORD,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(serde_json::to_string(&input).unwrap().as_bytes())
            .await
            .unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "run_tsql.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    for (name, sql, params) in &statements {
        let theirs = &read[name];
        assert!(theirs["error"].is_null(), "{name}: {theirs}\n{sql}");
        let ours: Vec<Vec<serde_json::Value>> = conn
            .rows(sql, params)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}\n{sql}"))
            .iter()
            .map(|r| r.iter().map(plain).collect())
            .collect();
        assert_eq!(
            theirs["rows"],
            serde_json::json!(ours),
            "{name}: python-tds and tiberius read different rows\n{sql}"
        );
    }
    let columns = |name: &str| -> Vec<String> {
        read[name]["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        columns("Student changes")[..2],
        ["SYS_CHANGE_VERSION", "SYS_CHANGE_OPERATION"]
    );
    assert_eq!(
        columns("tracked"),
        [
            "schema_name",
            "table_name",
            "min_valid_version",
            "begin_version"
        ]
    );
    assert_eq!(
        columns("database_ct"),
        [
            "retention_period",
            "retention_period_units",
            "is_auto_cleanup_on"
        ]
    );
    assert_eq!(columns("snapshot_isolation"), ["snapshot_isolation_state"]);
    assert_eq!(columns("commit_time"), ["commit_time"]);
    // Every change the workload made is there: inserts, updates and deletes.
    let ops: std::collections::BTreeSet<String> = ["Student", "StudentSchoolAssociation"]
        .iter()
        .flat_map(|t| read[format!("{t} changes")]["rows"].as_array().unwrap())
        .map(|r| r[1].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ops, ["D", "I", "U"].map(String::from).into(), "{read:#}");
}
