//! Column values in PostgreSQL's text form (what `pgoutput` sends and what snapshot reads select
//! as `::text`), read with the session settings the poller sets: `DateStyle = ISO`,
//! `TimeZone = UTC`, `bytea_output = hex`, `extra_float_digits = 3`.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use uuid::Uuid;

use crate::event::{hex_decode, hex_encode, Value, ValueKind};

/// Session settings under which [`parse`] reads every value.
pub const SESSION: &str = "SET DateStyle = ISO; SET TimeZone = 'UTC'; SET bytea_output = hex; \
     SET extra_float_digits = 3; SET IntervalStyle = postgres";

/// The value of a column of `kind` from its text form; `None` when the text is not one.
pub fn parse(kind: ValueKind, text: &str) -> Option<Value> {
    Some(match kind {
        ValueKind::Bool => Value::Bool(match text {
            "t" | "true" => true,
            "f" | "false" => false,
            _ => return None,
        }),
        ValueKind::Int => Value::Int(text.parse().ok()?),
        ValueKind::Float => Value::Float(match text {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            t => t.parse().ok()?,
        }),
        ValueKind::Decimal => {
            text.parse::<f64>().ok()?;
            Value::Decimal(text.to_string())
        }
        ValueKind::String => Value::String(text.to_string()),
        ValueKind::Bytes => Value::Bytes(hex_decode(text.strip_prefix("\\x")?)?),
        ValueKind::Date => Value::Date(NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?),
        ValueKind::Timestamp => {
            Value::Timestamp(NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").ok()?)
        }
        ValueKind::TimestampTz => {
            // `2024-05-01 12:00:00.5+00` under TimeZone UTC: the offset has hours only.
            let full = if text.len() > 3 && text.as_bytes()[text.len() - 3] == b'+' {
                format!("{text}:00")
            } else {
                text.to_string()
            };
            Value::TimestampTz(
                DateTime::parse_from_str(&full, "%Y-%m-%d %H:%M:%S%.f%:z")
                    .ok()?
                    .with_timezone(&Utc),
            )
        }
        ValueKind::Time => Value::Time(NaiveTime::parse_from_str(text, "%H:%M:%S%.f").ok()?),
        ValueKind::Uuid => Value::Uuid(Uuid::parse_str(text).ok()?),
    })
}

/// A key value as the text a query casts back (`$1::text::bigint`); `None` for NULL.
pub fn to_text(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Decimal(s) | Value::String(s) => s.clone(),
        Value::Bytes(b) => format!("\\x{}", hex_encode(b)),
        Value::Date(d) => d.format("%Y-%m-%d").to_string(),
        Value::Timestamp(t) => t.format("%Y-%m-%d %H:%M:%S%.f").to_string(),
        Value::TimestampTz(t) => t.format("%Y-%m-%d %H:%M:%S%.f+00").to_string(),
        Value::Time(t) => t.format("%H:%M:%S%.f").to_string(),
        Value::Uuid(u) => u.to_string(),
    })
}

/// The PostgreSQL type a key parameter of `kind` is cast to.
pub fn cast(kind: ValueKind) -> &'static str {
    match kind {
        ValueKind::Bool => "boolean",
        ValueKind::Int => "bigint",
        ValueKind::Float => "double precision",
        ValueKind::Decimal => "numeric",
        ValueKind::String => "text",
        ValueKind::Bytes => "bytea",
        ValueKind::Date => "date",
        ValueKind::Timestamp => "timestamp",
        ValueKind::TimestampTz => "timestamptz",
        ValueKind::Time => "time",
        ValueKind::Uuid => "uuid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_read_back_as_the_values_they_are() {
        let cases = [
            (ValueKind::Bool, "t", Value::Bool(true)),
            (ValueKind::Int, "-42", Value::Int(-42)),
            (
                ValueKind::Decimal,
                "12.340",
                Value::Decimal("12.340".into()),
            ),
            (ValueKind::Bytes, "\\x00ff", Value::Bytes(vec![0, 255])),
            (
                ValueKind::Date,
                "2025-06-13",
                Value::Date(NaiveDate::from_ymd_opt(2025, 6, 13).unwrap()),
            ),
            (
                ValueKind::Timestamp,
                "2025-06-13 08:30:00.25",
                Value::Timestamp(
                    NaiveDate::from_ymd_opt(2025, 6, 13)
                        .unwrap()
                        .and_hms_milli_opt(8, 30, 0, 250)
                        .unwrap(),
                ),
            ),
            (
                ValueKind::TimestampTz,
                "2025-06-13 08:30:00+00",
                Value::TimestampTz(
                    NaiveDate::from_ymd_opt(2025, 6, 13)
                        .unwrap()
                        .and_hms_opt(8, 30, 0)
                        .unwrap()
                        .and_utc(),
                ),
            ),
        ];
        for (kind, text, want) in cases {
            let got = parse(kind, text).unwrap_or_else(|| panic!("{text} as {kind:?}"));
            assert_eq!(got, want, "{text}");
            assert_eq!(parse(kind, &to_text(&got).unwrap()), Some(got), "{text}");
        }
        assert_eq!(parse(ValueKind::Int, "x"), None);
        assert_eq!(parse(ValueKind::Bool, "yes"), None);
    }
}
