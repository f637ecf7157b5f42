//! What a run measured: the metrics file (JSON, deterministic: no wall-clock
//! figures, so the same scenario and seed give the same bytes) and the
//! summary table.

use std::fmt::Write as _;

use serde::Serialize;

/// Frames sent, by kind (a segment counts as one frame, whatever it carries).
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct TxCounts {
    /// Message frames (both paths; naive flooding's frames count here).
    pub message: u64,
    /// Receipts.
    pub receipt: u64,
    /// Summaries.
    pub summary: u64,
    /// Hellos.
    pub hello: u64,
    /// Segments of frames above the MTU.
    pub segment: u64,
    /// All of them.
    pub total: u64,
    /// Bytes of all of them.
    pub bytes: u64,
}

impl TxCounts {
    /// Add another count (of another lane) to this one.
    pub fn add(&mut self, o: &TxCounts) {
        self.message += o.message;
        self.receipt += o.receipt;
        self.summary += o.summary;
        self.hello += o.hello;
        self.segment += o.segment;
        self.total += o.total;
        self.bytes += o.bytes;
    }
}

/// One point of the time series.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Sample {
    /// Simulated time, seconds.
    pub t: u64,
    /// Messages submitted so far.
    pub sent: u32,
    /// Messages that reached their recipient so far.
    pub delivered: u32,
    /// Messages whose sender saw the receipt so far.
    pub acked: u32,
    /// Frames sent so far.
    pub tx: u64,
    /// Mean messages held per live node (store slots; for flooding, the
    /// messages still queued for sending).
    pub held_mean: f64,
    /// Most messages held by one node.
    pub held_max: u32,
    /// Mean seen-table entries per live node (for flooding: ids remembered).
    pub seen_mean: f64,
    /// Nodes switched on.
    pub up: u32,
}

/// Router counters summed over the nodes (their last incarnation).
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RouterTotals {
    /// Frames handed to `handle_frame` (the simulator's frame events).
    pub frames_in: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Dropped as malformed.
    pub malformed: u64,
    /// Message frames dropped for a wrong id (also: segments of different
    /// senders reassembled together).
    pub bad_id: u64,
    /// Dropped by a link's rate limit.
    pub rate_limited: u64,
    /// Store evictions.
    pub evictions: u64,
    /// Receipts that erased a message.
    pub receipts_valid: u64,
    /// Receipts refused.
    pub receipts_refused: u64,
}

/// The results of one run (the router, or the flooding baseline).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RunReport {
    /// `"router"` or `"flood"`.
    pub mode: String,
    /// Messages in the scenario.
    pub messages: u32,
    /// Messages the sender could submit.
    pub sent: u32,
    /// Between contacts / first contact, among those sent.
    pub sent_contact: u32,
    /// First-contact messages sent.
    pub sent_first: u32,
    /// Messages that reached their recipient.
    pub delivered: u32,
    /// `delivered / messages`.
    pub delivery_ratio: f64,
    /// Messages whose sender saw the receipt.
    pub acked: u32,
    /// Messages with no path from sender to recipient when sent (a
    /// partition, churn or distance): only carriers can bring them.
    pub disconnected_at_send: u32,
    /// Of those, how many arrived anyway (carried across).
    pub delivered_disconnected: u32,
    /// A text shown twice (must be 0).
    pub duplicate_deliveries: u32,
    /// Submission failures.
    pub send_errors: u32,
    /// Latency percentiles of delivered messages, milliseconds.
    pub latency_p50_ms: u64,
    /// 90th percentile.
    pub latency_p90_ms: u64,
    /// 99th percentile.
    pub latency_p99_ms: u64,
    /// Every delivered message's latency, milliseconds, sorted (the CDF).
    pub latency_ms: Vec<u64>,
    /// Frames sent by honest nodes.
    pub tx: TxCounts,
    /// Frames sent by adversaries (not in `tx`).
    pub adversary_tx: u64,
    /// `tx.total / delivered`.
    pub tx_per_delivered: f64,
    /// Transmissions the radio could not make (link down, node off).
    pub tx_lost: u64,
    /// Frame events: `handle_frame` calls (flooding: receptions).
    pub frame_events: u64,
    /// Timer events: `handle_timeout` calls.
    pub timer_events: u64,
    /// Router counters (zero for flooding).
    pub router: RouterTotals,
    /// Time series.
    pub timeline: Vec<Sample>,
    /// Every message: `[from, to, contact (0/1), latency ms or -1, ack ms or -1]`.
    pub outcomes: Vec<[i64; 5]>,
}

/// The metrics file.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: u32,
    /// Endpoints among them.
    pub endpoints: u32,
    /// Side of the square, metres.
    pub side_m: f64,
    /// Initial position of every node, metres (rounded to 0.1 m).
    pub positions: Vec<[f64; 2]>,
    /// Mean degree of the initial graph.
    pub mean_degree: f64,
    /// Nodes in the largest connected component of the initial graph.
    pub largest_component: u32,
    /// Whether the fast, insecure Diffie-Hellman stand-in was compiled in
    /// (feature `fast-dh`); real X25519 otherwise.
    pub fast_dh: bool,
    /// Bytes of one relay's state (`size_of` its router type).
    pub relay_bytes: usize,
    /// Bytes of one endpoint's state, its boxed router included.
    pub endpoint_bytes: usize,
    /// The real router.
    pub router: RunReport,
    /// Naive flooding on the same graph and seed, if asked for.
    pub flood: Option<RunReport>,
    /// Counter-based flooding on the same graph and seed, if asked for.
    pub counter: Option<RunReport>,
}

