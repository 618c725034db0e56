//! Conversions between tiberius column data and [`Value`].

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use tiberius::numeric::Numeric;
use tiberius::{ColumnData, FromSql, Query};

use crate::event::Value;

/// Plain decimal text of an unscaled integer and its scale: (−1234, 2) → `-12.34`.
pub fn decimal_text(value: i128, scale: u8) -> String {
    let digits = value.unsigned_abs().to_string();
    let sign = if value < 0 { "-" } else { "" };
    let scale = scale as usize;
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// Inverse of [`decimal_text`].
pub fn parse_decimal(text: &str) -> Option<(i128, u8)> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let negative = int.starts_with('-');
    let int = int.trim_start_matches(['-', '+']);
    if !(int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())) || frac.len() > 38 {
        return None;
    }
    let unscaled: i128 = format!("{int}{frac}").parse().ok()?;
    Some((
        if negative { -unscaled } else { unscaled },
        frac.len() as u8,
    ))
}

pub fn from_column(data: ColumnData<'static>) -> Value {
    fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
        v.map_or(Value::Null, f)
    }
    match &data {
        ColumnData::U8(v) => opt(*v, |v| Value::Int(v.into())),
        ColumnData::I16(v) => opt(*v, |v| Value::Int(v.into())),
        ColumnData::I32(v) => opt(*v, |v| Value::Int(v.into())),
        ColumnData::I64(v) => opt(*v, Value::Int),
        ColumnData::F32(v) => opt(*v, |v| Value::Float(v.into())),
        ColumnData::F64(v) => opt(*v, Value::Float),
        ColumnData::Bit(v) => opt(*v, Value::Bool),
        ColumnData::String(v) => opt(v.clone(), |s| Value::String(s.into_owned())),
        ColumnData::Guid(v) => opt(*v, Value::Uuid),
        ColumnData::Binary(v) => opt(v.clone(), |b| Value::Bytes(b.into_owned())),
        ColumnData::Numeric(v) => opt(*v, |n| Value::Decimal(decimal_text(n.value(), n.scale()))),
        ColumnData::Xml(v) => opt(v.clone(), |x| Value::String(x.to_string())),
        ColumnData::Date(_) => opt(NaiveDate::from_sql(&data).ok().flatten(), Value::Date),
        ColumnData::Time(_) => opt(NaiveTime::from_sql(&data).ok().flatten(), Value::Time),
        ColumnData::DateTime(_) | ColumnData::SmallDateTime(_) | ColumnData::DateTime2(_) => opt(
            NaiveDateTime::from_sql(&data).ok().flatten(),
            Value::Timestamp,
        ),
        ColumnData::DateTimeOffset(_) => opt(
            DateTime::<Utc>::from_sql(&data).ok().flatten(),
            Value::TimestampTz,
        ),
    }
}

/// Bind a value as the next `@Pn` parameter.
pub fn bind(query: &mut Query<'_>, value: &Value) {
    match value {
        Value::Null => query.bind(Option::<i32>::None),
        Value::Bool(b) => query.bind(*b),
        Value::Int(i) => query.bind(*i),
        Value::Float(f) => query.bind(*f),
        Value::Decimal(s) => match parse_decimal(s) {
            Some((v, scale)) => query.bind(Numeric::new_with_scale(v, scale)),
            None => query.bind(s.clone()),
        },
        Value::String(s) => query.bind(s.clone()),
        Value::Bytes(b) => query.bind(b.clone()),
        Value::Date(d) => query.bind(*d),
        Value::Timestamp(t) => query.bind(*t),
        Value::TimestampTz(t) => query.bind(*t),
        Value::Time(t) => query.bind(*t),
        Value::Uuid(u) => query.bind(*u),
    }
}

/// Read a cell as an integer (any integer width, or a decimal without a fraction) — catalog
/// columns vary between tinyint and int, and sums may come back as decimals.
pub fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Bool(b) => Some(*b as i64),
        Value::Decimal(s) => parse_decimal(s).and_then(|(v, scale)| {
            let unit = 10i128.checked_pow(scale.into())?;
            (v % unit == 0)
                .then(|| i64::try_from(v / unit).ok())
                .flatten()
        }),
        _ => None,
    }
}

pub fn as_str(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_render_and_parse_exactly() {
        for (v, s, text) in [
            (-1234, 2, "-12.34"),
            (5, 3, "0.005"),
            (-5, 3, "-0.005"),
            (42, 0, "42"),
            (100, 2, "1.00"),
        ] {
            assert_eq!(decimal_text(v, s), text);
            assert_eq!(parse_decimal(text), Some((v, s)));
        }
        assert_eq!(parse_decimal("1e5"), None);
    }
}
