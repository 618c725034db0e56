//! TYPE_INFO and values (MS-TDS 2.2.5.4–2.2.5.5): the encoding of result columns and the
//! decoding of RPC parameters.
//!
//! Result types: bit→BITN, tinyint/smallint/int/bigint→INTN, decimal→DECIMALN, float→FLTN(8),
//! nvarchar→NVARCHAR, nchar→NCHAR, varchar→BIGVARCHAR (code page 1252), `max` types as PLP,
//! date→DATEN, datetime2→DATETIME2N, datetime→DATETIMN(8), uniqueidentifier→GUID,
//! varbinary→BIGVARBINARY.

use super::{ucs2_to_string, Malformed, Reader};
use crate::types::{SqlError, SqlType, SqlValue};
use bytes::{BufMut, BytesMut};
use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeDelta};
use uuid::Uuid;

pub const NULLTYPE: u8 = 0x1F;
pub const INT1: u8 = 0x30;
pub const BIT: u8 = 0x32;
pub const INT2: u8 = 0x34;
pub const INT4: u8 = 0x38;
pub const DATETIM4: u8 = 0x3A;
pub const FLT4: u8 = 0x3B;
pub const DATETIME: u8 = 0x3D;
pub const FLT8: u8 = 0x3E;
pub const INT8: u8 = 0x7F;
pub const GUID: u8 = 0x24;
pub const INTN: u8 = 0x26;
pub const DATEN: u8 = 0x28;
pub const DATETIME2N: u8 = 0x2A;
pub const BITN: u8 = 0x68;
pub const DECIMALN: u8 = 0x6A;
pub const NUMERICN: u8 = 0x6C;
pub const FLTN: u8 = 0x6D;
pub const DATETIMN: u8 = 0x6F;
pub const BIGVARBINARY: u8 = 0xA5;
pub const BIGVARCHAR: u8 = 0xA7;
pub const BIGBINARY: u8 = 0xAD;
pub const BIGCHAR: u8 = 0xAF;
pub const NVARCHAR: u8 = 0xE7;
pub const NCHAR: u8 = 0xEF;

/// SQL_Latin1_General_CP1_CI_AS: LCID 0x0409, ignore case/kana/width, sort id 52 (code page
/// 1252). Sent for every character column and in the collation ENVCHANGE.
pub const COLLATION: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];

/// Length prefix of a PLP value whose total length is given up front.
const PLP_NULL: u64 = u64::MAX;
const USHORT_NULL: u16 = 0xFFFF;
const USHORT_MAX_LEN: usize = 8000;

/// Days from 0001-01-01 to 1900-01-01 (the `datetime` epoch).
pub const DAYS_0001_TO_1900: i64 = 693_595;
/// Days from 0001-01-01 to 2000-01-01 (the PostgreSQL epoch).
pub const DAYS_0001_TO_2000: i64 = 730_119;
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Bytes of the magnitude of a decimal of this precision, plus the sign byte.
pub fn decimal_len(precision: u8) -> u8 {
    match precision {
        0..=9 => 5,
        10..=19 => 9,
        20..=28 => 13,
        _ => 17,
    }
}

/// Bytes of the time part of a `datetime2` of this scale.
fn time_len(scale: u8) -> usize {
    match scale {
        0..=2 => 3,
        3..=4 => 4,
        _ => 5,
    }
}

