//! The `pgoutput` logical replication messages (protocol version 1) that the poller reads, as
//! PostgreSQL documents them in "Logical Replication Message Formats". Values stay in text form.

/// One column of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    Null,
    /// A TOASTed value the update did not change: it is not sent.
    Unchanged,
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    /// `atttypmod` (a `varchar`'s length + 4, say; -1 when none).
    pub type_modifier: i32,
    /// Part of the replica identity (the primary key, by default).
    pub key: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
    pub columns: Vec<Column>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Transaction `xid`, whose commit record is at `final_lsn`, committed at `commit_time`
    /// (microseconds since 2000-01-01 UTC).
    Begin {
        final_lsn: u64,
        commit_time: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: u64,
    },
    Relation(Relation),
    Insert {
        relation: u32,
        new: Vec<Datum>,
    },
    /// `old`: the replica identity's columns (or the whole old row) when the key changed or the
    /// table's identity is FULL.
    Update {
        relation: u32,
        old: Option<Vec<Datum>>,
        new: Vec<Datum>,
    },
    Delete {
        relation: u32,
        old: Vec<Datum>,
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// Origin, Type and logical-decoding messages: nothing to replicate.
    Other,
}

#[derive(Debug, thiserror::Error)]
#[error("malformed pgoutput message ({0})")]
pub struct Malformed(&'static str);

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.buf.len() < n {
            return Err(Malformed("truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> Result<i16, Malformed> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn i32(&mut self) -> Result<i32, Malformed> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn string(&mut self) -> Result<String, Malformed> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(Malformed("unterminated string"))?;
        let s = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Vec<Datum>, Malformed> {
        let n = self.i16()?;
        let mut out = Vec::with_capacity(n.max(0) as usize);
        for _ in 0..n {
            out.push(match self.u8()? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                b't' => {
                    let len = self.i32()?;
                    let bytes =
                        self.take(usize::try_from(len).map_err(|_| Malformed("length"))?)?;
                    Datum::Text(String::from_utf8_lossy(bytes).into_owned())
                }
                _ => return Err(Malformed("tuple column kind")),
            });
        }
        Ok(out)
    }
}

/// Decode one message.
pub fn decode(data: &[u8]) -> Result<Message, Malformed> {
    let mut r = Reader { buf: data };
    Ok(match r.u8()? {
        b'B' => {
            let final_lsn = r.u64()?;
            let commit_time = r.u64()? as i64;
            Message::Begin {
                final_lsn,
                commit_time,
                xid: r.u32()?,
            }
        }
        b'C' => {
            r.u8()?;
            Message::Commit {
                commit_lsn: r.u64()?,
            }
        }
        b'R' => {
            let oid = r.u32()?;
            let namespace = r.string()?;
            let name = r.string()?;
            r.u8()?;
            let n = r.i16()?;
            let mut columns = Vec::with_capacity(n.max(0) as usize);
            for _ in 0..n {
                let key = r.u8()? & 1 == 1;
                let name = r.string()?;
                let type_oid = r.u32()?;
                let type_modifier = r.i32()?;
                columns.push(Column {
                    name,
                    type_oid,
                    type_modifier,
                    key,
                });
            }
            Message::Relation(Relation {
                oid,
                namespace,
                name,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32()?;
            if r.u8()? != b'N' {
                return Err(Malformed("insert without a new tuple"));
            }
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let (old, new) = match r.u8()? {
                b'K' | b'O' => {
                    let old = r.tuple()?;
                    if r.u8()? != b'N' {
                        return Err(Malformed("update without a new tuple"));
                    }
                    (Some(old), r.tuple()?)
                }
                b'N' => (None, r.tuple()?),
                _ => return Err(Malformed("update tuple kind")),
            };
            Message::Update { relation, old, new }
        }
        b'D' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'K' | b'O' => Message::Delete {
                    relation,
                    old: r.tuple()?,
                },
                _ => return Err(Malformed("delete tuple kind")),
            }
        }
        b'T' => {
            let n = r.i32()?;
            r.u8()?;
            let relations = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
            Message::Truncate { relations }
        }
        _ => Message::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(cols: &[Option<&str>]) -> Vec<u8> {
        let mut b = (cols.len() as i16).to_be_bytes().to_vec();
        for c in cols {
            match c {
                None => b.push(b'n'),
                Some("<u>") => b.push(b'u'),
                Some(t) => {
                    b.push(b't');
                    b.extend((t.len() as i32).to_be_bytes());
                    b.extend(t.as_bytes());
                }
            }
        }
        b
    }

    #[test]
    fn messages_decode_as_the_protocol_lays_them_out() {
        let mut begin = vec![b'B'];
        begin.extend(0x16B_3748u64.to_be_bytes());
        begin.extend(7u64.to_be_bytes());
        begin.extend(42u32.to_be_bytes());
        assert_eq!(
            decode(&begin).unwrap(),
            Message::Begin {
                final_lsn: 0x16B_3748,
                commit_time: 7,
                xid: 42
            }
        );

        let mut rel = vec![b'R'];
        rel.extend(16384u32.to_be_bytes());
        rel.extend(b"edfi\0student\0d");
        rel.extend(2i16.to_be_bytes());
        for (flags, name, oid, typmod) in [
            (1u8, "studentusi", 23u32, -1i32),
            (0, "firstname", 1043, 79),
        ] {
            rel.push(flags);
            rel.extend(name.as_bytes());
            rel.push(0);
            rel.extend(oid.to_be_bytes());
            rel.extend(typmod.to_be_bytes());
        }
        let Message::Relation(r) = decode(&rel).unwrap() else {
            panic!("not a relation")
        };
        assert_eq!((r.namespace.as_str(), r.name.as_str()), ("edfi", "student"));
        assert_eq!(
            r.columns[1],
            Column {
                name: "firstname".into(),
                type_oid: 1043,
                type_modifier: 79,
                key: false
            }
        );
        assert!(r.columns[0].key);

        let mut upd = vec![b'U'];
        upd.extend(16384u32.to_be_bytes());
        upd.push(b'K');
        upd.extend(tuple(&[Some("1"), None]));
        upd.push(b'N');
        upd.extend(tuple(&[Some("2"), Some("<u>")]));
        assert_eq!(
            decode(&upd).unwrap(),
            Message::Update {
                relation: 16384,
                old: Some(vec![Datum::Text("1".into()), Datum::Null]),
                new: vec![Datum::Text("2".into()), Datum::Unchanged],
            }
        );

        let mut trunc = vec![b'T'];
        trunc.extend(2i32.to_be_bytes());
        trunc.push(0);
        trunc.extend(5u32.to_be_bytes());
        trunc.extend(6u32.to_be_bytes());
        assert_eq!(
            decode(&trunc).unwrap(),
            Message::Truncate {
                relations: vec![5, 6]
            }
        );
        assert!(decode(&[b'I', 0, 0]).is_err());
    }
}