/// Wall-clock figures of a run (kept out of the metrics file so that it
/// stays byte-for-byte reproducible).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Perf {
    /// Seconds for the router run.
    pub router_wall_secs: f64,
    /// Frame events per second of wall time in the router run.
    pub router_frame_events_per_sec: f64,
    /// Seconds for the flooding run.
    pub flood_wall_secs: f64,
    /// Seconds of the router run spent inside `handle_frame`.
    pub router_handle_frame_secs: f64,
    /// Frame events per second of `handle_frame` time.
    pub router_handle_frame_per_sec: f64,
    /// Seconds of the router run spent inside `handle_timeout`.
    pub router_handle_timeout_secs: f64,
    /// Seconds to build the world (graph, identities).
    pub setup_wall_secs: f64,
    /// Threads (lanes) each run was split into.
    pub threads: usize,
}

/// `p`-th percentile of a sorted list.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted.get(rank.min(sorted.len() - 1)).copied().unwrap_or(0)
}

impl Report {
    /// The summary table for a person.
    pub fn table(&self, perf: Option<&Perf>) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scenario {} seed {}: {} nodes ({} endpoints), mean degree {:.1}, largest component {}",
            self.scenario, self.seed, self.nodes, self.endpoints, self.mean_degree, self.largest_component
        );
        let _ = writeln!(
            s,
            "per-node state: relay {} B, endpoint {} B; crypto: {}",
            self.relay_bytes,
            self.endpoint_bytes,
            if self.fast_dh { "FAST DH STAND-IN (not X25519)" } else { "real X25519" }
        );
        let _ = writeln!(
            s,
            "{:<8} {:>9} {:>9} {:>8} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>8}",
            "mode",
            "delivered",
            "ratio",
            "acked",
            "p50 ms",
            "p90 ms",
            "tx",
            "tx/deliv",
            "msg tx",
            "rcpt tx",
            "ctl tx",
            "held max"
        );
        for r in std::iter::once(&self.router).chain(self.flood.as_ref()).chain(self.counter.as_ref()) {
            let held_max = r.timeline.iter().map(|x| x.held_max).max().unwrap_or(0);
            let _ = writeln!(
                s,
                "{:<8} {:>9} {:>9.4} {:>8} {:>10} {:>10} {:>10} {:>10.1} {:>9} {:>9} {:>9} {:>8}",
                r.mode,
                format!("{}/{}", r.delivered, r.messages),
                r.delivery_ratio,
                r.acked,
                r.latency_p50_ms,
                r.latency_p90_ms,
                r.tx.total,
                r.tx_per_delivered,
                r.tx.message,
                r.tx.receipt,
                r.tx.hello + r.tx.summary,
                held_max
            );
        }
        for r in std::iter::once(&self.router).chain(self.flood.as_ref()).chain(self.counter.as_ref()) {
            if r.disconnected_at_send > 0 {
                let _ = writeln!(
                    s,
                    "{}: {} messages had no path when sent; {} of them were carried across",
                    r.mode, r.disconnected_at_send, r.delivered_disconnected
                );
            }
            if r.timer_events > 0 {
                let _ = writeln!(s, "{}: {} frame events, {} timer events", r.mode, r.frame_events, r.timer_events);
            }
            if r.adversary_tx > 0 {
                let _ = writeln!(s, "{}: adversaries sent {} frames", r.mode, r.adversary_tx);
            }
        }
        if let Some(f) = &self.flood
            && f.tx.total > 0
        {
            let _ = writeln!(
                s,
                "router vs flooding: delivery {:+.2} points, transmissions {:.1}% of flooding's",
                (self.router.delivery_ratio - f.delivery_ratio) * 100.0,
                self.router.tx.total as f64 * 100.0 / f.tx.total as f64
            );
        }
        if let (Some(f), Some(c)) = (&self.flood, &self.counter)
            && f.tx.total > 0
        {
            let _ = writeln!(
                s,
                "{} vs flooding: delivery {:+.2} points, transmissions {:.1}% of flooding's",
                c.mode,
                (c.delivery_ratio - f.delivery_ratio) * 100.0,
                c.tx.total as f64 * 100.0 / f.tx.total as f64
            );
        }
        if let Some(p) = perf {
            let _ = writeln!(
                s,
                "wall time ({} thread{}): setup {:.2} s, router {:.2} s ({:.0} frame events/s), flooding {:.2} s",
                p.threads,
                if p.threads == 1 { "" } else { "s" },
                p.setup_wall_secs,
                p.router_wall_secs,
                p.router_frame_events_per_sec,
                p.flood_wall_secs
            );
            let _ = writeln!(
                s,
                "inside the router (CPU time, all threads): handle_frame {:.2} s ({:.0} frame events/s), handle_timeout {:.2} s",
                p.router_handle_frame_secs, p.router_handle_frame_per_sec, p.router_handle_timeout_secs
            );
        }
        s
    }
}
