//! Sessions over TDS with tiberius: login, batches, RPC, errors, transactions, concurrency.

mod tds_support;

use futures_util::future::join_all;
use ods_sim::types::SqlType;
use tds_support::*;

#[tokio::test]
async fn tds_login_and_simple_query() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let row = client
        .simple_query("SELECT 1 AS one")
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<i32, _>("one"), Some(1));
    // The connection is reusable after a complete result.
    let rows = client
        .query("SELECT @P1 AS a", &[&42i64])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(rows[0].get::<i64, _>(0), Some(42));
}

#[tokio::test]
async fn tds_wrong_password_or_user_fails_with_18456() {
    let server = TestServer::start().await;
    for (user, password) in [("sa", "wrong"), ("bob", PASSWORD), ("sa", "")] {
        let err = server
            .connect_as(user, password)
            .await
            .err()
            .unwrap_or_else(|| panic!("expected an error: login must fail"));
        assert_eq!(error_number(&err), Some(18456), "{user}: {err}");
        assert!(
            err.to_string()
                .contains(&format!("Login failed for user '{user}'.")),
            "{err}"
        );
    }
    // The right credentials still work.
    server.connect().await;
}

#[tokio::test]
async fn tds_errors_keep_the_connection_usable() {
    let server = TestServer::start().await;
    server
        .db
        .create_table(&table(
            "Item",
            vec![
                col("Id", SqlType::Int, false),
                col("Name", SqlType::NVarChar(Some(20)), true),
            ],
        ))
        .await;
    let mut client = server.connect().await;

    let err = client
        .simple_query("SELECT * FROM dbo.NoSuchTable")
        .await
        .err()
        .unwrap_or_else(|| panic!("expected an error: unknown table"));
    assert_eq!(error_number(&err), Some(208), "{err}");

    let err = client
        .simple_query("SELECT NoSuchColumn FROM dbo.Item")
        .await
        .err()
        .unwrap_or_else(|| panic!("expected an error: unknown column"));
    assert_eq!(error_number(&err), Some(207), "{err}");

    client
        .execute(
            "INSERT INTO dbo.Item (Id, Name) VALUES (@P1, @P2)",
            &[&1i32, &"a"],
        )
        .await
        .unwrap();
    let err = client
        .execute(
            "INSERT INTO dbo.Item (Id, Name) VALUES (@P1, @P2)",
            &[&1i32, &"b"],
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("expected an error: duplicate key"));
    assert_eq!(error_number(&err), Some(2627), "{err}");

    let rows = client
        .query("SELECT Id, Name FROM dbo.Item", &[])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<&str, _>("Name"), Some("a"));
}

