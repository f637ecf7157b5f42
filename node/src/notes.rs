//! Notifications for API clients: one queue shared by every client,
//! bounded in entries *and* in bytes.
//!
//! A remote sender chooses how long a `received` line is (a text of control
//! characters comes out escaped, about 24 KiB), so a bound in entries alone
//! let one client that stopped reading grow the node by hundreds of MiB
//! (issue 12). Here the oldest lines go when either bound is passed, and a
//! client that had not read them is told how many it missed. A line that
//! every client has read is dropped at once: with no client, nothing is kept.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

/// Lines kept at most.
pub const NOTE_BACKLOG: usize = 16 * 1024;
/// Bytes of lines kept at most.
pub const NOTE_BACKLOG_BYTES: usize = 4 * 1024 * 1024;

/// Why [`Receiver::recv`] gave no line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// This many lines were dropped before this client read them.
    Lagged(u64),
    /// The node has stopped: no more lines will come.
    Closed,
}

struct Entry {
    /// `None` once every client that was there when it came has read it.
    line: Option<Arc<str>>,
    /// Clients that have still to read it.
    unread: usize,
}

struct Queue {
    entries: VecDeque<Entry>,
    /// Sequence number of `entries[0]`.
    first: u64,
    /// Bytes of the lines still held.
    bytes: usize,
    receivers: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl Queue {
    fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= e.line.map_or(0, |l| l.len());
            self.first += 1;
        }
    }

    /// Drop the lines at the front that nobody has left to read.
    fn compact(&mut self) {
        while self.entries.front().is_some_and(|e| e.line.is_none()) {
            self.pop_front();
        }
    }

    /// One client is done with `seq`: read it, skipped it or left.
    fn release(&mut self, seq: u64) {
        let Some(i) = seq.checked_sub(self.first) else { return };
        let Some(e) = usize::try_from(i).ok().and_then(|i| self.entries.get_mut(i)) else { return };
        e.unread = e.unread.saturating_sub(1);
        if e.unread == 0
            && let Some(l) = e.line.take()
        {
            self.bytes -= l.len();
        }
    }
}

fn lock(q: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // A panic while holding the lock leaves the queue consistent (every
    // change is a single step), so a poisoned lock is still usable.
    q.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The node's end: publishes lines.
#[derive(Debug)]
pub struct Sender {
    queue: Arc<Mutex<Queue>>,
    /// Bumped on every line; closed when the sender goes.
    wake: watch::Sender<u64>,
}

/// Makes receivers (held by the API's handle).
#[derive(Debug, Clone)]
pub struct Subscriber {
    queue: Arc<Mutex<Queue>>,
    wake: watch::Receiver<u64>,
}

/// One client's end.
#[derive(Debug)]
pub struct Receiver {
    queue: Arc<Mutex<Queue>>,
    wake: watch::Receiver<u64>,
    /// The next line this client reads.
    next: u64,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("lines", &self.entries.len()).field("bytes", &self.bytes).finish()
    }
}

/// A queue that keeps at most `max_entries` lines and `max_bytes` bytes.
pub fn channel(max_entries: usize, max_bytes: usize) -> (Sender, Subscriber) {
    let queue = Arc::new(Mutex::new(Queue {
        entries: VecDeque::new(),
        first: 0,
        bytes: 0,
        receivers: 0,
        max_entries,
        max_bytes,
    }));
    let (wake, rx) = watch::channel(0);
    (Sender { queue: queue.clone(), wake }, Subscriber { queue, wake: rx })
}

impl Sender {
    /// Publish a line to every client there is now. Kept only while some
    /// client has still to read it, and within the bounds.
    pub fn send(&self, line: Arc<str>) {
        let end = {
            let mut q = lock(&self.queue);
            if q.receivers == 0 {
                return;
            }
            let len = line.len();
            let unread = q.receivers;
            q.entries.push_back(Entry { line: Some(line), unread });
            q.bytes += len;
            while q.entries.len() > q.max_entries || q.bytes > q.max_bytes {
                q.pop_front();
            }
            q.compact();
            q.end()
        };
        self.wake.send_replace(end);
    }
}

impl Subscriber {
    /// A new client, which reads the lines published from now on.
    pub fn subscribe(&self) -> Receiver {
        let mut q = lock(&self.queue);
        q.receivers += 1;
        Receiver { queue: self.queue.clone(), wake: self.wake.clone(), next: q.end() }
    }
}

impl Receiver {
    /// The next line, or how many were dropped before this client read them.
    pub async fn recv(&mut self) -> Result<Arc<str>, RecvError> {
        loop {
            // Marked seen before looking, so a line published after the
            // look wakes the wait below.
            self.wake.borrow_and_update();
            if let Some(r) = self.try_recv() {
                return r;
            }
            if self.wake.changed().await.is_err() {
                // The node is gone: hand out what is left, then `Closed`.
                return self.try_recv().unwrap_or(Err(RecvError::Closed));
            }
        }
    }

