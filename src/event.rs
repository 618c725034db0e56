//! The change model every part shares: table schemas, values, change events, watermarks and
//! snapshot markers — and their wire form, JSON shaped like the Debezium envelope.
//!
//! A source emits, per poll cycle, the cycle's [`ChangeEvent`]s and then a [`Watermark`] `V`:
//! every change up to `V` of every streaming table has been sent. A sink applies events only up
//! to a watermark, never half a cycle. Snapshots of single tables travel as [`SnapshotMarker`]s
//! around their `r` (read) events.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde_json::{json, Map, Value as Json};
use uuid::Uuid;

/// A source table: schema and name as the source spells them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId {
    pub schema: String,
    pub name: String,
}

impl TableId {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableId {
            schema: schema.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// A column's type as the source declares it (SQL Server names: `nvarchar`, `decimal`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceType {
    /// Lower-case SQL Server type name.
    pub name: String,
    /// Characters for character types, bytes for binary ones; `None` for `max` or not applicable.
    pub max_length: Option<i32>,
    pub precision: Option<u8>,
    pub scale: Option<u8>,
}

/// The kind of value a column holds, which decides how its wire form is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Bool,
    Int,
    Float,
    Decimal,
    String,
    Bytes,
    Date,
    Timestamp,
    TimestampTz,
    Time,
    Uuid,
}

impl SourceType {
    pub fn kind(&self) -> ValueKind {
        match self.name.as_str() {
            "bit" => ValueKind::Bool,
            "tinyint" | "smallint" | "int" | "bigint" => ValueKind::Int,
            "float" | "real" => ValueKind::Float,
            "decimal" | "numeric" | "money" | "smallmoney" => ValueKind::Decimal,
            "binary" | "varbinary" | "image" | "timestamp" | "rowversion" => ValueKind::Bytes,
            "date" => ValueKind::Date,
            "datetime" | "datetime2" | "smalldatetime" => ValueKind::Timestamp,
            "datetimeoffset" => ValueKind::TimestampTz,
            "time" => ValueKind::Time,
            "uniqueidentifier" => ValueKind::Uuid,
            _ => ValueKind::String,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSchema {
    pub name: String,
    pub source_type: SourceType,
    pub nullable: bool,
}

/// The replicated shape of a table: its columns in source order (possibly a configured subset)
/// and its primary key as indexes into `columns`, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    pub id: TableId,
    pub columns: Vec<ColumnSchema>,
    pub key: Vec<usize>,
}

impl TableSchema {
    pub fn key_columns(&self) -> impl Iterator<Item = &ColumnSchema> {
        self.key.iter().map(|&i| &self.columns[i])
    }

    fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns.iter().find(|c| c.name == name)
    }

    fn key_names(&self) -> Vec<&str> {
        self.key_columns().map(|c| c.name.as_str()).collect()
    }

    /// How this shape differs from `old`, one phrase per difference (`added Grade nvarchar(20)`,
    /// `dropped Nickname`, `FirstName nvarchar(75) → nvarchar(100)`, `key (A) → (A, B)`); empty
    /// when they are the same.
    pub fn changes_from(&self, old: &TableSchema) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.columns {
            match old.column(&c.name) {
                None => out.push(format!("added {} {}", c.name, c.source_type)),
                Some(o) if o.source_type != c.source_type || o.nullable != c.nullable => {
                    let null = |n: bool| if n { "" } else { " not null" };
                    out.push(format!(
                        "{} {}{} → {}{}",
                        c.name,
                        o.source_type,
                        null(o.nullable),
                        c.source_type,
                        null(c.nullable)
                    ))
                }
                Some(_) => {}
            }
        }
        for o in &old.columns {
            if self.column(&o.name).is_none() {
                out.push(format!("dropped {}", o.name));
            }
        }
        let names = |t: &TableSchema| t.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        if out.is_empty() && names(self) != names(old) {
            // Dropped and added again under the same name: the values are gone at the source.
            out.push(format!(
                "column order ({}) → ({})",
                names(old).join(", "),
                names(self).join(", ")
            ));
        }
        if self.key_names() != old.key_names() {
            out.push(format!(
                "key ({}) → ({})",
                old.key_names().join(", "),
                self.key_names().join(", ")
            ));
        }
        out
    }
}

