//! A sink lane: the partitions (Kafka topic partitions, Kinesis shards) one sink instance
//! applies, merged into one message sequence with the embedded stream's meaning.
//!
//! Every partition carries every watermark (the poller writes each one to all of them after
//! the cycle's events). A partition that delivered watermark `V` is *parked*: its later
//! messages wait until every partition of the lane has delivered a watermark; then the lowest
//! of them is handed to the sink, and the partitions parked at it move on. So the sink sees,
//! before watermark `V`, every change up to `V` of every partition of the lane — never half a
//! cycle. Order within a partition is kept, and a row's changes all travel in one partition.
//!
//! One exception: a poller that died while writing a watermark leaves it in some partitions
//! only; the re-sent cycle then ends with a later watermark everywhere, and the partitions
//! without the first one hand out changes of the re-sent cycle before it. They are applied one
//! watermark early — never lost, never applied twice.
//!
//! Messages at or before a partition's stored position (already applied) are skipped, and
//! [`Input::consumed`] tells the sink which positions the messages it has taken reach, for
//! its next transaction.

use std::collections::{BTreeMap, VecDeque};

use tokio::sync::mpsc;

use crate::checkpoint::{Positions, END};
use crate::event::{Message, SnapshotMarker, Watermark};

use super::position_cmp;

/// What a partition delivers.
#[derive(Debug)]
pub enum Item {
    /// The partition joins the lane once the partitions in `after` (still in the lane) have
    /// ended: a Kinesis child shard waits for its parents, so a row's changes stay in order.
    Opened {
        after: Vec<String>,
    },
    Message(Message),
    /// A closed shard was read to its end.
    Ended,
}

/// One item of one partition, at `position`.
#[derive(Debug)]
pub struct Delivery {
    pub part: String,
    pub position: String,
    pub item: Item,
}

/// What a partition waits at, and its position.
enum Barrier {
    Watermark(Watermark, String),
    Marker(SnapshotMarker, String),
}

#[derive(Default)]
struct Part {
    /// The barrier this partition delivered last, while it waits for the lane's other
    /// partitions.
    parked: Option<Barrier>,
    waiting: VecDeque<Delivery>,
}

/// A message for the sink and the positions its hand-out reaches.
type Ready = (Option<Message>, Vec<(String, String)>);

pub struct Input {
    rx: mpsc::Receiver<Delivery>,
    parts: BTreeMap<String, Part>,
    /// Partitions waiting for others to end before they join, with what they delivered.
    pending: BTreeMap<String, (Vec<String>, VecDeque<Delivery>)>,
    /// Snapshot markers arrive in every partition (Kinesis) and are barriers like watermarks;
    /// otherwise (Kafka) each is in one partition of the lane and passes straight through.
    marker_barriers: bool,
    stored: Positions,
    consumed: Positions,
    ready: VecDeque<Ready>,
    /// Snapshot markers handed out (barrier mode), so copies are not handed out again.
    markers: Vec<SnapshotMarker>,
}

impl Input {
    /// A lane over `parts`, skipping what `stored` says is applied.
    pub fn new(
        rx: mpsc::Receiver<Delivery>,
        parts: impl IntoIterator<Item = String>,
        stored: Positions,
        marker_barriers: bool,
    ) -> Input {
        Input {
            rx,
            parts: parts.into_iter().map(|p| (p, Part::default())).collect(),
            pending: BTreeMap::new(),
            marker_barriers,
            consumed: stored.clone(),
            stored,
            ready: VecDeque::new(),
            markers: Vec::new(),
        }
    }

