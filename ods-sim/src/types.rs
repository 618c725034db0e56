//! The SQL Server type model the simulator speaks: column types as declared in the Ed-Fi DDL and
//! sent in COLMETADATA, and values as carried in ROW tokens and RPC parameters.
//!
//! Backing storage on PostgreSQL (see `docs/ods-simulator.md`):
//! bit→boolean, tinyint/smallint→smallint, int→integer, bigint→bigint, decimal(p,s)→numeric(p,s),
//! float→double precision, nvarchar/varchar/nchar(n)→varchar(n) (max→text), date→date,
//! datetime2(p)/datetime→timestamp (microseconds), uniqueidentifier→uuid, varbinary→bytea.

use chrono::{NaiveDate, NaiveDateTime};
use uuid::Uuid;

/// A SQL Server column type. Lengths are in characters for strings and bytes for binary;
/// `None` means `max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlType {
    Bit,
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    Decimal { precision: u8, scale: u8 },
    Float,
    NVarChar(Option<u16>),
    VarChar(Option<u16>),
    NChar(u16),
    Date,
    DateTime2 { scale: u8 },
    DateTime,
    UniqueIdentifier,
    VarBinary(Option<u16>),
}

impl SqlType {
    /// The type as written in T-SQL DDL, e.g. `nvarchar(60)`, `decimal(9,2)`.
    pub fn ddl(&self) -> String {
        fn len(n: &Option<u16>) -> String {
            n.map_or_else(|| "max".to_string(), |n| n.to_string())
        }
        match self {
            SqlType::Bit => "bit".into(),
            SqlType::TinyInt => "tinyint".into(),
            SqlType::SmallInt => "smallint".into(),
            SqlType::Int => "int".into(),
            SqlType::BigInt => "bigint".into(),
            SqlType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            SqlType::Float => "float".into(),
            SqlType::NVarChar(n) => format!("nvarchar({})", len(n)),
            SqlType::VarChar(n) => format!("varchar({})", len(n)),
            SqlType::NChar(n) => format!("nchar({n})"),
            SqlType::Date => "date".into(),
            SqlType::DateTime2 { scale } => format!("datetime2({scale})"),
            SqlType::DateTime => "datetime".into(),
            SqlType::UniqueIdentifier => "uniqueidentifier".into(),
            SqlType::VarBinary(n) => format!("varbinary({})", len(n)),
        }
    }

    /// Parse a T-SQL type as written in a declaration (`nvarchar(60)`, `decimal(9, 2)`,
    /// `datetime2`, `varbinary(max)`), case-insensitively. Types outside the model map to the
    /// nearest one that holds their values (`char(n)`→varchar(n), `real`→float,
    /// `smalldatetime`→datetime, `ntext`→nvarchar(max), `sysname`→nvarchar(128)).
    pub fn parse_ddl(s: &str) -> Option<SqlType> {
        let s = s.trim().to_ascii_lowercase().replace(['[', ']', ' '], "");
        let (name, args) = match s.split_once('(') {
            Some((name, rest)) => (name.to_string(), Some(rest.strip_suffix(')')?.to_string())),
            None => (s, None),
        };
        let nums: Vec<&str> = args
            .as_deref()
            .map_or(Vec::new(), |a| a.split(',').collect());
        let num = |i: usize| nums.get(i).and_then(|n| n.parse::<u16>().ok());
        let len = || match nums.first() {
            None => Some(Some(1)),
            Some(&"max") => Some(None),
            Some(n) => n.parse::<u16>().ok().map(Some),
        };
        Some(match name.as_str() {
            "bit" => SqlType::Bit,
            "tinyint" => SqlType::TinyInt,
            "smallint" => SqlType::SmallInt,
            "int" | "integer" => SqlType::Int,
            "bigint" => SqlType::BigInt,
            "decimal" | "numeric" | "dec" => SqlType::Decimal {
                precision: num(0).unwrap_or(18).min(38) as u8,
                scale: num(1).unwrap_or(0).min(38) as u8,
            },
            "float" | "real" => SqlType::Float,
            "nvarchar" => SqlType::NVarChar(len()?),
            "varchar" | "char" => SqlType::VarChar(len()?),
            "nchar" => SqlType::NChar(len()?.unwrap_or(4000)),
            "ntext" => SqlType::NVarChar(None),
            "text" => SqlType::VarChar(None),
            "sysname" => SqlType::NVarChar(Some(128)),
            "date" => SqlType::Date,
            "datetime2" => SqlType::DateTime2 {
                scale: num(0).unwrap_or(7).min(7) as u8,
            },
            "datetime" | "smalldatetime" => SqlType::DateTime,
            "uniqueidentifier" => SqlType::UniqueIdentifier,
            "varbinary" | "binary" => SqlType::VarBinary(len()?),
            _ => return None,
        })
    }

