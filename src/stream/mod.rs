//! Streams carry messages from the poller to the sinks, in order per row:
//! - `embedded`: an in-process bounded channel per sink — nothing to run besides the binary;
//! - `kafka`: topics partitioned by table and key; sink workers form a consumer group;
//! - `kinesis`: one data stream, partition key = table + key, shards followed through
//!   resharding.
//!
//! With Kafka and Kinesis the poller writes each cycle's events, waits until the stream holds
//! them, writes the watermark to every partition (or open shard), and only then records its own
//! position (`edfi_cdc.table_state`, sink `poller`). A sink worker applies a *lane* — a set of
//! partitions — up to the lowest watermark across them ([`lane`]), storing the stream positions
//! in the target in the same transaction.

pub mod debezium;
pub mod embedded;
pub mod kafka;
pub mod kinesis;

pub mod lane;
pub mod msk_iam;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value as Json;

use crate::checkpoint::{key_to_json, Positions};
use crate::event::{self, CodecError, Message, SnapshotMarker, TableId, TableSchema, Value};

/// A stream fault.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("a sink stopped reading the stream")]
    Closed,
    #[error("{stream}: {message}")]
    Transient {
        stream: &'static str,
        message: String,
    },
    #[error("{stream}: {message}")]
    Fatal {
        stream: &'static str,
        message: String,
    },
}

impl StreamError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, StreamError::Transient { .. })
    }
}

/// The poller's end of a stream.
pub enum Producer {
    Embedded(embedded::Producer),
    Kafka(Box<kafka::Producer>),
    Kinesis(Box<kinesis::Producer>),
}

impl Producer {
    /// Send `msg` after all earlier messages. A watermark or snapshot marker returns only once
    /// it and everything before it are stored by the stream.
    pub async fn send(&self, msg: Message) -> Result<(), StreamError> {
        match self {
            Producer::Embedded(p) => p.send(msg).await.map_err(|_| StreamError::Closed),
            Producer::Kafka(p) => p.send(msg).await,
            Producer::Kinesis(p) => p.send(msg).await,
        }
    }

    /// Before a poll cycle opens its transaction at the source: wait while the sinks are
    /// behind (embedded: until every sink's buffer has room for half of `stream.capacity`), so
    /// that the source's transaction is not held open for them. A cycle larger than that can
    /// still wait for the sinks inside its transaction. Kafka and Kinesis take what is sent.
    pub async fn wait_for_room(&self) -> Result<(), StreamError> {
        match self {
            Producer::Embedded(p) => p.wait_half_room().await.map_err(|_| StreamError::Closed),
            Producer::Kafka(_) | Producer::Kinesis(_) => Ok(()),
        }
    }

    /// Before the poller's loop returns: wait until the records still on their way to the
    /// stream are stored or refused. A Kinesis call that reached the stream is stored even if
    /// its sender is gone; stored after the next poller sent its cycle again, it would put a
    /// row's older change after its newer one. A poller killed, or stopped past
    /// `shutdown_grace`, cannot wait. (Kafka's producer keeps a partition's messages in order,
    /// those sent again included, and a failed barrier waits for every message in flight.)
    pub async fn settle(&self) {
        if let Producer::Kinesis(p) = self {
            p.settle().await
        }
    }

    /// Whether messages outlive the process (the poller then keeps its own position).
    pub fn durable(&self) -> bool {
        !matches!(self, Producer::Embedded(_))
    }
}

/// A sink's end of a stream.
pub enum Input {
    Embedded(embedded::Consumer),
    Lane(Box<lane::Input>),
}

impl Input {
    /// The next message; `None` once the stream ended.
    pub async fn recv(&mut self) -> Option<Message> {
        match self {
            Input::Embedded(c) => c.recv().await,
            Input::Lane(l) => l.recv().await,
        }
    }

    /// The next message if one is ready now.
    pub fn try_recv(&mut self) -> Option<Message> {
        match self {
            Input::Embedded(c) => c.try_recv(),
            Input::Lane(l) => l.try_recv(),
        }
    }