    /// Positions reached by the messages handed out so far.
    pub fn consumed(&self) -> &Positions {
        &self.consumed
    }

    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = self.pop() {
                return Some(m);
            }
            let d = self.rx.recv().await?;
            self.take(d);
        }
    }

    pub fn try_recv(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = self.pop() {
                return Some(m);
            }
            let d = self.rx.try_recv().ok()?;
            self.take(d);
        }
    }

    fn pop(&mut self) -> Option<Message> {
        while let Some((m, reached)) = self.ready.pop_front() {
            self.consumed.extend(reached);
            if m.is_some() {
                return m;
            }
        }
        None
    }

    fn take(&mut self, d: Delivery) {
        if let Item::Message(_) = d.item {
            let applied = self.stored.get(&d.part).is_some_and(|s| {
                s == END || position_cmp(&d.position, s) != std::cmp::Ordering::Greater
            });
            if applied {
                return;
            }
        }
        if let Some((_, queue)) = self.pending.get_mut(&d.part) {
            queue.push_back(d);
            return;
        }
        if let Item::Opened { after } = &d.item {
            let waiting: Vec<String> = after
                .iter()
                .filter(|p| self.parts.contains_key(*p) || self.pending.contains_key(*p))
                .cloned()
                .collect();
            if waiting.is_empty() {
                self.parts.entry(d.part).or_default();
            } else {
                self.pending.insert(d.part, (waiting, VecDeque::new()));
            }
            return;
        }
        let part = self.parts.entry(d.part.clone()).or_default();
        if part.parked.is_some() {
            part.waiting.push_back(d);
            return;
        }
        match d.item {
            Item::Opened { .. } => unreachable!("handled above"),
            Item::Ended => {
                self.parts.remove(&d.part);
                self.ready
                    .push_back((None, vec![(d.part.clone(), END.to_string())]));
                self.join_after(&d.part);
                self.release();
            }
            Item::Message(Message::Watermark(w)) => {
                part.parked = Some(Barrier::Watermark(w, d.position));
                self.release();
            }
            Item::Message(Message::Snapshot(m)) if self.marker_barriers => {
                if self.markers.contains(&m) {
                    return;
                }
                part.parked = Some(Barrier::Marker(m, d.position));
                self.release();
            }
            Item::Message(m) => self.ready.push_back((Some(m), vec![(d.part, d.position)])),
        }
    }

    /// `ended` left the lane: partitions that waited only for it join, with what they hold.
    fn join_after(&mut self, ended: &str) {
        let mut joined = Vec::new();
        for (id, (waiting, _)) in &mut self.pending {
            waiting.retain(|p| p != ended);
            if waiting.is_empty() {
                joined.push(id.clone());
            }
        }
        for id in joined {
            let (_, queue) = self.pending.remove(&id).expect("listed");
            self.parts.entry(id).or_default();
            for d in queue {
                self.take(d);
            }
        }
    }

    /// While every partition is parked at a barrier, hand out the earliest — the lowest
    /// watermark, else the snapshot marker they all wait at — and let the partitions parked at
    /// it go on.
    fn release(&mut self) {
        loop {
            if self.parts.is_empty() || self.parts.values().any(|p| p.parked.is_none()) {
                return;
            }
            let low = self
                .parts
                .values()
                .filter_map(|p| match &p.parked {
                    Some(Barrier::Watermark(w, _)) => Some(w.version),
                    _ => None,
                })
                .min();
            let first_marker = self.parts.values().find_map(|p| match &p.parked {
                Some(Barrier::Marker(m, _)) => Some(m.clone()),
                _ => None,
            });
            let at = |b: &Barrier| match (b, low, &first_marker) {
                (Barrier::Watermark(w, _), Some(low), _) => w.version == low,
                (Barrier::Marker(m, _), None, Some(first)) => m == first,
                _ => false,
            };
            let mut reached = Vec::new();
            let mut barrier = None;
            let mut resumed = Vec::new();
            for (id, p) in &mut self.parts {
                if p.parked.as_ref().is_some_and(at) {
                    let (m, pos) = match p.parked.take().expect("parked") {
                        Barrier::Watermark(w, pos) => (Message::Watermark(w), pos),
                        Barrier::Marker(m, pos) => (Message::Snapshot(m), pos),
                    };
                    reached.push((id.clone(), pos));
                    barrier.get_or_insert(m);
                    resumed.extend(p.waiting.drain(..));
                }
            }
            let barrier = barrier.expect("one partition is at the earliest barrier");
            match &barrier {
                // A copy of a watermark (written again during resharding) is harmless.
                Message::Watermark(_) => {}
                Message::Snapshot(m) => {
                    self.markers.push(m.clone());
                    // Markers of one table's snapshot come in order: older ones cannot recur.
                    if self.markers.len() > 1000 {
                        self.markers.drain(..500);
                    }
                }
                Message::Change(_) => unreachable!("changes are not barriers"),
            }
            self.ready.push_back((Some(barrier), reached));
            for d in resumed {
                self.take(d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::every_type_schema;
    use crate::event::{ChangeEvent, Op, Value};

    fn wm(v: i64) -> Item {
        Item::Message(Message::Watermark(Watermark {
            version: v,
            commit_time: None,
        }))
    }

    fn change(k: i64, version: i64) -> Item {
        Item::Message(Message::Change(ChangeEvent {
            table: every_type_schema(),
            op: Op::Update,
            key: vec![Value::Int(k), Value::Null],
            after: None,
            version,
            commit_time: None,
        }))
    }

    fn d(part: &str, pos: u64, item: Item) -> Delivery {
        Delivery {
            part: part.into(),
            position: pos.to_string(),
            item,
        }
    }

    fn show(m: Message) -> String {
        match m {
            Message::Watermark(w) => format!("W{}", w.version),
            Message::Change(c) => format!("k{:?}", c.key[0]),
            Message::Snapshot(_) => "S".into(),
        }
    }

    async fn drain(input: &mut Input) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(m) = input.try_recv() {
            out.push(show(m));
        }
        out
    }

    #[tokio::test]
    async fn a_watermark_waits_for_every_partition_and_later_messages_wait_with_it() {
        let (tx, rx) = mpsc::channel(100);
        let mut input = Input::new(
            rx,
            ["a".to_string(), "b".to_string()],
            Positions::new(),
            false,
        );
        for x in [
            d("a", 0, change(1, 5)),
            d("a", 1, wm(5)),
            d("a", 2, change(3, 7)),
            d("b", 0, change(2, 4)),
        ] {
            tx.send(x).await.unwrap();
        }
        assert_eq!(drain(&mut input).await, vec!["kInt(1)", "kInt(2)"]);
        assert_eq!(input.consumed().get("a").map(String::as_str), Some("0"));
        tx.send(d("b", 1, wm(5))).await.unwrap();
        assert_eq!(drain(&mut input).await, vec!["W5", "kInt(3)"]);
        assert_eq!(input.consumed().get("a").map(String::as_str), Some("2"));
        assert_eq!(input.consumed().get("b").map(String::as_str), Some("1"));
    }

    #[tokio::test]
    async fn stored_positions_are_skipped_and_an_ended_part_leaves_the_lane() {
        let (tx, rx) = mpsc::channel(100);
        let stored: Positions = [("a".to_string(), "1".to_string())].into();
        let mut input = Input::new(rx, ["a".to_string(), "b".to_string()], stored, false);
        for x in [
            d("a", 0, change(1, 5)),
            d("a", 1, wm(5)),
            d("a", 2, change(3, 7)),
            d("a", 3, wm(7)),
            d("b", 9, change(4, 6)),
            d("b", 10, Item::Ended),
        ] {
            tx.send(x).await.unwrap();
        }
        assert_eq!(drain(&mut input).await, vec!["kInt(3)", "kInt(4)", "W7"]);
        assert_eq!(input.consumed().get("b").map(String::as_str), Some(END));
        assert_eq!(input.consumed().get("a").map(String::as_str), Some("3"));
    }

    #[tokio::test]
    async fn after_a_poller_restart_partitions_catch_up_to_the_same_watermark() {
        // Partition a got watermark 5 before the poller died; b only got the re-sent cycle's 8.
        // b's change of version 8 is handed out before watermark 5: applied early, not lost.
        let (tx, rx) = mpsc::channel(100);
        let mut input = Input::new(
            rx,
            ["a".to_string(), "b".to_string()],
            Positions::new(),
            false,
        );
        for x in [
            d("a", 0, wm(5)),
            d("a", 1, change(1, 8)),
            d("a", 2, wm(8)),
            d("b", 0, change(2, 8)),
            d("b", 1, wm(8)),
        ] {
            tx.send(x).await.unwrap();
        }
        assert_eq!(
            drain(&mut input).await,
            vec!["kInt(2)", "W5", "kInt(1)", "W8"]
        );
    }
}
