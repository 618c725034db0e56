//! `ALTER TABLE … ADD / ALTER COLUMN / DROP COLUMN / DROP CONSTRAINT / ADD PRIMARY KEY` over
//! TDS on a Change-Tracked table: the catalog shows the change, Change Tracking goes on, and
//! SQL Server's errors.

mod tds_support;

use tds_support::raw::RawClient;
use tds_support::*;
use tiberius::ColumnType;

/// `dbo.Item (Id int key, Name nvarchar(20) NULL, Val int NULL)`, tracked, with rows 1 and 2.
async fn tracked_item(client: &mut TdsClient) {
    for sql in [
        "ALTER DATABASE CURRENT SET CHANGE_TRACKING = ON (CHANGE_RETENTION = 2 DAYS, AUTO_CLEANUP = ON)",
        "CREATE TABLE dbo.Item (Id int NOT NULL, Name nvarchar(20) NULL, Val int NULL, \
         CONSTRAINT PK_Item PRIMARY KEY CLUSTERED (Id))",
        "ALTER TABLE dbo.Item ENABLE CHANGE_TRACKING",
        "INSERT INTO dbo.Item (Id, Name, Val) VALUES (1, N'one', 10), (2, N'two', 20)",
    ] {
        run(client, sql).await;
    }
}

/// Runs a batch to its end.
async fn batch(client: &mut TdsClient, sql: &str) -> tiberius::Result<()> {
    client.simple_query(sql).await?.into_results().await?;
    Ok(())
}

async fn run(client: &mut TdsClient, sql: &str) {
    batch(client, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The error of a batch that must fail.
async fn fails(client: &mut TdsClient, sql: &str) -> tiberius::error::Error {
    batch(client, sql)
        .await
        .err()
        .unwrap_or_else(|| panic!("{sql}: expected an error"))
}

/// `(COLUMN_NAME, ORDINAL_POSITION, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH, IS_NULLABLE)` of
/// `dbo.Item` as `INFORMATION_SCHEMA.COLUMNS` shows them, by ordinal.
async fn catalog(client: &mut TdsClient) -> Vec<(String, i32, String, Option<i32>, String)> {
    client
        .query(
            "SELECT COLUMN_NAME, ORDINAL_POSITION, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH, IS_NULLABLE \
             FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = 'dbo' AND TABLE_NAME = 'Item' \
             ORDER BY ORDINAL_POSITION",
            &[],
        )
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<&str, _>(0).unwrap().to_string(),
                r.get::<i32, _>(1).unwrap(),
                r.get::<&str, _>(2).unwrap().to_string(),
                r.get::<i32, _>(3),
                r.get::<&str, _>(4).unwrap().to_string(),
            )
        })
        .collect()
}

fn described(
    name: &str,
    ordinal: i32,
    ty: &str,
    len: Option<i32>,
    nullable: &str,
) -> (String, i32, String, Option<i32>, String) {
    (name.into(), ordinal, ty.into(), len, nullable.into())
}

async fn current_version(client: &mut TdsClient) -> i64 {
    client
        .query("SELECT CHANGE_TRACKING_CURRENT_VERSION()", &[])
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap()
        .get::<i64, _>(0)
        .expect("CT is on")
}

/// `(SYS_CHANGE_OPERATION, Id)` of `dbo.Item` after `last`, by key.
async fn changes(client: &mut TdsClient, last: i64) -> Vec<(String, i32)> {
    client
        .query(
            "SELECT ct.SYS_CHANGE_OPERATION, ct.Id FROM CHANGETABLE(CHANGES dbo.Item, @P1) AS ct \
             ORDER BY ct.Id",
            &[&last],
        )
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<&str, _>(0).unwrap().to_string(),
                r.get::<i32, _>(1).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn tds_alter_table_add_columns_to_a_tracked_table() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    tracked_item(&mut client).await;
    // The declared types of dbo.Item are cached now.
    run(&mut client, "SELECT * FROM dbo.Item").await;
    let before = current_version(&mut client).await;

    run(
        &mut client,
        "ALTER TABLE [dbo].[Item] ADD Note nvarchar(50) NULL, \
         Created datetime2(7) NOT NULL CONSTRAINT DF_Item_Created DEFAULT (getdate()), \
         Code varchar(10)",
    )
    .await;
    assert_eq!(
        catalog(&mut client).await,
        vec![
            described("Id", 1, "int", None, "NO"),
            described("Name", 2, "nvarchar", Some(20), "YES"),
            described("Val", 3, "int", None, "YES"),
            described("Note", 4, "nvarchar", Some(50), "YES"),
            described("Created", 5, "datetime2", None, "NO"),
            described("Code", 6, "varchar", Some(10), "YES"),
        ]
    );
    // DDL is no change of the table's rows.
    assert_eq!(current_version(&mut client).await, before);
    assert_eq!(changes(&mut client, before).await, vec![]);

    // The existing rows got the NOT NULL column's default; the result carries the new
    // columns' declared types (varchar, not the nvarchar of the backing varchar).
    let rows = client
        .query(
            "SELECT Id, Note, Created, Code FROM dbo.Item ORDER BY Id",
            &[],
        )
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].columns()[3].column_type(), ColumnType::BigVarChar);
    for row in &rows {
        assert_eq!(row.get::<&str, _>("Note"), None);
        assert!(row.get::<chrono::NaiveDateTime, _>("Created").is_some());
    }

    run(
        &mut client,
        "UPDATE dbo.Item SET Note = N'changed', Code = 'c' WHERE Id = 2",
    )
    .await;
    run(&mut client, "INSERT INTO dbo.Item (Id) VALUES (3)").await;
    assert_eq!(
        changes(&mut client, before).await,
        vec![("U".to_string(), 2), ("I".to_string(), 3)]
    );
    let row = client
        .query("SELECT Note, Code, Created FROM dbo.Item WHERE Id = 3", &[])
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<&str, _>("Note"), None);
    assert!(row.get::<chrono::NaiveDateTime, _>("Created").is_some());
}

