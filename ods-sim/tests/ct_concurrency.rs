//! Commit-ordered versions under concurrent writers: a reader that repeatedly reads, in
//! REPEATABLE READ snapshots, V = current version and the changes after its last V, and then
//! continues from V, must read every committed change exactly once — which fails if a change
//! with a version <= V ever became visible after V was read.

mod ct_support;

use ct_support::{Change, TestDb};
use ods_sim::ct;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::IsolationLevel;

const WRITERS: i32 = 8;
const TXS_PER_WRITER: i32 = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ct_concurrent_writers_every_change_read_exactly_once() {
    let db = TestDb::new().await;
    ct::enable_database(&db.client, 2, 3, true).await.unwrap();
    db.tracked_table("Parent").await;
    db.tracked_table("Child").await;
    let start = ct_support::current_version(&db.client).await.unwrap();

    let running = Arc::new(AtomicUsize::new(WRITERS as usize));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut client = db.connect().await;
        let running = running.clone();
        writers.push(tokio::spawn(async move {
            let mut committed = Vec::new();
            for t in 0..TXS_PER_WRITER {
                // Alternate isolation levels; every fifth transaction is long (many statements
                // and round trips), so commits overlap and finish out of start order.
                let isolation = if (w + t) % 2 == 0 {
                    IsolationLevel::ReadCommitted
                } else {
                    IsolationLevel::RepeatableRead
                };
                let rows = if t % 5 == 0 { 12 } else { 1 + (t % 3) };
                let tx = client
                    .build_transaction()
                    .isolation_level(isolation)
                    .start()
                    .await
                    .unwrap();
                let mut ids = Vec::new();
                for r in 0..rows {
                    let id = w * 1_000_000 + t * 100 + r;
                    tx.execute(r#"insert into dbo."Parent" values ($1, $2)"#, &[&id, &w])
                        .await
                        .unwrap();
                    tx.execute(r#"insert into dbo."Child" values ($1, $2)"#, &[&id, &w])
                        .await
                        .unwrap();
                    ids.push(id);
                }
                if t % 7 == 3 {
                    // Rolled back work must never be read.
                    tx.rollback().await.unwrap();
                } else {
                    tx.commit().await.unwrap();
                    committed.extend(ids);
                }
            }
            running.fetch_sub(1, Ordering::SeqCst);
            committed
        }));
    }

    let mut reader = db.connect().await;
    let mut last = start;
    let mut seen: HashMap<i32, i64> = HashMap::new();
    let mut reads = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let writers_done = running.load(Ordering::SeqCst) == 0;
        let (tx, v, mv) = ct_support::snapshot(&mut reader, "Parent").await;
        assert!(last >= mv, "baseline {last} below min valid {mv}");
        let parents: Vec<Change> = ct_support::changes(&tx, "Parent", Some(last)).await;
        let children: Vec<Change> = ct_support::changes(&tx, "Child", Some(last)).await;
        tx.commit().await.unwrap();
        reads += 1;

        // Consistent across tables: the same transactions, hence the same ids.
        let p: BTreeSet<i32> = parents.iter().map(|c| c.id).collect();
        let c: BTreeSet<i32> = children.iter().map(|c| c.id).collect();
        assert_eq!(p, c, "parent and child changes of one snapshot differ");
        for change in parents {
            assert!(
                change.version > last && change.version <= v,
                "version {} outside ({last}, {v}]",
                change.version
            );
            assert_eq!(change.op, "I");
            if let Some(earlier) = seen.insert(change.id, change.version) {
                panic!(
                    "id {} read twice (versions {earlier} and {})",
                    change.id, change.version
                );
            }
        }
        assert!(v >= last, "current version went backwards: {last} -> {v}");
        last = v;
        if writers_done {
            // This read started after every writer had committed: it saw everything.
            break;
        }
        assert!(Instant::now() < deadline, "writers did not finish in time");
        tokio::task::yield_now().await;
    }

    let mut committed = BTreeSet::new();
    for w in writers {
        committed.extend(w.await.unwrap());
    }
    let read: BTreeSet<i32> = seen.keys().copied().collect();
    let missed: Vec<_> = committed.difference(&read).take(10).collect();
    let phantom: Vec<_> = read.difference(&committed).take(10).collect();
    assert!(
        missed.is_empty() && phantom.is_empty(),
        "missed {missed:?}, never committed {phantom:?} ({reads} reads)"
    );
    assert!(reads > 2, "the reader should have overlapped the writers");
    // Every committed transaction has its own version, in ct.tx.
    let txs: i64 = db
        .client
        .query_one("select count(*) from ct.tx where version > $1", &[&start])
        .await
        .unwrap()
        .get(0);
    let distinct_versions: BTreeSet<i64> = seen.values().copied().collect();
    assert_eq!(txs as usize, distinct_versions.len());
}