pub fn write_type_info(buf: &mut BytesMut, ty: &SqlType) {
    fn chars(buf: &mut BytesMut, ty: u8, len: u16) {
        buf.put_u8(ty);
        buf.put_u16_le(len);
        buf.put_slice(&COLLATION);
    }
    match ty {
        SqlType::Bit => buf.put_slice(&[BITN, 1]),
        SqlType::TinyInt => buf.put_slice(&[INTN, 1]),
        SqlType::SmallInt => buf.put_slice(&[INTN, 2]),
        SqlType::Int => buf.put_slice(&[INTN, 4]),
        SqlType::BigInt => buf.put_slice(&[INTN, 8]),
        SqlType::Decimal { precision, scale } => {
            buf.put_slice(&[DECIMALN, decimal_len(*precision), *precision, *scale])
        }
        SqlType::Float => buf.put_slice(&[FLTN, 8]),
        SqlType::NVarChar(n) => chars(buf, NVARCHAR, n.map_or(USHORT_NULL, |n| n * 2)),
        SqlType::NChar(n) => chars(buf, NCHAR, n * 2),
        SqlType::VarChar(n) => chars(buf, BIGVARCHAR, n.unwrap_or(USHORT_NULL)),
        SqlType::Date => buf.put_u8(DATEN),
        SqlType::DateTime2 { scale } => buf.put_slice(&[DATETIME2N, *scale]),
        SqlType::DateTime => buf.put_slice(&[DATETIMN, 8]),
        SqlType::UniqueIdentifier => buf.put_slice(&[GUID, 16]),
        SqlType::VarBinary(n) => {
            buf.put_u8(BIGVARBINARY);
            buf.put_u16_le(n.unwrap_or(USHORT_NULL));
        }
    }
}

fn is_plp(ty: &SqlType) -> bool {
    matches!(
        ty,
        SqlType::NVarChar(None) | SqlType::VarChar(None) | SqlType::VarBinary(None)
    )
}

/// A NULL of a column of this type.
pub fn put_null(buf: &mut BytesMut, ty: &SqlType) {
    match ty {
        SqlType::NVarChar(Some(_))
        | SqlType::NChar(_)
        | SqlType::VarChar(Some(_))
        | SqlType::VarBinary(Some(_)) => buf.put_u16_le(USHORT_NULL),
        t if is_plp(t) => buf.put_u64_le(PLP_NULL),
        _ => buf.put_u8(0),
    }
}

pub fn put_bit(buf: &mut BytesMut, v: bool) {
    buf.put_slice(&[1, u8::from(v)]);
}

/// An INTN value of 1, 2, 4 or 8 bytes. The caller checks the range.
pub fn put_int(buf: &mut BytesMut, width: u8, v: i64) {
    buf.put_u8(width);
    buf.put_slice(&v.to_le_bytes()[..width as usize]);
}

pub fn put_float(buf: &mut BytesMut, v: f64) {
    buf.put_u8(8);
    buf.put_f64_le(v);
}

/// A DECIMALN value: `value` is the unscaled integer, already at the column's scale.
pub fn put_decimal(buf: &mut BytesMut, precision: u8, value: i128) {
    let len = decimal_len(precision);
    buf.put_u8(len);
    buf.put_u8(u8::from(value >= 0));
    buf.put_slice(&value.unsigned_abs().to_le_bytes()[..len as usize - 1]);
}

/// The width in bytes of the INTN of an integer type.
pub fn int_width(ty: &SqlType) -> Option<u8> {
    match ty {
        SqlType::TinyInt => Some(1),
        SqlType::SmallInt => Some(2),
        SqlType::Int => Some(4),
        SqlType::BigInt => Some(8),
        _ => None,
    }
}

/// A value of a character column: NVARCHAR/NCHAR as UTF-16, VARCHAR in code page 1252
/// (characters it lacks become `?`, as in SQL Server), `max` types as PLP.
pub fn put_text(buf: &mut BytesMut, ty: &SqlType, s: &str) -> Result<(), SqlError> {
    match ty {
        SqlType::NVarChar(Some(_)) => put_ushort_value(buf, |b| put_utf16(b, s, 0)),
        SqlType::NChar(n) => put_ushort_value(buf, |b| put_utf16(b, s, *n as usize)),
        SqlType::VarChar(Some(_)) => put_ushort_value(buf, |b| put_cp1252(b, s)),
        SqlType::NVarChar(None) => {
            put_plp_value(buf, |b| put_utf16(b, s, 0));
            Ok(())
        }
        SqlType::VarChar(None) => {
            put_plp_value(buf, |b| put_cp1252(b, s));
            Ok(())
        }
        other => Err(SqlError::unsupported(format!(
            "sending text as {}",
            other.ddl()
        ))),
    }
}

