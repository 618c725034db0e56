//! SQL Server type names (as `sqlparser` parses them) → the simulator's type model.

use sqlparser::ast::DataType;

use crate::types::{SqlError, SqlType};

/// Split `NVARCHAR(60)` / `decimal(9,2)` / `datetime2` into a lower-case name and arguments.
fn split(dt: &DataType) -> (String, Vec<String>) {
    let text = dt.to_string();
    match text.split_once('(') {
        Some((name, rest)) => (
            name.trim().to_ascii_lowercase(),
            rest.trim_end_matches(')')
                .split(',')
                .map(|a| a.trim().to_string())
                .collect(),
        ),
        None => (text.trim().to_ascii_lowercase(), Vec::new()),
    }
}

/// The declared type of a column or cast target. `default_len` is the length of `varchar`
/// without one (1 in DDL, 30 in CAST and CONVERT).
pub(super) fn parse(dt: &DataType, default_len: u16) -> Result<SqlType, SqlError> {
    let (name, args) = split(dt);
    let bad = || SqlError::new(2716, 16, format!("ods-sim cannot read the type {dt}"));
    let int = |a: &str, range: std::ops::RangeInclusive<u32>| -> Result<u32, SqlError> {
        a.parse::<u32>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(bad)
    };
    let len = |max_allowed: bool| -> Result<Option<u16>, SqlError> {
        match args.as_slice() {
            [] => Ok(Some(default_len)),
            [a] if max_allowed && a.eq_ignore_ascii_case("max") => Ok(None),
            [a] => Ok(Some(int(a, 1..=8000)? as u16)),
            _ => Err(bad()),
        }
    };
    let no_args = |ty: SqlType| if args.is_empty() { Ok(ty) } else { Err(bad()) };
    match name.as_str() {
        "bit" => no_args(SqlType::Bit),
        "tinyint" => no_args(SqlType::TinyInt),
        "smallint" => no_args(SqlType::SmallInt),
        "int" | "integer" => no_args(SqlType::Int),
        "bigint" => no_args(SqlType::BigInt),
        "float" => match args.as_slice() {
            [] => Ok(SqlType::Float),
            [n] if int(n, 25..=53).is_ok() => Ok(SqlType::Float),
            _ => Err(unsupported_type(dt)),
        },
        "decimal" | "numeric" => {
            let (precision, scale) = match args.as_slice() {
                [] => (18, 0),
                [p] => (int(p, 1..=38)?, 0),
                [p, s] => (int(p, 1..=38)?, int(s, 0..=38)?),
                _ => return Err(bad()),
            };
            if scale > precision {
                return Err(bad());
            }
            Ok(SqlType::Decimal {
                precision: precision as u8,
                scale: scale as u8,
            })
        }
        "nvarchar" => Ok(SqlType::NVarChar(len(true)?)),
        "varchar" => Ok(SqlType::VarChar(len(true)?)),
        "nchar" => Ok(SqlType::NChar(len(false)?.unwrap_or(default_len))),
        "varbinary" => Ok(SqlType::VarBinary(len(true)?)),
        "date" => no_args(SqlType::Date),
        "datetime" => no_args(SqlType::DateTime),
        "datetime2" => match args.as_slice() {
            [] => Ok(SqlType::DateTime2 { scale: 7 }),
            [s] => Ok(SqlType::DateTime2 {
                scale: int(s, 0..=7)? as u8,
            }),
            _ => Err(bad()),
        },
        "uniqueidentifier" => no_args(SqlType::UniqueIdentifier),
        _ => Err(unsupported_type(dt)),
    }
}

fn unsupported_type(dt: &DataType) -> SqlError {
    SqlError::unsupported(format!("the data type {dt}"))
}

/// The PostgreSQL type a `CAST`/`CONVERT` to `dt` becomes. `datetime2(n)` with fewer than the
/// backing timestamps' 6 fractional digits is `timestamp(n)`: the value is rounded to `n` digits,
/// as SQL Server rounds.
pub(super) fn cast_target(dt: &DataType) -> Result<String, SqlError> {
    let (name, args) = split(dt);
    if name == "char" {
        return match args.as_slice() {
            [] => Ok("char(30)".to_string()),
            [n] if n.parse::<u16>().is_ok_and(|n| (1..=8000).contains(&n)) => {
                Ok(format!("char({n})"))
            }
            _ => Err(unsupported_type(dt)),
        };
    }
    Ok(match parse(dt, 30)? {
        SqlType::DateTime2 { scale } if scale < 6 => format!("timestamp({scale})"),
        ty => ty.pg_type(),
    })
}

/// A character type (the result of a cast to it is a string).
pub(super) fn is_character(dt: &DataType) -> bool {
    let (name, _) = split(dt);
    matches!(name.as_str(), "nvarchar" | "varchar" | "nchar" | "char")
}
