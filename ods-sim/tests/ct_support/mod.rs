//! Shared helpers of the `ct_*` tests: a throw-away database per test with the CT emulation
//! installed, dropped when the guard goes out of scope (also when the test panics).

// Each test crate uses its own subset of the helpers.
#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;

use common::TestDatabase;
use ods_sim::types::{ColumnDef, SqlType, TableDef};
use tokio_postgres::{Client, GenericClient, IsolationLevel, Transaction};

/// A database of its own with the CT emulation installed, dropped (with its sessions) on drop.
pub struct TestDb {
    pub name: String,
    pub client: Client,
    // Last: dropped after the client.
    db: TestDatabase,
}

/// The database name of the CT emulation (as `DB_NAME()` and over TDS).
pub const DATABASE: &str = "EdFi_Test";

impl TestDb {
    /// Creates `odssim_ct_<pid>_<n>` and installs the CT emulation (database name `EdFi_Test`).
    pub async fn new() -> TestDb {
        TestDb::with_prefix("odssim_ct").await
    }

    /// Creates `<prefix>_<pid>_<n>` and installs the CT emulation (database name `EdFi_Test`).
    pub async fn with_prefix(prefix: &str) -> TestDb {
        // From here on the guard drops the database, whatever happens.
        let db = TestDatabase::create(prefix, "").await;
        let client = db.connect().await;
        ods_sim::ct::install(&client, DATABASE)
            .await
            .expect("install ct");
        TestDb {
            name: db.name.clone(),
            client,
            db,
        }
    }

    /// Another session on the same database.
    pub async fn connect(&self) -> Client {
        self.db.connect().await
    }

    /// The connection settings of this database.
    pub fn pg_config(&self) -> tokio_postgres::Config {
        common::conn_str(&self.name)
            .parse()
            .expect("PostgreSQL config")
    }

    /// Creates a user table (not tracked).
    pub async fn create_table(&self, def: &TableDef) {
        ods_sim::ct::create_table(&self.client, def)
            .await
            .expect("create table");
    }

    /// Creates `dbo.<name>` ("Id" int primary key, "Val" int null) and tracks it.
    pub async fn tracked_table(&self, name: &str) {
        self.create_table(&item_table(name)).await;
        ods_sim::ct::enable_table(&self.client, "dbo", name, true)
            .await
            .expect("enable table");
    }
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
                identity: false,
                default: None,
            },
            ColumnDef {
                name: "Val".into(),
                ty: SqlType::Int,
                nullable: true,
                identity: false,
                default: None,
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

pub async fn current_version(client: &impl GenericClient) -> Option<i64> {
    client
        .query_one("select ct.current_version()", &[])
        .await
        .expect("current version")
        .get(0)
}

pub async fn min_valid_version(client: &impl GenericClient, table: &str) -> Option<i64> {
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

/// A repeatable-read transaction of a reader on `client`, with the current version and the
/// minimum valid version of `dbo.<table>` it sees.
pub async fn snapshot<'a>(client: &'a mut Client, table: &str) -> (Transaction<'a>, i64, i64) {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .await
        .unwrap();
    let v = current_version(&tx).await.expect("CT is on");
    let mv = min_valid_version(&tx, table)
        .await
        .expect("table is tracked");
    (tx, v, mv)
}
