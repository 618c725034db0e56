//! Tables that change at the source while the replicator runs: columns added, widened, narrowed
//! and dropped through T-SQL on the simulator, under a workload and across a kill -9, into staging
//! and into the Redshift stand-in.

mod support;

use std::time::Duration;

use support::*;
use tokio::sync::watch;

const TABLES: usize = 37;
const CATCH_UP: Duration = Duration::from_secs(180);
const STUDENT_KEY: &[&str] = &["StudentUSI"];

/// The re-snapshots of `edfi.Student` published so far, as the log says.
fn student_publishes(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("snapshot published") && l.contains("table=edfi.Student "))
        .count()
}

/// Wait until `log()` reports `n` publishes of `edfi.Student`.
async fn wait_publishes(rep: &Replicator, n: usize) {
    wait_for(
        &format!("publish {n} of edfi.Student"),
        CATCH_UP,
        || async { (student_publishes(&rep.log()) >= n).then_some(()) },
    )
    .await;
}

/// `(data_type, character_maximum_length, is_nullable)` of a staging column, if it exists.
async fn staging_column(
    target: &tokio_postgres::Client,
    table: &str,
    column: &str,
) -> Option<(String, Option<i32>, String)> {
    target
        .query_opt(
            "SELECT data_type::text, character_maximum_length::int, is_nullable::text \
             FROM information_schema.columns WHERE table_schema = 'edfi' AND table_name = $1 \
             AND column_name = $2",
            &[&table, &column],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_added_widened_narrowed_and_dropped_at_the_source_reach_staging_under_a_workload() {
    let rig = Rig::new(300, 31).await;
    let rep = rig.connector.run();
    let (stop_tx, stop) = watch::channel(false);
    let load = spawn_workload(&rig.sim, workload(150.0, 32, 2, 1_000_000), stop);
    wait_publishes(&rep, 1).await;

    // Added: a nullable column, and a NOT NULL one with a default (every row gets a value).
    tsql(
        &rig.sim,
        "ALTER TABLE edfi.Student ADD NickName nvarchar(30) NULL, Tag uniqueidentifier NOT NULL DEFAULT newid();\n\
         UPDATE edfi.Student SET NickName = N'Nick' WHERE StudentUSI % 3 = 0;",
    )
    .await
    .unwrap();
    wait_publishes(&rep, 2).await;
    assert_eq!(
        staging_column(&rig.target, "student", "nickname").await,
        Some(("character varying".into(), Some(30), "YES".into()))
    );
    assert_eq!(
        staging_column(&rig.target, "student", "tag").await,
        Some(("uuid".into(), None, "YES".into())),
        "added columns are nullable in the target (its older rows had no value)"
    );

    // Widened: a value longer than the old length arrives.
    tsql(
        &rig.sim,
        &format!(
            "ALTER TABLE edfi.Student ALTER COLUMN FirstName nvarchar(150) NOT NULL;\n\
             UPDATE edfi.Student SET FirstName = N'{}' WHERE StudentUSI % 7 = 0;",
            "Ω".repeat(120)
        ),
    )
    .await
    .unwrap();
    wait_publishes(&rep, 3).await;
    assert_eq!(
        staging_column(&rig.target, "student", "firstname")
            .await
            .map(|c| c.1),
        Some(Some(150))
    );

    // Narrowed (the values still fit): re-snapshotted, the target keeps its width.
    tsql(
        &rig.sim,
        "ALTER TABLE edfi.Student ALTER COLUMN FirstName nvarchar(130) NOT NULL",
    )
    .await
    .unwrap();
    wait_publishes(&rep, 4).await;
    assert_eq!(
        staging_column(&rig.target, "student", "firstname")
            .await
            .map(|c| c.1),
        Some(Some(150))
    );

    // Dropped: the target keeps the column, no longer written (NULL after the re-snapshot).
    tsql(&rig.sim, "ALTER TABLE edfi.Student DROP COLUMN NickName")
        .await
        .unwrap();
    wait_publishes(&rep, 5).await;
    // The publish is logged inside its transaction: wait for the commit.
    wait_for(
        "the dropped column's values to be gone",
        CATCH_UP,
        || async {
            let kept: i64 = rig
                .target
                .query_one(
                    "SELECT count(*) FROM edfi.student WHERE nickname IS NOT NULL",
                    &[],
                )
                .await
                .ok()?
                .get(0);
            (kept == 0).then_some(())
        },
    )
    .await;

    stop_tx.send(true).unwrap();
    let stats = load.await.unwrap().unwrap();
    assert!(stats.total_changes() > 0);
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_rig_equal(&rig).await;
    assert_eq!(
        compare_table(
            &rig.source,
            &rig.target,
            "edfi",
            "Student",
            &["StudentUSI", "FirstName", "Tag"],
            STUDENT_KEY
        )
        .await,
        None
    );
    let log = rep.log();
    assert_eq!(
        log.matches("the table changed at the source: re-snapshotting it in its new shape")
            .count(),
        4,
        "one re-snapshot per change:\n{log}"
    );
    for change in [
        "added NickName nvarchar(30)",
        "FirstName nvarchar(75) not null → nvarchar(150) not null",
        "FirstName nvarchar(150) not null → nvarchar(130) not null",
        "dropped NickName",
    ] {
        assert!(log.contains(change), "`{change}` not logged:\n{log}");
    }
    let metrics = http_get(&rep.metrics_addr().await, "/metrics").1;
    assert!(
        metrics.contains(
            "edfi_cdc_schema_changes_total{connector=\"edfi-ods\",noticed_by=\"poller\",table=\"edfi.Student\"} 4"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_key_changed_at_the_source_becomes_the_staging_key_under_a_workload() {
    let rig = Rig::new(250, 37).await;
    // The poller waits for Change Tracking within the retry budget: a minute here.
    rig.connector.edit("max_attempts = 8", "max_attempts = 60");
    let mut rep = rig.connector.run();
    let (stop_tx, stop) = watch::channel(false);
    let load = spawn_workload(&rig.sim, workload(150.0, 38, 2, 1_000_000), stop);
    wait_publishes(&rep, 1).await;
    assert_eq!(
        primary_key_columns(&rig.target, "edfi.student").await,
        ["studentusi"]
    );

    // A tracked table's key changes only with Change Tracking off (SQL Server refuses 3735).
    let refused = tsql(
        &rig.sim,
        "ALTER TABLE edfi.Student DROP CONSTRAINT Student_PK",
    )
    .await
    .unwrap_err();
    assert!(refused.contains("change tracking is enabled"), "{refused}");
    // Off, the key replaced, on again: in one transaction, and then in separate statements
    // with the poller waiting while the table is untracked.
    tsql(
        &rig.sim,
        "BEGIN TRANSACTION;\n\
         ALTER TABLE edfi.Student DISABLE CHANGE_TRACKING;\n\
         ALTER TABLE edfi.Student DROP CONSTRAINT Student_PK;\n\
         ALTER TABLE edfi.Student ADD CONSTRAINT PK_Student PRIMARY KEY CLUSTERED (StudentUSI, StudentUniqueId);\n\
         ALTER TABLE edfi.Student ENABLE CHANGE_TRACKING WITH (TRACK_COLUMNS_UPDATED = ON);\n\
         COMMIT;",
    )
    .await
    .unwrap();
    wait_publishes(&rep, 2).await;
    wait_for("the new key in staging", CATCH_UP, || async {
        (primary_key_columns(&rig.target, "edfi.student").await
            == ["studentusi", "studentuniqueid"])
        .then_some(())
    })
    .await;
    tsql(&rig.sim, "ALTER TABLE edfi.Student DISABLE CHANGE_TRACKING")
        .await
        .unwrap();
    let off = "Change Tracking was switched off on edfi.Student while replicating";
    rep.wait_log(off, 1, CATCH_UP).await;
    // Without a key meanwhile: the poller keeps waiting, it does not take the table for one
    // it cannot read.
    tsql(
        &rig.sim,
        "ALTER TABLE edfi.Student DROP CONSTRAINT PK_Student",
    )
    .await
    .unwrap();
    let before = rep.log().matches(off).count();
    rep.wait_log(off, before + 1, CATCH_UP).await;
    for step in [
        "ALTER TABLE edfi.Student ADD CONSTRAINT PK_Student PRIMARY KEY (StudentUniqueId)",
        "ALTER TABLE edfi.Student ENABLE CHANGE_TRACKING",
    ] {
        tsql(&rig.sim, step).await.unwrap();
    }
    wait_publishes(&rep, 3).await;
    wait_for("the second new key in staging", CATCH_UP, || async {
        (primary_key_columns(&rig.target, "edfi.student").await == ["studentuniqueid"])
            .then_some(())
    })
    .await;

    stop_tx.send(true).unwrap();
    let stats = load.await.unwrap().unwrap();
    assert!(stats.total_changes() > 0);
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_rig_equal(&rig).await;
    assert_eq!(
        compare_table(
            &rig.source,
            &rig.target,
            "edfi",
            "Student",
            &["StudentUSI", "StudentUniqueId", "FirstName", "LastSurname"],
            &["StudentUniqueId"]
        )
        .await,
        None
    );
    let log = rep.log();
    for said in [
        "key (StudentUSI) → (StudentUSI, StudentUniqueId)",
        "key (StudentUSI, StudentUniqueId) → (StudentUniqueId)",
        "the target takes the source's new primary key with the re-snapshot",
    ] {
        assert!(log.contains(said), "`{said}` not logged:\n{log}");
    }
    let metrics = http_get(&rep.metrics_addr().await, "/metrics").1;
    assert!(
        metrics.contains(
            "edfi_cdc_schema_changes_total{connector=\"edfi-ods\",noticed_by=\"poller\",table=\"edfi.Student\"} 2"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicator_killed_while_it_publishes_a_new_key_publishes_it_after_the_restart() {
    let rig = Rig::new(200, 39).await;
    let rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    // Hold off writes to the target (reads, as the shadow's `LIKE`, pass): the re-snapshot in
    // the new key loads, and its publish blocks in the `DELETE` that empties the target.
    let holder = lock_table(&rig.staging.url(), "edfi.student", "SHARE").await;
    rekey_student(&rig.sim, 4).await;
    let observer = connect(&rig.staging.url()).await;
    wait_blocked(&observer, &rig.staging.name, "DELETE FROM").await;
    rep.kill();
    holder.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        primary_key_columns(&rig.target, "edfi.student").await,
        ["studentusi"]
    );

    // The snapshot was loaded in the new key: the restarted sink publishes it.
    let rep = rig.connector.run();
    wait_for("the new key in staging", CATCH_UP, || async {
        (primary_key_columns(&rig.target, "edfi.student").await
            == ["studentuniqueid", "studentusi"])
        .then_some(())
    })
    .await;
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_rig_equal(&rig).await;
    assert_eq!(
        compare_table(
            &rig.source,
            &rig.target,
            "edfi",
            "Student",
            &["StudentUSI", "StudentUniqueId", "FirstName"],
            &["StudentUniqueId", "StudentUSI"]
        )
        .await,
        None
    );
    let log = rep.log();
    assert!(
        log.contains("the target takes the source's new primary key with the re-snapshot"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicator_killed_while_it_changes_a_target_loses_nothing() {
    let rig = Rig::new(200, 33).await;
    let rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    // Hold the target so that the sink blocks in the ALTER TABLE that adds the column.
    let holder = lock_table(&rig.staging.url(), "edfi.student", "ACCESS EXCLUSIVE").await;
    tsql(
        &rig.sim,
        "ALTER TABLE edfi.Student ADD NickName nvarchar(30) NULL;\n\
         UPDATE edfi.Student SET NickName = N'Nick' WHERE StudentUSI % 2 = 0;",
    )
    .await
    .unwrap();
    let observer = connect(&rig.staging.url()).await;
    wait_blocked(&observer, &rig.staging.name, "ALTER TABLE").await;
    rep.kill();
    holder.batch_execute("ROLLBACK").await.unwrap();
    tsql(
        &rig.sim,
        "UPDATE edfi.Student SET NickName = N'Nock' WHERE StudentUSI % 3 = 0",
    )
    .await
    .unwrap();

    // The target never got the column: the restarted sink adds it and asks for the table again.
    let rep = rig.connector.run();
    wait_publishes(&rep, 1).await;
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    let log = rep.log();
    assert!(
        log.contains("the table changed at the source while the replicator was stopped"),
        "{log}"
    );
    assert_eq!(
        compare_table(
            &rig.source,
            &rig.target,
            "edfi",
            "Student",
            &["StudentUSI", "FirstName", "NickName"],
            STUDENT_KEY
        )
        .await,
        None
    );
    assert_rig_equal(&rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_and_widened_at_the_source_reaches_the_redshift_target() {
    let mut rig = Rig::new(150, 35).await;
    redshift_rig(&mut rig, None, &[]);
    let rep = rig.connector.run();
    wait_publishes(&rep, 1).await;
    tsql(
        &rig.sim,
        &format!(
            "ALTER TABLE edfi.Student ADD NickName nvarchar(30) NULL;\n\
             ALTER TABLE edfi.Student ALTER COLUMN LastSurname nvarchar(200) NOT NULL;\n\
             UPDATE edfi.Student SET NickName = N'Nick', LastSurname = N'{}' WHERE StudentUSI % 3 = 0;",
            "x".repeat(180)
        ),
    )
    .await
    .unwrap();
    wait_publishes(&rep, 2).await;
    let columns = ["StudentUSI", "FirstName", "LastSurname", "NickName"];
    wait_for(
        "the Redshift target to equal the source",
        CATCH_UP,
        || async {
            compare_table(
                &rig.source,
                &rig.target,
                "edfi",
                "Student",
                &columns,
                STUDENT_KEY,
            )
            .await
            .is_none()
            .then_some(())
        },
    )
    .await;
    // Redshift lengths are bytes: three per character.
    assert_eq!(
        staging_column(&rig.target, "student", "lastsurname")
            .await
            .map(|c| c.1),
        Some(Some(600))
    );
}

/// Redshift does not enforce a primary key, but its planner trusts the declared one: a key
/// changed at the source is declared on the target when the re-snapshot publishes (on the
/// PostgreSQL stand-in, which does enforce it, the rows then must fit the new key).
/// At the source, in one transaction: tracking off, `edfi.Student`'s key replaced by
/// (StudentUniqueId, StudentUSI), tracking on, and every `every`-th student renamed 'Rekeyed'.
async fn rekey_student(sim: &Simulator, every: u32) {
    tsql(
        sim,
        &format!(
            "BEGIN TRANSACTION;\n\
             ALTER TABLE edfi.Student DISABLE CHANGE_TRACKING;\n\
             ALTER TABLE edfi.Student DROP CONSTRAINT Student_PK;\n\
             ALTER TABLE edfi.Student ADD PRIMARY KEY (StudentUniqueId, StudentUSI);\n\
             ALTER TABLE edfi.Student ENABLE CHANGE_TRACKING;\n\
             UPDATE edfi.Student SET FirstName = N'Rekeyed' WHERE StudentUSI % {every} = 0;\n\
             COMMIT;"
        ),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_key_changed_at_the_source_is_declared_on_the_redshift_target() {
    let mut rig = Rig::new(150, 45).await;
    redshift_rig(&mut rig, None, &[]);
    let rep = rig.connector.run();
    wait_publishes(&rep, 1).await;
    rekey_student(&rig.sim, 3).await;
    wait_publishes(&rep, 2).await;
    wait_for("the new key declared", CATCH_UP, || async {
        (primary_key_columns(&rig.target, "edfi.student").await
            == ["studentuniqueid", "studentusi"])
        .then_some(())
    })
    .await;
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_redshift_equal(&rig.source, &rig.target).await;
    assert!(
        rep.log()
            .contains("the target takes the source's new primary key with the re-snapshot"),
        "{}",
        rep.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_made_nullable_while_the_replicator_was_stopped_takes_nulls_after_the_restart() {
    let rig = Rig::new(150, 37).await;
    let rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    rep.kill();
    // Nothing in the target's columns tells this change: the stored shape does.
    tsql(
        &rig.sim,
        "ALTER TABLE edfi.Student ALTER COLUMN FirstName nvarchar(75) NULL;\n\
         UPDATE edfi.Student SET FirstName = NULL WHERE StudentUSI % 5 = 0;",
    )
    .await
    .unwrap();
    let rep = rig.connector.run();
    wait_publishes(&rep, 1).await;
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_eq!(
        staging_column(&rig.target, "student", "firstname")
            .await
            .map(|c| c.2),
        Some("YES".into())
    );
    assert_rig_equal(&rig).await;
    let nulls: i64 = rig
        .target
        .query_one(
            "SELECT count(*) FROM edfi.student WHERE firstname IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(nulls > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integers_and_decimals_widened_at_the_source_are_widened_in_staging() {
    let rig = Rig::new(150, 39).await;
    let rep = rig.connector.run();
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    tsql(
        &rig.sim,
        "ALTER TABLE edfi.Student ALTER COLUMN BirthSexDescriptorId bigint NULL;\n\
         UPDATE edfi.Student SET BirthSexDescriptorId = 5000000000 WHERE StudentUSI % 4 = 0;\n\
         ALTER TABLE edfi.StaffSectionAssociation ALTER COLUMN PercentageContribution decimal(9,4) NULL;\n\
         UPDATE edfi.StaffSectionAssociation SET PercentageContribution = 12345.6789;",
    )
    .await
    .unwrap();
    // Each table changed, then published again: after its re-snapshot.
    wait_for("both tables re-snapshotted", CATCH_UP, || async {
        let log = rep.log();
        let republished = |table: &str| {
            let tag = format!("table={table} ");
            let changed = log.lines().position(|l| {
                l.contains("the table changed at the source: re-snapshotting") && l.contains(&tag)
            })?;
            log.lines()
                .skip(changed)
                .any(|l| l.contains("snapshot published") && l.contains(&tag))
                .then_some(())
        };
        republished("edfi.Student")?;
        republished("edfi.StaffSectionAssociation")
    })
    .await;
    wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert_eq!(
        staging_column(&rig.target, "student", "birthsexdescriptorid")
            .await
            .map(|c| c.0),
        Some("bigint".into())
    );
    let numeric: (i32, i32) = rig
        .target
        .query_one(
            "SELECT numeric_precision::int, numeric_scale::int FROM information_schema.columns \
             WHERE table_schema = 'edfi' AND table_name = 'staffsectionassociation' \
             AND column_name = 'percentagecontribution'",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(numeric, (9, 4));
    assert_rig_equal(&rig).await;
}
