//! SQL Server's conversions where PostgreSQL's differ: `CAST`/`CONVERT` of binary values to
//! integers, `CONVERT` styles, `HASHBYTES`, and the result type of `SUM`. The type of an operand
//! is known only where the T-SQL writes it (a literal, a `CAST`/`CONVERT`, `HASHBYTES`,
//! `SUBSTRING` of those). A style whose output depends on a type that is not written is an error
//! naming it; a binary cast of a value not written as binary stays a plain cast (PostgreSQL
//! rejects `bytea` → integer); `HASHBYTES` hashes text as UTF-8 (see `hashbytes`).

use sqlparser::ast::{BinaryOperator, DataType, Expr, Function, FunctionArg, FunctionArgExpr};
use sqlparser::ast::{FunctionArguments, Value};

use super::pg::{literal, Printer};
use super::sqltype;
use crate::types::{SqlError, SqlType};

impl Printer {
    /// `CAST(e AS t)` / `CONVERT(t, e)`. A binary `e` converted to `bigint` or `int` is read as
    /// SQL Server reads it: big-endian, a shorter value zero-padded on the left (so 4 bytes are
    /// never negative as a bigint), a longer one keeping its rightmost bytes.
    pub(super) fn cast(&mut self, e: &Expr, data_type: &DataType) -> Result<String, SqlError> {
        let target = sqltype::cast_target(data_type)?;
        if is_binary(e) {
            let bits = match sqltype::parse(data_type, 30)? {
                SqlType::BigInt => Some(64),
                SqlType::Int => Some(32),
                _ => None,
            };
            if let Some(bits) = bits {
                let digits = bits / 4;
                return Ok(format!(
                    "('x' || lpad(right(encode({}, 'hex'), {digits}), {digits}, '0'))::bit({bits})::{target}",
                    self.expr(e)?
                ));
            }
        }
        Ok(format!("CAST({} AS {target})", self.expr(e)?))
    }

    /// `CONVERT(t, e, style)`. Styles: none or 0 as `CAST`; 21, 25, 121 (ODBC canonical,
    /// `yyyy-mm-dd hh:mi:ss` and the fractional digits of the value's type) of a value written
    /// as `date` or `datetime2(n)`; 23 (`yyyy-mm-dd`) of a date/time value; 2 (binary to hex
    /// digits, upper case, no `0x`). The result is cast to `t` as without a style.
    pub(super) fn convert(
        &mut self,
        e: &Expr,
        data_type: &DataType,
        styles: &[Expr],
    ) -> Result<String, SqlError> {
        let style = match styles {
            [] => return self.cast(e, data_type),
            [Expr::Value(v)] => match &v.value {
                Value::Number(n, _) => n.parse::<u32>().ok(),
                _ => None,
            },
            _ => None,
        };
        let Some(style) = style else {
            let styles: Vec<String> = styles.iter().map(ToString::to_string).collect();
            return Err(unsupported(format!(
                "CONVERT with the style {} (only a literal number)",
                styles.join(", ")
            )));
        };
        if style == 0 {
            return self.cast(e, data_type);
        }
        if !sqltype::is_character(data_type) {
            return Err(unsupported(format!(
                "CONVERT style {style} to {data_type} (only to a character type)"
            )));
        }
        let text = match style {
            21 | 25 | 121 => {
                let (value, format) = match written_type(e) {
                    Some(SqlType::Date) => (self.expr(e)?, "YYYY-MM-DD".to_string()),
                    // The value is a cast to datetime2(scale), so it is rounded to `scale`
                    // digits (`sqltype::cast_target`).
                    Some(SqlType::DateTime2 { scale }) => (
                        self.expr(e)?,
                        match scale {
                            0 => "YYYY-MM-DD HH24:MI:SS".to_string(),
                            1..=5 => format!("YYYY-MM-DD HH24:MI:SS.FF{scale}"),
                            6 => "YYYY-MM-DD HH24:MI:SS.US".to_string(),
                            // The backing timestamps hold microseconds: the 7th digit is 0.
                            _ => "YYYY-MM-DD HH24:MI:SS.US\"0\"".to_string(),
                        },
                    ),
                    _ => {
                        return Err(unsupported(format!(
                            "CONVERT style {style} of {e}: write its type as \
                             CAST(… AS datetime2(n)) or CAST(… AS date)"
                        )))
                    }
                };
                format!("to_char({value}, {})", literal(&format))
            }
            23 => format!("to_char({}, 'YYYY-MM-DD')", self.expr(e)?),
            2 => format!("upper(encode({}, 'hex'))", self.expr(e)?),
            other => return Err(unsupported(format!("CONVERT style {other}"))),
        };
        Ok(format!(
            "CAST({text} AS {})",
            sqltype::cast_target(data_type)?
        ))
    }

