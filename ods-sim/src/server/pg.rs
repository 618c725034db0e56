//! The PostgreSQL side of a session: parameter binding (`SqlValue` → PostgreSQL binary format),
//! result columns (their SQL Server types and the conversion of each binary value straight into
//! a TDS row), and the mapping of PostgreSQL errors to SQL Server error numbers.
//!
//! Result column types: the declared SQL Server type from `sim.columns` for a column of a user
//! table, otherwise derived from the PostgreSQL type: boolean→bit, smallint→smallint,
//! integer→int, bigint/oid→bigint, numeric(p,s)→decimal(p,s), numeric without a type modifier→
//! decimal(38,10) (values rounded to 10 decimals), real/double precision→float,
//! varchar(n≤4000)/bpchar(n≤4000)→nvarchar(n)/nchar(n), other text→nvarchar(max), name→
//! nvarchar(128), "char"→nchar(1), date→date, timestamp→datetime2(7), timestamptz→datetime2(7)
//! (the UTC time), uuid→uniqueidentifier, bytea→varbinary(max). Other PostgreSQL types are
//! reported as unsupported.

use crate::tds::types::{
    int_width, put_binary, put_bit, put_date, put_datetime, put_datetime2, put_decimal, put_float,
    put_guid, put_int, put_null, put_text, DAYS_0001_TO_2000, MICROS_PER_DAY,
};
use crate::types::{Column, SqlError, SqlType, SqlValue};
use bytes::{BufMut, BytesMut};
use chrono::Datelike;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

/// The PostgreSQL type a parameter of this SQL Server type is bound as.
pub fn param_type(ty: &SqlType) -> Type {
    match ty {
        SqlType::Bit => Type::BOOL,
        SqlType::TinyInt | SqlType::SmallInt => Type::INT2,
        SqlType::Int => Type::INT4,
        SqlType::BigInt => Type::INT8,
        SqlType::Decimal { .. } => Type::NUMERIC,
        SqlType::Float => Type::FLOAT8,
        SqlType::NVarChar(_) | SqlType::VarChar(_) | SqlType::NChar(_) => Type::TEXT,
        SqlType::Date => Type::DATE,
        SqlType::DateTime2 { .. } | SqlType::DateTime => Type::TIMESTAMP,
        SqlType::UniqueIdentifier => Type::UUID,
        SqlType::VarBinary(_) => Type::BYTEA,
    }
}

/// A parameter value in PostgreSQL's binary format.
#[derive(Debug)]
pub struct PgValue<'a>(pub &'a SqlValue);

type BoxError = Box<dyn StdError + Sync + Send>;

