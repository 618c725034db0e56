//! The SQL Server catalog views and object functions installed by `ct::install`.

mod ct_support;

use ct_support::TestDb;
use ods_sim::ct;
use ods_sim::types::{ColumnDef, SqlType, TableDef};

fn col(name: &str, ty: SqlType, nullable: bool) -> ColumnDef {
    ColumnDef {
        name: name.into(),
        ty,
        nullable,
        identity: false,
        default: None,
    }
}

fn student() -> TableDef {
    TableDef {
        schema: "edfi".into(),
        name: "Student".into(),
        columns: vec![
            col("StudentUSI", SqlType::Int, false),
            col("SchoolId", SqlType::BigInt, false),
            col("FirstName", SqlType::NVarChar(Some(75)), false),
            col("Notes", SqlType::NVarChar(None), true),
            col("Code", SqlType::VarChar(Some(10)), true),
            col(
                "Amount",
                SqlType::Decimal {
                    precision: 9,
                    scale: 2,
                },
                true,
            ),
            col("Grade", SqlType::TinyInt, true),
            col("Active", SqlType::Bit, true),
            col("BirthDate", SqlType::Date, true),
            col("LastModifiedDate", SqlType::DateTime2 { scale: 7 }, false),
            col("Id", SqlType::UniqueIdentifier, false),
            col("Blob", SqlType::VarBinary(None), true),
            col("Score", SqlType::Float, true),
        ],
        primary_key: vec!["SchoolId".into(), "StudentUSI".into()],
    }
}