pub fn put_binary(buf: &mut BytesMut, ty: &SqlType, v: &[u8]) -> Result<(), SqlError> {
    if is_plp(ty) {
        put_plp_value(buf, |b| b.put_slice(v));
        Ok(())
    } else {
        put_ushort_value(buf, |b| b.put_slice(v))
    }
}

/// Write a value with a two-byte length prefix, which must stay within 8000 bytes.
fn put_ushort_value(buf: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) -> Result<(), SqlError> {
    let at = buf.len();
    buf.put_u16_le(0);
    body(buf);
    let len = buf.len() - at - 2;
    if len > USHORT_MAX_LEN {
        buf.truncate(at);
        return Err(SqlError::new(
            8152,
            16,
            "String or binary data would be truncated.",
        ));
    }
    buf[at..at + 2].copy_from_slice(&(len as u16).to_le_bytes());
    Ok(())
}

/// Write a PLP value of known length: total length, one chunk, terminator.
fn put_plp_value(buf: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    let at = buf.len();
    buf.put_u64_le(0);
    buf.put_u32_le(0);
    body(buf);
    let len = buf.len() - at - 12;
    buf[at..at + 8].copy_from_slice(&(len as u64).to_le_bytes());
    if len == 0 {
        // No chunk: the zero chunk length already written is the terminator.
        return;
    }
    buf[at + 8..at + 12].copy_from_slice(&(len as u32).to_le_bytes());
    buf.put_u32_le(0);
}

/// UTF-16LE, padded with spaces to `pad_to` code units.
fn put_utf16(buf: &mut BytesMut, s: &str, pad_to: usize) {
    let mut n = 0;
    if s.is_ascii() {
        buf.reserve(s.len() * 2);
        for &b in s.as_bytes() {
            buf.put_slice(&[b, 0]);
        }
        n = s.len();
    } else {
        for u in s.encode_utf16() {
            buf.put_u16_le(u);
            n += 1;
        }
    }
    for _ in n..pad_to {
        buf.put_slice(&[b' ', 0]);
    }
}

fn put_cp1252(buf: &mut BytesMut, s: &str) {
    if s.is_ascii() {
        buf.put_slice(s.as_bytes());
        return;
    }
    let mut encoder = encoding_rs::WINDOWS_1252.new_encoder();
    let mut tmp = [0u8; 8];
    for ch in s.chars() {
        let mut utf8 = [0u8; 4];
        let (result, _, written) = encoder.encode_from_utf8_without_replacement(
            ch.encode_utf8(&mut utf8),
            &mut tmp,
            false,
        );
        match result {
            encoding_rs::EncoderResult::InputEmpty => buf.put_slice(&tmp[..written]),
            _ => buf.put_u8(b'?'),
        }
    }
}

/// A DATEN value from days since 0001-01-01.
pub fn put_date(buf: &mut BytesMut, days: i64) -> Result<(), SqlError> {
    check_days(days)?;
    buf.put_u8(3);
    buf.put_slice(&(days as u32).to_le_bytes()[..3]);
    Ok(())
}

fn check_days(days: i64) -> Result<(), SqlError> {
    // 0001-01-01 ..= 9999-12-31
    if (0..=3_652_058).contains(&days) {
        Ok(())
    } else {
        Err(SqlError::new(
            517,
            16,
            "Adding a value to a 'date' column caused an overflow.",
        ))
    }
}

fn round_div(n: i128, d: i128) -> i128 {
    let q = n.div_euclid(d);
    if n.rem_euclid(d) * 2 >= d {
        q + 1
    } else {
        q
    }
}