    /// `HASHBYTES(algorithm, e)` (a varbinary): MD5, SHA2_256 and SHA2_512 of the bytes of `e`.
    /// Character values are hashed as UTF-8, which is what SQL Server hashes for a `varchar` in
    /// a `_UTF8` collation (`CONVERT(varchar(max), e COLLATE Latin1_General_100_BIN2_UTF8)`);
    /// an `nvarchar` (hashed as UTF-16 by SQL Server) is an error.
    pub(super) fn hashbytes(&mut self, algorithm: &Expr, e: &Expr) -> Result<String, SqlError> {
        let name = match algorithm {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) | Value::NationalStringLiteral(s) => s.clone(),
                _ => algorithm.to_string(),
            },
            _ => algorithm.to_string(),
        };
        if is_nvarchar(e) {
            return Err(unsupported(format!(
                "HASHBYTES of the nvarchar {e} (SQL Server hashes its UTF-16 bytes): hash \
                 CONVERT(varchar(max), … COLLATE Latin1_General_100_BIN2_UTF8) instead"
            )));
        }
        let binary = is_binary(e);
        let value = self.expr(e)?;
        let bytes = if binary {
            value
        } else {
            format!("convert_to({value}, 'UTF8')")
        };
        Ok(match name.to_ascii_uppercase().as_str() {
            "MD5" => format!("decode(md5({bytes}), 'hex')"),
            "SHA2_256" => format!("sha256({bytes})"),
            "SHA2_512" => format!("sha512({bytes})"),
            _ => return Err(unsupported(format!("HASHBYTES algorithm {name}"))),
        })
    }
}

/// What follows `sum(e)` so that its type is SQL Server's (int for the integer types below
/// bigint, bigint for bigint) where the type of `e` is written; PostgreSQL's sum widens them.
pub(super) fn sum_result(e: &Expr) -> &'static str {
    match written_type(e) {
        Some(SqlType::BigInt) => "::bigint",
        Some(SqlType::Int | SqlType::SmallInt | SqlType::TinyInt) => "::integer",
        _ => "",
    }
}

fn unsupported(what: impl std::fmt::Display) -> SqlError {
    SqlError::unsupported(what)
}

/// The SQL Server type written in the expression: the target of a `CAST`/`CONVERT`.
fn written_type(e: &Expr) -> Option<SqlType> {
    match e {
        Expr::Nested(inner) => written_type(inner),
        Expr::Cast { data_type, .. }
        | Expr::Convert {
            data_type: Some(data_type),
            ..
        } => sqltype::parse(data_type, 30).ok(),
        _ => None,
    }
}

fn is_function(f: &Function, name: &str) -> bool {
    f.name.to_string().eq_ignore_ascii_case(name)
}

fn function_args(f: &Function) -> impl Iterator<Item = &Expr> {
    let args: &[FunctionArg] = match &f.args {
        FunctionArguments::List(list) => &list.args,
        _ => &[],
    };
    args.iter().filter_map(|a| match a {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
        _ => None,
    })
}

/// Certainly binary: a `0x…` literal, `HASHBYTES`, a cast to varbinary, `SUBSTRING` of those.
fn is_binary(e: &Expr) -> bool {
    match e {
        Expr::Nested(inner) => is_binary(inner),
        Expr::Value(v) => matches!(v.value, Value::HexStringLiteral(_)),
        Expr::Substring { expr, .. } => is_binary(expr),
        Expr::Function(f) => is_function(f, "HASHBYTES"),
        _ => matches!(written_type(e), Some(SqlType::VarBinary(_))),
    }
}

/// Certainly nvarchar: an `N'…'` literal, a cast to nvarchar/nchar, or a string function, `+`
/// or CASE with such an operand (nvarchar has precedence over varchar).
fn is_nvarchar(e: &Expr) -> bool {
    match e {
        Expr::Nested(inner) | Expr::Collate { expr: inner, .. } => is_nvarchar(inner),
        Expr::Value(v) => matches!(v.value, Value::NationalStringLiteral(_)),
        Expr::Substring { expr, .. } => is_nvarchar(expr),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Plus | BinaryOperator::StringConcat,
            right,
        } => is_nvarchar(left) || is_nvarchar(right),
        Expr::Case {
            conditions,
            else_result,
            ..
        } => {
            conditions.iter().any(|w| is_nvarchar(&w.result))
                || else_result.as_deref().is_some_and(is_nvarchar)
        }
        Expr::Function(f) => {
            [
                "CONCAT", "ISNULL", "COALESCE", "UPPER", "LOWER", "LTRIM", "RTRIM", "LEFT",
                "RIGHT", "REPLACE",
            ]
            .iter()
            .any(|n| is_function(f, n))
                && function_args(f).any(is_nvarchar)
        }
        _ => matches!(
            written_type(e),
            Some(SqlType::NVarChar(_) | SqlType::NChar(_))
        ),
    }
}