impl ToSql for PgValue<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let int = |v: i64, out: &mut BytesMut| -> Result<(), BoxError> {
            match *ty {
                Type::INT2 => out.put_i16(i16::try_from(v)?),
                Type::INT4 => out.put_i32(i32::try_from(v)?),
                Type::INT8 => out.put_i64(v),
                Type::NUMERIC => encode_numeric(v as i128, 0, out),
                Type::FLOAT8 => out.put_f64(v as f64),
                Type::BOOL => out.put_u8(u8::from(v != 0)),
                _ => return Err(format!("cannot bind an integer as {ty}").into()),
            }
            Ok(())
        };
        match self.0 {
            SqlValue::Null => return Ok(IsNull::Yes),
            SqlValue::Bit(b) => out.put_u8(u8::from(*b)),
            SqlValue::TinyInt(v) => int(i64::from(*v), out)?,
            SqlValue::SmallInt(v) => int(i64::from(*v), out)?,
            SqlValue::Int(v) => int(i64::from(*v), out)?,
            SqlValue::BigInt(v) => int(*v, out)?,
            SqlValue::Decimal { value, scale } => encode_numeric(*value, *scale, out),
            SqlValue::Float(v) => out.put_f64(*v),
            SqlValue::String(s) => out.put_slice(s.as_bytes()),
            SqlValue::Date(d) => {
                out.put_i32(d.num_days_from_ce() - 1 - DAYS_0001_TO_2000 as i32);
            }
            SqlValue::DateTime(dt) => {
                let days = dt.date().num_days_from_ce() as i64 - 1 - DAYS_0001_TO_2000;
                let time = (dt.time() - chrono::NaiveTime::MIN)
                    .num_microseconds()
                    .unwrap_or(0);
                out.put_i64(days * MICROS_PER_DAY + time);
            }
            SqlValue::Uuid(u) => out.put_slice(u.as_bytes()),
            SqlValue::Binary(b) => out.put_slice(b),
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;

/// PostgreSQL binary numeric: ndigits, weight, sign, dscale, then base-10000 digits.
fn encode_numeric(value: i128, scale: u8, out: &mut BytesMut) {
    let scale = scale as usize;
    let mut s = value.unsigned_abs().to_string();
    if s.len() <= scale {
        s = format!("{}{s}", "0".repeat(scale + 1 - s.len()));
    }
    let (int_part, frac_part) = s.split_at(s.len() - scale);
    let int_pad = (4 - int_part.len() % 4) % 4;
    let frac_pad = (4 - frac_part.len() % 4) % 4;
    let int_digits = format!("{}{int_part}", "0".repeat(int_pad));
    let frac_digits = format!("{frac_part}{}", "0".repeat(frac_pad));
    let group = |s: &str| -> Vec<i16> {
        s.as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap_or("0").parse().unwrap_or(0))
            .collect()
    };
    let mut digits = group(&int_digits);
    let mut weight = digits.len() as i16 - 1;
    digits.extend(group(&frac_digits));
    while digits.first() == Some(&0) {
        digits.remove(0);
        weight -= 1;
    }
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    out.put_i16(digits.len() as i16);
    out.put_i16(weight);
    out.put_u16(if value < 0 { NUMERIC_NEG } else { 0 });
    out.put_u16(scale as u16);
    for d in digits {
        out.put_i16(d);
    }
}

fn overflow(ty: &SqlType) -> SqlError {
    SqlError::new(
        8115,
        16,
        format!(
            "Arithmetic overflow error converting expression to data type {}.",
            ty.ddl()
        ),
    )
}

/// A PostgreSQL binary numeric as an integer scaled by `10^scale`, rounded half away from zero.
pub fn decode_numeric(raw: &[u8], scale: u8) -> Result<Option<i128>, SqlError> {
    if raw.len() < 8 {
        return Ok(None);
    }
    let ndigits = i16::from_be_bytes([raw[0], raw[1]]) as usize;
    let weight = i16::from_be_bytes([raw[2], raw[3]]) as i32;
    let sign = u16::from_be_bytes([raw[4], raw[5]]);
    if sign == NUMERIC_NAN || sign > NUMERIC_NEG || raw.len() != 8 + 2 * ndigits {
        return Ok(None);
    }
    let mut acc: i128 = 0;
    let mut round_up = false;
    for i in 0..ndigits {
        let d = i16::from_be_bytes([raw[8 + 2 * i], raw[9 + 2 * i]]) as i128;
        // Power of ten that multiplies the last decimal digit of this group, relative to
        // the target scale.
        let e = 4 * (weight - i as i32) + scale as i32;
        if e >= 0 {
            let term = 10i128
                .checked_pow(e as u32)
                .and_then(|p| p.checked_mul(d))
                .ok_or(())
                .map_err(|_| SqlError::new(8115, 16, "Arithmetic overflow error."))?;
            acc = acc
                .checked_add(term)
                .ok_or_else(|| SqlError::new(8115, 16, "Arithmetic overflow error."))?;
        } else if e > -4 {
            let div = 10i128.pow((-e) as u32);
            acc += d / div;
            round_up = (d % div) * 2 >= div;
            break;
        } else {
            // The first discarded digit is this group's first one only when the group starts
            // right after the last kept digit; otherwise it is a zero.
            round_up = e == -4 && d >= 5000;
            break;
        }
    }
    if round_up {
        acc += 1;
    }
    Ok(Some(if sign == NUMERIC_NEG { -acc } else { acc }))
}

/// Captures the raw binary value of a column.
pub struct Raw<'a>(pub &'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// The binary format a result column arrives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    Numeric,
    Text,
    Char,
    Date,
    Timestamp,
    Uuid,
    Bytea,
}