/// A DATETIME2N value from microseconds since 0001-01-01 00:00, rounded to `scale`.
pub fn put_datetime2(buf: &mut BytesMut, scale: u8, micros: i64) -> Result<(), SqlError> {
    let scale = scale.min(7);
    let units_per_sec = 10i128.pow(scale as u32);
    let units = round_div(micros as i128 * units_per_sec, 1_000_000);
    let units_per_day = 86_400 * units_per_sec;
    let days = units.div_euclid(units_per_day) as i64;
    let time = units.rem_euclid(units_per_day) as u64;
    check_days(days)?;
    let tl = time_len(scale);
    buf.put_u8(tl as u8 + 3);
    buf.put_slice(&time.to_le_bytes()[..tl]);
    buf.put_slice(&(days as u32).to_le_bytes()[..3]);
    Ok(())
}

/// A DATETIMN(8) value from microseconds since 0001-01-01: days since 1900-01-01 and 1/300 s
/// ticks.
pub fn put_datetime(buf: &mut BytesMut, micros: i64) -> Result<(), SqlError> {
    let since_1900 = micros as i128 - DAYS_0001_TO_1900 as i128 * MICROS_PER_DAY as i128;
    let ticks = round_div(since_1900 * 300, 1_000_000);
    let ticks_per_day = 300 * 86_400;
    let days = ticks.div_euclid(ticks_per_day);
    let tick = ticks.rem_euclid(ticks_per_day);
    // 1753-01-01 ..= 9999-12-31
    if !(-53_690..=2_958_463).contains(&days) {
        return Err(SqlError::new(
            242,
            16,
            "The conversion of a datetime2 data type to a datetime data type resulted in an out-of-range value.",
        ));
    }
    buf.put_u8(8);
    buf.put_i32_le(days as i32);
    buf.put_u32_le(tick as u32);
    Ok(())
}

/// SQL Server stores the first three fields of a GUID little-endian.
fn swap_guid(b: [u8; 16]) -> [u8; 16] {
    [
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15],
    ]
}

pub fn put_guid(buf: &mut BytesMut, uuid: [u8; 16]) {
    buf.put_u8(16);
    buf.put_slice(&swap_guid(uuid));
}

/// A parameter value as decoded from TYPE_INFO and data. `ty` is `None` for the untyped NULL
/// (NULLTYPE) that some clients send: its type comes from the `@params` declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedValue {
    pub ty: Option<SqlType>,
    pub value: SqlValue,
}

fn decoded(ty: SqlType, value: SqlValue) -> DecodedValue {
    DecodedValue {
        ty: Some(ty),
        value,
    }
}