impl fmt::Display for SourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        match (self.max_length, self.precision, self.scale) {
            (Some(n), _, _)
                if self.kind() == ValueKind::String || self.kind() == ValueKind::Bytes =>
            {
                write!(f, "({n})")
            }
            (None, _, _) if matches!(self.name.as_str(), "nvarchar" | "varchar" | "varbinary") => {
                write!(f, "(max)")
            }
            (_, Some(p), Some(s)) if self.kind() == ValueKind::Decimal => write!(f, "({p},{s})"),
            _ => Ok(()),
        }
    }
}

/// One column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Exact decimal in plain notation (`-12.340`).
    Decimal(String),
    String(String),
    Bytes(Vec<u8>),
    Date(NaiveDate),
    Timestamp(NaiveDateTime),
    TimestampTz(DateTime<Utc>),
    Time(NaiveTime),
    Uuid(Uuid),
}

/// `t` rounded to whole microseconds, half up as SQL Server's `CAST(… AS datetime2(6))` rounds:
/// the precision of the targets' timestamps. Sinks write times this way so that every target
/// holds the same value whatever rounding its own parser applies (PostgreSQL rounds half to even).
pub fn round_micros(t: NaiveDateTime) -> NaiveDateTime {
    let nanos = t.and_utc().timestamp_subsec_nanos();
    let whole = t - chrono::Duration::nanoseconds(i64::from(nanos));
    let rounded = whole + chrono::Duration::microseconds((i64::from(nanos) + 500) / 1000);
    // SQL Server's largest value (.NET's DateTime.MaxValue, 9999-12-31 23:59:59.9999999) stays
    // within year 9999, which is as far as the targets and datetime2 go.
    if rounded.year() > 9999 {
        whole + chrono::Duration::microseconds(999_999)
    } else {
        rounded
    }
}

/// A time of day rounded to whole microseconds, half up (see [`round_micros`]); 23:59:59.9999995
/// stays within the day at 23:59:59.999999.
pub fn round_time_micros(t: NaiveTime) -> NaiveTime {
    let day = NaiveDate::MIN.and_time(t);
    let rounded = round_micros(day);
    if rounded.date() == day.date() {
        rounded.time()
    } else {
        NaiveTime::from_hms_micro_opt(23, 59, 59, 999_999).expect("a valid time")
    }
}

/// The text every target is given for a time value, rounded to microseconds (see
/// [`round_micros`]); `None` for other values.
pub fn time_text(v: &Value) -> Option<String> {
    Some(match v {
        Value::Timestamp(t) => round_micros(*t).format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        Value::TimestampTz(t) => round_micros(t.naive_utc())
            .format("%Y-%m-%d %H:%M:%S%.6f+00")
            .to_string(),
        Value::Time(t) => round_time_micros(*t).format("%H:%M:%S%.6f").to_string(),
        _ => return None,
    })
}

impl Value {
    /// JSON form used on the wire: numbers for integers and floats, strings for everything
    /// whose precision JSON numbers would lose (decimals) or that has no JSON type.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => json!(i),
            Value::Float(f) => json!(f),
            Value::Decimal(s) | Value::String(s) => Json::String(s.clone()),
            Value::Bytes(b) => Json::String(hex_encode(b)),
            Value::Date(d) => Json::String(d.format("%Y-%m-%d").to_string()),
            Value::Timestamp(t) => Json::String(t.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
            Value::TimestampTz(t) => Json::String(t.to_rfc3339()),
            Value::Time(t) => Json::String(t.format("%H:%M:%S%.f").to_string()),
            Value::Uuid(u) => Json::String(u.to_string()),
        }
    }

    /// Inverse of [`Value::to_json`] for a column of the given kind.
    pub fn from_json(kind: ValueKind, json: &Json) -> Result<Value, CodecError> {
        let bad = || CodecError::Value {
            kind,
            json: json.to_string(),
        };
        if json.is_null() {
            return Ok(Value::Null);
        }
        let s = || json.as_str().ok_or_else(bad);
        Ok(match kind {
            ValueKind::Bool => Value::Bool(json.as_bool().ok_or_else(bad)?),
            ValueKind::Int => Value::Int(json.as_i64().ok_or_else(bad)?),
            ValueKind::Float => Value::Float(json.as_f64().ok_or_else(bad)?),
            ValueKind::Decimal => Value::Decimal(s()?.to_string()),
            ValueKind::String => Value::String(s()?.to_string()),
            ValueKind::Bytes => Value::Bytes(hex_decode(s()?).ok_or_else(bad)?),
            ValueKind::Date => {
                Value::Date(NaiveDate::parse_from_str(s()?, "%Y-%m-%d").map_err(|_| bad())?)
            }
            ValueKind::Timestamp => Value::Timestamp(
                NaiveDateTime::parse_from_str(s()?, "%Y-%m-%dT%H:%M:%S%.f").map_err(|_| bad())?,
            ),
            ValueKind::TimestampTz => Value::TimestampTz(
                DateTime::parse_from_rfc3339(s()?)
                    .map_err(|_| bad())?
                    .with_timezone(&Utc),
            ),
            ValueKind::Time => {
                Value::Time(NaiveTime::parse_from_str(s()?, "%H:%M:%S%.f").map_err(|_| bad())?)
            }
            ValueKind::Uuid => Value::Uuid(Uuid::parse_str(s()?).map_err(|_| bad())?),
        })
    }
}