#[tokio::test]
async fn ct_catalog_views_describe_user_tables() {
    let db = TestDb::new().await;
    let c = &db.client;
    c.batch_execute("create schema edfi").await.unwrap();
    ct::create_table(c, &student()).await.unwrap();

    let rows = c
        .query(
            r#"select "COLUMN_NAME"::text, "ORDINAL_POSITION", "IS_NULLABLE"::text, "DATA_TYPE"::text,
                      "CHARACTER_MAXIMUM_LENGTH", "NUMERIC_PRECISION"::int, "NUMERIC_SCALE",
                      "DATETIME_PRECISION"::int, "TABLE_CATALOG"::text
               from "INFORMATION_SCHEMA"."COLUMNS"
               where "TABLE_SCHEMA" = 'edfi' and "TABLE_NAME" = 'Student'
               order by "ORDINAL_POSITION""#,
            &[],
        )
        .await
        .unwrap();
    type Described = (
        String,
        i32,
        String,
        String,
        Option<i32>,
        Option<i32>,
        Option<i32>,
        Option<i32>,
    );
    let got: Vec<Described> = rows
        .iter()
        .map(|r| {
            assert_eq!(r.get::<_, String>(8), "EdFi_Test");
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
                r.get(7),
            )
        })
        .collect();
    let want: Vec<Described> = vec![
        (
            "StudentUSI".into(),
            1,
            "NO".into(),
            "int".into(),
            None,
            Some(10),
            Some(0),
            None,
        ),
        (
            "SchoolId".into(),
            2,
            "NO".into(),
            "bigint".into(),
            None,
            Some(19),
            Some(0),
            None,
        ),
        (
            "FirstName".into(),
            3,
            "NO".into(),
            "nvarchar".into(),
            Some(75),
            None,
            None,
            None,
        ),
        (
            "Notes".into(),
            4,
            "YES".into(),
            "nvarchar".into(),
            Some(-1),
            None,
            None,
            None,
        ),
        (
            "Code".into(),
            5,
            "YES".into(),
            "varchar".into(),
            Some(10),
            None,
            None,
            None,
        ),
        (
            "Amount".into(),
            6,
            "YES".into(),
            "decimal".into(),
            None,
            Some(9),
            Some(2),
            None,
        ),
        (
            "Grade".into(),
            7,
            "YES".into(),
            "tinyint".into(),
            None,
            Some(3),
            Some(0),
            None,
        ),
        (
            "Active".into(),
            8,
            "YES".into(),
            "bit".into(),
            None,
            None,
            None,
            None,
        ),
        (
            "BirthDate".into(),
            9,
            "YES".into(),
            "date".into(),
            None,
            None,
            None,
            Some(0),
        ),
        (
            "LastModifiedDate".into(),
            10,
            "NO".into(),
            "datetime2".into(),
            None,
            None,
            None,
            Some(7),
        ),
        (
            "Id".into(),
            11,
            "NO".into(),
            "uniqueidentifier".into(),
            None,
            None,
            None,
            None,
        ),
        (
            "Blob".into(),
            12,
            "YES".into(),
            "varbinary".into(),
            Some(-1),
            None,
            None,
            None,
        ),
        (
            "Score".into(),
            13,
            "YES".into(),
            "float".into(),
            None,
            Some(53),
            None,
            None,
        ),
    ];
    assert_eq!(got, want);

    // The backing PostgreSQL types are SqlType::pg_type(), NOT NULL as declared.
    let probe: Vec<String> = student()
        .columns
        .iter()
        .enumerate()
        .map(|(i, col)| format!("c{i} {}", col.ty.pg_type()))
        .collect();
    c.batch_execute(&format!("create temp table probe ({})", probe.join(", ")))
        .await
        .unwrap();
    let types = |table: &'static str| async move {
        c.query(
            "select format_type(atttypid, atttypmod), attnotnull from pg_attribute \
             where attrelid = $1::text::regclass and attnum > 0 order by attnum",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, bool>(1)))
        .collect::<Vec<_>>()
    };
    let declared: Vec<(String, bool)> = types("probe")
        .await
        .into_iter()
        .zip(student().columns)
        .map(|((ty, _), col)| (ty, !col.nullable))
        .collect();
    assert_eq!(types("edfi.\"Student\"").await, declared);

    // Primary key in TABLE_CONSTRAINTS and KEY_COLUMN_USAGE, key order kept.
    let pk: Vec<(String, String)> = c
        .query(
            r#"select tc."CONSTRAINT_NAME"::text, tc."CONSTRAINT_TYPE"::text
               from "INFORMATION_SCHEMA"."TABLE_CONSTRAINTS" tc
               where tc."TABLE_SCHEMA" = 'edfi' and tc."TABLE_NAME" = 'Student'"#,
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        pk,
        vec![("Student_PK".to_string(), "PRIMARY KEY".to_string())]
    );
    let keys: Vec<(String, i32)> = c
        .query(
            r#"select "COLUMN_NAME"::text, "ORDINAL_POSITION" from "INFORMATION_SCHEMA"."KEY_COLUMN_USAGE"
               where "CONSTRAINT_NAME" = 'Student_PK' order by "ORDINAL_POSITION""#,
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        keys,
        vec![("SchoolId".to_string(), 1), ("StudentUSI".to_string(), 2)]
    );

    // TABLES, sys.tables, sys.objects, sys.schemas agree on ids.
    let table_type: String = c
        .query_one(
            r#"select "TABLE_TYPE"::text from "INFORMATION_SCHEMA"."TABLES"
               where "TABLE_SCHEMA" = 'edfi' and "TABLE_NAME" = 'Student'"#,
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(table_type, "BASE TABLE");
    let row = c
        .query_one(
            "select t.object_id, t.schema_id, s.name::text, o.type::text, o.type_desc::text, \
                    ct.object_id('edfi.Student'), ct.object_id('[edfi].[Student]'), \
                    ct.object_id('EdFi_Test.edfi.student'), ct.object_name(t.object_id), \
                    ct.object_schema_name(t.object_id) \
             from sys.tables t join sys.schemas s on s.schema_id = t.schema_id \
             join sys.objects o on o.object_id = t.object_id where t.name = 'Student'",
            &[],
        )
        .await
        .unwrap();
    let id: i32 = row.get(0);
    assert_eq!(row.get::<_, String>(2), "edfi");
    assert_eq!(row.get::<_, String>(3).trim_end(), "U");
    assert_eq!(row.get::<_, String>(4), "USER_TABLE");
    assert_eq!(row.get::<_, Option<i32>>(5), Some(id));
    assert_eq!(row.get::<_, Option<i32>>(6), Some(id));
    assert_eq!(row.get::<_, Option<i32>>(7), Some(id));
    assert_eq!(row.get::<_, String>(8), "Student");
    assert_eq!(row.get::<_, String>(9), "edfi");
    let absent: Option<i32> = c
        .query_one("select ct.object_id('edfi.Nope')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(absent, None);
    let pk_parent: i32 = c
        .query_one(
            "select parent_object_id from sys.objects where name = 'Student_PK' and type = 'PK'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pk_parent, id);
    let dbo: i32 = c
        .query_one("select schema_id from sys.schemas where name = 'dbo'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(dbo, 1);
    // System objects are not user tables.
    let internal: i64 = c
        .query_one(
            "select count(*) from sys.tables where name in ('tx', 'tables', 'columns', 'meta')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(internal, 0);

    // DROP TABLE forgets the declared types and the tracking.
    ct::enable_database(c, 2, 3, true).await.unwrap();
    ct::enable_table(c, "edfi", "Student", true).await.unwrap();
    c.batch_execute(r#"drop table edfi."Student""#)
        .await
        .unwrap();
    let left: i64 = c
        .query_one(
            "select (select count(*) from sim.columns) + (select count(*) from ct.tables) \
             + (select count(*) from pg_class where relnamespace = 'ct'::regnamespace \
                and relname like 'log:%')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn ct_catalog_views_describe_the_database_and_tracking() {
    let db = TestDb::new().await;
    let c = &db.client;
    // Installing twice is harmless.
    ct::install(c, "EdFi_Test").await.unwrap();
    let none: i64 = c
        .query_one("select count(*) from sys.change_tracking_databases", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(none, 0);
    ct::enable_database(c, 3, 2, false).await.unwrap();
    let row = c
        .query_one(
            "select database_id, is_auto_cleanup_on, retention_period, \
                    retention_period_units_desc::text, retention_period_units::int \
             from sys.change_tracking_databases",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 5);
    assert!(!row.get::<_, bool>(1));
    assert_eq!(row.get::<_, i32>(2), 3);
    assert_eq!(row.get::<_, String>(3), "HOURS");
    assert_eq!(row.get::<_, i32>(4), 2);

    let row = c
        .query_one(
            "select database_id, snapshot_isolation_state::int, snapshot_isolation_state_desc::text, \
                    is_read_committed_snapshot_on from sys.databases where name = 'EdFi_Test'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 5);
    assert_eq!(row.get::<_, i32>(1), 1);
    assert_eq!(row.get::<_, String>(2), "ON");
    assert!(row.get::<_, bool>(3));

    db.tracked_table("T").await;
    let row = c
        .query_one(
            "select object_id, is_track_columns_updated_on, min_valid_version, begin_version, \
                    cleanup_version from sys.change_tracking_tables",
            &[],
        )
        .await
        .unwrap();
    let v = ct_support::current_version(c).await.unwrap();
    assert_eq!(
        Some(row.get::<_, i32>(0)),
        c.query_one("select ct.object_id('T')", &[])
            .await
            .unwrap()
            .get::<_, Option<i32>>(0)
    );
    assert!(row.get::<_, bool>(1));
    assert_eq!(row.get::<_, i64>(2), v);
    assert_eq!(row.get::<_, i64>(3), v);
    assert_eq!(row.get::<_, i64>(4), 0);

    // Errors as SQL Server raises them.
    let message = |e: tokio_postgres::Error| {
        let db = e.as_db_error().expect("a database error");
        format!("{} {:?}", db.message(), db.hint())
    };
    let err = message(ct::enable_table(c, "dbo", "T", true).await.unwrap_err());
    assert!(
        err.contains("already enabled") && err.contains("4996"),
        "{err}"
    );
    c.batch_execute("create table dbo.nokey (a int)")
        .await
        .unwrap();
    let err = message(ct::enable_table(c, "dbo", "nokey", true).await.unwrap_err());
    assert!(err.contains("primary key"), "{err}");
    let err = message(ct::disable_database(c).await.unwrap_err());
    assert!(err.contains("22115"), "{err}");
}

#[tokio::test]
async fn ct_long_table_names_get_matching_function_names() {
    let db = TestDb::new().await;
    let c = &db.client;
    ct::enable_database(c, 2, 3, true).await.unwrap();
    let long = "StudentEducationOrganizationAssociationStudentCharacteristicPeriod";
    let mut def = ct_support::item_table(long);
    def.schema = "dbo".into();
    ct::create_table(c, &def).await.unwrap();
    ct::enable_table(c, "dbo", long, false).await.unwrap();
    let stored = &long[..63];
    c.batch_execute(&format!(r#"insert into dbo."{stored}" values (1, 1); truncate dbo."{stored}"; insert into dbo."{stored}" values (2, 2)"#))
        .await
        .unwrap();
    let n = c
        .query(
            &format!("select * from {}(null)", ct::changes_function("dbo", long)),
            &[],
        )
        .await
        .unwrap()
        .len();
    assert_eq!(n, 1);
    ct::disable_table(c, "dbo", long).await.unwrap();
}
