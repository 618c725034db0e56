//! Response tokens (MS-TDS 2.2.7).

use super::types::write_type_info;
use crate::types::{Column, SqlError};
use bytes::{BufMut, BytesMut};

pub const COLMETADATA: u8 = 0x81;
pub const ERROR: u8 = 0xAA;
pub const INFO: u8 = 0xAB;
pub const LOGINACK: u8 = 0xAD;
pub const ROW: u8 = 0xD1;
pub const ENVCHANGE: u8 = 0xE3;
pub const RETURNSTATUS: u8 = 0x79;
pub const DONE: u8 = 0xFD;
pub const DONEPROC: u8 = 0xFE;
pub const DONEINPROC: u8 = 0xFF;

/// DONE status bits.
pub const DONE_FINAL: u16 = 0x00;
pub const DONE_MORE: u16 = 0x01;
pub const DONE_ERROR: u16 = 0x02;
pub const DONE_INXACT: u16 = 0x04;
pub const DONE_COUNT: u16 = 0x10;
pub const DONE_ATTN: u16 = 0x20;

/// DONE CurCmd values.
pub const CMD_SELECT: u16 = 0xC1;
pub const CMD_INSERT: u16 = 0xC3;
pub const CMD_DELETE: u16 = 0xC4;
pub const CMD_UPDATE: u16 = 0xC5;
pub const CMD_BEGIN_TRAN: u16 = 0xD4;
pub const CMD_COMMIT_TRAN: u16 = 0xD5;
pub const CMD_ROLLBACK_TRAN: u16 = 0xD6;

/// ENVCHANGE types.
pub const ENV_DATABASE: u8 = 1;
pub const ENV_LANGUAGE: u8 = 2;
pub const ENV_PACKET_SIZE: u8 = 4;
pub const ENV_COLLATION: u8 = 7;
pub const ENV_BEGIN_TRAN: u8 = 8;
pub const ENV_COMMIT_TRAN: u8 = 9;
pub const ENV_ROLLBACK_TRAN: u8 = 10;

/// Write a token whose body starts with a two-byte length, filled in after `body` ran.
fn with_u16_len(buf: &mut BytesMut, token: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(token);
    let at = buf.len();
    buf.put_u16_le(0);
    body(buf);
    let len = (buf.len() - at - 2) as u16;
    buf[at..at + 2].copy_from_slice(&len.to_le_bytes());
}

/// B_VARCHAR: at most 255 UTF-16 code units.
pub fn put_b_varchar(buf: &mut BytesMut, s: &str) {
    let units: Vec<u16> = s.encode_utf16().take(255).collect();
    buf.put_u8(units.len() as u8);
    for u in units {
        buf.put_u16_le(u);
    }
}

/// US_VARCHAR: at most 65535 UTF-16 code units.
pub fn put_us_varchar(buf: &mut BytesMut, s: &str) {
    let units: Vec<u16> = s.encode_utf16().take(65535).collect();
    buf.put_u16_le(units.len() as u16);
    for u in units {
        buf.put_u16_le(u);
    }
}

/// LOGINACK: interface SQL_TSQL, the TDS version (big-endian on the wire), program name and
/// version.
pub fn login_ack(buf: &mut BytesMut, tds_version: u32, prog_name: &str, prog_version: [u8; 4]) {
    with_u16_len(buf, LOGINACK, |b| {
        b.put_u8(1);
        b.put_u32(tds_version);
        put_b_varchar(b, prog_name);
        b.put_slice(&prog_version);
    });
}

/// ENVCHANGE with B_VARCHAR new and old values (database, language, packet size).
pub fn env_change_str(buf: &mut BytesMut, ty: u8, new: &str, old: &str) {
    with_u16_len(buf, ENVCHANGE, |b| {
        b.put_u8(ty);
        put_b_varchar(b, new);
        put_b_varchar(b, old);
    });
}

/// ENVCHANGE with B_VARBYTE new and old values (collation, transactions).
pub fn env_change_bytes(buf: &mut BytesMut, ty: u8, new: &[u8], old: &[u8]) {
    with_u16_len(buf, ENVCHANGE, |b| {
        b.put_u8(ty);
        b.put_u8(new.len() as u8);
        b.put_slice(new);
        b.put_u8(old.len() as u8);
        b.put_slice(old);
    });
}

/// An ERROR or INFO token.
pub fn message(buf: &mut BytesMut, token: u8, err: &SqlError, server: &str, line: u32) {
    with_u16_len(buf, token, |b| {
        b.put_i32_le(err.number);
        b.put_u8(err.state);
        b.put_u8(err.class);
        put_us_varchar(b, &err.message);
        put_b_varchar(b, server);
        put_b_varchar(b, "");
        b.put_u32_le(line);
    });
}

pub fn error(buf: &mut BytesMut, err: &SqlError, server: &str) {
    message(buf, ERROR, err, server, 1);
}

pub fn info(buf: &mut BytesMut, number: i32, message_text: &str, server: &str) {
    let err = SqlError::new(number, 0, message_text);
    message(buf, INFO, &err, server, 1);
}

/// DONE, DONEPROC or DONEINPROC.
pub fn done(buf: &mut BytesMut, token: u8, status: u16, cur_cmd: u16, count: u64) {
    buf.put_u8(token);
    buf.put_u16_le(status);
    buf.put_u16_le(cur_cmd);
    buf.put_u64_le(count);
}

pub fn return_status(buf: &mut BytesMut, value: i32) {
    buf.put_u8(RETURNSTATUS);
    buf.put_i32_le(value);
}

/// COLMETADATA for a result set.
pub fn col_metadata(buf: &mut BytesMut, columns: &[Column]) {
    buf.put_u8(COLMETADATA);
    buf.put_u16_le(columns.len() as u16);
    for col in columns {
        buf.put_u32_le(0);
        // fNullable, fUpdateable = unknown (2 << 2)
        let flags: u16 = u16::from(col.nullable) | (2 << 2);
        buf.put_u16_le(flags);
        write_type_info(buf, &col.ty);
        let units: Vec<u16> = col.name.encode_utf16().take(255).collect();
        buf.put_u8(units.len() as u8);
        for u in units {
            buf.put_u16_le(u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::Reader;

    #[test]
    fn error_token_layout() {
        let mut buf = BytesMut::new();
        error(
            &mut buf,
            &SqlError::new(208, 16, "Invalid object name 'x'."),
            "ods-sim",
        );
        let mut r = Reader::new(&buf);
        assert_eq!(r.u8().unwrap(), ERROR);
        let len = r.u16().unwrap() as usize;
        assert_eq!(len, r.remaining());
        assert_eq!(r.u32().unwrap(), 208);
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u8().unwrap(), 16);
        assert_eq!(r.us_varchar().unwrap(), "Invalid object name 'x'.");
        assert_eq!(r.b_varchar().unwrap(), "ods-sim");
        assert_eq!(r.b_varchar().unwrap(), "");
        assert_eq!(r.u32().unwrap(), 1);
        assert!(r.is_empty());
    }
}