impl Src {
    fn of(ty: &Type) -> Option<Src> {
        Some(match *ty {
            Type::BOOL => Src::Bool,
            Type::INT2 => Src::Int2,
            Type::INT4 => Src::Int4,
            Type::INT8 => Src::Int8,
            Type::OID => Src::Oid,
            Type::FLOAT4 => Src::Float4,
            Type::FLOAT8 => Src::Float8,
            Type::NUMERIC => Src::Numeric,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => Src::Text,
            Type::CHAR => Src::Char,
            Type::DATE => Src::Date,
            Type::TIMESTAMP | Type::TIMESTAMPTZ => Src::Timestamp,
            Type::UUID => Src::Uuid,
            Type::BYTEA => Src::Bytea,
            _ => return None,
        })
    }

    /// The SQL Server type of a value of this PostgreSQL type and modifier.
    fn default_type(self, ty: &Type, typmod: i32) -> SqlType {
        let len = (typmod > 4 && typmod - 4 <= 4000).then(|| (typmod - 4) as u16);
        match self {
            Src::Bool => SqlType::Bit,
            Src::Int2 => SqlType::SmallInt,
            Src::Int4 => SqlType::Int,
            Src::Int8 | Src::Oid => SqlType::BigInt,
            Src::Float4 | Src::Float8 => SqlType::Float,
            Src::Numeric if typmod >= 4 => {
                let precision = (((typmod - 4) >> 16) & 0xFFFF).clamp(1, 38) as u8;
                let scale = (((typmod - 4) & 0xFFFF) as u8).min(precision);
                SqlType::Decimal { precision, scale }
            }
            Src::Numeric => SqlType::Decimal {
                precision: 38,
                scale: 10,
            },
            Src::Text if *ty == Type::NAME => SqlType::NVarChar(Some(128)),
            Src::Text if *ty == Type::BPCHAR => len.map_or(SqlType::NVarChar(None), SqlType::NChar),
            Src::Text => SqlType::NVarChar(len),
            Src::Char => SqlType::NChar(1),
            Src::Date => SqlType::Date,
            Src::Timestamp => SqlType::DateTime2 { scale: 7 },
            Src::Uuid => SqlType::UniqueIdentifier,
            Src::Bytea => SqlType::VarBinary(None),
        }
    }

    /// Whether values of this format can be sent as `ty`.
    fn fits(self, ty: &SqlType) -> bool {
        match self {
            Src::Bool => *ty == SqlType::Bit,
            Src::Int2 | Src::Int4 | Src::Int8 | Src::Oid => int_width(ty).is_some(),
            Src::Float4 | Src::Float8 => *ty == SqlType::Float,
            Src::Numeric => matches!(ty, SqlType::Decimal { .. }),
            Src::Text | Src::Char => matches!(
                ty,
                SqlType::NVarChar(_) | SqlType::VarChar(_) | SqlType::NChar(_)
            ),
            Src::Date => *ty == SqlType::Date,
            Src::Timestamp => matches!(ty, SqlType::DateTime2 { .. } | SqlType::DateTime),
            Src::Uuid => *ty == SqlType::UniqueIdentifier,
            Src::Bytea => matches!(ty, SqlType::VarBinary(_)),
        }
    }
}

/// A result column: what COLMETADATA says and how its values are converted.
#[derive(Debug, Clone)]
pub struct OutColumn {
    pub column: Column,
    src: Src,
}

impl OutColumn {
    /// `declared`: the SQL Server type and nullability from `sim.columns`, when known.
    pub fn new(
        col: &tokio_postgres::Column,
        declared: Option<(SqlType, bool)>,
    ) -> Result<Self, SqlError> {
        let src = Src::of(col.type_()).ok_or_else(|| {
            SqlError::unsupported(format!(
                "result column \"{}\" of PostgreSQL type {}",
                col.name(),
                col.type_()
            ))
        })?;
        let (ty, nullable) = match declared {
            Some((ty, nullable)) if src.fits(&ty) => (ty, nullable),
            _ => (src.default_type(col.type_(), col.type_modifier()), true),
        };
        let name = if col.name() == "?column?" {
            ""
        } else {
            col.name()
        };
        Ok(OutColumn {
            column: Column {
                name: name.to_string(),
                ty,
                nullable,
            },
            src,
        })
    }