#[tokio::test]
async fn tds_alter_table_refuses_what_sql_server_refuses_to_add() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    tracked_item(&mut client).await;

    let err = fails(&mut client, "ALTER TABLE dbo.Item ADD Flag bit NOT NULL").await;
    assert_eq!(error_number(&err), Some(4901), "{err}");
    assert!(
        err.to_string().contains(
            "ALTER TABLE only allows columns to be added that can contain nulls, or have a \
             DEFAULT definition specified, or the column being added is an identity or timestamp \
             column, or alternatively if none of the previous conditions are satisfied the table \
             must be empty to allow addition of this column. Column 'Flag' cannot be added to \
             non-empty table 'Item' because it does not satisfy these conditions."
        ),
        "{err}"
    );
    let err = fails(
        &mut client,
        "ALTER TABLE dbo.Item ADD X int, NAME nvarchar(5)",
    )
    .await;
    assert_eq!(error_number(&err), Some(2705), "{err}");
    assert!(
        err.to_string().contains(
            "Column names in each table must be unique. Column name 'NAME' in table 'Item' is \
             specified more than once."
        ),
        "{err}"
    );
    let err = fails(&mut client, "ALTER TABLE dbo.Item ADD COLUMN X int").await;
    assert_eq!(error_number(&err), Some(156), "{err}");
    let err = fails(&mut client, "ALTER TABLE dbo.Missing ADD X int").await;
    assert_eq!(error_number(&err), Some(4902), "{err}");
    assert_eq!(catalog(&mut client).await.len(), 3);

    // A rolled back transaction takes its ALTER TABLE with it.
    run(&mut client, "BEGIN TRANSACTION").await;
    run(&mut client, "ALTER TABLE dbo.Item ADD X int NULL").await;
    assert_eq!(catalog(&mut client).await.len(), 4);
    run(&mut client, "ROLLBACK").await;
    assert_eq!(catalog(&mut client).await.len(), 3);

    // An empty table takes a NOT NULL column without a default.
    run(&mut client, "DELETE FROM dbo.Item").await;
    run(&mut client, "ALTER TABLE dbo.Item ADD Flag bit NOT NULL").await;
    assert_eq!(
        catalog(&mut client).await[3],
        described("Flag", 4, "bit", None, "NO")
    );
}

