//! Shared helpers of the `ct_*` tests: a throw-away database per test with the CT emulation
//! installed, dropped when the guard goes out of scope (also when the test panics).

// Each test crate uses its own subset of the helpers.
#![allow(dead_code)]

use ods_sim::types::{ColumnDef, SqlType, TableDef};
use std::sync::atomic::{AtomicU32, Ordering};
use tokio_postgres::{Client, GenericClient, NoTls};

const SERVER: &str = "host=127.0.0.1 port=5432 user=postgres";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A database of its own, dropped (with its sessions) on drop.
pub struct TestDb {
    pub name: String,
    pub client: Client,
}

impl TestDb {
    /// Creates `odssim_ct_<pid>_<n>` and installs the CT emulation (database name `EdFi_Test`).
    pub async fn new() -> TestDb {
        let name = format!(
            "odssim_ct_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let admin = connect_to("postgres").await;
        admin
            .batch_execute(&format!("drop database if exists {name} with (force)"))
            .await
            .expect("drop stale test database");
        admin
            .batch_execute(&format!("create database {name}"))
            .await
            .expect("create test database");
        // From here on the guard drops the database, whatever happens.
        let guard = DropGuard(name.clone());
        let client = connect_to(&name).await;
        ods_sim::ct::install(&client, "EdFi_Test")
            .await
            .expect("install ct");
        std::mem::forget(guard);
        TestDb { name, client }
    }

    /// Another session on the same database.
    pub async fn connect(&self) -> Client {
        connect_to(&self.name).await
    }

    /// Creates `dbo.<name>` ("Id" int primary key, "Val" int null) and tracks it.
    pub async fn tracked_table(&self, name: &str) {
        ods_sim::ct::create_table(&self.client, &item_table(name))
            .await
            .expect("create table");
        ods_sim::ct::enable_table(&self.client, "dbo", name, true)
            .await
            .expect("enable table");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_database(&self.name);
    }
}

struct DropGuard(String);

impl Drop for DropGuard {
    fn drop(&mut self) {
        drop_database(&self.0);
    }
}

fn drop_database(name: &str) {
    let name = name.to_string();
    // Drop runs inside the test's runtime: use a thread with a runtime of its own.
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let admin = connect_to("postgres").await;
            admin
                .batch_execute(&format!("drop database if exists {name} with (force)"))
                .await
        })
    });
    if let Ok(Err(e)) = handle.join() {
        eprintln!("could not drop test database: {e}");
    }
}

pub async fn connect_to(dbname: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(&format!("{SERVER} dbname={dbname}"), NoTls)
        .await
        .expect("connect to 127.0.0.1:5432");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// `dbo.<name>` ("Id" int primary key, "Val" int null).
pub fn item_table(name: &str) -> TableDef {
    TableDef {
        schema: "dbo".into(),
        name: name.into(),
        columns: vec![
            ColumnDef {
                name: "Id".into(),
                ty: SqlType::Int,
                nullable: false,
            },
            ColumnDef {
                name: "Val".into(),
                ty: SqlType::Int,
                nullable: true,
            },
        ],
        primary_key: vec!["Id".into()],
    }
}

/// One row of `CHANGETABLE(CHANGES dbo.<table>, last)` of an item table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub version: i64,
    pub creation_version: Option<i64>,
    pub op: String,
    pub id: i32,
}

/// The changes of item table `dbo.<table>` after `last`, by id.
pub async fn changes(client: &impl GenericClient, table: &str, last: Option<i64>) -> Vec<Change> {
    let sql = format!(
        "select \"SYS_CHANGE_VERSION\", \"SYS_CHANGE_CREATION_VERSION\", \
         \"SYS_CHANGE_OPERATION\"::text, \"SYS_CHANGE_COLUMNS\", \"SYS_CHANGE_CONTEXT\", \"Id\" \
         from {}($1) order by \"Id\"",
        ods_sim::ct::changes_function("dbo", table)
    );
    client
        .query(&sql, &[&last])
        .await
        .expect("read changes")
        .iter()
        .map(|r| {
            let columns: Option<Vec<u8>> = r.get(3);
            let context: Option<Vec<u8>> = r.get(4);
            assert!(columns.is_none() && context.is_none());
            Change {
                version: r.get(0),
                creation_version: r.get(1),
                op: r.get(2),
                id: r.get(5),
            }
        })
        .collect()
}

/// `(op, id)` pairs of a change list, for compact assertions.
pub fn ops(changes: &[Change]) -> Vec<(&str, i32)> {
    changes.iter().map(|c| (c.op.as_str(), c.id)).collect()
}

pub async fn current_version(client: &Client) -> Option<i64> {
    client
        .query_one("select ct.current_version()", &[])
        .await
        .expect("current version")
        .get(0)
}

pub async fn min_valid_version(client: &Client, table: &str) -> Option<i64> {
    client
        .query_one(
            "select ct.min_valid_version(ct.object_id($1))",
            &[&format!("dbo.{table}")],
        )
        .await
        .expect("min valid version")
        .get(0)
}

/// Runs `sql` (one or more statements) and returns the current version afterwards.
pub async fn commit(client: &Client, sql: &str) -> i64 {
    client.batch_execute(sql).await.expect("write");
    current_version(client).await.expect("CT is on")
}