    /// Append this column's value of one row to a ROW token.
    pub fn encode(&self, buf: &mut BytesMut, raw: Option<&[u8]>) -> Result<(), SqlError> {
        let ty = &self.column.ty;
        let Some(raw) = raw else {
            put_null(buf, ty);
            return Ok(());
        };
        let bad = || {
            SqlError::new(
                50000,
                16,
                format!("malformed PostgreSQL value for {}", ty.ddl()),
            )
        };
        match self.src {
            Src::Bool => put_bit(buf, raw.first().ok_or_else(bad)? != &0),
            Src::Int2 | Src::Int4 | Src::Int8 | Src::Oid => {
                let v = match (self.src, raw.len()) {
                    (Src::Int2, 2) => i16::from_be_bytes([raw[0], raw[1]]) as i64,
                    (Src::Int4, 4) => i32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as i64,
                    (Src::Oid, 4) => u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as i64,
                    (Src::Int8, 8) => i64::from_be_bytes(raw.try_into().map_err(|_| bad())?),
                    _ => return Err(bad()),
                };
                let width = int_width(ty).ok_or_else(bad)?;
                let ok = match width {
                    1 => (0..=255).contains(&v),
                    2 => i16::try_from(v).is_ok(),
                    4 => i32::try_from(v).is_ok(),
                    _ => true,
                };
                if !ok {
                    return Err(overflow(ty));
                }
                put_int(buf, width, v);
            }
            Src::Float4 => put_float(
                buf,
                f32::from_be_bytes(raw.try_into().map_err(|_| bad())?) as f64,
            ),
            Src::Float8 => put_float(buf, f64::from_be_bytes(raw.try_into().map_err(|_| bad())?)),
            Src::Numeric => {
                let SqlType::Decimal { precision, scale } = *ty else {
                    return Err(bad());
                };
                let v = decode_numeric(raw, scale)?.ok_or_else(|| overflow(ty))?;
                if v.unsigned_abs() >= 10u128.pow(precision as u32) {
                    return Err(overflow(ty));
                }
                put_decimal(buf, precision, v);
            }
            Src::Text | Src::Char => {
                let s = std::str::from_utf8(raw).map_err(|_| bad())?;
                put_text(buf, ty, s)?;
            }
            Src::Date => {
                let days = i32::from_be_bytes(raw.try_into().map_err(|_| bad())?) as i64;
                put_date(buf, days + DAYS_0001_TO_2000)?;
            }
            Src::Timestamp => {
                let micros = i64::from_be_bytes(raw.try_into().map_err(|_| bad())?);
                let micros = micros
                    .checked_add(DAYS_0001_TO_2000 * MICROS_PER_DAY)
                    .ok_or_else(|| overflow(ty))?;
                match ty {
                    SqlType::DateTime => put_datetime(buf, micros)?,
                    SqlType::DateTime2 { scale } => put_datetime2(buf, *scale, micros)?,
                    _ => return Err(bad()),
                }
            }
            Src::Uuid => put_guid(buf, raw.try_into().map_err(|_| bad())?),
            Src::Bytea => put_binary(buf, ty, raw)?,
        }
        Ok(())
    }
}

/// Declared SQL Server types of user-table columns, by table OID and column number. Shared by
/// all sessions of a server.
///
/// A schema change (`ALTER TABLE`) makes the cached types stale: the session that makes it
/// calls [`invalidate`](Self::invalidate) when the change is made and again when it commits or
/// rolls back, which starts a new generation. A session reading types notes the generation
/// before the snapshot it reads them with is taken; what it reads is kept for the others only
/// if no generation began since, as an older snapshot may not see the change.
#[derive(Debug, Default)]
pub struct TypeCache {
    state: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    generation: u64,
    tables: HashMap<u32, Arc<DeclaredColumns>>,
}

/// Declared type and nullability by column number.
pub type DeclaredColumns = HashMap<i16, (SqlType, bool)>;

const DECLARED_TYPES: &str = "\
SELECT a.attnum, sc.data_type::text, sc.max_length::int4, sc.numeric_precision::int4,
       sc.numeric_scale::int4, sc.datetime_precision::int4, sc.is_nullable::bool
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN sim.columns sc ON sc.table_schema = n.nspname AND sc.table_name = c.relname
                   AND sc.column_name = a.attname