/// Read TYPE_INFO and the value of one RPC parameter.
pub fn read_value(r: &mut Reader<'_>) -> Result<DecodedValue, Malformed> {
    let t = r.u8()?;
    Ok(match t {
        NULLTYPE => DecodedValue {
            ty: None,
            value: SqlValue::Null,
        },
        INT1 => decoded(SqlType::TinyInt, SqlValue::TinyInt(r.u8()?)),
        INT2 => decoded(SqlType::SmallInt, SqlValue::SmallInt(r.u16()? as i16)),
        INT4 => decoded(SqlType::Int, SqlValue::Int(r.u32()? as i32)),
        INT8 => decoded(SqlType::BigInt, SqlValue::BigInt(r.u64()? as i64)),
        BIT => decoded(SqlType::Bit, SqlValue::Bit(r.u8()? != 0)),
        FLT4 => decoded(
            SqlType::Float,
            SqlValue::Float(f32::from_le_bytes(r.array()?) as f64),
        ),
        FLT8 => decoded(
            SqlType::Float,
            SqlValue::Float(f64::from_le_bytes(r.array()?)),
        ),
        DATETIME => decoded(SqlType::DateTime, read_datetime(r, 8)?),
        DATETIM4 => decoded(SqlType::DateTime, read_datetime(r, 4)?),
        INTN => {
            let max = r.u8()?;
            let ty = match max {
                1 => SqlType::TinyInt,
                2 => SqlType::SmallInt,
                4 => SqlType::Int,
                8 => SqlType::BigInt,
                n => return Err(Malformed::new(format!("INTN of length {n}"))),
            };
            let value = match r.u8()? {
                0 => SqlValue::Null,
                1 => SqlValue::TinyInt(r.u8()?),
                2 => SqlValue::SmallInt(r.u16()? as i16),
                4 => SqlValue::Int(r.u32()? as i32),
                8 => SqlValue::BigInt(r.u64()? as i64),
                n => return Err(Malformed::new(format!("INTN value of length {n}"))),
            };
            decoded(ty, value)
        }
        BITN => {
            r.u8()?;
            let value = match r.u8()? {
                0 => SqlValue::Null,
                1 => SqlValue::Bit(r.u8()? != 0),
                n => return Err(Malformed::new(format!("BITN value of length {n}"))),
            };
            decoded(SqlType::Bit, value)
        }
        FLTN => {
            r.u8()?;
            let value = match r.u8()? {
                0 => SqlValue::Null,
                4 => SqlValue::Float(f32::from_le_bytes(r.array()?) as f64),
                8 => SqlValue::Float(f64::from_le_bytes(r.array()?)),
                n => return Err(Malformed::new(format!("FLTN value of length {n}"))),
            };
            decoded(SqlType::Float, value)
        }
        DECIMALN | NUMERICN => {
            let _max = r.u8()?;
            let precision = r.u8()?;
            let scale = r.u8()?;
            if !(1..=38).contains(&precision) || scale > precision {
                return Err(Malformed::new(format!(
                    "decimal precision {precision}, scale {scale}"
                )));
            }
            let len = r.u8()? as usize;
            let value = if len == 0 {
                SqlValue::Null
            } else {
                let sign = r.u8()?;
                let mag = r.bytes(len - 1)?;
                if mag.len() > 16 {
                    return Err(Malformed::new("decimal value longer than 16 bytes"));
                }
                let mut le = [0u8; 16];
                le[..mag.len()].copy_from_slice(mag);
                let abs = u128::from_le_bytes(le);
                let abs = i128::try_from(abs)
                    .map_err(|_| Malformed::new("decimal value out of range"))?;
                SqlValue::Decimal {
                    value: if sign == 0 { -abs } else { abs },
                    scale,
                }
            };
            decoded(SqlType::Decimal { precision, scale }, value)
        }
        NVARCHAR | NCHAR | BIGVARCHAR | BIGCHAR => {
            let max = r.u16()?;
            let _collation = r.array::<5>()?;
            let raw = if max == USHORT_NULL {
                read_plp(r)?
            } else {
                read_ushort_value(r)?
            };
            let unicode = matches!(t, NVARCHAR | NCHAR);
            let ty = match (t, max) {
                (NVARCHAR, USHORT_NULL) => SqlType::NVarChar(None),
                (NVARCHAR, n) => SqlType::NVarChar(Some(n / 2)),
                (NCHAR, n) => SqlType::NChar(n / 2),
                (_, USHORT_NULL) => SqlType::VarChar(None),
                (_, n) => SqlType::VarChar(Some(n)),
            };
            let value = match raw {
                None => SqlValue::Null,
                Some(bytes) if unicode => SqlValue::String(ucs2_to_string(&bytes)?),
                Some(bytes) => {
                    let (text, _, _) = encoding_rs::WINDOWS_1252.decode(&bytes);
                    SqlValue::String(text.into_owned())
                }
            };
            decoded(ty, value)
        }
        BIGVARBINARY | BIGBINARY => {
            let max = r.u16()?;
            let raw = if max == USHORT_NULL {
                read_plp(r)?
            } else {
                read_ushort_value(r)?
            };
            let ty = SqlType::VarBinary((max != USHORT_NULL).then_some(max));
            decoded(ty, raw.map_or(SqlValue::Null, SqlValue::Binary))
        }
        DATEN => {
            let value = match r.u8()? {
                0 => SqlValue::Null,
                3 => SqlValue::Date(date_from_days(read_u24(r)?)?),
                n => return Err(Malformed::new(format!("DATEN value of length {n}"))),
            };
            decoded(SqlType::Date, value)
        }
        DATETIME2N => {
            let scale = r.u8()?;
            if scale > 7 {
                return Err(Malformed::new(format!("datetime2 scale {scale}")));
            }
            let value = match r.u8()? {
                0 => SqlValue::Null,
                n if n as usize == time_len(scale) + 3 => {
                    let mut le = [0u8; 8];
                    le[..time_len(scale)].copy_from_slice(r.bytes(time_len(scale))?);
                    let units = u64::from_le_bytes(le) as i128;
                    let days = read_u24(r)?;
                    let micros = round_div(units * 1_000_000, 10i128.pow(scale as u32)) as i64;
                    let dt = date_from_days(days)?.and_time(chrono::NaiveTime::MIN)
                        + TimeDelta::microseconds(micros);
                    SqlValue::DateTime(dt)
                }
                n => return Err(Malformed::new(format!("DATETIME2N value of length {n}"))),
            };
            decoded(SqlType::DateTime2 { scale }, value)
        }
        DATETIMN => {
            r.u8()?;
            let value = match r.u8()? {
                0 => SqlValue::Null,
                n @ (4 | 8) => read_datetime(r, n)?,
                n => return Err(Malformed::new(format!("DATETIMN value of length {n}"))),
            };
            decoded(SqlType::DateTime, value)
        }
        GUID => {
            r.u8()?;
            let value = match r.u8()? {
                0 => SqlValue::Null,
                16 => SqlValue::Uuid(Uuid::from_bytes(swap_guid(r.array()?))),
                n => return Err(Malformed::new(format!("GUID value of length {n}"))),
            };
            decoded(SqlType::UniqueIdentifier, value)
        }
        other => {
            return Err(Malformed::new(format!(
                "ods-sim does not support data type 0x{other:02X}"
            )))
        }
    })
}

