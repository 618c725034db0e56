//! The Change Tracking contract (`/work/shared/ct-semantics.md`), rule by rule, against the
//! emulation in PostgreSQL (no TDS involved).

mod ct_support;

use ct_support::{changes, commit, current_version, min_valid_version, ops, snapshot, TestDb};
use ods_sim::ct;
use tokio_postgres::IsolationLevel;

async fn db_with(tables: &[&str]) -> TestDb {
    let db = TestDb::new().await;
    ct::enable_database(&db.client, 2, 3, true).await.unwrap();
    for t in tables {
        db.tracked_table(t).await;
    }
    db
}

#[tokio::test]
async fn ct_versions_are_shared_ordered_and_gapped() {
    let db = db_with(&["A", "B"]).await;
    let c = &db.client;
    let a1 = commit(c, r#"insert into dbo."A" values (1, 0)"#).await;
    let b1 = commit(c, r#"insert into dbo."B" values (1, 0)"#).await;
    let a2 = commit(c, r#"insert into dbo."A" values (2, 0)"#).await;
    let both = commit(
        c,
        r#"begin; insert into dbo."A" values (3, 0); insert into dbo."B" values (3, 0); commit"#,
    )
    .await;
    assert!(a1 < b1 && b1 < a2 && a2 < both, "{a1} {b1} {a2} {both}");

    let a: Vec<i64> = changes(c, "A", None)
        .await
        .iter()
        .map(|c| c.version)
        .collect();
    let b: Vec<i64> = changes(c, "B", None)
        .await
        .iter()
        .map(|c| c.version)
        .collect();
    assert_eq!(a, vec![a1, a2, both]);
    assert_eq!(b, vec![b1, both]);
    // One counter for the database: the versions seen on one table have gaps.
    assert!(a.windows(2).any(|w| w[1] - w[0] > 1));
    assert_eq!(current_version(c).await, Some(both));
}

#[tokio::test]
async fn ct_current_version_is_the_last_committed_transaction() {
    let db = TestDb::new().await;
    let c = &db.client;
    // CT off for the database: NULL.
    assert_eq!(current_version(c).await, None);
    ct::enable_database(c, 2, 3, true).await.unwrap();
    assert_eq!(current_version(c).await, Some(0));
    db.tracked_table("T").await;
    let v0 = current_version(c).await.unwrap();
    assert!(v0 > 0);

    // An open transaction has no version: neither its own session nor others see one.
    let mut w = db.connect().await;
    let tx = w.transaction().await.unwrap();
    tx.batch_execute(r#"insert into dbo."T" values (1, 1)"#)
        .await
        .unwrap();
    assert_eq!(current_version(c).await, Some(v0));
    let own: Option<i64> = tx
        .query_one("select ct.current_version()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(own, Some(v0));
    let own_changes = tx
        .query(r#"select * from ct."changes:dbo.T"(null)"#, &[])
        .await
        .unwrap();
    assert!(
        own_changes.is_empty(),
        "uncommitted changes have no version"
    );
    tx.commit().await.unwrap();
    let v1 = current_version(c).await.unwrap();
    assert!(v1 > v0);

    // Rolled back, or touching no tracked table, or changing no row: no version.
    c.batch_execute(r#"begin; insert into dbo."T" values (2, 1); rollback"#)
        .await
        .unwrap();
    c.batch_execute(
        r#"create table dbo.untracked (id int primary key); insert into dbo.untracked values (1)"#,
    )
    .await
    .unwrap();
    c.batch_execute(r#"update dbo."T" set "Val" = 5 where "Id" = 42"#)
        .await
        .unwrap();
    assert_eq!(current_version(c).await, Some(v1));
}

#[tokio::test]
async fn ct_min_valid_version_rises_on_enable_cleanup_and_truncate() {
    let db = TestDb::new().await;
    let c = &db.client;
    ct::create_table(c, &ct_support::item_table("T"))
        .await
        .unwrap();
    // NULL when CT is off for the database, then for the table.
    assert_eq!(min_valid_version(c, "T").await, None);
    ct::enable_database(c, 2, 3, true).await.unwrap();
    assert_eq!(min_valid_version(c, "T").await, None);

    ct::enable_table(c, "dbo", "T", false).await.unwrap();
    let enabled = current_version(c).await.unwrap();
    let mv1 = min_valid_version(c, "T").await.unwrap();
    assert_eq!(
        mv1, enabled,
        "enabling sets min valid to the enabling version"
    );
    let begin: i64 = c
        .query_one(
            "select begin_version from sys.change_tracking_tables where object_id = ct.object_id('dbo.T')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(begin, enabled);

    commit(c, r#"insert into dbo."T" values (1, 1)"#).await;
    assert_eq!(min_valid_version(c, "T").await, Some(mv1));

    // Disable then enable, with nothing else in between: it still rises.
    ct::disable_table(c, "dbo", "T").await.unwrap();
    assert_eq!(min_valid_version(c, "T").await, None);
    ct::enable_table(c, "dbo", "T", false).await.unwrap();
    let mv2 = min_valid_version(c, "T").await.unwrap();
    assert!(mv2 > mv1, "{mv2} > {mv1}");
    assert!(
        changes(c, "T", None).await.is_empty(),
        "re-enabling starts afresh"
    );

    // Cleanup.
    let v = commit(c, r#"insert into dbo."T" values (2, 1)"#).await;
    let removed = ct::cleanup(c, Some(0)).await.unwrap();
    assert_eq!(removed, Some(v));
    assert_eq!(min_valid_version(c, "T").await, Some(v));

    // TRUNCATE.
    let t = commit(c, r#"truncate dbo."T""#).await;
    assert!(t > v);
    assert_eq!(min_valid_version(c, "T").await, Some(t));

    // Off for the database: NULL again.
    ct::disable_table(c, "dbo", "T").await.unwrap();
    ct::disable_database(c).await.unwrap();
    assert_eq!(min_valid_version(c, "T").await, None);
    assert_eq!(current_version(c).await, None);
}

#[tokio::test]
async fn ct_operation_is_relative_to_the_baseline() {
    let db = db_with(&["T"]).await;
    let c = &db.client;
    let before = current_version(c).await.unwrap();
    let ins = commit(c, r#"insert into dbo."T" values (1, 1)"#).await;
    let mid = commit(c, r#"insert into dbo."T" values (9, 9)"#).await;
    let upd = commit(c, r#"update dbo."T" set "Val" = 2 where "Id" = 1"#).await;

    let from_before = changes(c, "T", Some(before)).await;
    assert_eq!(ops(&from_before), vec![("I", 1), ("I", 9)]);
    assert_eq!(from_before[0].version, upd);
    assert_eq!(from_before[0].creation_version, Some(ins));

    let from_mid = changes(c, "T", Some(mid)).await;
    assert_eq!(ops(&from_mid), vec![("U", 1)]);
    assert_eq!(from_mid[0].version, upd);
    assert_eq!(from_mid[0].creation_version, Some(ins));

    assert!(changes(c, "T", Some(upd)).await.is_empty());
    // NULL baseline: everything retained.
    assert_eq!(ops(&changes(c, "T", None).await), vec![("I", 1), ("I", 9)]);
}

#[tokio::test]
async fn ct_delete_then_reinsert_reads_as_update() {
    let db = db_with(&["T"]).await;
    let c = &db.client;
    let base = commit(c, r#"insert into dbo."T" values (1, 1), (2, 2)"#).await;
    commit(c, r#"delete from dbo."T" where "Id" = 1"#).await;
    let re = commit(c, r#"insert into dbo."T" values (1, 7)"#).await;
    // And within one transaction.
    let same = commit(
        c,
        r#"begin; delete from dbo."T" where "Id" = 2; insert into dbo."T" values (2, 8); commit"#,
    )
    .await;
    let got = changes(c, "T", Some(base)).await;
    assert_eq!(ops(&got), vec![("U", 1), ("U", 2)]);
    assert_eq!(got[0].version, re);
    assert_eq!(got[0].creation_version, Some(re));
    assert_eq!(got[1].version, same);
}

#[tokio::test]
async fn ct_key_update_reads_as_delete_plus_insert() {
    for isolation in [
        IsolationLevel::ReadCommitted,
        IsolationLevel::RepeatableRead,
    ] {
        let db = db_with(&["T"]).await;
        let base = commit(&db.client, r#"insert into dbo."T" values (1, 1), (2, 2)"#).await;
        let mut w = db.connect().await;
        let tx = w
            .build_transaction()
            .isolation_level(isolation)
            .start()
            .await
            .unwrap();
        // 1 → 3 and 2 → 1 in one statement: 2 vanishes, 3 appears, 1 stays (updated).
        tx.batch_execute(
            r#"update dbo."T" set "Id" = case "Id" when 1 then 3 else 1 end where "Id" in (1, 2)"#,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let v = current_version(&db.client).await.unwrap();
        let got = changes(&db.client, "T", Some(base)).await;
        assert_eq!(
            ops(&got),
            vec![("U", 1), ("D", 2), ("I", 3)],
            "{isolation:?}"
        );
        assert!(got.iter().all(|c| c.version == v));
    }
}

#[tokio::test]
async fn ct_insert_then_delete_reads_as_delete() {
    let db = db_with(&["T"]).await;
    let c = &db.client;
    let base = current_version(c).await.unwrap();
    commit(c, r#"insert into dbo."T" values (1, 1)"#).await;
    let del = commit(c, r#"delete from dbo."T" where "Id" = 1"#).await;
    let same = commit(
        c,
        r#"begin; insert into dbo."T" values (2, 1); delete from dbo."T" where "Id" = 2; commit"#,
    )
    .await;
    let got = changes(c, "T", Some(base)).await;
    assert_eq!(ops(&got), vec![("D", 1), ("D", 2)]);
    assert_eq!(got[0].version, del);
    assert_eq!(got[1].version, same);
}

#[tokio::test]
async fn ct_rolled_back_savepoints_leave_no_changes() {
    let db = db_with(&["T"]).await;
    let c = &db.client;
    let base = current_version(c).await.unwrap();
    let v = commit(
        c,
        r#"begin;
           savepoint a; insert into dbo."T" values (1, 1); rollback to savepoint a;
           insert into dbo."T" values (2, 2);
           savepoint b; delete from dbo."T" where "Id" = 2; rollback to savepoint b;
           commit"#,
    )
    .await;
    let got = changes(c, "T", Some(base)).await;
    assert_eq!(ops(&got), vec![("I", 2)]);
    assert_eq!(got[0].version, v);
    // Only the savepoint's work, rolled back: no version at all.
    c.batch_execute(
        r#"begin; savepoint a; insert into dbo."T" values (3, 3); rollback to savepoint a; commit"#,
    )
    .await
    .unwrap();
    assert_eq!(current_version(c).await, Some(v));
}

#[tokio::test]
async fn ct_snapshot_reads_are_consistent() {
    let db = db_with(&["A", "B"]).await;
    let base = commit(
        &db.client,
        r#"begin; insert into dbo."A" values (1, 1); insert into dbo."B" values (1, 1); commit"#,
    )
    .await;
    commit(&db.client, r#"insert into dbo."A" values (2, 2)"#).await;

    let mut r = db.connect().await;
    let (tx, v, mv) = snapshot(&mut r, "A").await;
    let first = changes(&tx, "A", Some(base)).await;
    assert_eq!(ops(&first), vec![("I", 2)]);

    // Others commit and clean up meanwhile.
    commit(
        &db.client,
        r#"begin; insert into dbo."A" values (3, 3); insert into dbo."B" values (3, 3); commit"#,
    )
    .await;
    assert!(ct::cleanup(&db.client, Some(0)).await.unwrap().is_some());
    assert!(min_valid_version(&db.client, "A").await.unwrap() > v);

    // Inside the snapshot nothing moved: same version, same validity, same changes.
    let v_again: i64 = tx
        .query_one("select ct.current_version()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v_again, v);
    let mv_again: i64 = tx
        .query_one("select ct.min_valid_version(ct.object_id('dbo.A'))", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(mv_again, mv);
    assert_eq!(changes(&tx, "A", Some(base)).await, first);
    assert!(changes(&tx, "B", Some(base)).await.is_empty());
    assert!(changes(&tx, "A", Some(v)).await.is_empty());
    tx.commit().await.unwrap();

    // The next snapshot sees the cleanup: baseline V is no longer valid, re-snapshot needed.
    assert!(min_valid_version(&db.client, "A").await.unwrap() > v);
}

#[tokio::test]
async fn ct_commit_table_maps_versions_to_commit_times() {
    let db = db_with(&["T"]).await;
    let c = &db.client;
    let mut versions = Vec::new();
    for i in 0..3 {
        let before: chrono::NaiveDateTime = c
            .query_one(
                "select (clock_timestamp() at time zone 'UTC')::timestamp",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let v = commit(c, &format!(r#"insert into dbo."T" values ({i}, {i})"#)).await;
        let after: chrono::NaiveDateTime = c
            .query_one(
                "select (clock_timestamp() at time zone 'UTC')::timestamp",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let row = c
            .query_one(
                "select commit_ts, xdes_id, commit_csn, commit_time from sys.dm_tran_commit_table \
                 where commit_ts = $1",
                &[&v],
            )
            .await
            .unwrap();
        let commit_time: chrono::NaiveDateTime = row.get(3);
        let slack = chrono::Duration::milliseconds(1);
        assert!(commit_time + slack >= before && commit_time <= after + slack);
        assert_eq!(row.get::<_, i64>(2), v);
        versions.push((v, row.get::<_, i64>(1), commit_time));
    }
    assert!(versions
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].2 <= w[1].2));
    // The change rows join to it on SYS_CHANGE_VERSION = commit_ts.
    let joined: i64 = c
        .query_one(
            r#"select count(*) from ct."changes:dbo.T"(null) ch
               join sys.dm_tran_commit_table t on t.commit_ts = ch."SYS_CHANGE_VERSION""#,
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(joined, 3);
}

#[tokio::test]
async fn ct_cleanup_on_demand_keeps_what_valid_baselines_need() {
    let db = db_with(&["T", "Idle"]).await;
    let c = &db.client;
    let v1 = commit(c, r#"insert into dbo."T" values (1, 1)"#).await;
    let v2 = commit(c, r#"insert into dbo."T" values (2, 2)"#).await;
    let v3 = commit(c, r#"update dbo."T" set "Val" = 9 where "Id" in (1, 2)"#).await;
    let v4 = commit(c, r#"insert into dbo."T" values (4, 4)"#).await;

    // Default retention (2 days): nothing is old enough.
    assert_eq!(ct::cleanup(c, None).await.unwrap(), None);
    assert_eq!(changes(c, "T", None).await.len(), 3);

    // Age the first three transactions by an hour; keep the fourth fresh.
    c.execute(
        "update ct.tx set commit_time = commit_time - interval '1 hour' where version <= $1",
        &[&v3],
    )
    .await
    .unwrap();
    assert_eq!(ct::cleanup(c, Some(1800)).await.unwrap(), Some(v3));
    // The boundary: min valid is the highest removed version, for every tracked table.
    assert_eq!(min_valid_version(c, "T").await, Some(v3));
    assert_eq!(min_valid_version(c, "Idle").await, Some(v3));
    let cleanup_version: i64 = c
        .query_one(
            "select cleanup_version from sys.change_tracking_tables where object_id = ct.object_id('dbo.T')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cleanup_version, v3);
    // A client at exactly min valid still reads every change after it.
    assert_eq!(ops(&changes(c, "T", Some(v3)).await), vec![("I", 4)]);
    // Removed: all retained changes start after v3.
    assert_eq!(ops(&changes(c, "T", None).await), vec![("I", 4)]);
    let gone: i64 = c
        .query_one(
            "select count(*) from sys.dm_tran_commit_table where commit_ts in ($1, $2)",
            &[&v1, &v2],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(gone, 0);

    // Never lowered; cleanup of everything keeps the current version.
    assert_eq!(ct::cleanup(c, Some(0)).await.unwrap(), Some(v4));
    assert_eq!(current_version(c).await, Some(v4));
    assert_eq!(min_valid_version(c, "T").await, Some(v4));
    let v5 = commit(c, r#"delete from dbo."T" where "Id" = 4"#).await;
    assert_eq!(ops(&changes(c, "T", Some(v4)).await), vec![("D", 4)]);
    assert!(v5 > v4);
}

#[tokio::test]
async fn ct_truncate_resets_tracking() {
    let db = db_with(&["T"]).await;
    let c = &db.client;
    commit(c, r#"insert into dbo."T" values (1, 1), (2, 2)"#).await;
    let before = commit(c, r#"update dbo."T" set "Val" = 3"#).await;
    let t = commit(
        c,
        r#"begin; truncate dbo."T"; insert into dbo."T" values (5, 5); commit"#,
    )
    .await;
    assert!(t > before);
    assert_eq!(min_valid_version(c, "T").await, Some(t));
    // The old changes are gone; what the truncating transaction wrote afterwards has its
    // version (a reader re-snapshotting at >= t has it in its snapshot).
    let all = changes(c, "T", None).await;
    assert_eq!(ops(&all), vec![("I", 5)]);
    assert_eq!(all[0].version, t);
    let after = commit(c, r#"insert into dbo."T" values (6, 6)"#).await;
    let got = changes(c, "T", Some(t)).await;
    assert_eq!(ops(&got), vec![("I", 6)]);
    assert_eq!(got[0].version, after);
}

#[tokio::test]
async fn ct_writers_of_any_isolation_level_get_versions() {
    let db = db_with(&["T"]).await;
    let mut w = db.connect().await;
    let mut last = current_version(&db.client).await.unwrap();
    for (i, isolation) in [
        IsolationLevel::ReadCommitted,
        IsolationLevel::RepeatableRead,
        IsolationLevel::Serializable,
    ]
    .into_iter()
    .enumerate()
    {
        let tx = w
            .build_transaction()
            .isolation_level(isolation)
            .start()
            .await
            .unwrap();
        tx.execute(r#"insert into dbo."T" values ($1, 0)"#, &[&(i as i32)])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let v = current_version(&db.client).await.unwrap();
        assert!(v > last, "{isolation:?}");
        let got = changes(&db.client, "T", Some(last)).await;
        assert_eq!(ops(&got), vec![("I", i as i32)]);
        last = v;
    }
}

#[tokio::test]
async fn ct_changes_are_fast_on_a_large_table() {
    let db = TestDb::new().await;
    let c = &db.client;
    ct::enable_database(c, 2, 3, true).await.unwrap();
    ct::create_table(c, &ct_support::item_table("Big"))
        .await
        .unwrap();
    // A million rows loaded, then tracked; one big tracked transaction fills the log.
    c.batch_execute(r#"insert into dbo."Big" select g, g from generate_series(1, 1000000) g"#)
        .await
        .unwrap();
    ct::enable_table(c, "dbo", "Big", true).await.unwrap();
    let bulk = commit(
        c,
        r#"update dbo."Big" set "Val" = "Val" + 1 where "Id" <= 200000"#,
    )
    .await;
    for i in 0..5 {
        commit(
            c,
            &format!(
                r#"update dbo."Big" set "Val" = -1 where "Id" = {}"#,
                i * 1000 + 1
            ),
        )
        .await;
    }
    // The replicator's poll: the changes joined to the base table.
    let sql = format!(
        r#"select ch.*, b."Val" from {}($1) ch left join dbo."Big" b on b."Id" = ch."Id""#,
        ct::changes_function("dbo", "Big")
    );
    let stmt = c.prepare(&sql).await.unwrap();
    let mut best = std::time::Duration::MAX;
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let rows = c.query(&stmt, &[&bulk]).await.unwrap();
        best = best.min(started.elapsed());
        assert_eq!(rows.len(), 5);
    }
    assert!(
        best < std::time::Duration::from_millis(50),
        "changes after the bulk update took {best:?}"
    );
}