    /// Whether no message is ready now.
    pub fn is_empty(&self) -> bool {
        match self {
            Input::Embedded(c) => c.is_empty(),
            Input::Lane(l) => l.is_empty(),
        }
    }

    /// Records the stream lost, found since the last call (a lane only).
    pub fn take_gaps(&mut self) -> Vec<lane::Gap> {
        match self {
            Input::Embedded(_) => Vec::new(),
            Input::Lane(l) => l.take_gaps(),
        }
    }

    /// Positions of the last messages handed out (a lane only).
    pub fn consumed(&self) -> Option<Positions> {
        match self {
            Input::Embedded(_) => None,
            Input::Lane(l) => Some(l.consumed().clone()),
        }
    }
}

/// The 128-bit hash that places a row in a partition or shard: stable across processes and
/// releases (xxh3 of the table and the key's JSON), so every change of a row goes to the same
/// place.
pub fn row_hash(table: &TableId, key: &[Value]) -> u128 {
    let text = format!("{table}\u{0}{}", key_to_json(key));
    xxhash_rust::xxh3::xxh3_128(text.as_bytes())
}

/// The shape a sink worker reads each table's messages in. A table changed at the source is
/// re-snapshotted, and its start marker, written to every partition (open shard), carries the
/// new shape: a partition's messages after it are read in that shape, those before it in the
/// shape of the marker before (or, before any, the newest seen in another partition — a shard
/// opened by resharding after the marker — else the catalog as read when partitions were last
/// assigned). A message read in another shape than the sink holds is conformed by column name
/// ([`event::ChangeEvent::conform`]); only messages older than the marker can be, and the
/// re-snapshot it starts rewrites their rows.
pub struct Shapes {
    catalog: HashMap<TableId, Arc<TableSchema>>,
    /// Per partition: the shape of the last start marker read there, with its version.
    seen: HashMap<String, HashMap<TableId, (i64, Arc<TableSchema>)>>,
    /// Per table: the shape of the newest start marker read in any partition.
    newest: HashMap<TableId, (i64, Arc<TableSchema>)>,
}

impl Shapes {
    pub fn new(schemas: &[Arc<TableSchema>]) -> Shapes {
        Shapes {
            catalog: schemas.iter().map(|s| (s.id.clone(), s.clone())).collect(),
            seen: HashMap::new(),
            newest: HashMap::new(),
        }
    }

    /// Take `schemas`, the catalog read again as partitions `parts` are assigned, as the shape
    /// of their messages, and of other partitions' until a marker of theirs says otherwise:
    /// the markers read so far elsewhere are older than it.
    pub fn use_catalog(&mut self, schemas: &[Arc<TableSchema>], parts: &[String]) {
        self.catalog = schemas.iter().map(|s| (s.id.clone(), s.clone())).collect();
        for part in parts {
            self.seen.remove(part);
        }
        self.newest.clear();
    }

    /// Decode a message of partition `part`, taking note of the shape a start marker carries.
    pub fn decode(&mut self, part: &str, key: &Json, value: &Json) -> Result<Message, CodecError> {
        // Whether the shape came from elsewhere than a marker of this partition: it may be
        // newer than the message.
        let borrowed = std::cell::Cell::new(false);
        let lookup = |id: &TableId| match self.seen.get(part).and_then(|m| m.get(id)) {
            Some((_, s)) => Some(s.clone()),
            None => {
                borrowed.set(true);
                self.newest
                    .get(id)
                    .map(|(_, s)| s.clone())
                    .or_else(|| self.catalog.get(id).cloned())
            }
        };
        // A message older than a change that altered a column's kind, read in the new shape.
        let mut msg = match event::decode(key, value, lookup) {
            Err(CodecError::Value { .. }) if borrowed.get() => {
                event::decode_lenient(key, value, lookup)?
            }
            other => other?,
        };
        if let Message::Snapshot(SnapshotMarker::Started { table, version, .. }) = &mut msg {
            // One shared copy of each shape: a sink compares shapes by pointer first.
            if let Some(same) = self
                .newest
                .get(&table.id)
                .map(|(_, s)| s)
                .into_iter()
                .chain(self.catalog.get(&table.id))
                .find(|s| ***s == **table)
            {
                *table = same.clone();
            }
            let shape = (*version, table.clone());
            if self
                .newest
                .get(&table.id)
                .is_none_or(|(v, _)| *v <= *version)
            {
                self.newest.insert(table.id.clone(), shape.clone());
            }
            self.seen
                .entry(part.to_string())
                .or_default()
                .insert(table.id.clone(), shape);
        }
        Ok(msg)
    }
}

