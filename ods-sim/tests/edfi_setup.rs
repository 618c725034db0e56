//! Database setup with Change Tracking: create, reuse, recreate when incomplete.

mod edfi_support;

use edfi_support::{assert_consistent, ct_log_rows, server, Db};
use ods_sim::edfi::{self, SetupOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edfi_setup_creates_reuses_and_recreates() {
    let db = Db::new("setup");
    let opts = SetupOptions {
        students: 1_200,
        seed: 3,
        parallelism: 3,
    };
    let first = edfi::setup(&server(), &db.name, &opts).await.unwrap();
    assert!(first.created);
    assert_eq!(first.row_counts.len(), 37);
    assert_eq!(first.row_counts["Student"], 1_200);
    let client = db.client().await;
    assert_consistent(&client).await;

    // Tracking is on for the database (2 days, auto cleanup) and every table; nothing logged yet.
    let (retention, units, auto): (i32, i32, bool) = {
        let r = client
            .query_one(
                "SELECT retention_period, retention_period_units, is_auto_cleanup_on FROM ct.database",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!((retention, units, auto), (2, 3, true));
    let tracked: i64 = client
        .query_one(
            "SELECT count(*) FROM ct.tables WHERE schema_name = 'edfi'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tracked, 37);
    assert_eq!(ct_log_rows(&client).await, 0);

    // A change, then setup again: the database is reused with its data and change history.
    client
        .execute(
            r#"UPDATE edfi."Student" SET "FirstName" = 'Zoë' WHERE "StudentUSI" = 1"#,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(ct_log_rows(&client).await, 1);
    let second = edfi::setup(&server(), &db.name, &opts).await.unwrap();
    assert!(!second.created);
    assert_eq!(second.row_counts, first.row_counts);
    assert_eq!(ct_log_rows(&client).await, 1);
    drop(client);

    // An interrupted setup (no setup_complete) is dropped and created anew.
    let client = db.client().await;
    client
        .execute("DELETE FROM sim.meta WHERE key = 'setup_complete'", &[])
        .await
        .unwrap();
    drop(client);
    let third = edfi::setup(&server(), &db.name, &opts).await.unwrap();
    assert!(third.created);
    assert_eq!(third.row_counts, first.row_counts);
    let client = db.client().await;
    assert_eq!(ct_log_rows(&client).await, 0);
}

#[test]
fn edfi_database_url_replaces_the_database() {
    assert_eq!(
        edfi::database_url("postgres://postgres@127.0.0.1:5432/postgres", "EdFi_Ods"),
        "postgres://postgres@127.0.0.1:5432/EdFi_Ods"
    );
    assert_eq!(
        edfi::database_url("postgresql://u:p@h/db?sslmode=disable", "x y"),
        "postgresql://u:p@h/x%20y?sslmode=disable"
    );
    assert_eq!(
        edfi::database_url("postgres://h:5432", "ods"),
        "postgres://h:5432/ods"
    );
    assert_eq!(
        edfi::database_url("host=127.0.0.1 user=postgres dbname=postgres", "ods"),
        "host=127.0.0.1 user=postgres dbname='ods'"
    );
}

/// Setup time and row counts of a big data set: `EDFI_BENCH_STUDENTS` students (default
/// 100,000). Run with `cargo nextest run -p ods-sim edfi_setup_benchmark --run-ignored only
/// --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn edfi_setup_benchmark() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let students = std::env::var("EDFI_BENCH_STUDENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let db = Db::new("bench");
    let opts = SetupOptions {
        students,
        ..SetupOptions::default()
    };
    let out = edfi::setup(&server(), &db.name, &opts).await.unwrap();
    println!(
        "{students} students: {} rows in {:.1} s",
        out.total_rows(),
        out.elapsed.as_secs_f64()
    );
    for (table, n) in &out.row_counts {
        println!("{table:>56} {n:>10}");
    }
}