    fn try_recv(&mut self) -> Option<Result<Arc<str>, RecvError>> {
        let mut q = lock(&self.queue);
        if self.next < q.first {
            let missed = q.first - self.next;
            self.next = q.first;
            return Some(Err(RecvError::Lagged(missed)));
        }
        if self.next >= q.end() {
            return None;
        }
        let i = usize::try_from(self.next - q.first).ok()?;
        let line = q.entries.get(i).and_then(|e| e.line.clone());
        q.release(self.next);
        q.compact();
        self.next += 1;
        // Every line at or after a client's `next` counts that client as a
        // reader, so it is still there.
        Some(line.ok_or(RecvError::Lagged(0)))
    }

    /// Whether a line is waiting (or a lag to report).
    pub fn is_empty(&self) -> bool {
        let q = lock(&self.queue);
        self.next >= q.end() && self.next >= q.first
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut q = lock(&self.queue);
        for seq in self.next.max(q.first)..q.end() {
            q.release(seq);
        }
        q.receivers -= 1;
        q.compact();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[tokio::test]
    async fn every_client_reads_every_line_in_order() {
        let (tx, sub) = channel(8, 1024);
        let (mut a, mut b) = (sub.subscribe(), sub.subscribe());
        for i in 0..5 {
            tx.send(line(&format!("n{i}")));
        }
        for i in 0..5 {
            assert_eq!(&*a.recv().await.unwrap(), format!("n{i}"));
        }
        // A read by one client is still there for the other.
        assert_eq!(lock(&tx.queue).entries.len(), 5);
        for i in 0..5 {
            assert_eq!(&*b.recv().await.unwrap(), format!("n{i}"));
        }
        // Read by all: nothing kept.
        let q = lock(&tx.queue);
        assert_eq!((q.entries.len(), q.bytes), (0, 0));
    }

    #[tokio::test]
    async fn nothing_is_kept_without_a_client_and_a_new_client_starts_now() {
        let (tx, sub) = channel(8, 1024);
        tx.send(line("before anyone"));
        assert_eq!(lock(&tx.queue).bytes, 0);
        let mut a = sub.subscribe();
        tx.send(line("after"));
        assert_eq!(&*a.recv().await.unwrap(), "after");
    }

    #[tokio::test]
    async fn the_byte_bound_drops_the_oldest_and_the_slow_client_is_told() {
        let (tx, sub) = channel(1000, 100);
        let mut slow = sub.subscribe();
        let mut fast = sub.subscribe();
        for i in 0..10 {
            tx.send(line(&format!("{i:0>30}")));
            assert_eq!(fast.recv().await.unwrap().len(), 30);
            assert!(lock(&tx.queue).bytes <= 100);
        }
        // 3 lines of 30 bytes fit in 100: the slow client missed 7.
        assert_eq!(slow.recv().await, Err(RecvError::Lagged(7)));
        assert_eq!(&*slow.recv().await.unwrap(), format!("{:0>30}", 7));
    }

    #[tokio::test]
    async fn the_entry_bound_holds_too() {
        let (tx, sub) = channel(4, usize::MAX);
        let mut slow = sub.subscribe();
        for i in 0..10 {
            tx.send(line(&i.to_string()));
        }
        assert_eq!(lock(&tx.queue).entries.len(), 4);
        assert_eq!(slow.recv().await, Err(RecvError::Lagged(6)));
        assert_eq!(&*slow.recv().await.unwrap(), "6");
    }

    #[tokio::test]
    async fn a_client_that_leaves_frees_what_only_it_had_left_to_read() {
        let (tx, sub) = channel(100, 1000);
        let slow = sub.subscribe();
        let mut fast = sub.subscribe();
        for i in 0..5 {
            tx.send(line(&i.to_string()));
            fast.recv().await.unwrap();
        }
        assert_eq!(lock(&tx.queue).entries.len(), 5);
        drop(slow);
        let q = lock(&tx.queue);
        assert_eq!((q.entries.len(), q.bytes, q.receivers), (0, 0, 1));
    }

    #[tokio::test]
    async fn a_waiting_client_wakes_on_a_line_and_ends_when_the_node_stops() {
        let (tx, sub) = channel(8, 1024);
        let mut a = sub.subscribe();
        let reader = tokio::spawn(async move {
            let first = a.recv().await;
            let second = a.recv().await;
            (first, second)
        });
        tokio::task::yield_now().await;
        tx.send(line("hello"));
        drop(tx);
        let (first, second) = reader.await.unwrap();
        assert_eq!(first.as_deref(), Ok("hello"));
        assert_eq!(second, Err(RecvError::Closed));
    }
}