fn read_u24(r: &mut Reader<'_>) -> Result<i64, Malformed> {
    let b = r.array::<3>()?;
    Ok(i64::from(u32::from_le_bytes([b[0], b[1], b[2], 0])))
}

fn date_from_days(days: i64) -> Result<NaiveDate, Malformed> {
    i32::try_from(days + 1)
        .ok()
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .ok_or_else(|| Malformed::new(format!("date of day {days}")))
}

/// DATETIME (8 bytes: days since 1900, 1/300 s ticks) or SMALLDATETIME (4 bytes: days since
/// 1900, minutes).
fn read_datetime(r: &mut Reader<'_>, len: u8) -> Result<SqlValue, Malformed> {
    let (days, micros) = if len == 8 {
        let days = r.u32()? as i32 as i64;
        let ticks = r.u32()? as i128;
        (days, round_div(ticks * 1_000_000, 300) as i64)
    } else {
        let days = r.u16()? as i64;
        let minutes = r.u16()? as i64;
        (days, minutes * 60_000_000)
    };
    let date = date_from_days(days + DAYS_0001_TO_1900)?;
    Ok(SqlValue::DateTime(
        date.and_time(chrono::NaiveTime::MIN) + TimeDelta::microseconds(micros),
    ))
}

fn read_ushort_value(r: &mut Reader<'_>) -> Result<Option<Vec<u8>>, Malformed> {
    match r.u16()? {
        USHORT_NULL => Ok(None),
        n => Ok(Some(r.bytes(n as usize)?.to_vec())),
    }
}

/// A PLP value: total length (or NULL / unknown), then chunks ending with a zero length.
fn read_plp(r: &mut Reader<'_>) -> Result<Option<Vec<u8>>, Malformed> {
    let total = r.u64()?;
    if total == PLP_NULL {
        return Ok(None);
    }
    let mut out = Vec::new();
    loop {
        let chunk = r.u32()? as usize;
        if chunk == 0 {
            break;
        }
        out.extend_from_slice(r.bytes(chunk)?);
    }
    Ok(Some(out))
}

