//! What every test support module shares: a throw-away PostgreSQL database per test on
//! 127.0.0.1:$PGPORT (default 5432; user postgres), uniquely named per process and counter, dropped WITH (FORCE)
//! when its guard goes out of scope, also when the test panics.
//!
//! Used by `ct_support`, `tds_support`, `edfi_support` and the unit tests of
//! `src/sql/pg_tests.rs`, so it depends on nothing but `tokio` and `tokio-postgres`.

// Each user takes its own subset.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use tokio_postgres::{Client, NoTls};

/// The port of the tests' PostgreSQL server on 127.0.0.1: `PGPORT` as `scripts/test` exports it
/// (a cluster of its own when the system's server asks for a password), else 5432.
pub fn pg_port() -> u16 {
    std::env::var("PGPORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5432)
}

/// The PostgreSQL server of the tests, without a database.
pub fn pg_server() -> String {
    format!("host=127.0.0.1 port={} user=postgres", pg_port())
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `<prefix>_<pid>_<n>`: unique within this process and across concurrent test processes.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// The key-value connection string of database `dbname`.
pub fn conn_str(dbname: &str) -> String {
    format!("{} dbname={dbname}", pg_server())
}

/// A session on database `dbname`; its connection runs on the current runtime.
pub async fn connect(dbname: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(&conn_str(dbname), NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "connect to PostgreSQL on 127.0.0.1:{} as postgres: {e}",
                pg_port()
            )
        });
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A database of this test, dropped (with its sessions) on drop.
pub struct TestDatabase {
    pub name: String,
}

impl TestDatabase {
    /// A fresh name `<prefix>_<pid>_<n>`; any stale database of that name is dropped, none is
    /// created (for code under test that creates the database itself).
    pub fn reserve(prefix: &str) -> TestDatabase {
        let name = unique_name(prefix);
        drop_database(&name);
        TestDatabase { name }
    }

    /// [`reserve`](Self::reserve), then [`create_database`](Self::create_database).
    pub async fn create(prefix: &str, options: &str) -> TestDatabase {
        let db = TestDatabase::reserve(prefix);
        db.create_database(options).await;
        db
    }

    /// `CREATE DATABASE "<name>" <options>`.
    pub async fn create_database(&self, options: &str) {
        connect("postgres")
            .await
            .batch_execute(&format!("CREATE DATABASE \"{}\" {options}", self.name))
            .await
            .expect("create test database");
    }

    /// A new session on this database.
    pub async fn connect(&self) -> Client {
        connect(&self.name).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        drop_database(&self.name);
    }
}

/// `DROP DATABASE IF EXISTS "<name>" WITH (FORCE)`, blocking. Usable inside a tokio runtime (as
/// in `Drop`): it runs on a thread with a runtime of its own.
pub fn drop_database(name: &str) {
    let owned = name.to_string();
    let dropped = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let (admin, connection) = tokio_postgres::connect(&conn_str("postgres"), NoTls).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{owned}\" WITH (FORCE)"))
                .await?;
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        })
    })
    .join();
    match dropped {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("could not drop test database {name}: {e}"),
        Err(_) => eprintln!("could not drop test database {name}: the dropping thread panicked"),
    }
}