#[tokio::test]
async fn tds_row_counts_and_transactions() {
    let server = TestServer::start().await;
    server
        .db
        .create_table(&table(
            "Item",
            vec![
                col("Id", SqlType::Int, false),
                col("Val", SqlType::Int, true),
            ],
        ))
        .await;
    let mut client = server.connect().await;
    let done = client
        .execute(
            "INSERT INTO dbo.Item (Id, Val) VALUES (1, 10), (2, 20), (3, 30)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(done.total(), 3);
    let done = client
        .execute(
            "UPDATE dbo.Item SET Val = Val + 1 WHERE Id >= @P1",
            &[&2i32],
        )
        .await
        .unwrap();
    assert_eq!(done.total(), 2);

    // A rolled back transaction leaves nothing behind.
    client.simple_query("BEGIN TRANSACTION").await.unwrap();
    client.execute("DELETE FROM dbo.Item", &[]).await.unwrap();
    client.simple_query("ROLLBACK").await.unwrap();
    let n = client
        .query("SELECT COUNT(*) FROM dbo.Item", &[])
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap()
        .get::<i32, _>(0);
    assert_eq!(n, Some(3));

    // A failing statement inside a transaction ends its batch; the transaction goes on and
    // commits what succeeded, as in SQL Server.
    client.simple_query("BEGIN TRANSACTION").await.unwrap();
    client
        .execute("DELETE FROM dbo.Item WHERE Id = 1", &[])
        .await
        .unwrap();
    let err = client
        .simple_query("SELECT * FROM dbo.Missing")
        .await
        .err()
        .unwrap();
    assert_eq!(error_number(&err), Some(208));
    let err = client
        .execute("INSERT INTO dbo.Item (Id, Val) VALUES (2, 0)", &[])
        .await
        .err()
        .unwrap();
    assert_eq!(error_number(&err), Some(2627));
    client.simple_query("COMMIT").await.unwrap();
    let err = client.simple_query("ROLLBACK").await.err().unwrap();
    assert_eq!(error_number(&err), Some(3903), "{err}");
    let err = client.simple_query("COMMIT").await.err().unwrap();
    assert_eq!(error_number(&err), Some(3902), "{err}");

    // Snapshot transactions commit.
    client
        .simple_query("SET TRANSACTION ISOLATION LEVEL SNAPSHOT; BEGIN TRANSACTION")
        .await
        .unwrap();
    client
        .execute("UPDATE dbo.Item SET Val = 0 WHERE Id = 3", &[])
        .await
        .unwrap();
    client.simple_query("COMMIT TRANSACTION").await.unwrap();
    let rows = client
        .query("SELECT Id FROM dbo.Item ORDER BY Id", &[])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    let ids: Vec<i32> = rows.iter().map(|r| r.get(0).unwrap()).collect();
    assert_eq!(ids, vec![2, 3]);
}

#[tokio::test]
async fn tds_unsupported_statement_is_an_error_not_a_hangup() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let err = client
        .simple_query("BACKUP DATABASE x TO DISK = 'y'")
        .await
        .err()
        .unwrap_or_else(|| panic!("expected an error: unsupported"));
    assert!(error_number(&err).is_some(), "{err}");
    let err = client
        .query("EXEC dbo.no_such_procedure", &[])
        .await
        .err()
        .unwrap_or_else(|| panic!("expected an error: unsupported"));
    assert!(error_number(&err).is_some(), "{err}");
    let row = client
        .simple_query("SELECT 2")
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<i32, _>(0), Some(2));
}

#[tokio::test]
async fn tds_fifty_concurrent_connections() {
    let server = TestServer::start().await;
    let tasks = (0..50i32).map(|i| {
        let server = &server;
        async move {
            let mut client = server.connect().await;
            for j in 0..5i32 {
                let row = client
                    .query("SELECT @P1 * 100 + @P2", &[&i, &j])
                    .await
                    .unwrap()
                    .into_row()
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(row.get::<i32, _>(0), Some(i * 100 + j));
            }
        }
    });
    join_all(tasks).await;
}

/// A login without VIEW SERVER STATE (`--no-view-server-state`): `HAS_PERMS_BY_NAME` says so
/// and grants the rest, and `sys.dm_tran_commit_table` shows a commit only once it is a minute
/// old (SQL Server shows such a login a commit after the next checkpoint); with the permission
/// every commit shows at once.
#[tokio::test]
async fn tds_a_login_without_view_server_state_sees_commits_only_after_a_minute() {
    for granted in [true, false] {
        let server = TestServer::start_configured(|c| c.view_server_state = granted).await;
        server
            .db
            .client
            .batch_execute(
                "INSERT INTO ct.tx (txid, version, commit_time) VALUES \
                 (900001, 900001, now() - interval '2 minutes'), (900002, 900002, now())",
            )
            .await
            .unwrap();
        let mut client = server.connect().await;
        let row = client
            .simple_query(
                "SELECT HAS_PERMS_BY_NAME(NULL, NULL, 'VIEW SERVER STATE'), \
                 HAS_PERMS_BY_NAME('edfi.Student', 'OBJECT', 'SELECT')",
            )
            .await
            .unwrap()
            .into_row()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (row.get::<i32, _>(0), row.get::<i32, _>(1)),
            (Some(i32::from(granted)), Some(1))
        );
        let seen: Vec<i64> = client
            .simple_query(
                "SELECT commit_ts FROM sys.dm_tran_commit_table \
                 WHERE commit_ts > 900000 ORDER BY commit_ts",
            )
            .await
            .unwrap()
            .into_first_result()
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<i64, _>(0).unwrap())
            .collect();
        let expected: &[i64] = if granted {
            &[900001, 900002]
        } else {
            &[900001]
        };
        assert_eq!(seen, expected, "VIEW SERVER STATE granted: {granted}");
    }
}
