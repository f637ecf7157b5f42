//! Routers on a shared broadcast radio (SPEC §5, §6.5): every transmission
//! reaches every node in range. Deterministic: a virtual clock, fixed
//! latency, the routers' own timers. Checks that relayed messages are held
//! back and suppressed by copies heard, and that receipts climb toward the
//! sender instead of flooding the mesh.

use std::collections::BTreeMap;

use ferry_proto::Node;
use ferry_proto::hash;
use ferry_proto::node::{DeliveryState, Event};
use ferry_proto::router::{Config, LinkCaps, LinkId, Router};
use ferry_proto::time::{Duration, Instant};
use ferry_proto::wire::{self, Kind, MessageFrame, MessageId, RECEIPT_LEN, ReceiptRepr, SizeClass};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

type Radio = Router<64, 4, 256, 4, 32, 2>;

const RADIO: LinkId = LinkId(0);
const CAPS: LinkCaps = LinkCaps { mtu: 255, broadcast: true, max_class: SizeClass::Small };
const LATENCY: Duration = Duration::from_millis(5);
const SECRET: [u8; wire::RECEIPT_SECRET_LEN] = [7; wire::RECEIPT_SECRET_LEN];

/// A radio mesh: routers, who hears whom, frames in flight.
struct Air {
    nodes: Vec<Box<Radio>>,
    hears: Vec<Vec<usize>>,
    now: Instant,
    /// (arrival, seq) -> (receiver, bytes).
    flights: BTreeMap<(Instant, u64), (usize, Vec<u8>)>,
    seq: u64,
    /// Every transmission: (time, node, kind).
    log: Vec<(Instant, usize, Kind)>,
    /// Byte 1 of every transmission (a message's hops, a receipt's level).
    byte1: Vec<u8>,
    delivered: Vec<(usize, MessageId)>,
    /// Own messages that went out: (node, id).
    sent_own: Vec<(usize, MessageId)>,
    rng: StdRng,
}

impl Air {
    fn new(n: usize, edges: &[(usize, usize)], config: Config) -> Self {
        let mut rng = StdRng::seed_from_u64(9);
        let mut nodes = Vec::new();
        for _ in 0..n {
            let mut r = Box::new(Radio::new(config));
            assert!(r.handle_link_up(Instant::ZERO, &mut rng, RADIO, CAPS));
            nodes.push(r);
        }
        let mut hears = vec![Vec::new(); n];
        for &(a, b) in edges {
            hears[a].push(b);
            hears[b].push(a);
        }
        Air {
            nodes,
            hears,
            now: Instant::from_millis(1_000),
            flights: BTreeMap::new(),
            seq: 0,
            log: Vec::new(),
            delivered: Vec::new(),
            sent_own: Vec::new(),
            byte1: Vec::new(),
            rng,
        }
    }