/// Renders a key for error messages and logs: `StudentUSI=42, SchoolId=7`.
pub fn describe_key(schema: &TableSchema, key: &[Value]) -> String {
    schema
        .key_columns()
        .zip(key)
        .map(|(c, v)| format!("{}={}", c.name, v.to_json()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

pub(crate) fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What happened to a row: Debezium's `op` letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `c`: inserted after the baseline.
    Create,
    /// `u`: existed at the baseline and still exists (possibly deleted and re-inserted).
    Update,
    /// `d`: gone.
    Delete,
    /// `r`: read by a snapshot.
    Read,
}

impl Op {
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
        }
    }

    pub fn from_code(code: &str) -> Option<Op> {
        Some(match code {
            "c" => Op::Create,
            "u" => Op::Update,
            "d" => Op::Delete,
            "r" => Op::Read,
            _ => return None,
        })
    }
}

/// One changed row.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    pub table: Arc<TableSchema>,
    pub op: Op,
    /// Key values in key order.
    pub key: Vec<Value>,
    /// The row after the change, in column order; `None` for a delete.
    pub after: Option<Vec<Value>>,
    /// CT version of the change (`SYS_CHANGE_VERSION`); for snapshot reads, the snapshot's
    /// starting version.
    pub version: i64,
    /// Commit time of `version` at the source, where known.
    pub commit_time: Option<DateTime<Utc>>,
}

impl ChangeEvent {
    /// This event with its row in the shape `schema` (of the same table) gives it: columns
    /// matched by name, a column the event lacks is NULL. An event read before the table changed
    /// at the source and applied after a sink took the new shape, or the other way round, keeps
    /// what both shapes have; the re-snapshot that follows a change rewrites the rest.
    pub fn conform(mut self, schema: &Arc<TableSchema>) -> ChangeEvent {
        if Arc::ptr_eq(&self.table, schema) || *self.table == **schema {
            self.table = schema.clone();
            return self;
        }
        let pick = |row: &[Value], names: &mut dyn Iterator<Item = &ColumnSchema>| -> Vec<Value> {
            names
                .map(|c| {
                    self.table
                        .columns
                        .iter()
                        .position(|o| o.name == c.name)
                        .map_or(Value::Null, |i| row[i].clone())
                })
                .collect()
        };
        let after = self
            .after
            .as_deref()
            .map(|row| pick(row, &mut schema.columns.iter()));
        let key = match &after {
            Some(row) => schema.key.iter().map(|&k| row[k].clone()).collect(),
            None => {
                let by_key: Vec<Value> = {
                    let mut full = vec![Value::Null; self.table.columns.len()];
                    for (&k, v) in self.table.key.iter().zip(&self.key) {
                        full[k] = v.clone();
                    }
                    full
                };
                pick(&by_key, &mut schema.key_columns())
            }
        };
        ChangeEvent {
            table: schema.clone(),
            key,
            after,
            ..self
        }
    }
}

/// "Every change up to `version` of every streaming table has been sent."
#[derive(Debug, Clone, PartialEq)]
pub struct Watermark {
    pub version: i64,
    /// Commit time of `version` at the source, where known.
    pub commit_time: Option<DateTime<Utc>>,
}

