//! Kafka records as Debezium's SQL Server connector writes them through Kafka Connect's
//! JsonConverter with schemas (`[stream.kafka] format = "debezium"`): key and value are each
//! `{"schema": …, "payload": …}`; the value's payload is the envelope `before` / `after` /
//! `source` / `op` / `ts_ms` / `transaction`, its `source` block has Debezium's fields, and column
//! values take Debezium's default representations (`time.precision.mode = adaptive`,
//! `decimal.handling.mode = precise`, binary as bytes): dates as days since the epoch,
//! timestamps as milli-, micro- or nanoseconds by the column's precision where the catalog
//! gives it (else nanoseconds), decimals as the unscaled two's-complement integer in base64
//! with the scale in the schema. A value without such a form (a nanosecond timestamp outside
//! 1677–2262, a NaN) is an error, never a wrong number. The Change Tracking version stands
//! where Debezium puts its LSNs (`change_lsn`, `commit_lsn`, as text).
//!
//! Control records (watermarks, snapshot markers) keep this project's payload, with a schema
//! derived from it, so that a converter with schemas reads them too before a filter drops them
//! by their header. [`unwrap`] turns either back into the envelope `event::decode` reads.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use serde_json::{json, Map, Value as Json};

use crate::event::{self, ColumnSchema, Message, Op, TableSchema, Value, ValueKind};