/// Compare two stream positions (decimal numbers of any length: Kafka offsets, Kinesis
/// sequence numbers).
pub fn position_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// This process, as named in `edfi_cdc.stream_positions.worker`: host name and process id.
pub fn worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host}:{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn a_message_older_than_its_tables_change_is_read_in_the_marker_shape_or_as_text() {
        use crate::event::tests::col;
        use crate::event::{encode, ChangeEvent, Op, TableSchema};
        let shape = |grade: &str| {
            Arc::new(TableSchema {
                id: TableId::new("edfi", "Student"),
                columns: vec![col("StudentUSI", "int"), col("Grade", grade)],
                key: vec![0],
            })
        };
        let (old, new) = (shape("int"), shape("nvarchar"));
        let change = |table: &Arc<TableSchema>, grade: Value| {
            encode(
                "c",
                "db",
                &Message::Change(ChangeEvent {
                    table: table.clone(),
                    op: Op::Update,
                    key: vec![Value::Int(1)],
                    after: Some(vec![Value::Int(1), grade]),
                    version: 5,
                    commit_time: None,
                }),
            )
        };
        let marker = |table: &Arc<TableSchema>, version| {
            encode(
                "c",
                "db",
                &Message::Snapshot(SnapshotMarker::Started {
                    table: table.clone(),
                    version,
                    total_rows: None,
                    id: 1,
                    requested: true,
                }),
            )
        };
        let grade = |m: Message| match m {
            Message::Change(ev) => ev.after.unwrap()[1].clone(),
            other => panic!("{other:?}"),
        };
        // The catalog (read when the lane opened) is newer than the partition's first messages.
        let mut shapes = Shapes::new(std::slice::from_ref(&new));
        let (k, v) = change(&old, Value::Int(7));
        assert_eq!(
            grade(shapes.decode("p0", &k, &v).unwrap()),
            Value::String("7".into())
        );
        // Past a marker of the partition, its shape decodes strictly.
        let (k, v) = marker(&old, 3);
        shapes.decode("p0", &k, &v).unwrap();
        let (k, v) = change(&old, Value::Int(8));
        assert_eq!(grade(shapes.decode("p0", &k, &v).unwrap()), Value::Int(8));
        let (k, v) = marker(&new, 9);
        shapes.decode("p0", &k, &v).unwrap();
        let (k, v) = change(&old, Value::Int(9));
        assert!(shapes.decode("p0", &k, &v).is_err());
        // Another partition without a marker borrows the newest one's shape.
        let (k, v) = change(&new, Value::String("9th".into()));
        assert_eq!(
            grade(shapes.decode("p1", &k, &v).unwrap()),
            Value::String("9th".into())
        );
    }

    #[test]
    fn positions_compare_as_numbers() {
        assert_eq!(position_cmp("9", "10"), Ordering::Less);
        assert_eq!(position_cmp("00012", "12"), Ordering::Equal);
        assert_eq!(
            position_cmp(
                "49590338271490256608559692538361571095921575989136588898",
                "49590338271490256608559692540925702759324208523137515618"
            ),
            Ordering::Less
        );
    }

    #[test]
    fn row_hash_is_stable() {
        let t = TableId::new("edfi", "Student");
        assert_eq!(
            row_hash(&t, &[Value::Int(1)]),
            row_hash(&t, &[Value::Int(1)])
        );
        assert_ne!(
            row_hash(&t, &[Value::Int(1)]),
            row_hash(&t, &[Value::Int(2)])
        );
        assert_ne!(
            row_hash(&t, &[Value::Int(1)]),
            row_hash(&TableId::new("edfi", "Staff"), &[Value::Int(1)])
        );
    }
}
