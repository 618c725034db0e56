//! `edfi-cdc verify` against real servers: staging broken by hand while a workload runs, the
//! exact keys found, `--repair` making it equal again.

mod support;

use std::time::Duration;

use support::*;
use tokio::sync::watch;

const TABLES: usize = 37;
const CATCH_UP: Duration = Duration::from_secs(180);

/// Wait until the replicator at `metrics` exports `rows` differing rows of `table` from the last
/// `verify`.
async fn wait_differing_rows(metrics: &str, table: &str, rows: f64) {
    let differing = |body: &str| -> Option<f64> {
        body.lines()
            .find(|l| {
                l.starts_with("edfi_cdc_verify_differing_rows{")
                    && l.contains(&format!("table=\"{table}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    wait_for(
        &format!("{rows} differing rows of {table} in /metrics"),
        Duration::from_secs(60),
        || async { (differing(&http_get(metrics, "/metrics").1) == Some(rows)).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_exactly_the_rows_broken_by_hand_and_repair_mends_them_under_a_workload() {
    let rig = Rig::new(200, 5).await;
    let rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;

    let (code, reports) = verify(&rig.connector, &[]);
    assert_eq!(code, 0, "{reports:#?}");
    assert_eq!(reports.len(), TABLES);
    for r in &reports {
        assert_eq!(r["source_rows"], r["target_rows"], "{r:#}");
        assert!(r["skipped"].is_null(), "{r:#}");
    }

    // Rows of closed school years, which the workload never writes: broken by hand in staging.
    let t = &rig.target;
    let gone = t
        .query_one(
            "DELETE FROM edfi.studentschoolassociation WHERE ctid = (SELECT min(ctid) FROM \
             edfi.studentschoolassociation WHERE schoolyear = 2023) \
             RETURNING studentusi, schoolid, to_char(entrydate, 'YYYY-MM-DD')",
            &[],
        )
        .await
        .unwrap();
    let (gone_student, gone_school, gone_entry): (i32, i32, String) =
        (gone.get(0), gone.get(1), gone.get(2));
    let changed = t
        .query_one(
            "UPDATE edfi.session SET totalinstructionaldays = totalinstructionaldays + 1 \
             WHERE ctid = (SELECT min(ctid) FROM edfi.session WHERE schoolyear = 2023) \
             RETURNING schoolid, sessionname",
            &[],
        )
        .await
        .unwrap();
    let (changed_school, changed_session): (i32, String) = (changed.get(0), changed.get(1));
    t.execute(
        "INSERT INTO edfi.session SELECT schoolid, schoolyear, 'Verify | extra', begindate, enddate, \
         termdescriptorid, totalinstructionaldays, discriminator, createdate, lastmodifieddate, \
         gen_random_uuid() FROM edfi.session WHERE schoolyear = 2024 LIMIT 1",
        &[],
    )
    .await
    .unwrap();

    // While the workload writes: exactly those three keys, and no other table differs.
    let (stop_tx, stop) = watch::channel(false);
    let load = spawn_workload(&rig.sim, workload(150.0, 21, 2, 100_000), stop);
    let (code, reports) = verify(&rig.connector, &[]);
    assert_eq!(code, 3, "{reports:#?}");
    let ssa = report(&reports, "edfi.StudentSchoolAssociation");
    let missing = keys(ssa, "missing_keys");
    assert_eq!(missing.len(), 1, "{ssa:#}");
    for part in [
        format!("+{gone_entry}"),
        format!("+{gone_school}"),
        format!("+{gone_student}"),
    ] {
        assert!(
            missing[0].split('|').any(|p| p == part),
            "{part} in {ssa:#}"
        );
    }
    assert_eq!(
        (ssa["extra"].as_u64(), ssa["different"].as_u64()),
        (Some(0), Some(0)),
        "{ssa:#}"
    );
    let session = report(&reports, "edfi.Session");
    let different = keys(session, "different_keys");
    assert_eq!(different.len(), 1, "{session:#}");
    assert!(
        different[0].contains(&format!("+{changed_school}|")),
        "{session:#}"
    );
    assert!(
        different[0].ends_with(&format!("|+{changed_session}")),
        "{session:#}"
    );
    let extra = keys(session, "extra_keys");
    assert_eq!(extra.len(), 1, "{session:#}");
    assert!(extra[0].ends_with("|+Verify \\| extra"), "{session:#}");
    assert_eq!(session["missing"].as_u64(), Some(0), "{session:#}");
    for r in &reports {
        if r["table"] != "edfi.StudentSchoolAssociation" && r["table"] != "edfi.Session" {
            assert_eq!(
                (
                    r["missing"].as_u64(),
                    r["extra"].as_u64(),
                    r["different"].as_u64()
                ),
                (Some(0), Some(0), Some(0)),
                "{r:#}"
            );
        }
    }

    // The running replicator exports the result, for the alert.
    let metrics = rep.metrics_addr().await;
    wait_differing_rows(&metrics, "edfi.Session", 2.0).await;

    // Repaired while the workload still writes, then equal.
    let (code, reports) = verify(
        &rig.connector,
        &[
            "--repair",
            "--table",
            "StudentSchoolAssociation",
            "--table",
            "edfi.Session",
        ],
    );
    assert_eq!(code, 0, "{reports:#?}");
    for r in &reports {
        assert!(r["repair"].as_str().unwrap().starts_with("wrote "), "{r:#}");
    }
    stop_tx.send(true).unwrap();
    let stats = load.await.unwrap().unwrap();
    assert!(stats.total_changes() > 0);
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_rig_equal(&rig).await;
    let (code, reports) = verify(&rig.connector, &[]);
    assert_eq!(code, 0, "{reports:#?}");
    wait_differing_rows(&metrics, "edfi.Session", 0.0).await;
    rep.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_compares_the_redshift_target_live_rows_and_repair_resnapshots_it() {
    let mut rig = Rig::new(150, 9).await;
    redshift_rig(&mut rig, None, &[("REDSHIFT_DELETES", "soft")]);
    let rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    let (code, reports) = verify(&rig.connector, &["--sink", "redshift"]);
    assert_eq!(code, 0, "{reports:#?}");
    assert!(reports.iter().all(|r| r["sink"] == "redshift"));

    // Rows of closed school years, which the workload never writes, broken by hand while it
    // writes: a row deleted, one marked deleted (gone from the live rows), a key changed (one
    // row missing, one extra) and a value changed.
    let (stop_tx, stop) = watch::channel(false);
    let load = spawn_workload(&rig.sim, workload(100.0, 19, 2, 100_000), stop);
    let t = &rig.target;
    t.batch_execute(
        "DELETE FROM edfi.studentschoolassociation WHERE ctid = (SELECT min(ctid) FROM \
         edfi.studentschoolassociation WHERE schoolyear = 2023); \
         UPDATE edfi.studentschoolassociation SET edfi_cdc_deleted_at = now() WHERE ctid = \
         (SELECT max(ctid) FROM edfi.studentschoolassociation WHERE schoolyear = 2023); \
         UPDATE edfi.session SET sessionname = sessionname || ' (edited)' WHERE ctid = \
         (SELECT min(ctid) FROM edfi.session WHERE schoolyear = 2023); \
         UPDATE edfi.session SET totalinstructionaldays = totalinstructionaldays + 1 WHERE ctid = \
         (SELECT min(ctid) FROM edfi.session WHERE schoolyear = 2023 \
         AND sessionname NOT LIKE '% (edited)'); \
         UPDATE edfi.calendardate SET date = date + 1000 WHERE ctid = \
         (SELECT min(ctid) FROM edfi.calendardate WHERE schoolyear = 2023)",
    )
    .await
    .unwrap();
    let (code, reports) = verify(&rig.connector, &["--sink", "redshift"]);
    assert_eq!(code, 3, "{reports:#?}");
    let counts = |table: &str| {
        let r = report(&reports, table);
        (
            r["missing"].as_u64().unwrap(),
            r["extra"].as_u64().unwrap(),
            r["different"].as_u64().unwrap(),
        )
    };
    assert_eq!(counts("edfi.StudentSchoolAssociation"), (2, 0, 0));
    // A changed key column: the old key missing, the new one extra; a changed value.
    assert_eq!(counts("edfi.Session"), (1, 1, 1));
    assert_eq!(counts("edfi.CalendarDate"), (1, 1, 0));
    let differing: Vec<&str> = reports
        .iter()
        .filter(|r| r["missing"] != 0 || r["extra"] != 0 || r["different"] != 0)
        .map(|r| r["table"].as_str().unwrap())
        .collect();
    assert_eq!(differing.len(), 3, "{differing:?}");

    // Redshift is repaired by a re-snapshot (the models follow it), which the sink takes.
    let (code, reports) = verify(&rig.connector, &["--sink", "redshift", "--repair"]);
    assert_eq!(code, 3, "the re-snapshot is still to come: {reports:#?}");
    assert!(report(&reports, "edfi.Session")["repair"]
        .as_str()
        .unwrap()
        .contains("re-snapshot"));
    wait_for(
        "verify to find Redshift equal again",
        Duration::from_secs(180),
        || async { (verify(&rig.connector, &["--sink", "redshift"]).0 == 0).then_some(()) },
    )
    .await;
    stop_tx.send(true).unwrap();
    let stats = load.await.unwrap().unwrap();
    assert!(stats.total_changes() > 0);
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    wait_for(
        "verify to find Redshift equal once the workload stopped",
        Duration::from_secs(120),
        || async { (verify(&rig.connector, &["--sink", "redshift"]).0 == 0).then_some(()) },
    )
    .await;
    let live = compare_all_in(&rig.source, &rig.target, true, Some("edfi_live")).await;
    assert!(live.is_empty(), "{}", live.join("\n"));
    rep.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_killed_before_it_commits_leaves_the_target_as_it_was_and_runs_again() {
    let rig = Rig::new(40, 3).await;
    let rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    let t = &rig.target;
    let row = t
        .query_one(
            "UPDATE edfi.session SET totalinstructionaldays = -1 WHERE ctid = \
             (SELECT min(ctid) FROM edfi.session) RETURNING schoolid, schoolyear, sessionname",
            &[],
        )
        .await
        .unwrap();
    let (school, year, name): (i32, i16, String) = (row.get(0), row.get(1), row.get(2));

    // The repair writes the row, then waits to lock the table's checkpoint, held here: killed
    // there, with its write in and not committed.
    let locker = connect(&rig.staging.url()).await;
    locker
        .batch_execute(
            "BEGIN; SELECT 1 FROM edfi_cdc.table_state WHERE source_table = 'Session' FOR UPDATE",
        )
        .await
        .unwrap();
    let mut repair = rig
        .connector
        .command(&["verify", "--repair", "--table", "Session", "--log", "warn"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let observer = connect(&rig.staging.url()).await;
    wait_blocked(
        &observer,
        &rig.staging.name,
        "SELECT phase, version, sink FROM edfi_cdc.table_state",
    )
    .await;
    repair.kill().unwrap();
    repair.wait().unwrap();
    locker.batch_execute("ROLLBACK").await.unwrap();
    let days: i32 = t
        .query_one(
            "SELECT totalinstructionaldays FROM edfi.session WHERE schoolid = $1 AND schoolyear = $2 AND sessionname = $3",
            &[&school, &year, &name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(days, -1, "the killed repair's write was rolled back");

    let (code, reports) = verify(&rig.connector, &["--table", "Session"]);
    assert_eq!(code, 3, "{reports:#?}");
    assert_eq!(reports[0]["different"], 1, "{reports:#?}");
    let (code, reports) = verify(&rig.connector, &["--repair", "--table", "Session"]);
    assert_eq!(code, 0, "{reports:#?}");
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_rig_equal(&rig).await;
    rep.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_changed_while_compared_is_unsettled_not_different_and_equal_once_applied() {
    let rig = Rig::new(40, 6).await;
    let rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;

    // The sink cannot commit Session's next change (its checkpoint row is held here), and the
    // source changes one session: staging still holds the old row at its checkpoint.
    let locker = connect(&rig.staging.url()).await;
    locker
        .batch_execute(
            "BEGIN; SELECT 1 FROM edfi_cdc.table_state WHERE source_table = 'Session' FOR UPDATE",
        )
        .await
        .unwrap();
    rig.source
        .execute(
            r#"UPDATE edfi."Session" SET "TotalInstructionalDays" = "TotalInstructionalDays" + 1
               WHERE ctid = (SELECT min(ctid) FROM edfi."Session")"#,
            &[],
        )
        .await
        .unwrap();
    let (code, reports) = verify(
        &rig.connector,
        &["--table", "Session", "--settle-timeout", "3"],
    );
    assert_eq!(code, 0, "a change in flight is no difference: {reports:#?}");
    assert_eq!(reports[0]["unsettled"], 1, "{reports:#?}");
    assert_eq!(reports[0]["different"], 0, "{reports:#?}");

    // Once the sink applied it, the same key is equal.
    locker.batch_execute("ROLLBACK").await.unwrap();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    let (code, reports) = verify(&rig.connector, &["--table", "Session"]);
    assert_eq!(code, 0, "{reports:#?}");
    assert_eq!(reports[0]["unsettled"], 0, "{reports:#?}");
    rep.kill();
}
