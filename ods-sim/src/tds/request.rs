//! Client requests: SQL batch (MS-TDS 2.2.6.7), RPC (2.2.6.6) and transaction manager requests
//! (2.2.6.9). Each starts with ALL_HEADERS, whose transaction descriptor the server does not
//! need: a session has one transaction at most.

use super::types::{read_value, DecodedValue};
use super::{ucs2_to_string, Malformed, Reader};
use crate::types::{Param, SqlType, SqlValue};

/// `sp_executesql` by procedure id.
pub const SP_EXECUTESQL: u16 = 10;

/// Skip ALL_HEADERS.
fn skip_all_headers(r: &mut Reader<'_>) -> Result<(), Malformed> {
    let total = r.u32()? as usize;
    if total < 4 {
        return Err(Malformed::new(format!("ALL_HEADERS length {total}")));
    }
    r.bytes(total - 4)?;
    Ok(())
}

/// The text of a SQL batch.
pub fn parse_batch(payload: &[u8]) -> Result<String, Malformed> {
    let mut r = Reader::new(payload);
    skip_all_headers(&mut r)?;
    let rest = r.bytes(r.remaining())?;
    ucs2_to_string(rest)
}

/// The procedure an RPC calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proc {
    Id(u16),
    Name(String),
}

impl Proc {
    pub fn is_executesql(&self) -> bool {
        match self {
            Proc::Id(id) => *id == SP_EXECUTESQL,
            Proc::Name(name) => {
                let name = name.to_ascii_lowercase();
                let name = name.trim_start_matches("sys.").trim_start_matches("[sys].");
                name.trim_matches(|c| c == '[' || c == ']') == "sp_executesql"
            }
        }
    }
}

impl std::fmt::Display for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Proc::Id(id) => write!(f, "procedure id {id}"),
            Proc::Name(name) => f.write_str(name),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RpcParam {
    pub name: String,
    pub value: DecodedValue,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RpcCall {
    pub proc: Proc,
    pub params: Vec<RpcParam>,
}

const BATCH_FLAG: u8 = 0xFF;
const NO_EXEC_FLAG: u8 = 0x80;

/// The calls of an RPC request (usually one; several are separated by a batch flag).
pub fn parse_rpc(payload: &[u8]) -> Result<Vec<RpcCall>, Malformed> {
    let mut r = Reader::new(payload);
    skip_all_headers(&mut r)?;
    let mut calls = Vec::new();
    loop {
        let name_len = r.u16()?;
        let proc = if name_len == 0xFFFF {
            Proc::Id(r.u16()?)
        } else {
            Proc::Name(r.ucs2(name_len as usize)?)
        };
        let _option_flags = r.u16()?;
        let mut params = Vec::new();
        let mut more = false;
        while !r.is_empty() {
            let mut peek = r.clone();
            let b = peek.u8()?;
            if b == BATCH_FLAG || b == NO_EXEC_FLAG {
                r.u8()?;
                more = !r.is_empty();
                break;
            }
            let name = r.b_varchar()?;
            let _status = r.u8()?;
            let value = read_value(&mut r).map_err(|e| {
                let who = if name.is_empty() {
                    format!("parameter {}", params.len() + 1)
                } else {
                    format!("parameter {name}")
                };
                Malformed::new(format!("{who}: {}", e.0))
            })?;
            params.push(RpcParam { name, value });
        }
        calls.push(RpcCall { proc, params });
        if !more {
            return Ok(calls);
        }
    }
}

/// An `sp_executesql` call: the statement text and its typed parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecuteSql {
    pub statement: String,
    pub params: Vec<Param>,
}

/// Interpret an `sp_executesql` call: `@stmt`, then the `@params` declaration (used for the types
/// of untyped NULLs and for names of parameters passed by position), then the values.
pub fn execute_sql(call: RpcCall) -> Result<ExecuteSql, Malformed> {
    let mut it = call.params.into_iter();
    let statement = match it.next().map(|p| p.value.value) {
        Some(SqlValue::String(s)) => s,
        _ => return Err(Malformed::new("sp_executesql needs @stmt as a string")),
    };
    let declared = match it.next().map(|p| p.value.value) {
        Some(SqlValue::String(s)) => parse_declarations(&s),
        Some(SqlValue::Null) | None => Vec::new(),
        Some(_) => return Err(Malformed::new("sp_executesql needs @params as a string")),
    };
    let mut params = Vec::new();
    for (i, p) in it.enumerate() {
        let decl = declared.get(i);
        let name = if p.name.is_empty() {
            decl.map(|d| d.0.clone())
                .ok_or_else(|| Malformed::new(format!("parameter {} has no name", i + 3)))?
        } else {
            p.name
        };
        let ty = match p.value.ty {
            Some(ty) => ty,
            None => declared
                .iter()
                .find(|d| d.0.eq_ignore_ascii_case(&name))
                .and_then(|d| d.1.clone())
                .unwrap_or(SqlType::NVarChar(Some(4000))),
        };
        params.push(Param {
            name,
            ty,
            value: p.value.value,
        });
    }
    Ok(ExecuteSql { statement, params })
}