    /// The PostgreSQL column type that stores this type in the backing database.
    pub fn pg_type(&self) -> String {
        match self {
            SqlType::Bit => "boolean".into(),
            SqlType::TinyInt | SqlType::SmallInt => "smallint".into(),
            SqlType::Int => "integer".into(),
            SqlType::BigInt => "bigint".into(),
            SqlType::Decimal { precision, scale } => format!("numeric({precision},{scale})"),
            SqlType::Float => "double precision".into(),
            SqlType::NVarChar(Some(n)) | SqlType::VarChar(Some(n)) | SqlType::NChar(n) => {
                format!("varchar({n})")
            }
            SqlType::NVarChar(None) | SqlType::VarChar(None) => "text".into(),
            SqlType::Date => "date".into(),
            SqlType::DateTime2 { .. } | SqlType::DateTime => "timestamp(6)".into(),
            SqlType::UniqueIdentifier => "uuid".into(),
            SqlType::VarBinary(_) => "bytea".into(),
        }
    }
}

/// One value in a row or an RPC parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Bit(bool),
    TinyInt(u8),
    SmallInt(i16),
    Int(i32),
    BigInt(i64),
    /// Unscaled integer and scale: 12.34 is `Decimal { value: 1234, scale: 2 }`.
    Decimal {
        value: i128,
        scale: u8,
    },
    Float(f64),
    String(String),
    Date(NaiveDate),
    DateTime(NaiveDateTime),
    Uuid(Uuid),
    Binary(Vec<u8>),
}

/// A result-set column as sent in COLMETADATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: SqlType,
    pub nullable: bool,
}

/// A SQL Server error as sent in an ERROR token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Msg {number}, Level {class}, State {state}: {message}")]
pub struct SqlError {
    pub number: i32,
    pub state: u8,
    pub class: u8,
    pub message: String,
    /// Errors SQL Server sends before this one for the same failure, in order (5074 "The object
    /// … is dependent on column …" before 4922 "ALTER TABLE … failed …").
    pub preceding: Vec<SqlError>,
}

impl SqlError {
    pub fn new(number: i32, class: u8, message: impl Into<String>) -> Self {
        SqlError {
            number,
            state: 1,
            class,
            message: message.into(),
            preceding: Vec::new(),
        }
    }

    /// This error, sent after `first`.
    pub fn after(mut self, first: SqlError) -> Self {
        self.preceding.push(first);
        self
    }

    /// Error 102-style syntax error / unsupported construct (class 15).
    pub fn unsupported(what: impl std::fmt::Display) -> Self {
        SqlError::new(40000, 16, format!("ods-sim does not support {what}"))
    }
}

/// A typed parameter of an RPC call (`sp_executesql`), named as sent (`@P1`).
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub ty: SqlType,
    pub value: SqlValue,
}

/// A column of a table definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    pub ty: SqlType,
    pub nullable: bool,
    /// `IDENTITY(1,1)`: numbered by the server unless `SET IDENTITY_INSERT` is on.
    pub identity: bool,
    pub default: Option<ColumnDefault>,
}

/// The column defaults the Ed-Fi DDL declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnDefault {
    /// `getdate()`: the statement's time, the server's local time being UTC.
    GetDate,
    /// `newid()`.
    NewId,
}

impl ColumnDefault {
    /// As T-SQL writes it.
    pub fn tsql(self) -> &'static str {
        match self {
            ColumnDefault::GetDate => "getdate()",
            ColumnDefault::NewId => "newid()",
        }
    }

    /// As the backing PostgreSQL table's `DEFAULT`.
    pub fn pg(self) -> &'static str {
        match self {
            ColumnDefault::GetDate => "(statement_timestamp() AT TIME ZONE 'UTC')",
            ColumnDefault::NewId => "gen_random_uuid()",
        }
    }
}

/// A table as declared in SQL Server DDL: schema, name, columns in order, primary key columns in
/// key order. Used to create the backing PostgreSQL table and the catalog rows that
/// `INFORMATION_SCHEMA` and `sys.*` show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnDef>,
    pub primary_key: Vec<String>,
}

/// A change of a user table's columns, as `ALTER TABLE` declares it: `schema` and `name` as
/// written (unqualified: `dbo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableAlter {
    pub schema: String,
    pub name: String,
    pub change: ColumnChange,
}

/// What an `ALTER TABLE` does to the columns or the primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnChange {
    /// `ADD column_definition [, …]`: never an `IDENTITY` or key column.
    Add(Vec<ColumnDef>),
    /// `ALTER COLUMN name type [NULL | NOT NULL]`: nullable when neither is written.
    Alter {
        name: String,
        ty: SqlType,
        nullable: bool,
    },
    /// `DROP COLUMN [IF EXISTS] name [, …]`.
    Drop(Vec<DroppedColumn>),
    /// `ADD [CONSTRAINT name] PRIMARY KEY [CLUSTERED | NONCLUSTERED] (column [, …])`.
    AddPrimaryKey {
        name: Option<String>,
        columns: Vec<String>,
    },
    /// `DROP CONSTRAINT [IF EXISTS] name`: only a primary key is supported.
    DropConstraint { name: String, if_exists: bool },
}

/// A column of `DROP COLUMN`; with `IF EXISTS`, a missing one is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedColumn {
    pub name: String,
    pub if_exists: bool,
}