/// How a column travels: its Connect schema type and logical name, and the unit of its value.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Repr {
    Boolean,
    Int(&'static str),
    Float(&'static str),
    /// Unscaled integer bytes, this scale.
    Decimal(u8),
    /// A decimal of unknown scale as text (Debezium's `decimal.handling.mode = string`).
    DecimalText,
    Text(Option<&'static str>),
    Bytes,
    Date,
    /// Timestamp in this many fractional digits (3, 6 or 9).
    Timestamp(u8),
    Time(u8),
}

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");

fn repr(c: &ColumnSchema) -> Repr {
    let t = &c.source_type;
    // Fractional digits of a datetime2 or time column, as Debezium's adaptive mode rounds them.
    let digits = match t.scale.unwrap_or(7) {
        0..=3 => 3,
        4..=6 => 6,
        _ => 9,
    };
    match t.name.as_str() {
        "bit" => Repr::Boolean,
        "tinyint" | "smallint" => Repr::Int("int16"),
        "int" => Repr::Int("int32"),
        "bigint" => Repr::Int("int64"),
        "real" => Repr::Float("float"),
        "float" => Repr::Float("double"),
        "money" | "smallmoney" => Repr::Decimal(4),
        "datetime" | "smalldatetime" => Repr::Timestamp(3),
        "datetimeoffset" => Repr::Text(Some("io.debezium.time.ZonedTimestamp")),
        "uniqueidentifier" => Repr::Text(None),
        _ => match t.kind() {
            ValueKind::Bool => Repr::Boolean,
            ValueKind::Int => Repr::Int("int64"),
            ValueKind::Float => Repr::Float("double"),
            ValueKind::Decimal => t.scale.map_or(Repr::DecimalText, Repr::Decimal),
            ValueKind::String | ValueKind::Uuid | ValueKind::TimestampTz => Repr::Text(None),
            ValueKind::Bytes => Repr::Bytes,
            ValueKind::Date => Repr::Date,
            ValueKind::Timestamp => Repr::Timestamp(digits),
            ValueKind::Time => Repr::Time(digits),
        },
    }
}

/// The Connect schema of column `c`.
fn field_schema(c: &ColumnSchema) -> Json {
    let mut s = match repr(c) {
        Repr::Boolean => json!({"type": "boolean"}),
        Repr::Int(t) | Repr::Float(t) => json!({"type": t}),
        Repr::Decimal(scale) => json!({
            "type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
            "parameters": {
                "scale": scale.to_string(),
                "connect.decimal.precision": c.source_type.precision.unwrap_or(38).to_string(),
            },
        }),
        Repr::DecimalText => json!({"type": "string"}),
        Repr::Text(None) => json!({"type": "string"}),
        Repr::Text(Some(name)) => json!({"type": "string", "name": name, "version": 1}),
        Repr::Bytes => json!({"type": "bytes"}),
        Repr::Date => json!({"type": "int32", "name": "io.debezium.time.Date", "version": 1}),
        Repr::Timestamp(d) => json!({"type": "int64", "name": match d {
            3 => "io.debezium.time.Timestamp",
            6 => "io.debezium.time.MicroTimestamp",
            _ => "io.debezium.time.NanoTimestamp",
        }, "version": 1}),
        Repr::Time(d) => json!({"type": if d == 3 { "int32" } else { "int64" }, "name": match d {
            3 => "io.debezium.time.Time",
            6 => "io.debezium.time.MicroTime",
            _ => "io.debezium.time.NanoTime",
        }, "version": 1}),
    };
    s["optional"] = json!(c.nullable);
    s["field"] = json!(c.name);
    s
}

fn scale_factor(digits: u8) -> i64 {
    10i64.pow(9 - u32::from(digits))
}

/// Column `c`'s value in Debezium's representation; an error for a value that has none.
fn field_value(c: &ColumnSchema, v: &Value) -> Result<Json, String> {
    let none = |what: &str| format!("column {}: {what}", c.name);
    Ok(match (repr(c), v) {
        (_, Value::Null) => Json::Null,
        (Repr::Decimal(scale), Value::Decimal(s)) => match unscaled(s, scale) {
            Some(n) => Json::String(BASE64.encode(twos_complement(n))),
            None => {
                return Err(none(&format!(
                    "{s} has no Connect Decimal form at scale {scale}"
                )))
            }
        },
        (_, Value::Float(f)) if !f.is_finite() => {
            return Err(none(&format!("{f} has no JSON form")))
        }
        (Repr::Bytes, Value::Bytes(b)) => Json::String(BASE64.encode(b)),
        (Repr::Date, Value::Date(d)) => json!((*d - EPOCH).num_days()),
        (Repr::Timestamp(digits), Value::Timestamp(t)) => {
            let t = t.and_utc();
            match digits {
                3 => json!(t.timestamp_millis()),
                6 => json!(t.timestamp_micros()),
                _ => json!(t.timestamp_nanos_opt().ok_or_else(|| none(&format!(
                    "{t} is outside io.debezium.time.NanoTimestamp's range (1677-09-21 to 2262-04-11)"
                )))?),
            }
        }
        (Repr::Time(digits), Value::Time(t)) => {
            let nanos = i64::from(t.num_seconds_from_midnight()) * 1_000_000_000
                + i64::from(t.nanosecond());
            json!(nanos / scale_factor(digits))
        }
        (_, v) => v.to_json(),
    })
}

/// `text` (a decimal) as an integer at `scale` digits after the point; `None` when it does not
/// fit.
fn unscaled(text: &str, scale: u8) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let frac: String = frac
        .chars()
        .chain(std::iter::repeat('0'))
        .take(scale as usize)
        .collect();
    let n: i128 = format!("{whole}{frac}").parse().ok()?;
    Some(if negative { -n } else { n })
}

/// Big-endian two's complement in the fewest bytes, as Java's `BigInteger.toByteArray`.
fn twos_complement(n: i128) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let mut start = 0;
    while start < 15 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        let redundant = (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    bytes[start..].to_vec()
}

fn from_twos_complement(bytes: &[u8]) -> Option<i128> {
    if bytes.is_empty() || bytes.len() > 16 {
        return None;
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut full = [fill; 16];
    full[16 - bytes.len()..].copy_from_slice(bytes);
    Some(i128::from_be_bytes(full))
}

fn decimal_text(n: i128, scale: u32) -> String {
    let digits = n.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, frac) = padded.split_at(padded.len() - scale);
    let sign = if n < 0 { "-" } else { "" };
    if frac.is_empty() {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{frac}")
    }
}

/// A struct schema named `name` with `fields`.
fn struct_schema(name: &str, optional: bool, fields: Vec<Json>) -> Json {
    json!({"type": "struct", "name": name, "optional": optional, "fields": fields})
}

/// A schema for a JSON document of this project's (control records), from its values.
fn schema_of(values: &[&Json]) -> Json {
    let first = values.iter().find(|v| !v.is_null());
    match first {
        None | Some(Json::Null) => json!({"type": "string", "optional": true}),
        Some(Json::Bool(_)) => json!({"type": "boolean", "optional": true}),
        Some(Json::Number(n)) if n.is_f64() => json!({"type": "double", "optional": true}),
        Some(Json::Number(_)) => json!({"type": "int64", "optional": true}),
        Some(Json::String(_)) => json!({"type": "string", "optional": true}),
        Some(Json::Array(_)) => {
            let items: Vec<&Json> = values
                .iter()
                .filter_map(|v| v.as_array())
                .flatten()
                .collect();
            json!({"type": "array", "optional": true, "items": schema_of(&items)})
        }
        Some(Json::Object(_)) => {
            let mut names: Vec<&String> = Vec::new();
            for v in values.iter().filter_map(|v| v.as_object()) {
                for k in v.keys() {
                    if !names.contains(&k) {
                        names.push(k);
                    }
                }
            }
            let fields: Vec<Json> = names
                .into_iter()
                .map(|k| {
                    let of: Vec<&Json> = values.iter().map(|v| &v[k.as_str()]).collect();
                    let mut s = schema_of(&of);
                    s["field"] = json!(k);
                    s
                })
                .collect();
            json!({"type": "struct", "optional": true, "fields": fields})
        }
    }
}

fn wrap(schema: Json, payload: Json) -> Json {
    json!({"schema": schema, "payload": payload})
}

/// Key and value of `msg` in Debezium's Connect JSON. `prefix` is the logical server name
/// (`topic_prefix`), `connector` the source's kind (`sqlserver`, `postgresql`). An error names
/// the table, column and value that have no such form.
pub fn encode(
    prefix: &str,
    connector: &str,
    database: &str,
    msg: &Message,
) -> Result<(Json, Json), String> {
    let Message::Change(ev) = msg else {
        let (key, value) = event::encode(prefix, database, msg);
        return Ok((
            wrap(schema_of(&[&key]), key),
            wrap(schema_of(&[&value]), value),
        ));
    };
    let in_table = |e: String| format!("table {}: {e}", ev.table.id);
    let t: &TableSchema = &ev.table;
    let base = format!("{prefix}.{}.{}", t.id.schema, t.id.name);
    let key_fields: Vec<Json> = t.key_columns().map(field_schema).collect();
    let key_payload = t
        .key_columns()
        .zip(&ev.key)
        .map(|(c, v)| Ok((c.name.clone(), field_value(c, v)?)))
        .collect::<Result<Map<String, Json>, String>>()
        .map_err(in_table)?;
    let key = wrap(
        struct_schema(&format!("{base}.Key"), false, key_fields),
        Json::Object(key_payload),
    );
    let row_fields: Vec<Json> = t.columns.iter().map(field_schema).collect();
    let row = struct_schema(&format!("{base}.Value"), true, row_fields);
    let after = match &ev.after {
        None => Json::Null,
        Some(values) => Json::Object(
            t.columns
                .iter()
                .zip(values)
                .map(|(c, v)| Ok((c.name.clone(), field_value(c, v)?)))
                .collect::<Result<Map<String, Json>, String>>()
                .map_err(in_table)?,
        ),
    };
    let string =
        |name: &str, optional: bool| json!({"type": "string", "optional": optional, "field": name});
    let int64 =
        |name: &str, optional: bool| json!({"type": "int64", "optional": optional, "field": name});
    let source_fields = vec![
        string("version", false),
        string("connector", false),
        string("name", false),
        int64("ts_ms", false),
        json!({"type": "string", "optional": true, "name": "io.debezium.data.Enum", "version": 1,
               "parameters": {"allowed": "true,last,false,incremental"}, "field": "snapshot"}),
        string("db", false),
        string("sequence", true),
        string("schema", false),
        string("table", false),
        string("change_lsn", true),
        string("commit_lsn", true),
        int64("event_serial_no", true),
    ];
    let mut source = struct_schema(
        "io.debezium.connector.sqlserver.Source",
        false,
        source_fields,
    );
    source["field"] = json!("source");
    let transaction = json!({
        "type": "struct", "name": "event.block", "version": 1, "optional": true, "field": "transaction",
        "fields": [string("id", false), int64("total_order", false), int64("data_collection_order", false)],
    });
    let mut before_schema = row.clone();
    before_schema["field"] = json!("before");
    let mut after_schema = row;
    after_schema["field"] = json!("after");
    let schema = struct_schema(
        &format!("{base}.Envelope"),
        false,
        vec![
            before_schema,
            after_schema,
            source,
            string("op", false),
            int64("ts_ms", true),
            transaction,
        ],
    );
    let version = ev.version.to_string();
    let payload = json!({
        "before": Json::Null,
        "after": after,
        "source": {
            "version": env!("CARGO_PKG_VERSION"),
            "connector": connector,
            "name": prefix,
            "ts_ms": ev.commit_time.map_or(0, |t| t.timestamp_millis()),
            "snapshot": if ev.op == Op::Read { "true" } else { "false" },
            "db": database,
            "sequence": Json::Null,
            "schema": t.id.schema,
            "table": t.id.name,
            "change_lsn": version,
            "commit_lsn": version,
            "event_serial_no": 1,
        },
        "op": ev.op.code(),
        "ts_ms": chrono::Utc::now().timestamp_millis(),
        "transaction": Json::Null,
    });
    Ok((key, wrap(schema, payload)))
}

/// Whether `value` is a Connect JSON document with a schema (this module's format).
pub fn is_wrapped(value: &Json) -> bool {
    value.get("schema").is_some() && value.get("payload").is_some()
}

/// A Debezium-represented value back in this project's JSON form, by its field schema.
fn field_back(schema: &Json, v: &Json) -> Result<Json, String> {
    if v.is_null() {
        return Ok(Json::Null);
    }
    let bad = || format!("value {v} does not fit its schema {schema}");
    let int = || v.as_i64().ok_or_else(bad);
    let text = || v.as_str().ok_or_else(bad);
    let name = schema["name"].as_str().unwrap_or_default();
    let digits = |d: u8| -> Result<NaiveDateTime, String> {
        let n = int()?;
        let t = match d {
            3 => chrono::DateTime::from_timestamp_millis(n),
            6 => chrono::DateTime::from_timestamp_micros(n),
            _ => Some(chrono::DateTime::from_timestamp_nanos(n)),
        };
        Ok(t.ok_or_else(bad)?.naive_utc())
    };
    let time = |d: u8| -> Result<Json, String> {
        let nanos = int()?.checked_mul(scale_factor(d)).ok_or_else(bad)?;
        let t = NaiveTime::from_num_seconds_from_midnight_opt(
            (nanos / 1_000_000_000) as u32,
            (nanos % 1_000_000_000) as u32,
        )
        .ok_or_else(bad)?;
        Ok(Value::Time(t).to_json())
    };
    Ok(match name {
        "org.apache.kafka.connect.data.Decimal" => {
            let scale: u32 = schema["parameters"]["scale"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(bad)?;
            let bytes = BASE64.decode(text()?).map_err(|_| bad())?;
            Json::String(decimal_text(
                from_twos_complement(&bytes).ok_or_else(bad)?,
                scale,
            ))
        }
        "io.debezium.time.Date" => {
            let day = EPOCH
                .checked_add_signed(chrono::Duration::days(int()?))
                .ok_or_else(bad)?;
            Value::Date(day).to_json()
        }
        "io.debezium.time.Timestamp" => Value::Timestamp(digits(3)?).to_json(),
        "io.debezium.time.MicroTimestamp" => Value::Timestamp(digits(6)?).to_json(),
        "io.debezium.time.NanoTimestamp" => Value::Timestamp(digits(9)?).to_json(),
        "io.debezium.time.Time" => time(3)?,
        "io.debezium.time.MicroTime" => time(6)?,
        "io.debezium.time.NanoTime" => time(9)?,
        _ if schema["type"] == "bytes" => Json::String(event::hex_encode(
            &BASE64.decode(text()?).map_err(|_| bad())?,
        )),
        _ => v.clone(),
    })
}

/// A struct payload back in this project's form, by the struct's schema.
fn struct_back(schema: &Json, payload: &Json) -> Result<Json, String> {
    if payload.is_null() {
        return Ok(Json::Null);
    }
    let fields = schema["fields"]
        .as_array()
        .ok_or_else(|| format!("a struct schema without fields: {schema}"))?;
    let mut out = Map::with_capacity(fields.len());
    for f in fields {
        let name = f["field"].as_str().unwrap_or_default();
        out.insert(name.to_string(), field_back(f, &payload[name])?);
    }
    Ok(Json::Object(out))
}

/// Key and value of a record of this format in the envelope `event::decode` reads.
pub fn unwrap(key: &Json, value: &Json) -> Result<(Json, Json), String> {
    let payload = &value["payload"];
    let key_payload = if is_wrapped(key) {
        &key["payload"]
    } else {
        key
    };
    if !matches!(payload["op"].as_str(), Some("c" | "u" | "d" | "r")) {
        return Ok((key_payload.clone(), payload.clone()));
    }
    let field = |name: &str| {
        value["schema"]["fields"]
            .as_array()
            .and_then(|fs| fs.iter().find(|f| f["field"] == name))
            .cloned()
            .ok_or_else(|| format!("the value's schema has no `{name}`"))
    };
    let source = &payload["source"];
    let version: i64 = source["commit_lsn"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("source.commit_lsn is not a change version: {source}"))?;
    let key = struct_back(&key["schema"], key_payload)?;
    let after = struct_back(&field("after")?, &payload["after"])?;
    let ts_ms = source["ts_ms"].as_i64().filter(|&t| t > 0);
    Ok((
        key,
        json!({
            "before": Json::Null,
            "after": after,
            "source": {
                "connector": source["name"],
                "db": source["db"],
                "schema": source["schema"],
                "table": source["table"],
                "change_version": version,
                "snapshot": source["snapshot"],
                "ts_ms": ts_ms,
            },
            "op": payload["op"],
            "ts_ms": payload["ts_ms"],
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ChangeEvent, SourceType, TableId};
    use std::sync::Arc;

    fn column(name: &str, ty: &str, precision: Option<u8>, scale: Option<u8>) -> ColumnSchema {
        ColumnSchema {
            name: name.into(),
            source_type: SourceType {
                name: ty.into(),
                max_length: None,
                precision,
                scale,
            },
            nullable: name != "Id",
        }
    }

    #[test]
    fn decimals_travel_as_javas_big_integer_bytes() {
        for (text, scale, bytes) in [
            ("0", 2, vec![0u8]),
            ("1.27", 2, vec![0x7f]),
            ("1.28", 2, vec![0x00, 0x80]),
            ("-1.28", 2, vec![0x80]),
            ("-1.29", 2, vec![0xff, 0x7f]),
            ("12.5", 2, vec![0x04, 0xe2]),
        ] {
            let n = unscaled(text, scale).unwrap();
            assert_eq!(twos_complement(n), bytes, "{text}");
            assert_eq!(from_twos_complement(&bytes), Some(n), "{text}");
        }
        assert_eq!(decimal_text(-5, 2), "-0.05");
        assert_eq!(decimal_text(1250, 2), "12.50");
        assert_eq!(decimal_text(7, 0), "7");
    }

    #[test]
    fn a_change_round_trips_through_the_connect_json_form() {
        let table = Arc::new(TableSchema {
            id: TableId::new("edfi", "Sample"),
            columns: vec![
                column("Id", "int", None, None),
                column("Flag", "bit", None, None),
                column("Small", "smallint", None, None),
                column("Score", "decimal", Some(9), Some(3)),
                column("Ratio", "float", None, None),
                column("Name", "nvarchar", None, None),
                column("Blob", "varbinary", None, None),
                column("Day", "date", None, None),
                column("At", "datetime2", Some(27), Some(7)),
                column("Old", "datetime", None, None),
                column("Clock", "time", Some(16), Some(7)),
                column("Guid", "uniqueidentifier", None, None),
                column("Missing", "nvarchar", None, None),
            ],
            key: vec![0],
        });
        let at = NaiveDate::from_ymd_opt(1969, 7, 20)
            .unwrap()
            .and_hms_nano_opt(20, 17, 40, 123_456_700)
            .unwrap();
        let values = vec![
            Value::Int(42),
            Value::Bool(true),
            Value::Int(-7),
            Value::Decimal("-1234.500".into()),
            Value::Float(0.25),
            Value::String("Zoë".into()),
            Value::Bytes(vec![0, 1, 254, 255]),
            Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()),
            Value::Timestamp(at),
            Value::Timestamp(
                NaiveDate::from_ymd_opt(2025, 1, 2)
                    .unwrap()
                    .and_hms_milli_opt(3, 4, 5, 997)
                    .unwrap(),
            ),
            Value::Time(NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_900).unwrap()),
            Value::Uuid(uuid::Uuid::from_u128(
                0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
            )),
            Value::Null,
        ];
        let ev = ChangeEvent {
            table: table.clone(),
            op: Op::Update,
            key: vec![Value::Int(42)],
            after: Some(values.clone()),
            version: 981,
            commit_time: None,
        };
        let (key, value) =
            encode("edfi-cdc", "sqlserver", "EdFi_Ods", &Message::Change(ev)).unwrap();
        assert!(is_wrapped(&key) && is_wrapped(&value));
        let p = &value["payload"];
        assert_eq!(p["source"]["connector"], "sqlserver");
        assert_eq!(p["source"]["commit_lsn"], "981");
        assert_eq!(p["after"]["Day"], json!(19782));
        assert_eq!(p["after"]["Old"], json!(1_735_787_045_997i64));
        assert_eq!(value["schema"]["name"], "edfi-cdc.edfi.Sample.Envelope");
        assert_eq!(key["schema"]["fields"][0]["type"], "int32");
        // Every field of the payload has its schema, and the other way round.
        let after_schema = &value["schema"]["fields"][1];
        let names: Vec<&str> = after_schema["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["field"].as_str().unwrap())
            .collect();
        let mut payload_names: Vec<&str> = p["after"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        payload_names.sort();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, payload_names);

        let (k, v) = unwrap(&key, &value).unwrap();
        let back = event::decode(&k, &v, |_| Some(table.clone())).unwrap();
        let Message::Change(back) = back else {
            panic!("not a change: {back:?}")
        };
        assert_eq!(back.version, 981);
        assert_eq!(back.key, vec![Value::Int(42)]);
        assert_eq!(back.after, Some(values));
    }

    #[test]
    fn values_without_a_debezium_form_are_refused_and_far_dates_travel_in_millis() {
        let table = Arc::new(TableSchema {
            id: TableId::new("edfi", "Far"),
            columns: vec![
                column("Id", "int", None, None),
                column("Old", "datetime", None, None),
                column("At", "datetime2", Some(27), Some(7)),
            ],
            key: vec![0],
        });
        let far = NaiveDate::from_ymd_opt(9999, 12, 31)
            .unwrap()
            .and_hms_milli_opt(23, 59, 59, 997)
            .unwrap();
        let change = |old: Value, at: Value| {
            Message::Change(ChangeEvent {
                table: table.clone(),
                op: Op::Create,
                key: vec![Value::Int(1)],
                after: Some(vec![Value::Int(1), old, at]),
                version: 5,
                commit_time: None,
            })
        };
        let far_old = change(Value::Timestamp(far), Value::Null);
        let (key, value) = encode("p", "sqlserver", "db", &far_old).unwrap();
        assert_eq!(
            value["payload"]["after"]["Old"],
            json!(253_402_300_799_997i64)
        );
        let (k, v) = unwrap(&key, &value).unwrap();
        let Message::Change(back) = event::decode(&k, &v, |_| Some(table.clone())).unwrap() else {
            panic!("not a change")
        };
        assert_eq!(back.after.unwrap()[1], Value::Timestamp(far));
        let far_at = change(Value::Null, Value::Timestamp(far));
        let err = encode("p", "sqlserver", "db", &far_at).unwrap_err();
        assert!(
            err.contains("edfi.Far") && err.contains("At") && err.contains("9999"),
            "{err}"
        );
    }

    #[test]
    fn control_records_get_a_schema_that_fits_their_payload() {
        let w = Message::Watermark(crate::event::Watermark {
            version: 7,
            commit_time: None,
        });
        let (key, value) = encode("p", "sqlserver", "db", &w).unwrap();
        assert_eq!(key["schema"]["fields"][0]["type"], "int64");
        let (k, v) = unwrap(&key, &value).unwrap();
        assert!(matches!(
            event::decode(&k, &v, |_| None).unwrap(),
            Message::Watermark(w) if w.version == 7
        ));
    }
}