/// Brackets the `r` events of one table's snapshot.
#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotMarker {
    /// A snapshot of `table` begins, consistent with CT from `version` on. A sink discards any
    /// earlier partial snapshot of the table.
    Started {
        table: Arc<TableSchema>,
        version: i64,
        total_rows: Option<u64>,
        /// Tells this snapshot from another of the table at the same version (an idle source
        /// re-snapshotted twice); a copy of the marker, written again, has the same id.
        id: u64,
        /// Asked for (`edfi-cdc resnapshot`, a sink that lost records, or Change Tracking
        /// cleanup past the table's baseline), not only needed by a sink without the table:
        /// every sink takes it, even one already at its version. A stream worker cannot rely on
        /// seeing the request row, which the first lane to start the snapshot deletes.
        requested: bool,
    },
    /// All `r` events of the table up to and including `last_key` (key order) have been sent;
    /// `rows` counts them from the start of the snapshot.
    Chunk {
        table: Arc<TableSchema>,
        last_key: Vec<Value>,
        rows: u64,
    },
    /// The snapshot is complete; from now on the table's changes after `version` arrive in poll
    /// cycles, and the sink publishes the loaded table at the next watermark.
    Done {
        table: Arc<TableSchema>,
        version: i64,
        rows: u64,
    },
}

impl SnapshotMarker {
    pub fn table(&self) -> &Arc<TableSchema> {
        match self {
            SnapshotMarker::Started { table, .. }
            | SnapshotMarker::Chunk { table, .. }
            | SnapshotMarker::Done { table, .. } => table,
        }
    }
}

/// What travels through a stream, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Change(ChangeEvent),
    Watermark(Watermark),
    Snapshot(SnapshotMarker),
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("malformed change message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("change message has no valid field `{0}`")]
    Missing(&'static str),
    #[error("change message for unknown table {0}")]
    UnknownTable(TableId),
    #[error("value {json} is not a valid {kind:?}")]
    Value { kind: ValueKind, json: String },
}

fn row_json(schema: &TableSchema, values: &[Value]) -> Json {
    let mut m = Map::with_capacity(values.len());
    for (c, v) in schema.columns.iter().zip(values) {
        m.insert(c.name.clone(), v.to_json());
    }
    Json::Object(m)
}

fn key_json(schema: &TableSchema, key: &[Value]) -> Json {
    let mut m = Map::with_capacity(key.len());
    for (c, v) in schema.key_columns().zip(key) {
        m.insert(c.name.clone(), v.to_json());
    }
    Json::Object(m)
}

/// Wire form of a message: `(key, value)` JSON documents.
///
/// Change events follow the Debezium envelope: the key is the primary key as an object; the
/// value has `before` (always null: Change Tracking does not keep old images), `after`,
/// `source` (`connector`, `db`, `schema`, `table`, `change_version`, `snapshot`, `ts_ms` of the
/// source commit), `op` and `ts_ms` (when the event was produced). Watermarks and snapshot
/// markers use the same shape with `op` = `watermark` / `snapshot_started` / `snapshot_chunk` /
/// `snapshot_done`, so that one decoder reads a whole stream.
pub fn encode(connector: &str, database: &str, msg: &Message) -> (Json, Json) {
    let now_ms = Utc::now().timestamp_millis();
    let source =
        |table: Option<&TableId>, version: i64, commit: Option<DateTime<Utc>>, snapshot: &str| {
            json!({
                "connector": connector,
                "db": database,
                "schema": table.map(|t| t.schema.clone()),
                "table": table.map(|t| t.name.clone()),
                "change_version": version,
                "snapshot": snapshot,
                "ts_ms": commit.map(|t| t.timestamp_millis()),
            })
        };
    match msg {
        Message::Change(ev) => {
            let snapshot = if ev.op == Op::Read { "true" } else { "false" };
            let value = json!({
                "before": Json::Null,
                "after": ev.after.as_ref().map(|row| row_json(&ev.table, row)),
                "source": source(Some(&ev.table.id), ev.version, ev.commit_time, snapshot),
                "op": ev.op.code(),
                "ts_ms": now_ms,
            });
            (key_json(&ev.table, &ev.key), value)
        }
        Message::Watermark(w) => (
            json!({"watermark": w.version}),
            json!({
                "before": Json::Null,
                "after": Json::Null,
                "source": source(None, w.version, w.commit_time, "false"),
                "op": "watermark",
                "ts_ms": now_ms,
            }),
        ),
        Message::Snapshot(m) => {
            let table = m.table();
            let (op, version, extra) = match m {
                SnapshotMarker::Started {
                    version,
                    total_rows,
                    id,
                    requested,
                    ..
                } => (
                    "snapshot_started",
                    *version,
                    json!({"total_rows": total_rows, "id": id, "requested": requested,
                           "columns": schema_json(table)}),
                ),
                SnapshotMarker::Chunk { last_key, rows, .. } => (
                    "snapshot_chunk",
                    0,
                    json!({"last_key": key_json(table, last_key), "rows": rows}),
                ),
                SnapshotMarker::Done { version, rows, .. } => {
                    ("snapshot_done", *version, json!({"rows": rows}))
                }
            };
            (
                json!({"snapshot": table.id.to_string()}),
                json!({
                    "before": Json::Null,
                    "after": Json::Null,
                    "source": source(Some(&table.id), version, None, "true"),
                    "op": op,
                    "snapshot": extra,
                    "ts_ms": now_ms,
                }),
            )
        }
    }
}

/// A table's shape on the wire (in snapshot start markers): its columns in order, each with its
/// source type, and `key` marking the primary key columns by position in the key.
fn schema_json(schema: &TableSchema) -> Json {
    Json::Array(
        schema
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({
                    "name": c.name,
                    "type": c.source_type.name,
                    "max_length": c.source_type.max_length,
                    "precision": c.source_type.precision,
                    "scale": c.source_type.scale,
                    "nullable": c.nullable,
                    "key": schema.key.iter().position(|&k| k == i),
                })
            })
            .collect(),
    )
}

