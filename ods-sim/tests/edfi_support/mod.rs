//! Shared helpers of the `edfi_*` tests: a uniquely named database per test on 127.0.0.1:$PGPORT,
//! dropped (with its sessions) when the guard goes out of scope, also when the test panics.

#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;

use common::TestDatabase;
use ods_sim::edfi;
use std::collections::BTreeMap;
use tokio_postgres::Client;

/// The tests' PostgreSQL server (see `common::pg_port`), as a URL of its `postgres` database.
pub fn server() -> String {
    format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        common::pg_port()
    )
}

/// The name of a database of this test, dropped on drop.
pub struct Db {
    pub name: String,
    db: TestDatabase,
}

impl Db {
    /// A fresh name `odssim_edfi_<tag>_<pid>_<n>` (any stale database of that name is dropped).
    pub fn new(tag: &str) -> Db {
        let db = TestDatabase::reserve(&format!("odssim_edfi_{tag}"));
        Db {
            name: db.name.clone(),
            db,
        }
    }

    pub fn url(&self) -> String {
        edfi::database_url(&server(), &self.name)
    }

    pub async fn client(&self) -> Client {
        edfi::connect(&self.url()).await.expect("connect")
    }

    /// Creates the database with the 37 Ed-Fi tables as plain tables (no CT), as the generator
    /// needs them.
    pub async fn create_plain(&self) -> Client {
        self.db
            .create_database("ENCODING 'UTF8' TEMPLATE template0")
            .await;
        let client = self.client().await;
        client.batch_execute("CREATE SCHEMA edfi").await.unwrap();
        for t in edfi::tables() {
            let mut items: Vec<String> = t
                .columns
                .iter()
                .map(|c| {
                    format!(
                        "\"{}\" {}{}",
                        c.name,
                        c.ty.pg_type(),
                        if c.nullable { "" } else { " NOT NULL" }
                    )
                })
                .collect();
            let pk: Vec<String> = t.primary_key.iter().map(|k| format!("\"{k}\"")).collect();
            items.push(format!("PRIMARY KEY ({})", pk.join(", ")));
            client
                .batch_execute(&format!(
                    "CREATE TABLE edfi.\"{}\" ({})",
                    t.name,
                    items.join(", ")
                ))
                .await
                .unwrap();
        }
        client
    }
}

/// An md5 hash of each table's content (rows sorted), optionally without the columns that carry
/// wall-clock time (`CreateDate`, `LastModifiedDate`).
pub async fn table_hashes(client: &Client, without_timestamps: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for t in edfi::tables() {
        let cols: Vec<String> = t
            .columns
            .iter()
            .filter(|c| {
                !without_timestamps || !matches!(c.name.as_str(), "CreateDate" | "LastModifiedDate")
            })
            .map(|c| format!("coalesce(\"{}\"::text, '<null>')", c.name))
            .collect();
        let sql = format!(
            "SELECT coalesce(md5(string_agg(r, E'\\n' ORDER BY r)), '') FROM \
             (SELECT concat_ws('|', {}) AS r FROM edfi.\"{}\") x",
            cols.join(", "),
            t.name
        );
        let h: String = client.query_one(&sql, &[]).await.unwrap().get(0);
        out.insert(t.name, h);
    }
    out
}

/// Rows in the change logs of all 37 tables.
pub async fn ct_log_rows(client: &Client) -> u64 {
    let mut n = 0;
    for t in edfi::tables() {
        let sql = format!(
            "SELECT count(*) FROM {}",
            ods_sim::ct::log_table("edfi", &t.name)
        );
        let c: i64 = client.query_one(&sql, &[]).await.unwrap().get(0);
        n += c as u64;
    }
    n
}

/// Asserts the data is referentially consistent and keeps the workload invariant.
pub async fn assert_consistent(client: &Client) {
    let dangling = edfi::dangling_references(client, "edfi").await.unwrap();
    assert!(dangling.is_empty(), "dangling references: {dangling:?}");
    let broken = edfi::invariant_violations(client, "edfi").await.unwrap();
    assert_eq!(
        broken, 0,
        "school associations without a section association at that school"
    );
}
