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
//! One exception: a poller that died while writing a barrier leaves it in some partitions
//! only. Barriers name the poller run that wrote them ([`Run`]), and when the partitions wait at
//! barriers of different runs, the oldest run's goes first: the lone barrier, then what waits
//! behind it, then the next run's. A lone watermark is followed by a later one everywhere (the
//! re-sent cycle), and the partitions without it hand out changes of the re-sent cycle before
//! it: they are applied one watermark early — never lost, never applied twice.
//!
//! Messages at or before a partition's stored position (already applied) are skipped, and
//! [`Input::consumed`] tells the sink which positions the messages it has taken reach, for
//! its next transaction.
//!
//! Every barrier also says how many records the poller wrote to its partition since the
//! previous barrier there. Fewer arriving means the stream lost records it had acknowledged (a
//! Kafka topic trimmed by retention, a broker or stand-in that dropped data): the lane reports
//! a [`Gap`] and the sink re-snapshots rather than claim rows it never received. The first
//! stretch a partition is read from after a restart is not counted (it began before the stored
//! position).

use std::collections::{BTreeMap, HashMap, VecDeque};

use tokio::sync::mpsc;

use crate::checkpoint::{Positions, END};
use crate::event::{Message, SnapshotMarker, TableId, Watermark};

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
    /// On a barrier (watermark or snapshot marker): the records the poller wrote to this
    /// partition since its previous barrier there, when the poller counted them.
    pub sent: Option<u64>,
    /// On a barrier: the run of the poller that wrote it (see [`Run`]), when it said.
    pub run: Option<Run>,
}

/// A poller process's run. A poller killed while it wrote a barrier leaves it in some
/// partitions only; the next run's barriers are later ones, and the lane hands out the older
/// run's barrier first, so that what waits behind it is handed out before any barrier written
/// after it. Each poller start takes its first run from the poller's position store
/// ([`crate::checkpoint::begin_run`]): [`RUNS_PER_START`] past the previous start's (or the
/// start's clock in milliseconds, if later), so a restarted poller's runs follow the dead
/// one's whatever the hosts' clocks say; within a process each new run is the last plus one.
pub type Run = u64;

/// Runs one poller process may take: the next start's first run is at least this far past
/// the previous start's.
pub const RUNS_PER_START: u64 = 1 << 32;

/// A new run for a poller whose barrier write failed (so that barrier may be in some
/// partitions only): later than `run`, and than any barrier written so far.
pub fn next_run(run: &std::sync::atomic::AtomicU64) -> Run {
    run.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
}

/// Records a partition lost: fewer arrived between two of its barriers than the poller wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub part: String,
    /// The barrier that closed the stretch.
    pub position: String,
    pub sent: u64,
    pub received: u64,
}

/// What a partition waits at, and its position.
enum Barrier {
    Watermark(Watermark, String),
    Marker(SnapshotMarker, String),
}

/// A partition's barrier and the run that wrote it.
struct Parked {
    barrier: Barrier,
    run: Option<Run>,
}

impl Part {
    /// Count `d`, taken in order; a barrier closes the stretch since the last one and returns
    /// the gap it shows, if any.
    fn count(&mut self, d: &Delivery) -> Option<Gap> {
        match &d.item {
            Item::Message(Message::Change(_)) => {
                self.received = self.received.map(|n| n + 1);
                None
            }
            Item::Message(_) => match (self.received.replace(0), d.sent) {
                (Some(received), Some(sent)) if received < sent => Some(Gap {
                    part: d.part.clone(),
                    position: d.position.clone(),
                    sent,
                    received,
                }),
                _ => None,
            },
            Item::Opened { .. } | Item::Ended => None,
        }
    }
}