WHERE a.attrelid = $1 AND a.attnum > 0";

impl TypeCache {
    fn state(&self) -> MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.state().generation
    }

    /// Forget every table's types and start a new generation.
    pub fn invalidate(&self) {
        let mut state = self.state();
        state.generation += 1;
        state.tables.clear();
    }

    /// The declared types of a table's columns (empty when it has none in `sim.columns`).
    /// `seen`: the generation noted before the reading snapshot was taken; `None` when the
    /// session's own open transaction changed a schema (the cache is then neither read nor
    /// filled).
    pub async fn table(
        &self,
        client: &tokio_postgres::Client,
        oid: u32,
        seen: Option<u64>,
    ) -> Result<Arc<DeclaredColumns>, tokio_postgres::Error> {
        if seen.is_some() {
            if let Some(t) = self.state().tables.get(&oid) {
                return Ok(t.clone());
            }
        }
        let rows = client.query(DECLARED_TYPES, &[&oid]).await?;
        let mut map = HashMap::new();
        for row in rows {
            let name: String = row.get(1);
            let len: Option<i32> = row.get(2);
            let precision: Option<i32> = row.get(3);
            let scale: Option<i32> = row.get(4);
            let dt_precision: Option<i32> = row.get(5);
            let ddl = match name.to_ascii_lowercase().as_str() {
                "nvarchar" | "varchar" | "nchar" | "char" | "varbinary" | "binary" => match len {
                    Some(n) if n > 0 => format!("{name}({n})"),
                    _ => format!("{name}(max)"),
                },
                "decimal" | "numeric" => {
                    format!("{name}({},{})", precision.unwrap_or(18), scale.unwrap_or(0))
                }
                "datetime2" => format!("{name}({})", dt_precision.unwrap_or(7)),
                _ => name.clone(),
            };
            if let Some(ty) = SqlType::parse_ddl(&ddl) {
                map.insert(row.get::<_, i16>(0), (ty, row.get::<_, bool>(6)));
            }
        }
        let map = Arc::new(map);
        let mut state = self.state();
        if seen == Some(state.generation) {
            state.tables.insert(oid, map.clone());
        }
        Ok(map)
    }
}