/// A digest of a table's shape (its wire form hashed), stored with each snapshot's checkpoint
/// so that a change made to the table while nothing ran is found by comparing it with the
/// catalog's.
pub fn shape_digest(schema: &TableSchema) -> String {
    let text = schema_json(schema).to_string();
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(text.as_bytes()))
}

fn schema_from_json(id: &TableId, json: &Json) -> Result<Arc<TableSchema>, CodecError> {
    let bad = || CodecError::Missing("snapshot.columns");
    let mut columns = Vec::new();
    let mut key: Vec<(u64, usize)> = Vec::new();
    for (i, c) in json.as_array().ok_or_else(bad)?.iter().enumerate() {
        let small = |f: &str| c[f].as_u64().and_then(|n| u8::try_from(n).ok());
        columns.push(ColumnSchema {
            name: c["name"].as_str().ok_or_else(bad)?.to_string(),
            source_type: SourceType {
                name: c["type"].as_str().ok_or_else(bad)?.to_string(),
                max_length: c["max_length"].as_i64().and_then(|n| i32::try_from(n).ok()),
                precision: small("precision"),
                scale: small("scale"),
            },
            nullable: c["nullable"].as_bool().ok_or_else(bad)?,
        });
        if let Some(k) = c["key"].as_u64() {
            key.push((k, i));
        }
    }
    key.sort_unstable();
    if key.is_empty() {
        return Err(bad());
    }
    Ok(Arc::new(TableSchema {
        id: id.clone(),
        columns,
        key: key.into_iter().map(|(_, i)| i).collect(),
    }))
}

fn values_from_json(
    schema: &TableSchema,
    cols: impl Iterator<Item = usize>,
    obj: &Json,
    lenient: bool,
) -> Result<Vec<Value>, CodecError> {
    let obj = obj.as_object().ok_or(CodecError::Missing("after"))?;
    cols.map(|i| {
        let c = &schema.columns[i];
        let json = obj.get(&c.name).unwrap_or(&Json::Null);
        Value::from_json(c.source_type.kind(), json).or_else(|e| match json {
            Json::String(text) if lenient => Ok(Value::String(text.clone())),
            _ if lenient => Ok(Value::String(json.to_string())),
            _ => Err(e),
        })
    })
    .collect()
}

/// Inverse of [`encode`]; `lookup` resolves a table to its schema.
pub fn decode(
    key: &Json,
    value: &Json,
    lookup: impl Fn(&TableId) -> Option<Arc<TableSchema>>,
) -> Result<Message, CodecError> {
    decode_with(key, value, lookup, false)
}

