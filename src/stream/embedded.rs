//! The embedded stream: one bounded channel per sink. A send waits while any sink's channel is
//! full, so the slowest sink paces the poller (back-pressure, not growth). Messages are not
//! durable: after a restart the poller resumes from the sinks' checkpoints.

use tokio::sync::mpsc;

use crate::event::Message;

/// The poller's end.
pub struct Producer {
    sinks: Vec<mpsc::Sender<Message>>,
}

/// A sink's end.
pub struct Consumer {
    rx: mpsc::Receiver<Message>,
}

/// The receiving end is gone (its sink stopped).
#[derive(Debug, thiserror::Error)]
#[error("a sink stopped reading the stream")]
pub struct Closed;

/// A stream feeding `sinks` consumers, each buffering up to `capacity` messages.
pub fn channel(capacity: usize, sinks: usize) -> (Producer, Vec<Consumer>) {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..sinks).map(|_| mpsc::channel(capacity)).unzip();
    (
        Producer { sinks: txs },
        rxs.into_iter().map(|rx| Consumer { rx }).collect(),
    )
}

impl Producer {
    /// Deliver `msg` to every sink, in order after all earlier messages; waits for room.
    pub async fn send(&self, msg: Message) -> Result<(), Closed> {
        if let Some((last, rest)) = self.sinks.split_last() {
            for tx in rest {
                tx.send(msg.clone()).await.map_err(|_| Closed)?;
            }
            last.send(msg).await.map_err(|_| Closed)?;
        }
        Ok(())
    }

    /// Wait until every sink's channel has room for half of its capacity: a poll cycle waits
    /// here, before it opens its transaction at the source, while the sinks are behind.
    pub async fn wait_half_room(&self) -> Result<(), Closed> {
        for tx in &self.sinks {
            let half = tx.max_capacity().div_ceil(2);
            drop(tx.reserve_many(half).await.map_err(|_| Closed)?);
        }
        Ok(())
    }
}

impl Consumer {
    /// The next message; `None` once the producer is gone and the channel is drained.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// The next message if one is ready now.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.rx.try_recv().ok()
    }

    /// Whether no message is ready now.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Watermark;
    use std::time::Duration;

    fn wm(v: i64) -> Message {
        Message::Watermark(Watermark {
            version: v,
            commit_time: None,
        })
    }

    #[tokio::test]
    async fn a_cycle_waits_for_half_of_every_sinks_buffer() {
        let (p, mut cs) = channel(4, 2);
        for v in 1..=3 {
            p.send(wm(v)).await.unwrap();
        }
        // One free slot of four in each channel: less than half.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), p.wait_half_room())
                .await
                .is_err()
        );
        cs[0].recv().await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), p.wait_half_room())
                .await
                .is_err(),
            "the other sink is still behind"
        );
        cs[1].recv().await.unwrap();
        tokio::time::timeout(Duration::from_millis(50), p.wait_half_room())
            .await
            .expect("room for two in both")
            .unwrap();
        // Waiting took no room: both channels take two more.
        for v in 4..=5 {
            p.send(wm(v)).await.unwrap();
        }
    }

    #[tokio::test]
    async fn every_sink_gets_every_message_in_order_and_a_full_sink_holds_the_producer() {
        let (p, mut cs) = channel(2, 2);
        p.send(wm(1)).await.unwrap();
        p.send(wm(2)).await.unwrap();
        // Both channels are full: a third send waits until the slower sink reads.
        let blocked = tokio::time::timeout(Duration::from_millis(50), p.send(wm(3))).await;
        assert!(blocked.is_err(), "send must wait for room");
        assert_eq!(cs[0].recv().await, Some(wm(1)));
        assert_eq!(cs[1].recv().await, Some(wm(1)));
        p.send(wm(3)).await.unwrap();
        drop(p);
        for c in &mut cs {
            let mut got = Vec::new();
            while let Some(m) = c.recv().await {
                got.push(m);
            }
            assert_eq!(got, vec![wm(2), wm(3)]);
        }
    }
}
