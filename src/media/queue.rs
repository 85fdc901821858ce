//! A signalling session's queue from the media thread to its WebSocket writer, bounded by the
//! encoded size of what waits in it ([`limits::MAX_OUTBOUND_BYTES`]). The media thread never
//! waits: a message that does not fit is not queued, and the session is told to end (its
//! participant is removed); a client that does not read cannot make confab buffer for it
//! without bound. One message is always taken when nothing waits (a join response in a big
//! room can be larger than the whole budget).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use livekit_protocol as lk;
use tokio::sync::{mpsc, Notify};

use crate::sfu::limits;

/// What a signalling session receives from the media thread.
#[derive(Debug)]
pub enum SessionEvent {
    /// A response to send, and the bytes it counts in the queue (give them back with
    /// [`SessionQueue::sent`] once written).
    Signal(Box<lk::signal_response::Message>, usize),
    /// The server ends the session: send `leave` with this reason, then close.
    Close(lk::DisconnectReason),
}

#[derive(Debug, Default)]
struct Queue {
    bytes: AtomicUsize,
    full: AtomicBool,
    notify: Notify,
}

/// The media thread's end of a session's queue.
#[derive(Debug, Clone)]
pub struct SessionTx {
    tx: mpsc::UnboundedSender<SessionEvent>,
    queue: Arc<Queue>,
}

/// The session's end.
#[derive(Debug)]
pub struct SessionRx {
    rx: mpsc::UnboundedReceiver<SessionEvent>,
    queue: Arc<Queue>,
}

/// The queue is full: the client does not read what was sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull {
    /// Bytes waiting when the message was refused.
    pub queued: usize,
}

/// A new session queue of [`limits::MAX_OUTBOUND_BYTES`].
pub fn session_channel() -> (SessionTx, SessionRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queue = Arc::new(Queue::default());
    (
        SessionTx {
            tx,
            queue: queue.clone(),
        },
        SessionRx { rx, queue },
    )
}

impl SessionTx {
    /// Queues a response, unless the queue is over its budget: then the message is dropped,
    /// the session is told to end ([`SessionQueue::overflowed`]) and the caller should remove
    /// the participant. A session that is gone takes (and drops) everything.
    pub fn signal(&self, msg: Box<lk::signal_response::Message>) -> Result<(), QueueFull> {
        self.signal_within(msg, limits::MAX_OUTBOUND_BYTES)
    }

    fn signal_within(
        &self,
        msg: Box<lk::signal_response::Message>,
        budget: usize,
    ) -> Result<(), QueueFull> {
        if self.queue.full.load(Ordering::Acquire) {
            return Err(QueueFull {
                queued: self.queue.bytes.load(Ordering::Acquire),
            });
        }
        let n = msg.encoded_len();
        let before = self.queue.bytes.fetch_add(n, Ordering::AcqRel);
        if before > 0 && before.saturating_add(n) > budget {
            self.queue.bytes.fetch_sub(n, Ordering::AcqRel);
            self.queue.full.store(true, Ordering::Release);
            // Stores a permit if the session is not waiting right now.
            self.queue.notify.notify_one();
            return Err(QueueFull { queued: before });
        }
        if self.tx.send(SessionEvent::Signal(msg, n)).is_err() {
            self.queue.bytes.fetch_sub(n, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Ends the session (not counted: it is small, and it must get through).
    pub fn close(&self, reason: lk::DisconnectReason) {
        let _ = self.tx.send(SessionEvent::Close(reason));
    }
}

/// The session's view of its queue's size (cheap to clone, apart from [`SessionRx`], so that
/// it can be watched while a message is being received).
#[derive(Debug, Clone)]
pub struct SessionQueue(Arc<Queue>);

impl SessionRx {
    pub async fn recv(&mut self) -> Option<SessionEvent> {
        self.rx.recv().await
    }

    pub fn queue(&self) -> SessionQueue {
        SessionQueue(self.queue.clone())
    }
}

impl SessionQueue {
    /// A response counting `n` bytes was written (or given up).
    pub fn sent(&self, n: usize) {
        self.0.bytes.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes waiting.
    pub fn queued(&self) -> usize {
        self.0.bytes.load(Ordering::Acquire)
    }

    /// Resolves once the queue overflowed (the client does not read).
    pub async fn overflowed(&self) {
        loop {
            if self.0.full.load(Ordering::Acquire) {
                return;
            }
            self.0.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use lk::signal_response::Message as Resp;

    fn msg(bytes: usize) -> Box<Resp> {
        Box::new(Resp::RoomUpdate(lk::RoomUpdate {
            room: Some(lk::Room {
                metadata: "m".repeat(bytes),
                ..Default::default()
            }),
        }))
    }

    #[tokio::test]
    async fn the_queue_is_bounded_by_bytes_and_says_when_it_overflowed() {
        let (tx, mut rx) = session_channel();
        let q = rx.queue();
        // One message always fits, however large.
        tx.signal_within(msg(5000), 1000).unwrap();
        let first = q.queued();
        assert!(first > 5000);
        let full = tx.signal_within(msg(10), 1000).unwrap_err();
        assert_eq!(full.queued, first);
        assert!(tx.signal_within(msg(10), 1000).is_err(), "stays full");
        tokio::time::timeout(std::time::Duration::from_secs(1), q.overflowed())
            .await
            .unwrap();
        match rx.recv().await {
            Some(SessionEvent::Signal(_, n)) => {
                assert_eq!(n, first);
                q.sent(n);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(q.queued(), 0);
        tx.close(lk::DisconnectReason::SignalClose);
        assert!(matches!(rx.recv().await, Some(SessionEvent::Close(_))));
    }

    #[tokio::test]
    async fn messages_within_the_budget_queue_up_to_it() {
        let (tx, rx) = session_channel();
        let mut n = 0;
        while tx.signal(msg(1000)).is_ok() {
            n += 1;
            assert!(n < 10_000, "never full");
        }
        let q = rx.queue();
        assert!(q.queued() <= limits::MAX_OUTBOUND_BYTES);
        assert!(q.queued() > limits::MAX_OUTBOUND_BYTES - 2000);
    }
}
