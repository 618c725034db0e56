//! The CSV of batch files: RFC 4180 fields, `\N` (unquoted) for NULL, every other text value
//! quoted — so NULL, the empty string and the text `\N` stay distinct — and numbers, booleans
//! and times in forms both Redshift's and PostgreSQL's COPY read. Written by hand because it
//! needs per-field quoting (quoted text, unquoted NULL), which general CSV writers do not offer.

use std::fmt::Write;

use crate::event::{time_text, Value};

/// The NULL marker (`NULL AS '\N'` in the COPY).
pub const NULL: &str = "\\N";

fn quoted(buf: &mut String, s: &str) {
    buf.push('"');
    for c in s.chars() {
        if c == '"' {
            buf.push('"');
        }
        buf.push(c);
    }
    buf.push('"');
}

/// Append one field.
pub fn push_value(buf: &mut String, v: &Value) {
    match v {
        Value::Null => buf.push_str(NULL),
        Value::Bool(b) => buf.push(if *b { 't' } else { 'f' }),
        Value::Int(i) => write!(buf, "{i}").expect("writing to a String"),
        Value::Float(f) => write!(buf, "{f:?}").expect("writing to a String"),
        Value::Decimal(s) => buf.push_str(s),
        Value::String(s) => quoted(buf, s),
        Value::Bytes(b) => {
            buf.push('"');
            for byte in b {
                write!(buf, "{byte:02x}").expect("writing to a String");
            }
            buf.push('"');
        }
        Value::Date(d) => write!(buf, "{}", d.format("%Y-%m-%d")).expect("writing to a String"),
        Value::Timestamp(_) | Value::TimestampTz(_) | Value::Time(_) => {
            buf.push_str(&time_text(v).expect("a time value"))
        }
        Value::Uuid(u) => write!(buf, "{u}").expect("writing to a String"),
    }
}

/// Append one record (comma-separated, `\n`-terminated).
pub fn push_row<'a>(buf: &mut String, values: impl IntoIterator<Item = &'a Value>) {
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            buf.push(',');
        }
        push_value(buf, v);
    }
    buf.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_null_empty_and_awkward_text_apart() {
        let mut s = String::new();
        push_row(
            &mut s,
            &[
                Value::Null,
                Value::String(String::new()),
                Value::String("\\N".into()),
                Value::String("say \"hi\", then\nleave".into()),
                Value::String("Zoë 日本".into()),
                Value::Int(-3),
                Value::Bool(true),
            ],
        );
        assert_eq!(
            s,
            "\\N,\"\",\"\\N\",\"say \"\"hi\"\", then\nleave\",\"Zoë 日本\",-3,t\n"
        );
    }
}