#[tokio::test]
async fn tds_alter_column_widens_and_refuses_truncation_and_key_columns() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    tracked_item(&mut client).await;
    let before = current_version(&mut client).await;

    run(
        &mut client,
        "ALTER TABLE dbo.Item ALTER COLUMN Name nvarchar(100) NOT NULL",
    )
    .await;
    assert_eq!(
        catalog(&mut client).await[1],
        described("Name", 2, "nvarchar", Some(100), "NO")
    );
    let long = "x".repeat(60);
    client
        .execute("UPDATE dbo.Item SET Name = @P1 WHERE Id = 1", &[&long])
        .await
        .unwrap();
    assert_eq!(
        changes(&mut client, before).await,
        vec![("U".to_string(), 1)]
    );

    // Without NULL or NOT NULL the column becomes nullable.
    run(
        &mut client,
        "ALTER TABLE dbo.Item ALTER COLUMN Name nvarchar(100)",
    )
    .await;
    assert_eq!(
        catalog(&mut client).await[1],
        described("Name", 2, "nvarchar", Some(100), "YES")
    );

    let err = fails(
        &mut client,
        "ALTER TABLE dbo.Item ALTER COLUMN Name nvarchar(30)",
    )
    .await;
    assert!(matches!(error_number(&err), Some(2628 | 8152)), "{err}");
    assert!(
        err.to_string()
            .contains("String or binary data would be truncated"),
        "{err}"
    );
    assert_eq!(
        catalog(&mut client).await[1],
        described("Name", 2, "nvarchar", Some(100), "YES")
    );

    let err = fails(
        &mut client,
        "ALTER TABLE dbo.Item ALTER COLUMN Id bigint NOT NULL",
    )
    .await;
    assert_eq!(error_number(&err), Some(5074), "{err}");
    assert!(
        err.to_string()
            .contains("The object 'Item_PK' is dependent on column 'Id'."),
        "{err}"
    );
    let err = fails(&mut client, "ALTER TABLE dbo.Item ALTER COLUMN Nope int").await;
    assert_eq!(error_number(&err), Some(4924), "{err}");
    assert!(
        err.to_string().contains(
            "ALTER TABLE ALTER COLUMN failed because column 'Nope' does not exist in table 'Item'."
        ),
        "{err}"
    );

    run(&mut client, "UPDATE dbo.Item SET Val = 21 WHERE Id = 2").await;
    assert_eq!(
        changes(&mut client, before).await,
        vec![("U".to_string(), 1), ("U".to_string(), 2)]
    );
}

#[tokio::test]
async fn tds_drop_column_of_a_tracked_table() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    tracked_item(&mut client).await;
    let before = current_version(&mut client).await;

    run(&mut client, "ALTER TABLE dbo.Item DROP COLUMN Name").await;
    assert_eq!(
        catalog(&mut client).await,
        vec![
            described("Id", 1, "int", None, "NO"),
            described("Val", 3, "int", None, "YES"),
        ]
    );
    // Column ids are not reused: a column added after the last one was dropped gets a new one.
    run(&mut client, "ALTER TABLE dbo.Item ADD Extra int NULL").await;
    run(&mut client, "ALTER TABLE dbo.Item DROP COLUMN Extra").await;
    run(&mut client, "ALTER TABLE dbo.Item ADD Other int NULL").await;
    assert_eq!(
        catalog(&mut client).await[2],
        described("Other", 5, "int", None, "YES")
    );

    let err = fails(&mut client, "ALTER TABLE dbo.Item DROP COLUMN Nope").await;
    assert_eq!(error_number(&err), Some(4924), "{err}");
    assert!(
        err.to_string().contains(
            "ALTER TABLE DROP COLUMN failed because column 'Nope' does not exist in table 'Item'."
        ),
        "{err}"
    );
    run(
        &mut client,
        "ALTER TABLE dbo.Item DROP COLUMN IF EXISTS Nope",
    )
    .await;

    run(&mut client, "UPDATE dbo.Item SET Val = 11 WHERE Id = 1").await;
    assert_eq!(
        changes(&mut client, before).await,
        vec![("U".to_string(), 1)]
    );
}

/// A snapshot taken before an ALTER TABLE reads the old declared types; what it read is not kept
/// for the sessions that come after. (The reader reads no row of the table before the ALTER:
/// in PostgreSQL that would hold a lock the ALTER waits for.)
#[tokio::test]
async fn tds_types_read_by_an_older_snapshot_are_not_kept() {
    let server = TestServer::start().await;
    let mut reader = server.connect().await;
    tracked_item(&mut reader).await;
    run(
        &mut reader,
        "SET TRANSACTION ISOLATION LEVEL SNAPSHOT; BEGIN TRANSACTION; \
         SELECT CHANGE_TRACKING_CURRENT_VERSION()",
    )
    .await;
    let mut writer = server.connect().await;
    run(
        &mut writer,
        "ALTER TABLE dbo.Item ADD Code varchar(10) NULL",
    )
    .await;
    run(&mut reader, "SELECT Code FROM dbo.Item").await;
    run(&mut reader, "COMMIT").await;

    let rows = writer
        .query("SELECT Code FROM dbo.Item", &[])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(rows[0].columns()[0].column_type(), ColumnType::BigVarChar);
}

/// SQL Server sends two errors for a key column: 5074 naming the primary key, then 4922.
#[tokio::test]
async fn tds_dropping_a_key_column_sends_5074_then_4922() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    tracked_item(&mut client).await;
    let err = fails(&mut client, "ALTER TABLE dbo.Item DROP COLUMN Val, Id").await;
    assert_eq!(error_number(&err), Some(5074), "{err}");

    let mut raw = RawClient::connect(server.addr, "sa", PASSWORD).await;
    raw.batch("ALTER TABLE dbo.Item DROP COLUMN Id").await;
    let response = raw.read_message().await;
    let first = find(
        &response,
        "The object 'Item_PK' is dependent on column 'Id'.",
    );
    let second = find(
        &response,
        "ALTER TABLE DROP COLUMN Id failed because one or more objects access this column.",
    );
    assert!(first < second);
    for (number, at) in [(5074u32, first), (4922, second)] {
        // ERROR token: type, length (2), number (4), state, class, message length (2), text.
        let token = at - 11;
        assert_eq!(response[token], 0xAA);
        assert_eq!(
            u32::from_le_bytes(response[token + 3..token + 7].try_into().unwrap()),
            number
        );
    }
    assert_eq!(catalog(&mut client).await.len(), 3);
}