/// [`decode`] of a message that may have been written in another shape than `lookup` gives
/// (older than a change of its table at the source): a value that is not of its column's kind
/// is taken as its text. Such a message's row is rewritten by the re-snapshot that follows the
/// change.
pub fn decode_lenient(
    key: &Json,
    value: &Json,
    lookup: impl Fn(&TableId) -> Option<Arc<TableSchema>>,
) -> Result<Message, CodecError> {
    decode_with(key, value, lookup, true)
}

fn decode_with(
    key: &Json,
    value: &Json,
    lookup: impl Fn(&TableId) -> Option<Arc<TableSchema>>,
    lenient: bool,
) -> Result<Message, CodecError> {
    let op = value["op"].as_str().ok_or(CodecError::Missing("op"))?;
    let source = &value["source"];
    let version = source["change_version"]
        .as_i64()
        .ok_or(CodecError::Missing("source.change_version"))?;
    let commit_time = source["ts_ms"]
        .as_i64()
        .and_then(DateTime::<Utc>::from_timestamp_millis);
    if op == "watermark" {
        return Ok(Message::Watermark(Watermark {
            version,
            commit_time,
        }));
    }
    let table_id = TableId::new(
        source["schema"]
            .as_str()
            .ok_or(CodecError::Missing("source.schema"))?,
        source["table"]
            .as_str()
            .ok_or(CodecError::Missing("source.table"))?,
    );
    let table = lookup(&table_id).ok_or(CodecError::UnknownTable(table_id))?;
    let snap = &value["snapshot"];
    let rows = || {
        snap["rows"]
            .as_u64()
            .ok_or(CodecError::Missing("snapshot.rows"))
    };
    let marker = match op {
        "snapshot_started" => SnapshotMarker::Started {
            // The shape the snapshot was read in: the table may have changed at the source
            // since the reader's catalog was read.
            table: match &snap["columns"] {
                Json::Null => table,
                columns => schema_from_json(&table.id, columns)?,
            },
            version,
            total_rows: snap["total_rows"].as_u64(),
            id: snap["id"].as_u64().unwrap_or(0),
            requested: snap["requested"].as_bool().unwrap_or(false),
        },
        "snapshot_chunk" => SnapshotMarker::Chunk {
            last_key: values_from_json(
                &table,
                table.key.iter().copied(),
                &snap["last_key"],
                lenient,
            )?,
            rows: rows()?,
            table,
        },
        "snapshot_done" => SnapshotMarker::Done {
            table,
            version,
            rows: rows()?,
        },
        code => {
            let op = Op::from_code(code).ok_or(CodecError::Missing("op"))?;
            let key = values_from_json(&table, table.key.iter().copied(), key, lenient)?;
            let after = match &value["after"] {
                Json::Null => None,
                after => Some(values_from_json(
                    &table,
                    0..table.columns.len(),
                    after,
                    lenient,
                )?),
            };
            return Ok(Message::Change(ChangeEvent {
                table,
                op,
                key,
                after,
                version,
                commit_time,
            }));
        }
    };
    Ok(Message::Snapshot(marker))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn col(name: &str, ty: &str) -> ColumnSchema {
        ColumnSchema {
            name: name.into(),
            source_type: SourceType {
                name: ty.into(),
                max_length: None,
                precision: None,
                scale: None,
            },
            nullable: true,
        }
    }

    pub fn every_type_schema() -> Arc<TableSchema> {
        Arc::new(TableSchema {
            id: TableId::new("edfi", "Student"),
            columns: vec![
                col("StudentUSI", "int"),
                col("BirthDate", "date"),
                col("FirstName", "nvarchar"),
                col("Id", "uniqueidentifier"),
                col("CreateDate", "datetime2"),
                col("Score", "decimal"),
                col("Active", "bit"),
                col("Photo", "varbinary"),
                col("Ratio", "float"),
                col("Offset", "datetimeoffset"),
                col("StartTime", "time"),
            ],
            key: vec![0, 1],
        })
    }

    #[test]
    fn times_round_half_up_to_microseconds() {
        let at = |h, m, s, n| {
            NaiveDate::from_ymd_opt(2024, 12, 31)
                .unwrap()
                .and_hms_nano_opt(h, m, s, n)
                .unwrap()
        };
        assert_eq!(
            round_micros(at(1, 2, 3, 123_456_400)),
            at(1, 2, 3, 123_456_000)
        );
        assert_eq!(
            round_micros(at(1, 2, 3, 123_456_500)),
            at(1, 2, 3, 123_457_000)
        );
        // An even microsecond rounds up too (PostgreSQL's parser would round half to even).
        assert_eq!(
            round_micros(at(1, 2, 3, 123_458_500)),
            at(1, 2, 3, 123_459_000)
        );
        assert_eq!(
            round_micros(at(23, 59, 59, 999_999_500)),
            NaiveDate::from_ymd_opt(2025, 1, 1)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
        );
        let max = NaiveDate::from_ymd_opt(9999, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 999_999_900)
            .unwrap();
        assert_eq!(
            round_micros(max),
            NaiveDate::from_ymd_opt(9999, 12, 31)
                .unwrap()
                .and_hms_micro_opt(23, 59, 59, 999_999)
                .unwrap()
        );
        // `datetime`'s 1/300 s ticks.
        assert_eq!(round_micros(at(0, 0, 0, 3_333_333)), at(0, 0, 0, 3_333_000));
        assert_eq!(round_micros(at(0, 0, 0, 6_666_667)), at(0, 0, 0, 6_667_000));
        let t = |n| NaiveTime::from_hms_nano_opt(23, 59, 59, n).unwrap();
        assert_eq!(round_time_micros(t(999_999_500)), t(999_999_000));
        assert_eq!(round_time_micros(t(1_500)), t(2_000));
    }

    fn sample_row() -> Vec<Value> {
        vec![
            Value::Int(42),
            Value::Date(NaiveDate::from_ymd_opt(2010, 3, 4).unwrap()),
            Value::String("Zoë \"Nguyễn\", 日本\n".into()),
            Value::Uuid(Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0)),
            Value::Timestamp(
                NaiveDate::from_ymd_opt(2024, 1, 2)
                    .unwrap()
                    .and_hms_micro_opt(3, 4, 5, 123_456)
                    .unwrap(),
            ),
            Value::Decimal("-12.340".into()),
            Value::Bool(true),
            Value::Bytes(vec![0, 1, 254, 255]),
            Value::Float(0.5),
            Value::TimestampTz(DateTime::from_timestamp(1_700_000_000, 5_000).unwrap()),
            Value::Time(NaiveTime::from_hms_micro_opt(8, 30, 0, 1).unwrap()),
        ]
    }

    fn roundtrip(msg: Message) {
        let schema = every_type_schema();
        let (k, v) = encode("edfi-ods", "EdFi_Ods", &msg);
        let text_k = serde_json::to_string(&k).unwrap();
        let text_v = serde_json::to_string(&v).unwrap();
        let back = decode(
            &serde_json::from_str(&text_k).unwrap(),
            &serde_json::from_str(&text_v).unwrap(),
            |id| (id == &schema.id).then(|| schema.clone()),
        )
        .unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn change_events_round_trip_with_every_value_kind() {
        let table = every_type_schema();
        let row = sample_row();
        for op in [Op::Create, Op::Update, Op::Read] {
            roundtrip(Message::Change(ChangeEvent {
                table: table.clone(),
                op,
                key: vec![row[0].clone(), row[1].clone()],
                after: Some(row.clone()),
                version: 17,
                commit_time: DateTime::from_timestamp_millis(1_700_000_000_123),
            }));
        }
        let mut nulls = row.clone();
        for v in nulls.iter_mut().skip(2) {
            *v = Value::Null;
        }
        roundtrip(Message::Change(ChangeEvent {
            table: table.clone(),
            op: Op::Update,
            key: vec![row[0].clone(), row[1].clone()],
            after: Some(nulls),
            version: 18,
            commit_time: None,
        }));
        roundtrip(Message::Change(ChangeEvent {
            table,
            op: Op::Delete,
            key: vec![row[0].clone(), row[1].clone()],
            after: None,
            version: 19,
            commit_time: None,
        }));
    }

    #[test]
    fn control_messages_round_trip() {
        let table = every_type_schema();
        let row = sample_row();
        roundtrip(Message::Watermark(Watermark {
            version: 99,
            commit_time: DateTime::from_timestamp_millis(1_700_000_000_000),
        }));
        roundtrip(Message::Snapshot(SnapshotMarker::Started {
            table: table.clone(),
            version: 5,
            total_rows: Some(1000),
            id: 1_764_000_000_000_000_042,
            requested: true,
        }));
        roundtrip(Message::Snapshot(SnapshotMarker::Chunk {
            table: table.clone(),
            last_key: vec![row[0].clone(), row[1].clone()],
            rows: 500,
        }));
        roundtrip(Message::Snapshot(SnapshotMarker::Done {
            table,
            version: 5,
            rows: 1000,
        }));
    }

    /// The every-type table after `ALTER TABLE … ADD Grade nvarchar(20)` and
    /// `DROP COLUMN Photo`, with `FirstName` widened to 100.
    fn changed_schema() -> Arc<TableSchema> {
        let mut t = (*every_type_schema()).clone();
        t.columns.retain(|c| c.name != "Photo");
        t.columns[2].source_type.max_length = Some(100);
        let mut grade = col("Grade", "nvarchar");
        grade.source_type.max_length = Some(20);
        t.columns.push(grade);
        Arc::new(t)
    }

    #[test]
    fn a_snapshot_start_carries_the_shape_it_was_read_in() {
        let old = every_type_schema();
        let new = changed_schema();
        let msg = Message::Snapshot(SnapshotMarker::Started {
            table: new.clone(),
            version: 7,
            total_rows: None,
            id: 1,
            requested: true,
        });
        let (k, v) = encode("edfi-ods", "EdFi_Ods", &msg);
        // The reader still knows the old shape: the marker's wins.
        let back = decode(&k, &v, |_| Some(old.clone())).unwrap();
        assert_eq!(back, msg);
        assert_eq!(
            new.changes_from(&old),
            vec![
                "FirstName nvarchar(max) → nvarchar(100)",
                "added Grade nvarchar(20)",
                "dropped Photo"
            ]
        );
        assert!(old.changes_from(&old).is_empty());
        let mut moved = (*old).clone();
        let photo = moved.columns.remove(7);
        moved.columns.push(photo);
        assert_eq!(
            moved.changes_from(&old).len(),
            1,
            "Photo dropped and added again"
        );
        let mut rekeyed = (*old).clone();
        rekeyed.key = vec![0];
        assert_eq!(
            rekeyed.changes_from(&old),
            vec!["key (StudentUSI, BirthDate) → (StudentUSI)"]
        );
    }

    #[test]
    fn events_conform_to_a_changed_shape_by_column_name() {
        let old = every_type_schema();
        let new = changed_schema();
        let row = sample_row();
        let key = vec![row[0].clone(), row[1].clone()];
        let ev = ChangeEvent {
            table: old.clone(),
            op: Op::Update,
            key: key.clone(),
            after: Some(row.clone()),
            version: 3,
            commit_time: None,
        };
        let to_new = ev.clone().conform(&new);
        assert!(Arc::ptr_eq(&to_new.table, &new));
        let after = to_new.after.clone().unwrap();
        assert_eq!(after.len(), new.columns.len());
        assert_eq!(after[2], row[2], "FirstName kept");
        assert_eq!(
            after[7], row[8],
            "Ratio found by name past the dropped Photo"
        );
        assert_eq!(after[10], Value::Null, "Grade absent from the old row");
        assert_eq!(to_new.key, key);
        let back = to_new.conform(&old);
        assert_eq!(
            back.after.unwrap()[7],
            Value::Null,
            "Photo absent from the new row"
        );
        let delete = ChangeEvent {
            op: Op::Delete,
            after: None,
            ..ev
        };
        assert_eq!(delete.conform(&new).key, key);
    }

    #[test]
    fn envelope_has_debezium_fields() {
        let table = every_type_schema();
        let row = sample_row();
        let (k, v) = encode(
            "edfi-ods",
            "EdFi_Ods",
            &Message::Change(ChangeEvent {
                table,
                op: Op::Create,
                key: vec![row[0].clone(), row[1].clone()],
                after: Some(row),
                version: 3,
                commit_time: None,
            }),
        );
        assert_eq!(k, json!({"StudentUSI": 42, "BirthDate": "2010-03-04"}));
        for field in ["before", "after", "source", "op", "ts_ms"] {
            assert!(v.get(field).is_some(), "missing {field}");
        }
        assert_eq!(v["op"], "c");
        assert_eq!(v["source"]["table"], "Student");
        assert_eq!(v["after"]["FirstName"], "Zoë \"Nguyễn\", 日本\n");
    }
}