/// A PostgreSQL error as the SQL Server error a client expects.
pub fn map_error(e: &tokio_postgres::Error, database: &str) -> SqlError {
    let Some(db) = e.as_db_error() else {
        return SqlError::new(50000, 16, format!("backing database: {e}"));
    };
    let msg = db.message();
    let quoted = || quoted_name(msg).unwrap_or_default();
    let table = || match (db.schema(), db.table()) {
        (Some(s), Some(t)) => format!("{s}.{t}"),
        (_, Some(t)) => t.to_string(),
        _ => String::new(),
    };
    let code = db.code().code();
    match code {
        "23505" => {
            let key = db
                .detail()
                .and_then(|d| d.split_once("=(").map(|(_, v)| v))
                .and_then(|v| v.split_once(") already exists").map(|(v, _)| v))
                .unwrap_or_default();
            SqlError::new(
                2627,
                14,
                format!(
                    "Violation of PRIMARY KEY constraint '{}'. Cannot insert duplicate key in object '{}'. The duplicate key value is ({key}).",
                    db.constraint().unwrap_or_default(),
                    table()
                ),
            )
        }
        "23503" => SqlError::new(
            547,
            16,
            format!(
                "The statement conflicted with the FOREIGN KEY constraint \"{}\". The conflict occurred in database \"{database}\", table \"{}\".",
                db.constraint().unwrap_or_default(),
                table()
            ),
        ),
        "23502" => SqlError::new(
            515,
            16,
            format!(
                "Cannot insert the value NULL into column '{}', table '{database}.{}'; column does not allow nulls. {} fails.",
                db.column().unwrap_or_default(),
                table(),
                // ALTER COLUMN … NOT NULL over NULLs: SQL Server's check is an UPDATE.
                if msg.contains("contains null values") { "UPDATE" } else { "INSERT" }
            ),
        ),
        "42P01" => SqlError::new(208, 16, format!("Invalid object name '{}'.", quoted())),
        "42703" => SqlError::new(207, 16, format!("Invalid column name '{}'.", quoted())),
        // `function ct."changes:edfi.Student"(bigint) does not exist`, quoted or not.
        "42883" if msg.contains("changes:") => {
            let name = msg
                .split_once("changes:")
                .and_then(|(_, rest)| rest.split(['"', '(']).next())
                .unwrap_or_default();
            SqlError::new(
                22105,
                16,
                format!("Change tracking is not enabled on table '{name}'."),
            )
        }
        // A function or relation dropped by concurrent DDL (Change Tracking switched off or on,
        // which replaces a table's change function) after the statement looked it up: SQL
        // Server fails a snapshot transaction that reads an object changed by DDL since it
        // began.
        "XX000" if msg.starts_with("cache lookup failed for") => SqlError::new(
            3961,
            16,
            format!(
                "Snapshot isolation transaction failed in database '{database}' because the object accessed by the statement has been modified by a DDL statement in another concurrent transaction since the start of this transaction. It is disallowed because the metadata is not versioned. A concurrent update to metadata can lead to inconsistency if mixed with snapshot isolation."
            ),
        ),
        "40001" => SqlError::new(
            3960,
            16,
            format!(
                "Snapshot isolation transaction aborted due to update conflict. You cannot use snapshot isolation to access table '{}' directly or indirectly in database '{database}' to update, delete, or insert the row that has been modified or deleted by another transaction. Retry the transaction or change the isolation level for the update/delete statement.",
                table()
            ),
        ),
        "40P01" => SqlError::new(
            1205,
            13,
            "Transaction was deadlocked on lock resources with another process and has been chosen as the deadlock victim. Rerun the transaction.",
        ),
        "25P02" => SqlError::new(
            3930,
            16,
            "The current transaction cannot be committed and cannot support operations that write to the log file. Roll back the transaction.",
        ),
        "22012" => SqlError::new(8134, 16, "Divide by zero error encountered."),
        "22001" => SqlError::new(8152, 16, "String or binary data would be truncated."),
        "22003" => SqlError::new(8115, 16, format!("Arithmetic overflow error: {msg}.")),
        "42601" => SqlError::new(
            102,
            15,
            match msg.strip_prefix("syntax error at or near ") {
                Some(near) => format!("Incorrect syntax near '{}'.", near.trim_matches('"')),
                None => format!("Incorrect syntax: {msg}."),
            },
        ),
        _ => SqlError::new(50000, 16, msg.to_string()),
    }
}

/// The first double-quoted name in a PostgreSQL message (`relation "dbo.x" does not exist`).
fn quoted_name(msg: &str) -> Option<String> {
    let (_, rest) = msg.split_once('"')?;
    let (name, _) = rest.rsplit_once('"')?;
    Some(name.to_string())
}

/// Whether a PostgreSQL error ends the transaction in SQL Server too (the transaction is rolled
/// back rather than left uncommittable).
pub fn rolls_back(err: &SqlError) -> bool {
    matches!(err.number, 3960 | 1205)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(value: i128, scale: u8, target: u8) -> i128 {
        let mut buf = BytesMut::new();
        encode_numeric(value, scale, &mut buf);
        decode_numeric(&buf, target).unwrap().unwrap()
    }

    #[test]
    fn numeric_round_trips() {
        for (v, s) in [
            (0i128, 0u8),
            (1234, 2),
            (-1234, 2),
            (1, 10),
            (99_999_999_999_999_999_999_999_999_999_999_999_999, 0),
            (-99_999_999_999_999_999_999_999_999_999_999_999_999, 38),
            (100_000_000, 0),
            (12_345_678, 3),
        ] {
            assert_eq!(round_trip(v, s, s), v, "{v} scale {s}");
        }
        assert_eq!(round_trip(12345, 3, 1), 123);
        assert_eq!(round_trip(12350, 3, 1), 124);
        assert_eq!(round_trip(-12350, 3, 1), -124);
        assert_eq!(round_trip(5, 5, 0), 0);
        assert_eq!(round_trip(50_000, 5, 0), 1);
        assert_eq!(round_trip(12344, 3, 2), 1234);
        assert_eq!(round_trip(5, 0, 3), 5000);
    }
}
