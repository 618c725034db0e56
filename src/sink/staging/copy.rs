//! PostgreSQL COPY text format for [`Value`]s.

use std::fmt::Write;

use crate::event::{time_text, Value};

/// Append one value, escaped for COPY's text format (`\N` is NULL).
pub fn push_value(buf: &mut String, v: &Value) {
    match v {
        Value::Null => buf.push_str("\\N"),
        Value::Bool(b) => buf.push(if *b { 't' } else { 'f' }),
        Value::Int(i) => write!(buf, "{i}").expect("writing to a String"),
        Value::Float(f) => write!(buf, "{f:?}").expect("writing to a String"),
        Value::Decimal(s) => buf.push_str(s),
        Value::String(s) => {
            for c in s.chars() {
                match c {
                    '\\' => buf.push_str("\\\\"),
                    '\t' => buf.push_str("\\t"),
                    '\n' => buf.push_str("\\n"),
                    '\r' => buf.push_str("\\r"),
                    c => buf.push(c),
                }
            }
        }
        Value::Bytes(b) => {
            buf.push_str("\\\\x");
            for byte in b {
                write!(buf, "{byte:02x}").expect("writing to a String");
            }
        }
        Value::Date(d) => write!(buf, "{}", d.format("%Y-%m-%d")).expect("writing to a String"),
        Value::Timestamp(_) | Value::TimestampTz(_) | Value::Time(_) => {
            buf.push_str(&time_text(v).expect("a time value"))
        }
        Value::Uuid(u) => write!(buf, "{u}").expect("writing to a String"),
    }
}

/// Append one row (tab-separated, newline-terminated).
pub fn push_row<'a>(buf: &mut String, values: impl IntoIterator<Item = &'a Value>) {
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            buf.push('\t');
        }
        push_value(buf, v);
    }
    buf.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_text_and_bytes() {
        let mut s = String::new();
        push_row(
            &mut s,
            &[
                Value::String("a\tb\\c\nd".into()),
                Value::Null,
                Value::Bytes(vec![0, 255]),
                Value::String(String::new()),
            ],
        );
        assert_eq!(s, "a\\tb\\\\c\\nd\t\\N\t\\\\x00ff\t\n");
    }
}