#[derive(Default)]
struct Part {
    /// The barrier this partition delivered last, while it waits for the lane's other
    /// partitions.
    parked: Option<Parked>,
    waiting: VecDeque<Delivery>,
    /// Records received since the partition's last barrier; unknown until this run saw one.
    received: Option<u64>,
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
    /// The last snapshot marker handed out per table (barrier mode). A copy (a marker written
    /// again by a poller that retried its step, or to a child shard) follows its original in
    /// every partition before the table's next marker, so it equals this one and is dropped.
    /// Only the last one is kept: a later snapshot of the table repeats an earlier one's
    /// markers when its chunks end at the same keys, and those are new.
    markers: HashMap<TableId, SnapshotMarker>,
    /// Barrier mode over several Kafka topics: each table's topic, whose partitions alone
    /// carry its snapshot markers (a lane over every partition of per-table topics).
    marker_topics: Option<HashMap<TableId, String>>,
    gaps: Vec<Gap>,
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
            markers: HashMap::new(),
            marker_topics: None,
            gaps: Vec::new(),
        }
    }

    /// In barrier mode, a table's snapshot markers arrive in the partitions of its topic only
    /// (part ids `{topic}/{partition}`): each marker is a barrier across those.
    pub fn with_marker_topics(self, topics: HashMap<TableId, String>) -> Input {
        Input {
            marker_topics: Some(topics),
            ..self
        }
    }

    /// Gaps found since the last call (found when their barrier arrives, before it is handed
    /// out).
    pub fn take_gaps(&mut self) -> Vec<Gap> {
        std::mem::take(&mut self.gaps)
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

    /// Whether nothing waits to be handed out (a delivery waiting counts, even one that
    /// completes no message yet).
    pub fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.rx.is_empty()
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
        if let Some(gap) = part.count(&d) {
            self.gaps.push(gap);
        }
        let part = self.parts.get_mut(&d.part).expect("entered above");
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
                part.parked = Some(Parked {
                    barrier: Barrier::Watermark(w, d.position),
                    run: d.run,
                });
                self.release();
            }
            Item::Message(Message::Snapshot(m)) if self.marker_barriers => {
                if self.markers.get(&m.table().id) == Some(&m) {
                    return;
                }
                part.parked = Some(Parked {
                    barrier: Barrier::Marker(m, d.position),
                    run: d.run,
                });
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

    /// While every partition is parked at a barrier, hand out the earliest — of the oldest
    /// poller run among them (see [`Run`]), the lowest watermark, else the snapshot marker they
    /// all wait at — and let the partitions parked at it go on.
    fn release(&mut self) {
        loop {
            if self.release_topic_marker() {
                continue;
            }
            if self.parts.is_empty() || self.parts.values().any(|p| p.parked.is_none()) {
                return;
            }
            let oldest = self
                .parts
                .values()
                .filter_map(|p| p.parked.as_ref())
                .map(|p| p.run)
                .min()
                .expect("every partition is parked");
            let candidates = || {
                self.parts
                    .values()
                    .filter_map(|p| p.parked.as_ref())
                    .filter(|p| p.run == oldest)
            };
            let low = candidates()
                .filter_map(|p| match &p.barrier {
                    Barrier::Watermark(w, _) => Some(w.version),
                    _ => None,
                })
                .min();
            let first_marker = candidates().find_map(|p| match &p.barrier {
                Barrier::Marker(m, _) => Some(m.clone()),
                _ => None,
            });
            // A marker goes with its copies of later runs (a step the poller retried after it
            // gave the marker up): a copy is dropped once its original was handed out, so a
            // partition parked at one would wait for ever.
            let at = |p: &Parked| match (&p.barrier, low, &first_marker) {
                (Barrier::Watermark(w, _), Some(low), _) => p.run == oldest && w.version == low,
                (Barrier::Marker(m, _), None, Some(first)) => m == first,
                _ => false,
            };
            let mut reached = Vec::new();
            let mut barrier = None;
            let mut resumed = Vec::new();
            for (id, p) in &mut self.parts {
                if p.parked.as_ref().is_some_and(at) {
                    let (m, pos) = match p.parked.take().expect("parked").barrier {
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
                    self.markers.insert(m.table().id.clone(), m.clone());
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

impl Input {
    /// With per-topic markers: hand out a snapshot marker once every partition of its table's
    /// topic is parked at a marker — before any watermark, which those partitions have not
    /// reached. As across the lane, the oldest run's marker goes first, with the partitions
    /// parked at it or at a copy of it (a retried step's marker that differs from the one it
    /// gave up on, when the chunk read again ended elsewhere, waits behind it).
    fn release_topic_marker(&mut self) -> bool {
        let Some(topics) = &self.marker_topics else {
            return false;
        };
        let carriers = |m: &SnapshotMarker| {
            topics
                .get(&m.table().id)
                .map(|t| format!("{t}/"))
                .unwrap_or_default()
        };
        let found = self
            .parts
            .values()
            .find_map(|p| match p.parked.as_ref().map(|p| &p.barrier) {
                Some(Barrier::Marker(m, _)) => {
                    let prefix = carriers(m);
                    let parked: Vec<(&SnapshotMarker, Option<Run>)> = self
                        .parts
                        .iter()
                        .filter(|(id, _)| id.starts_with(&prefix))
                        .map(|(_, q)| match q.parked.as_ref() {
                            Some(Parked {
                                barrier: Barrier::Marker(n, _),
                                run,
                            }) => Some((n, *run)),
                            _ => None,
                        })
                        .collect::<Option<_>>()?;
                    let oldest = parked.iter().map(|(_, run)| *run).min()?;
                    let first = parked.iter().find(|(_, run)| *run == oldest)?.0;
                    Some((first.clone(), prefix))
                }
                _ => None,
            });
        let Some((marker, prefix)) = found else {
            return false;
        };
        let mut reached = Vec::new();
        let mut resumed = Vec::new();
        for (id, p) in self
            .parts
            .iter_mut()
            .filter(|(id, _)| id.starts_with(&prefix))
        {
            if !matches!(p.parked.as_ref().map(|p| &p.barrier), Some(Barrier::Marker(m, _)) if *m == marker)
            {
                continue;
            }
            if let Some(Parked {
                barrier: Barrier::Marker(_, pos),
                ..
            }) = p.parked.take()
            {
                reached.push((id.clone(), pos));
            }
            resumed.extend(p.waiting.drain(..));
        }
        self.markers
            .insert(marker.table().id.clone(), marker.clone());
        self.ready
            .push_back((Some(Message::Snapshot(marker)), reached));
        for d in resumed {
            self.take(d);
        }
        true
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
            sent: None,
            run: None,
        }
    }

    /// A barrier `item` that says `sent` records preceded it in its partition.
    fn counted(part: &str, pos: u64, item: Item, sent: u64) -> Delivery {
        Delivery {
            sent: Some(sent),
            ..d(part, pos, item)
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

    #[tokio::test]
    async fn fewer_records_than_a_barrier_counts_is_a_gap_once_a_barrier_was_seen() {
        let (tx, rx) = mpsc::channel(100);
        let mut input = Input::new(rx, ["a".to_string()], Positions::new(), true);
        for x in [
            // Read from mid-stretch (after a restart): not counted.
            d("a", 0, change(1, 5)),
            counted("a", 1, wm(5), 4),
            d("a", 2, change(2, 6)),
            counted("a", 3, wm(6), 1),
            // Two written, one arrived.
            d("a", 4, change(3, 7)),
            counted("a", 5, wm(7), 2),
            // More than written (a re-sent call that had landed) is not a gap.
            d("a", 6, change(4, 8)),
            d("a", 7, change(4, 8)),
            counted("a", 8, wm(8), 1),
        ] {
            tx.send(x).await.unwrap();
        }
        assert_eq!(drain(&mut input).await.len(), 9);
        assert_eq!(
            input.take_gaps(),
            vec![Gap {
                part: "a".into(),
                position: "5".into(),
                sent: 2,
                received: 1
            }]
        );
        assert!(input.take_gaps().is_empty());
    }

    #[tokio::test]
    async fn a_marker_copy_is_dropped_but_a_later_snapshot_repeating_its_markers_is_not() {
        let table = every_type_schema();
        let marker = |m: SnapshotMarker| Item::Message(Message::Snapshot(m));
        let started = |v, id| SnapshotMarker::Started {
            table: table.clone(),
            version: v,
            total_rows: Some(1),
            id,
            requested: false,
        };
        let chunk = SnapshotMarker::Chunk {
            table: table.clone(),
            last_key: vec![Value::Int(1), Value::Null],
            rows: 1,
        };
        let done = |v| SnapshotMarker::Done {
            table: table.clone(),
            version: v,
            rows: 1,
        };
        let (tx, rx) = mpsc::channel(100);
        let mut input = Input::new(rx, ["a".to_string()], Positions::new(), true);
        for (i, m) in [
            started(5, 1),
            chunk.clone(),
            chunk.clone(), // a copy: the poller retried the step
            done(5),
            started(5, 2), // a re-snapshot at the same version
            chunk.clone(),
            done(5),
            started(5, 3), // another, abandoned before its first chunk…
            started(5, 3), // …its start sent again (a copy)…
            started(5, 4), // …and the next one at the same version
        ]
        .into_iter()
        .enumerate()
        {
            tx.send(d("a", i as u64, marker(m))).await.unwrap();
        }
        assert_eq!(drain(&mut input).await, vec!["S"; 8]);
    }

    /// A barrier `item` written by poller run `run`.
    fn of_run(part: &str, pos: u64, item: Item, run: Run) -> Delivery {
        Delivery {
            run: Some(run),
            ..d(part, pos, item)
        }
    }

    /// What a lane in barrier mode over `parts`, from no stored position, hands out of
    /// `deliveries`.
    async fn hand_out<const N: usize>(
        parts: [&str; N],
        deliveries: impl IntoIterator<Item = Delivery>,
    ) -> Vec<String> {
        let (tx, rx) = mpsc::channel(100);
        let mut input = Input::new(rx, parts.map(String::from), Positions::new(), true);
        for d in deliveries {
            tx.send(d).await.unwrap();
        }
        drain(&mut input).await
    }

    /// A poller killed while it wrote a snapshot marker left it in partition `a` only; the next
    /// run's watermark is in both. The lone marker, of the older run, is handed out first, and
    /// the change waiting behind it before the watermark (handing out the watermark first would
    /// claim that change before the sink holds it).
    #[tokio::test]
    async fn a_lone_barrier_of_a_dead_pollers_run_goes_before_the_next_runs_barriers() {
        let table = every_type_schema();
        let chunk = || {
            Item::Message(Message::Snapshot(SnapshotMarker::Chunk {
                table: table.clone(),
                last_key: vec![Value::Int(1), Value::Null],
                rows: 1,
            }))
        };
        assert_eq!(
            hand_out(
                ["a", "b"],
                [
                    of_run("a", 0, chunk(), 1),
                    d("b", 0, change(2, 6)),
                    of_run("b", 1, wm(6), 2),
                    d("a", 1, change(1, 6)),
                    of_run("a", 2, wm(6), 2),
                ]
            )
            .await,
            ["kInt(2)", "S", "kInt(1)", "W6"]
        );

        // A lone watermark of the dead run goes before the next run's marker, and what waits
        // behind the watermark before that marker.
        assert_eq!(
            hand_out(
                ["a", "b"],
                [
                    of_run("b", 0, wm(5), 1),
                    d("a", 0, change(1, 6)),
                    of_run("a", 1, chunk(), 2),
                    d("b", 1, change(2, 6)),
                    of_run("b", 2, chunk(), 2),
                ]
            )
            .await,
            ["kInt(1)", "W5", "kInt(2)", "S"]
        );

        // A marker given up on in `b` and written again, the same, by the retried step under
        // a new run: the copy goes out with its original, and `b` does not wait for ever.
        assert_eq!(
            hand_out(
                ["a", "b"],
                [
                    of_run("a", 0, chunk(), 1),
                    d("a", 1, change(1, 6)),
                    of_run("a", 2, chunk(), 2),
                    of_run("a", 3, wm(6), 2),
                    d("b", 0, change(2, 6)),
                    of_run("b", 1, chunk(), 2),
                    d("b", 2, change(3, 6)),
                    of_run("b", 3, wm(6), 2),
                ]
            )
            .await,
            ["kInt(2)", "S", "kInt(1)", "kInt(3)", "W6"]
        );
    }

    /// A lane over every partition of per-table topics: a table's marker is in its topic's
    /// partitions only, and is handed out once all of those reached it — before the next
    /// watermark, which they carry after it — while the other topic's partitions wait there.
    #[tokio::test]
    async fn a_marker_of_one_topic_is_a_barrier_across_that_topics_partitions() {
        let table = every_type_schema();
        let chunk = Item::Message(Message::Snapshot(SnapshotMarker::Chunk {
            table: table.clone(),
            last_key: vec![Value::Int(1), Value::Null],
            rows: 1,
        }));
        let (tx, rx) = mpsc::channel(100);
        let parts = ["t/0", "t/1", "u/0", "u/1"].map(String::from);
        let topics = [(table.id.clone(), "t".to_string())].into();
        let mut input = Input::new(rx, parts, Positions::new(), true).with_marker_topics(topics);
        for (part, pos, item) in [
            ("t/0", 0, wm(5)),
            ("t/1", 0, wm(5)),
            ("u/0", 0, wm(5)),
            ("u/1", 0, wm(5)),
            ("u/0", 1, wm(6)),
            ("u/1", 1, wm(6)),
            ("t/0", 1, change(1, 6)),
            ("t/0", 2, chunk),
        ] {
            tx.send(d(part, pos, item)).await.unwrap();
        }
        assert_eq!(drain(&mut input).await, vec!["W5", "kInt(1)"]);
        let copy = Item::Message(Message::Snapshot(SnapshotMarker::Chunk {
            table: table.clone(),
            last_key: vec![Value::Int(1), Value::Null],
            rows: 1,
        }));
        tx.send(d("t/1", 1, copy)).await.unwrap();
        assert_eq!(drain(&mut input).await, vec!["S"]);
        tx.send(d("t/0", 3, wm(6))).await.unwrap();
        tx.send(d("t/1", 2, wm(6))).await.unwrap();
        assert_eq!(drain(&mut input).await, vec!["W6"]);
        assert_eq!(input.consumed().get("t/1").map(String::as_str), Some("2"));
    }

    /// A chunk marker of topic `t` given up on after it reached `t/0` only, and a retried step
    /// whose chunk, read again, ended at another key: the lone marker, of the older run, goes
    /// out first with `t/0` alone, then the new one with both, while the other topic's
    /// partitions still stream (no watermark is needed to resolve it).
    #[tokio::test]
    async fn a_lone_marker_of_one_topic_goes_before_a_different_marker_of_the_next_run() {
        let table = every_type_schema();
        let chunk = |k: i64| {
            Item::Message(Message::Snapshot(SnapshotMarker::Chunk {
                table: table.clone(),
                last_key: vec![Value::Int(k), Value::Null],
                rows: 1,
            }))
        };
        let (tx, rx) = mpsc::channel(100);
        let parts = ["t/0", "t/1", "u/0", "u/1"].map(String::from);
        let topics = [(table.id.clone(), "t".to_string())].into();
        let mut input = Input::new(rx, parts, Positions::new(), true).with_marker_topics(topics);
        for d in [
            d("t/0", 0, change(1, 6)),
            of_run("t/0", 1, chunk(1), 1),
            d("t/0", 2, change(2, 6)),
            of_run("t/0", 3, chunk(2), 2),
            d("t/1", 0, change(3, 6)),
            of_run("t/1", 1, chunk(2), 2),
        ] {
            tx.send(d).await.unwrap();
        }
        assert_eq!(
            drain(&mut input).await,
            vec!["kInt(1)", "kInt(3)", "S", "kInt(2)", "S"]
        );
        assert_eq!(input.consumed().get("t/0").map(String::as_str), Some("3"));
    }
}