/// `@P1 int, @P2 nvarchar(4000) OUTPUT` → names and types (None when not understood).
pub fn parse_declarations(decl: &str) -> Vec<(String, Option<SqlType>)> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in decl.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&decl[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&decl[start..]);
    parts
        .into_iter()
        .filter_map(|part| {
            let part = part.trim();
            let (name, rest) = part.split_once(char::is_whitespace)?;
            let mut ty = rest.trim();
            for suffix in [" output", " out", " readonly"] {
                if ty.to_ascii_lowercase().ends_with(suffix) {
                    ty = ty[..ty.len() - suffix.len()].trim_end();
                }
            }
            Some((name.to_string(), SqlType::parse_ddl(ty)))
        })
        .collect()
}

/// Isolation levels of TM_BEGIN_XACT (0 = unchanged).
pub mod tm_isolation {
    pub const UNCHANGED: u8 = 0;
    pub const READ_UNCOMMITTED: u8 = 1;
    pub const READ_COMMITTED: u8 = 2;
    pub const REPEATABLE_READ: u8 = 3;
    pub const SERIALIZABLE: u8 = 4;
    pub const SNAPSHOT: u8 = 5;
}

/// A transaction manager request. `begin_after` of commit/rollback: begin a new transaction
/// with that isolation level right after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TmRequest {
    Begin { isolation: u8 },
    Commit { begin_after: Option<u8> },
    Rollback { begin_after: Option<u8> },
    Unsupported(u16),
}

const TM_BEGIN_XACT: u16 = 5;
const TM_COMMIT_XACT: u16 = 7;
const TM_ROLLBACK_XACT: u16 = 8;

pub fn parse_tm(payload: &[u8]) -> Result<TmRequest, Malformed> {
    let mut r = Reader::new(payload);
    skip_all_headers(&mut r)?;
    let ty = r.u16()?;
    Ok(match ty {
        TM_BEGIN_XACT => {
            let isolation = r.u8()?;
            let _name = r.b_varchar()?;
            TmRequest::Begin { isolation }
        }
        TM_COMMIT_XACT | TM_ROLLBACK_XACT => {
            let _name = r.b_varchar()?;
            let flags = if r.is_empty() { 0 } else { r.u8()? };
            let begin_after = if flags & 0x01 != 0 {
                Some(r.u8()?)
            } else {
                None
            };
            if ty == TM_COMMIT_XACT {
                TmRequest::Commit { begin_after }
            } else {
                TmRequest::Rollback { begin_after }
            }
        }
        other => TmRequest::Unsupported(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::types::{INTN, NULLTYPE, NVARCHAR};

    fn ucs2(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
    }

    fn nvarchar_param(buf: &mut Vec<u8>, name: &str, value: &str) {
        buf.push(name.encode_utf16().count() as u8);
        buf.extend(ucs2(name));
        buf.push(0);
        buf.push(NVARCHAR);
        buf.extend(8000u16.to_le_bytes());
        buf.extend([0x09, 0x04, 0xD0, 0x00, 0x34]);
        let v = ucs2(value);
        buf.extend((v.len() as u16).to_le_bytes());
        buf.extend(v);
    }

    #[test]
    fn sp_executesql_by_id() {
        let mut p = Vec::new();
        p.extend(22u32.to_le_bytes());
        p.extend([0u8; 18]);
        p.extend(0xFFFFu16.to_le_bytes());
        p.extend(SP_EXECUTESQL.to_le_bytes());
        p.extend(0u16.to_le_bytes());
        nvarchar_param(&mut p, "", "SELECT @P1, @P2");
        nvarchar_param(&mut p, "", "@P1 int,@P2 decimal(10,2)");
        p.extend([3]);
        p.extend(ucs2("@P1"));
        p.extend([0, INTN, 4, 4]);
        p.extend(7i32.to_le_bytes());
        p.extend([3]);
        p.extend(ucs2("@P2"));
        p.extend([0, NULLTYPE]);
        let calls = parse_rpc(&p).unwrap();
        assert_eq!(calls.len(), 1);
        assert!(calls[0].proc.is_executesql());
        let exec = execute_sql(calls.into_iter().next().unwrap()).unwrap();
        assert_eq!(exec.statement, "SELECT @P1, @P2");
        assert_eq!(
            exec.params,
            vec![
                Param {
                    name: "@P1".into(),
                    ty: SqlType::Int,
                    value: SqlValue::Int(7)
                },
                Param {
                    name: "@P2".into(),
                    ty: SqlType::Decimal {
                        precision: 10,
                        scale: 2
                    },
                    value: SqlValue::Null
                },
            ]
        );
    }

    #[test]
    fn declarations() {
        let d = parse_declarations("@a nvarchar(max), @b numeric(12, 3) OUTPUT,@c datetime2");
        assert_eq!(d[0], ("@a".into(), Some(SqlType::NVarChar(None))));
        assert_eq!(
            d[1],
            (
                "@b".into(),
                Some(SqlType::Decimal {
                    precision: 12,
                    scale: 3
                })
            )
        );
        assert_eq!(d[2], ("@c".into(), Some(SqlType::DateTime2 { scale: 7 })));
    }

    #[test]
    fn tm_begin() {
        let mut p = Vec::new();
        p.extend(22u32.to_le_bytes());
        p.extend([0u8; 18]);
        p.extend(TM_BEGIN_XACT.to_le_bytes());
        p.extend([tm_isolation::SNAPSHOT, 0]);
        assert_eq!(
            parse_tm(&p).unwrap(),
            TmRequest::Begin {
                isolation: tm_isolation::SNAPSHOT
            }
        );
    }
}
