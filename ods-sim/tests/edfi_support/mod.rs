//! Shared helpers of the `edfi_*` tests: a uniquely named database per test on 127.0.0.1:5432,
//! dropped (with its sessions) when the guard goes out of scope, also when the test panics.

#![allow(dead_code)]

use ods_sim::edfi;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio_postgres::Client;

pub const SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The name of a database of this test, dropped on drop.
pub struct Db {
    pub name: String,
}

impl Db {
    /// A fresh name `odssim_edfi_<tag>_<pid>_<n>` (any stale database of that name is dropped).
    pub fn new(tag: &str) -> Db {
        let name = format!(
            "odssim_edfi_{tag}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        drop_database(&name);
        Db { name }
    }

    pub fn url(&self) -> String {
        edfi::database_url(SERVER, &self.name)
    }

    pub async fn client(&self) -> Client {
        edfi::connect(&self.url()).await.expect("connect")
    }

    /// Creates the database with the 37 Ed-Fi tables as plain tables (no CT), as the generator
    /// needs them.
    pub async fn create_plain(&self) -> Client {
        let admin = edfi::connect(SERVER).await.expect("connect");
        admin
            .batch_execute(&format!(
                "CREATE DATABASE \"{}\" ENCODING 'UTF8' TEMPLATE template0",
                self.name
            ))
            .await
            .expect("create database");
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

impl Drop for Db {
    fn drop(&mut self) {
        drop_database(&self.name);
    }
}

fn drop_database(name: &str) {
    let owned = name.to_string();
    // Drop runs inside the test's runtime: use a thread with a runtime of its own.
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let admin = edfi::connect(SERVER).await?;
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{owned}\" WITH (FORCE)"))
                .await?;
            anyhow::Ok(())
        })
    });
    if let Ok(Err(e)) = handle.join() {
        eprintln!("could not drop test database {name}: {e:#}");
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