/// Microseconds since 0001-01-01 of a date-time.
pub fn micros_since_0001(dt: &NaiveDateTime) -> i64 {
    let days = dt.date().num_days_from_ce() as i64 - 1;
    let time = dt.time() - chrono::NaiveTime::MIN;
    days * MICROS_PER_DAY + time.num_microseconds().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(bytes: &[u8]) -> DecodedValue {
        let mut r = Reader::new(bytes);
        let v = read_value(&mut r).unwrap();
        assert!(r.is_empty());
        v
    }

    #[test]
    fn decimal_encoding() {
        let mut buf = BytesMut::new();
        put_decimal(&mut buf, 9, -1234);
        assert_eq!(&buf[..], &[5, 0, 0xD2, 0x04, 0, 0]);
        let mut param = vec![DECIMALN, 5, 9, 2];
        param.extend_from_slice(&buf);
        assert_eq!(
            value(&param).value,
            SqlValue::Decimal {
                value: -1234,
                scale: 2
            }
        );
    }

    #[test]
    fn datetime2_round_trip() {
        let dt = NaiveDate::from_ymd_opt(2024, 2, 29)
            .unwrap()
            .and_hms_micro_opt(23, 59, 58, 123_456)
            .unwrap();
        for scale in [0u8, 3, 6, 7] {
            let mut buf = BytesMut::from(&[DATETIME2N, scale][..]);
            put_datetime2(&mut buf, scale, micros_since_0001(&dt)).unwrap();
            let got = value(&buf).value;
            let SqlValue::DateTime(got) = got else {
                panic!("{got:?}")
            };
            let diff = (got - dt).num_microseconds().unwrap().abs();
            assert!(
                diff <= 500_000 / 10i64.pow(scale.min(6) as u32),
                "{scale}: {got}"
            );
        }
    }

    #[test]
    fn datetime_and_date_round_trip() {
        let dt = NaiveDate::from_ymd_opt(1999, 12, 31)
            .unwrap()
            .and_hms_milli_opt(12, 0, 0, 10)
            .unwrap();
        let mut buf = BytesMut::from(&[DATETIMN, 8][..]);
        put_datetime(&mut buf, micros_since_0001(&dt)).unwrap();
        let SqlValue::DateTime(got) = value(&buf).value else {
            panic!()
        };
        assert_eq!(
            got.and_utc().timestamp_millis(),
            dt.and_utc().timestamp_millis()
        );

        let d = NaiveDate::from_ymd_opt(2000, 1, 1).unwrap();
        let mut buf = BytesMut::from(&[DATEN][..]);
        put_date(&mut buf, DAYS_0001_TO_2000).unwrap();
        assert_eq!(value(&buf).value, SqlValue::Date(d));
    }

    #[test]
    fn guid_is_mixed_endian() {
        let u = Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        let mut buf = BytesMut::from(&[GUID, 16][..]);
        put_guid(&mut buf, *u.as_bytes());
        assert_eq!(&buf[3..7], &[0x33, 0x22, 0x11, 0x00]);
        assert_eq!(value(&buf).value, SqlValue::Uuid(u));
    }

    #[test]
    fn text_encodings() {
        let ty = SqlType::NVarChar(None);
        let mut buf = BytesMut::new();
        write_type_info(&mut buf, &ty);
        put_text(&mut buf, &ty, "Zoë 日本 ñ").unwrap();
        assert_eq!(value(&buf).value, SqlValue::String("Zoë 日本 ñ".into()));

        let ty = SqlType::VarChar(Some(20));
        let mut buf = BytesMut::new();
        write_type_info(&mut buf, &ty);
        put_text(&mut buf, &ty, "Zoë 日 ñ").unwrap();
        assert_eq!(value(&buf).value, SqlValue::String("Zoë ? ñ".into()));

        let ty = SqlType::NChar(3);
        let mut buf = BytesMut::new();
        write_type_info(&mut buf, &ty);
        put_text(&mut buf, &ty, "a").unwrap();
        assert_eq!(value(&buf).value, SqlValue::String("a  ".into()));

        let ty = SqlType::VarBinary(None);
        let mut buf = BytesMut::new();
        write_type_info(&mut buf, &ty);
        put_binary(&mut buf, &ty, &[]).unwrap();
        assert_eq!(value(&buf).value, SqlValue::Binary(vec![]));
    }
}