    /// A `w` x `h` grid, each node hearing its eight neighbours (about the
    /// density of the simulator's reference mesh).
    fn grid(w: usize, h: usize) -> Self {
        let mut edges = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                if x + 1 < w {
                    edges.push((i, i + 1));
                }
                if y + 1 < h {
                    edges.push((i, i + w));
                    if x + 1 < w {
                        edges.push((i, i + w + 1));
                    }
                    if x > 0 {
                        edges.push((i, i + w - 1));
                    }
                }
            }
        }
        Air::new(w * h, &edges, Config::DEFAULT)
    }

    /// Drain what node `n` wants to send and put it on the air.
    fn flush(&mut self, n: usize) {
        let mut buf = [0u8; wire::MAX_FRAME_LEN];
        while let Some(t) = self.nodes[n].poll_transmit(self.now, &mut buf) {
            assert_eq!(t.link, RADIO);
            let bytes = buf[..t.len].to_vec();
            let kind = wire::classify(&bytes).expect("a router sends well-formed frames");
            self.log.push((self.now, n, kind));
            self.byte1.push(bytes[1]);
            for &to in &self.hears[n] {
                self.seq += 1;
                self.flights.insert((self.now.saturating_add(LATENCY), self.seq), (to, bytes.clone()));
            }
        }
        while let Some(ev) = self.nodes[n].poll_event() {
            match ev {
                Event::Status { id, state: DeliveryState::Delivered } => self.delivered.push((n, id)),
                Event::Status { id, state: DeliveryState::Sent } => self.sent_own.push((n, id)),
                _ => {}
            }
        }
    }

    /// Run until nothing is in flight and no timer is due before `until`.
    fn run(&mut self, until: Instant) {
        loop {
            let timer = (0..self.nodes.len()).filter_map(|n| self.nodes[n].poll_timeout().map(|t| (t, n))).min();
            let flight = self.flights.keys().next().copied();
            match (flight, timer) {
                (Some((at, seq)), t) if t.is_none_or(|(tt, _)| at <= tt) && at <= until => {
                    let (to, bytes) = self.flights.remove(&(at, seq)).expect("present");
                    self.now = self.now.max(at);
                    let _ = self.nodes[to].route_frame(self.now, RADIO, &bytes);
                    self.flush(to);
                }
                (_, Some((at, n))) if at <= until => {
                    self.now = self.now.max(at);
                    self.nodes[n].handle_timeout(self.now, &mut self.rng);
                    self.flush(n);
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    fn sent(&self, kind: Kind) -> Vec<usize> {
        self.log.iter().filter(|l| l.2 == kind).map(|l| l.1).collect()
    }
}

/// A message frame whose receipt secret is [`SECRET`], as a sender's
/// endpoint would seal it (the body is random: routers never open it).
fn message(seed: u64, hops: u8) -> (MessageId, Vec<u8>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut buf = vec![0u8; SizeClass::Small.frame_len()];
    let mut m = MessageFrame::new_unchecked(&mut buf[..]);
    m.emit_header(Kind::FirstContact, hops, 3_600, &hash::receipt_commit(&SECRET));
    rng.fill(m.sealed_mut());
    let id = m.fill_id();
    (id, buf)
}

fn receipt(id: MessageId, level: u8) -> [u8; RECEIPT_LEN] {
    let mut buf = [0u8; RECEIPT_LEN];
    ReceiptRepr { level, lifetime_secs: 60, id, secret: SECRET }.emit(&mut buf).expect("fits");
    buf
}

/// Sender at one end of a line, recipient in the middle: the message
/// reaches the whole line, the receipt goes back to the sender only. The
/// nodes past the recipient (they got the message through it) keep quiet:
/// with receipts flooding, they would each have sent it on.
#[test]
fn a_receipt_climbs_to_the_sender_and_nowhere_else() {
    // 0 (sender) - 1 - 2 - 3 - 4 - 5 (recipient) - 6 - 7 - 8
    let edges: Vec<(usize, usize)> = (0..8).map(|i| (i, i + 1)).collect();
    let mut air = Air::new(9, &edges, Config::DEFAULT);
    let (id, frame) = message(1, 120);
    let now = air.now;
    assert_eq!(air.nodes[0].submit(now, &frame), Ok(id));
    air.flush(0);
    air.run(now.saturating_add(Duration::from_millis(5_000)));
    // On a line each node hears at most two copies: every one relays (the
    // last one too: it cannot know nobody is beyond).
    assert_eq!(air.sent(Kind::FirstContact), (0..9).collect::<Vec<_>>());
    for n in 1..9 {
        assert!(air.nodes[n].holds(&id), "node {n} holds the message");
    }

    let now = air.now;
    assert!(air.nodes[5].emit_receipt(now, id, SECRET));
    air.flush(5);
    air.run(now.saturating_add(Duration::from_millis(5_000)));
    assert_eq!(air.delivered, vec![(0, id)], "the sender, and only it, learns of the delivery");
    let mut rs = air.sent(Kind::Receipt);
    rs.sort_unstable();
    // The sender is the end of the climb: it does not send it on.
    assert_eq!(rs, vec![1, 2, 3, 4, 5], "the recipient and every relay toward the sender, once each");
    // Those that heard it dropped their copy; 7 and 8 never heard it and
    // keep theirs until it expires.
    for n in 0..=6 {
        assert!(!air.nodes[n].holds(&id), "node {n} heard the receipt and dropped the message");
    }
    assert!(air.nodes[7].holds(&id) && air.nodes[8].holds(&id));
}

/// On a grid (each node hearing its eight neighbours, sender in a corner,
/// recipient in the middle): every node gets the message, the sender gets
/// the receipt, and no node farther from the sender than the recipient's
/// neighbours ever sends the receipt: it only climbs.
#[test]
fn on_a_grid_the_receipt_only_climbs() {
    let n = 13;
    let mut air = Air::grid(n, n);
    let (id, frame) = message(2, 120);
    let now = air.now;
    assert_eq!(air.nodes[0].submit(now, &frame), Ok(id));
    air.flush(0);
    air.run(now.saturating_add(Duration::from_millis(20_000)));
    let relays = air.sent(Kind::FirstContact).len();
    for k in 1..n * n {
        assert!(air.nodes[k].holds(&id), "node {k} got the message");
    }
    // Counter suppression: well under one transmission per node.
    assert!(relays * 10 < n * n * 6, "{relays} message transmissions for {} nodes", n * n);

    let middle = (n / 2) * n + n / 2;
    let now = air.now;
    assert!(air.nodes[middle].emit_receipt(now, id, SECRET));
    air.flush(middle);
    air.run(now.saturating_add(Duration::from_millis(20_000)));
    assert_eq!(air.delivered, vec![(0, id)]);
    let receipts = air.sent(Kind::Receipt);
    let far: Vec<usize> = receipts.iter().copied().filter(|&k| (k / n).max(k % n) >= n / 2 + 4).collect();
    assert!(far.is_empty(), "nodes beyond the recipient sent the receipt: {far:?}");
    assert!(receipts.len() >= n / 2, "{} receipt transmissions for a {}-hop climb", receipts.len(), n / 2);
    assert!(receipts.len() <= relays, "{} receipt transmissions, {relays} for the message", receipts.len());
}

/// One node, its radio, a message held back: each further copy heard puts
/// the rebroadcast back by one hold-back window; the third copy cancels it.
#[test]
fn copies_heard_put_a_rebroadcast_back_and_then_cancel_it() {
    let config = Config::DEFAULT;
    let mut air = Air::new(1, &[], config);
    let (id, frame) = message(3, 100);
    let t0 = air.now;
    let _ = air.nodes[0].route_frame(t0, RADIO, &frame);
    let due = air.nodes[0].poll_timeout().expect("the rebroadcast is held back");
    assert!(due >= t0 && due <= t0.saturating_add(config.broadcast_defer), "held back within the window");

    // A second copy just before it is due: the rebroadcast moves a window on.
    let t1 = Instant::from_millis(due.millis().saturating_sub(1)).max(t0);
    let _ = air.nodes[0].route_frame(t1, RADIO, &frame);
    let later = air.nodes[0].poll_timeout().expect("still held back");
    assert_eq!(later, due.saturating_add(config.broadcast_defer));
    air.now = due;
    air.nodes[0].handle_timeout(due, &mut air.rng);
    air.flush(0);
    assert!(air.log.is_empty(), "not sent at the first due time");
    air.now = later;
    air.nodes[0].handle_timeout(later, &mut air.rng);
    air.flush(0);
    assert_eq!(air.sent(Kind::FirstContact), vec![0], "sent once the later time came");

    // Another message: three copies in the window, and it is never sent.
    let (id2, frame2) = message(4, 100);
    let t = air.now;
    for _ in 0..3 {
        let _ = air.nodes[0].route_frame(t, RADIO, &frame2);
    }
    air.run(t.saturating_add(Duration::from_millis(1_000)));
    assert_eq!(air.sent(Kind::FirstContact), vec![0], "suppressed");
    assert!(air.nodes[0].holds(&id2) && air.nodes[0].holds(&id), "suppressed is not dropped");
}

/// One node that heard a message at level 50 and relayed it: its radio
/// log is where the next frames will show.
fn one_node_at_level_50(seed: u64) -> (Air, MessageId, usize) {
    let mut air = Air::new(1, &[], Config::DEFAULT);
    let (id, frame) = message(seed, 50);
    let t = air.now;
    let _ = air.nodes[0].route_frame(t, RADIO, &frame);
    air.run(t.saturating_add(Duration::from_millis(1_000)));
    let base = air.log.len();
    (air, id, base)
}

/// A relayed receipt counts only copies from its own level or the next one
/// up: one from below has yet to pass here, and one claiming far more (a
/// raised level) is no honest neighbour's and must not silence it.
#[test]
fn receipt_copies_count_only_from_the_next_level() {
    for (echo, sent) in [(None, 1), (Some(49), 1), (Some(50), 0), (Some(51), 0), (Some(60), 1), (Some(255), 1)] {
        let (mut air, id, base) = one_node_at_level_50(5);
        // From farther away (level 40 < 50): this node passes it on.
        let t = air.now;
        let _ = air.nodes[0].route_frame(t, RADIO, &receipt(id, 40));
        assert!(!air.nodes[0].holds(&id), "a valid receipt drops the copy");
        // As many more copies at that level as would cancel it if they count.
        if let Some(level) = echo {
            for _ in 1..Config::DEFAULT.receipt_copies {
                let _ = air.nodes[0].route_frame(t, RADIO, &receipt(id, level));
            }
        }
        air.run(t.saturating_add(Duration::from_millis(1_000)));
        let receipts = air.log[base..].iter().filter(|l| l.2 == Kind::Receipt).count();
        assert_eq!(receipts, sent, "echo at level {echo:?}");
        if sent == 1 {
            assert_eq!(air.byte1.last(), Some(&50), "sent on with this node's level");
        }
    }
    // From nearer the sender (level 60 > 50): nothing to pass on...
    let (mut air, id, base) = one_node_at_level_50(6);
    let _ = air.nodes[0].route_frame(air.now, RADIO, &receipt(id, 60));
    assert!(!air.nodes[0].holds(&id));
    air.run(air.now.saturating_add(Duration::from_millis(1_000)));
    assert_eq!(air.log.len(), base, "a receipt from nearer the sender is not sent back down");
    // ...until a copy from below shows it has not passed here yet (the first
    // copy may have had its level raised): then once, and only once.
    for _ in 0..3 {
        let _ = air.nodes[0].route_frame(air.now, RADIO, &receipt(id, 30));
        air.run(air.now.saturating_add(Duration::from_millis(1_000)));
    }
    assert_eq!(air.log.len(), base + 1);
    assert_eq!(air.byte1.last(), Some(&50));
}

/// A node whose radio queue is full of relayed frames (a busy or flooded
/// neighbourhood) still gets its own message out: it takes the place of a
/// relayed one. On a broadcast radio nothing would offer it again.
#[test]
fn an_own_message_gets_out_of_a_full_queue() {
    let config = Config { broadcast_copies: 0, ..Config::DEFAULT };
    let mut air = Air::new(1, &[], config);
    let t = air.now;
    // More relayed messages than the queue holds (32), none sent yet.
    for seed in 100..140 {
        let (_, frame) = message(seed, 100);
        let _ = air.nodes[0].route_frame(t, RADIO, &frame);
    }
    // Two own messages: the second takes a relayed item's place, not the
    // first one's.
    let (own, frame) = message(7, 120);
    assert_eq!(air.nodes[0].submit(t, &frame), Ok(own));
    let (own2, frame2) = message(8, 120);
    assert_eq!(air.nodes[0].submit(t, &frame2), Ok(own2));
    air.flush(0);
    assert_eq!(air.log.len(), 32, "one queue's worth of frames");
    assert_eq!(air.sent_own, vec![(0, own), (0, own2)], "both own messages went out, in order");
}

/// A neighbour repeating copies of a held-back message cannot keep it in
/// the (bounded) held-back list: once enough copies were heard it is
/// settled and its place freed at once.
#[test]
fn repeated_copies_settle_a_held_back_message_at_once() {
    let mut air = Air::new(1, &[], Config::DEFAULT);
    let (_, frame) = message(9, 100);
    let t = air.now;
    let _ = air.nodes[0].route_frame(t, RADIO, &frame);
    assert!(air.nodes[0].poll_timeout().is_some(), "held back");
    for _ in 0..10 {
        let _ = air.nodes[0].route_frame(t, RADIO, &frame);
    }
    // Nothing is waiting any more (the store sweep is at the lifetime's end).
    let next = air.nodes[0].poll_timeout().expect("the sweep");
    assert!(next > t.saturating_add(Duration::from_secs(60)), "no hold-back timer left: {next:?}");
    assert_eq!(air.nodes[0].stats().suppressed, 1);
    air.run(t.saturating_add(Duration::from_millis(2_000)));
    assert!(air.log.is_empty());
}

/// Past its far rate, a broadcast link's new messages go on with one hop
/// (`near_hops_broadcast`): heard by the neighbours, passed on by none.
#[test]
fn over_the_far_rate_a_broadcast_message_goes_one_hop() {
    let config = Config { broadcast_copies: 0, far_burst: 3, ..Config::DEFAULT };
    let mut air = Air::new(1, &[], config);
    let t = air.now;
    for seed in 200..206 {
        let (_, frame) = message(seed, 100);
        let _ = air.nodes[0].route_frame(t, RADIO, &frame);
    }
    air.flush(0);
    let mut hops = air.byte1.clone();
    hops.sort_unstable();
    assert_eq!(hops, vec![0, 0, 0, 99, 99, 99], "three keep their budget, three are heard one hop away only");
    assert_eq!(air.nodes[0].stats().shortened, 3);
}

/// The seen table's secret key is drawn before anything enters it and never
/// changes under live entries: a message submitted before any link-up is
/// still found after the first link-up, and routers keyed differently
/// agree on what they hold.
#[test]
fn the_table_key_never_changes_under_live_entries() {
    let mut rng = StdRng::seed_from_u64(11);
    let (id, frame) = message(12, 120);
    // Submitted first (no key yet), link-up afterwards (no key drawn).
    let mut early = Box::new(Radio::new(Config::DEFAULT));
    let t = Instant::from_millis(1_000);
    assert_eq!(early.submit(t, &frame), Ok(id));
    assert!(early.handle_link_up(t, &mut rng, RADIO, CAPS));
    assert!(early.holds(&id));
    assert_eq!(early.check_invariants(), Ok(()));
    // Keyed first, by the link-up; then the same message comes in.
    for seed in 0..4 {
        let mut keyed = Box::new(Radio::new(Config::DEFAULT));
        assert!(keyed.handle_link_up(t, &mut StdRng::seed_from_u64(seed), RADIO, CAPS));
        let _ = keyed.route_frame(t, RADIO, &frame);
        assert!(keyed.holds(&id) && keyed.message_bytes(&id) == Some(&frame[..]));
        assert_eq!(keyed.check_invariants(), Ok(()));
    }
}

/// What one node hears after it has a message: receipts (genuine or
/// forged) at any level, more copies at any hop count, time passing.
#[derive(Clone, Debug)]
enum Heard {
    Receipt { level: u8, forged: bool },
    Copy { hops: u8 },
    Wait { ms: u16 },
}

fn heard() -> impl proptest::strategy::Strategy<Value = Heard> {
    use proptest::prelude::*;
    prop_oneof![
        (any::<u8>(), proptest::bool::weighted(0.25)).prop_map(|(level, forged)| Heard::Receipt { level, forged }),
        any::<u8>().prop_map(|hops| Heard::Copy { hops }),
        (0u16..1_000).prop_map(|ms| Heard::Wait { ms }),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Whatever a node hears after it has a message (SPEC §5): it passes a
    /// receipt on at most once, at its own level, and only after a genuine
    /// receipt from below; the sender never passes one on and learns of the
    /// delivery exactly once; forged receipts never drop the message.
    #[test]
    fn a_node_passes_a_receipt_on_at_most_once(
        own: bool,
        first in 1u8..=127,
        steps in proptest::collection::vec(heard(), 1..40),
    ) {
        let mut air = Air::new(1, &[], Config::DEFAULT);
        let (id, frame) = message(77, first);
        let t = air.now;
        if own {
            proptest::prop_assert_eq!(air.nodes[0].submit(t, &frame), Ok(id));
            air.flush(0);
        } else {
            let _ = air.nodes[0].route_frame(t, RADIO, &frame);
        }
        air.run(t.saturating_add(Duration::from_millis(1_000)));
        let base = air.log.len();
        // (Under a minute in all: the tombstone outlives every step.)
        let mut genuine_below = None;
        let mut genuine = false;
        for step in &steps {
            let now = air.now;
            match *step {
                Heard::Receipt { level, forged } => {
                    let secret = if forged { [9; wire::RECEIPT_SECRET_LEN] } else { SECRET };
                    let mut buf = [0u8; RECEIPT_LEN];
                    ReceiptRepr { level, lifetime_secs: 60, id, secret }.emit(&mut buf).expect("fits");
                    let _ = air.nodes[0].route_frame(now, RADIO, &buf);
                    if !forged {
                        genuine = true;
                        if level < first && genuine_below.is_none() {
                            genuine_below = Some(air.log.len());
                        }
                    }
                }
                Heard::Copy { hops } => {
                    let (copy_id, copy) = message(77, hops);
                    proptest::prop_assert_eq!(copy_id, id, "hops are not part of the id");
                    let _ = air.nodes[0].route_frame(now, RADIO, &copy);
                }
                Heard::Wait { ms } => air.now = now.saturating_add(Duration::from_millis(u64::from(ms))),
            }
            air.flush(0);
            air.run(air.now.saturating_add(Duration::from_millis(200)));
        }
        let receipts: Vec<usize> = (base..air.log.len()).filter(|&i| air.log[i].2 == Kind::Receipt).collect();
        if own {
            proptest::prop_assert!(receipts.is_empty(), "the sender passed a receipt on");
            let delivered = air.delivered.iter().filter(|d| **d == (0, id)).count();
            proptest::prop_assert_eq!(delivered, usize::from(genuine), "Delivered events");
        } else {
            proptest::prop_assert!(receipts.len() <= 1, "passed on {} times", receipts.len());
            if let Some(&i) = receipts.first() {
                proptest::prop_assert_eq!(air.byte1[i], first, "sent on at another level than its own");
                proptest::prop_assert!(
                    genuine_below.is_some_and(|at| at <= i),
                    "passed on before a genuine receipt from below"
                );
            }
        }
        if !genuine {
            proptest::prop_assert!(air.nodes[0].holds(&id), "forged receipts dropped the message");
        }
    }
}