/// The primary key's columns of `dbo.Item`, in key order, as the catalog views show them.
async fn key_columns(client: &mut TdsClient) -> Vec<String> {
    client
        .query(
            "SELECT kcu.COLUMN_NAME FROM INFORMATION_SCHEMA.TABLE_CONSTRAINTS AS tc \
             JOIN INFORMATION_SCHEMA.KEY_COLUMN_USAGE AS kcu ON kcu.CONSTRAINT_NAME = tc.CONSTRAINT_NAME \
             AND kcu.TABLE_SCHEMA = tc.TABLE_SCHEMA WHERE tc.CONSTRAINT_TYPE = 'PRIMARY KEY' \
             AND tc.TABLE_NAME = 'Item' ORDER BY kcu.ORDINAL_POSITION",
            &[],
        )
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<&str, _>(0).unwrap().to_string())
        .collect()
}

/// A tracked table's key changes only with Change Tracking off; then the key's checks are SQL
/// Server's, and Change Tracking switched on again logs by the new key.
#[tokio::test]
async fn tds_a_tracked_primary_key_changes_only_with_change_tracking_off() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    tracked_item(&mut client).await;
    for (sql, number) in [
        ("ALTER TABLE dbo.Item DROP CONSTRAINT Item_PK", 3735),
        ("ALTER TABLE dbo.Item DROP CONSTRAINT Nope", 3728),
        (
            "ALTER TABLE dbo.Item ADD CONSTRAINT PK_Other PRIMARY KEY (Id, Val)",
            1779,
        ),
    ] {
        let err = fails(&mut client, sql).await;
        assert_eq!(error_number(&err), Some(number), "{sql}: {err}");
    }
    run(&mut client, "ALTER TABLE dbo.Item DISABLE CHANGE_TRACKING").await;
    run(&mut client, "ALTER TABLE dbo.Item DROP CONSTRAINT Item_PK").await;
    assert!(key_columns(&mut client).await.is_empty());
    let err = fails(&mut client, "ALTER TABLE dbo.Item ADD PRIMARY KEY (Val)").await;
    assert_eq!(error_number(&err), Some(8111), "{err}");
    run(
        &mut client,
        "ALTER TABLE dbo.Item ALTER COLUMN Val int NOT NULL",
    )
    .await;
    run(&mut client, "UPDATE dbo.Item SET Val = 10").await;
    let err = fails(&mut client, "ALTER TABLE dbo.Item ADD PRIMARY KEY (Val)").await;
    assert_eq!(error_number(&err), Some(1505), "{err}");
    assert!(
        err.to_string().contains("The duplicate key value is (10)."),
        "{err}"
    );
    run(
        &mut client,
        "ALTER TABLE dbo.Item ADD CONSTRAINT PK_Item PRIMARY KEY CLUSTERED (Val, Id); \
         ALTER TABLE dbo.Item ENABLE CHANGE_TRACKING",
    )
    .await;
    assert_eq!(key_columns(&mut client).await, ["Val", "Id"]);
    let before = current_version(&mut client).await;
    run(
        &mut client,
        "UPDATE dbo.Item SET Name = N'uno' WHERE Id = 1",
    )
    .await;
    let rows = client
        .query(
            "SELECT ct.SYS_CHANGE_OPERATION, ct.Val, ct.Id FROM CHANGETABLE(CHANGES dbo.Item, @P1) AS ct",
            &[&before],
        )
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    let changed: Vec<(&str, i32, i32)> = rows
        .iter()
        .map(|r| {
            (
                r.get::<&str, _>(0).unwrap(),
                r.get::<i32, _>(1).unwrap(),
                r.get::<i32, _>(2).unwrap(),
            )
        })
        .collect();
    assert_eq!(changed, [("U", 10, 1)]);
    let err = fails(&mut client, "ALTER TABLE dbo.Item DROP CONSTRAINT PK_Item").await;
    assert_eq!(error_number(&err), Some(3735), "{err}");
}

/// Where `text` (as UCS-2) starts in a TDS message.
fn find(message: &[u8], text: &str) -> usize {
    let ucs2: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    message
        .windows(ucs2.len())
        .position(|w| w == ucs2)
        .unwrap_or_else(|| panic!("{text} is not in the response"))
}
