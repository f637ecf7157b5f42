//! A deterministic network of real nodes, for tests (feature `testing`).
//!
//! In the style of quinn's test `Pair`: real routers and endpoints, driven
//! only through the [`Node`] face, wired in memory with a latency and a loss
//! rate per wire, a virtual clock and a seeded RNG. Every run with the same
//! seed is the same run, so a failure is a seed and a line number, never a
//! flake. Frames are delivered in time order, timers fire when
//! [`Node::poll_timeout`] says, and the router's invariants are checked
//! whenever a run ends.
//!
//! ```
//! use ferry_proto::testing::Net;
//! use ferry_proto::Duration;
//!
//! let mut net = Net::new(1);
//! let (a, b, pa, _) = net.two_contacts();
//! let relay = net.relay(ferry_proto::router::Config::DEFAULT);
//! net.connect(a, relay);
//! net.connect(relay, b);
//! net.send(a, b, "hello");
//! net.run_for(Duration::from_secs(5));
//! assert_eq!(net.received(b), vec![(pa, true, "hello".to_owned())]);
//! ```
//!
//! Misuse (an index that is not a node, a relay asked to send) panics: this
//! is test code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::borrow::ToOwned;
use std::boxed::Box;
use std::collections::BTreeMap;
use std::string::String;
use std::vec::Vec;

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::endpoint::{DeliveryState, Endpoint, Event, SendError};
use crate::envelope::{Identity, PeerKey};
use crate::node::Node;
use crate::router::{Config, FrameError, LinkCaps, LinkId, Router};
use crate::time::{Duration, Instant};
use crate::wire::{self, Kind, MessageId, SizeClass};

/// The router every test node runs: small enough to fill in a test.
pub type TestRouter = Router<64, 16, 256, 8, 64, 4>;
/// The endpoint of test users: 16 contacts, 16 texts in flight.
pub type TestEndpoint = Endpoint<Box<TestRouter>, 16, 256, 16, 256>;

/// An endpoint for tests about the mesh (routing, replay, receipts), not
/// the user's policy: strangers are not rate-limited.
pub fn test_endpoint(id: Identity) -> TestEndpoint {
    let mut ep = TestEndpoint::new(id, Box::new(TestRouter::new(Config::DEFAULT)));
    ep.set_stranger_rate(u32::MAX, u32::MAX);
    ep
}

/// One node of the network.
#[derive(Debug)]
pub enum TestNode {
    /// An end user.
    End(Box<TestEndpoint>),
    /// A relay.
    Relay(Box<TestRouter>),
}

impl TestNode {
    /// The face every driver uses.
    pub fn node(&mut self) -> &mut dyn Node {
        match self {
            TestNode::End(e) => &mut **e,
            TestNode::Relay(r) => &mut **r,
        }
    }

    /// The face, to read.
    pub fn node_ref(&self) -> &dyn Node {
        match self {
            TestNode::End(e) => &**e,
            TestNode::Relay(r) => &**r,
        }
    }

    /// The router inside (a relay's own, or an endpoint's).
    pub fn router(&self) -> &TestRouter {
        match self {
            TestNode::End(e) => e.router(),
            TestNode::Relay(r) => r,
        }
    }
}

/// A wire between two nodes (each side's link to the other is
/// `LinkId(other's index)`).
#[derive(Clone, Copy, Debug)]
pub struct Wire {
    /// Frames pass.
    pub up: bool,
    /// Both links' caps.
    pub caps: LinkCaps,
    /// Delay of every frame.
    pub latency: Duration,
    /// Frames lost, per thousand.
    pub loss: u32,
}

/// A frame in flight.
#[derive(Clone, Debug)]
pub struct Flight {
    /// When it arrives.
    pub at: Instant,
    seq: u64,
    /// To which node.
    pub to: usize,
    /// From which node.
    pub from: usize,
    /// The frame.
    pub bytes: Vec<u8>,
}

/// Point-to-point caps of a UDP link.
pub const UDP: LinkCaps = LinkCaps { mtu: 1280, broadcast: false, max_class: SizeClass::Large };

/// The key of the wire between `a` and `b`.
pub fn key(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

/// The network.
#[derive(Debug)]
pub struct Net {
    /// The nodes, by index.
    pub nodes: Vec<TestNode>,
    /// The virtual clock.
    pub now: Instant,
    /// The one seeded RNG every node draws from.
    pub rng: StdRng,
    /// Wires by [`key`].
    pub wires: BTreeMap<(usize, usize), Wire>,
    /// Frames in flight.
    pub flights: Vec<Flight>,
    seq: u64,
    /// Every event each node gave, in order.
    pub events: Vec<Vec<Event>>,
    /// Frames sent, by (from, to): (count, bytes).
    pub sent: BTreeMap<(usize, usize), (u64, u64)>,
    /// Every message frame that crossed a wire (for replay tests).
    pub captured: Vec<Vec<u8>>,
    /// Every message frame sent: (from, to, id).
    pub message_log: Vec<(usize, usize, MessageId)>,
    /// When each receipt frame was sent, and by whom.
    pub receipts_sent: Vec<(Instant, usize)>,
    /// The Unix time senders stamp on texts.
    pub unix: u64,
}

impl Net {
    /// An empty network whose every random choice comes from `seed`.
    pub fn new(seed: u64) -> Self {
        Net {
            nodes: Vec::new(),
            now: Instant::from_millis(1_000),
            rng: StdRng::seed_from_u64(seed),
            wires: BTreeMap::new(),
            flights: Vec::new(),
            seq: 0,
            events: Vec::new(),
            sent: BTreeMap::new(),
            captured: Vec::new(),
            message_log: Vec::new(),
            receipts_sent: Vec::new(),
            unix: 1_800_000_000,
        }
    }

    /// Add an endpoint with a fresh identity; returns its index.
    pub fn endpoint(&mut self) -> usize {
        let id = Identity::generate(&mut self.rng);
        let mut ep = test_endpoint(id);
        ep.set_unix_time(self.now, self.unix);
        self.nodes.push(TestNode::End(Box::new(ep)));
        self.events.push(Vec::new());
        self.nodes.len() - 1
    }

    /// Add a relay; returns its index.
    pub fn relay(&mut self, config: Config) -> usize {
        self.nodes.push(TestNode::Relay(Box::new(TestRouter::new(config))));
        self.events.push(Vec::new());
        self.nodes.len() - 1
    }

    /// Replace endpoint `n` by a fresh process with the same identity (its
    /// router and endpoint state are gone) and bring its links up again.
    pub fn restart(&mut self, n: usize) {
        let secret = self.ep(n).identity().secret_bytes();
        let mut ep = test_endpoint(Identity::from_secret_bytes(secret));
        ep.set_unix_time(self.now, self.unix);
        self.nodes[n] = TestNode::End(Box::new(ep));
        self.flights.retain(|f| f.to != n && f.from != n);
        let now = self.now;
        let peers: Vec<usize> =
            self.wires.iter().filter(|(_, w)| w.up).map(|(k, _)| if k.0 == n { k.1 } else { k.0 }).collect();
        for p in peers.into_iter().filter(|&p| p != n) {
            let caps = self.wires[&key(n, p)].caps;
            assert!(self.nodes[n].node().handle_link_up(now, &mut self.rng, LinkId(p as u32), caps));
        }
    }

    /// Endpoint `n` (panics on a relay).
    pub fn ep(&mut self, n: usize) -> &mut TestEndpoint {
        match &mut self.nodes[n] {
            TestNode::End(e) => e,
            TestNode::Relay(_) => panic!("node {n} is a relay"),
        }
    }

    /// Node `n`'s router.
    pub fn router(&self, n: usize) -> &TestRouter {
        self.nodes[n].router()
    }

    /// Two endpoints that are each other's contacts (not linked yet), and
    /// their keys.
    pub fn two_contacts(&mut self) -> (usize, usize, PeerKey, PeerKey) {
        let a = self.endpoint();
        let b = self.endpoint();
        let (pa, pb) = (self.pk(a), self.pk(b));
        let now = self.now;
        self.ep(a).add_contact(now, pb).unwrap();
        self.ep(b).add_contact(now, pa).unwrap();
        (a, b, pa, pb)
    }

    /// Endpoint `n`'s public key.
    pub fn pk(&mut self, n: usize) -> PeerKey {
        self.ep(n).identity().public()
    }

    /// A wire between `a` and `b` with `caps`, both links up.
    pub fn connect_with(&mut self, a: usize, b: usize, caps: LinkCaps) {
        self.wires.insert(key(a, b), Wire { up: true, caps, latency: Duration::from_millis(5), loss: 0 });
        let now = self.now;
        for (x, y) in [(a, b), (b, a)] {
            let ok = self.nodes[x].node().handle_link_up(now, &mut self.rng, LinkId(y as u32), caps);
            assert!(ok, "link up refused");
        }
    }

    /// Bring the link up at `x` only (the other side learns of it later,
    /// as a daemon does when the first datagram from a new address comes).
    pub fn half_connect(&mut self, x: usize, y: usize) {
        self.wires.insert(key(x, y), Wire { up: true, caps: UDP, latency: Duration::from_millis(5), loss: 0 });
        let now = self.now;
        assert!(self.nodes[x].node().handle_link_up(now, &mut self.rng, LinkId(y as u32), UDP));
    }

    /// A UDP-like wire between `a` and `b`.
    pub fn connect(&mut self, a: usize, b: usize) {
        self.connect_with(a, b, UDP);
    }

    /// Take the wire down, and both links; frames in flight on it are lost.
    pub fn disconnect(&mut self, a: usize, b: usize) {
        if let Some(w) = self.wires.get_mut(&key(a, b)) {
            w.up = false;
        }
        let now = self.now;
        for (x, y) in [(a, b), (b, a)] {
            self.nodes[x].node().handle_link_down(now, LinkId(y as u32));
        }
        self.flights.retain(|f| key(f.from, f.to) != key(a, b));
    }

    /// Hand `bytes` to node `to` as if from `from`, now.
    pub fn inject(&mut self, to: usize, from: usize, bytes: &[u8]) -> Result<(), FrameError> {
        let now = self.now;
        self.nodes[to].node().handle_frame(now, &mut self.rng, LinkId(from as u32), bytes)
    }

    /// Send a text from endpoint `from` to endpoint `to`.
    pub fn send(&mut self, from: usize, to: usize, text: &str) -> MessageId {
        self.try_send(from, to, text).expect("send")
    }

    /// Send a text, or say why not.
    pub fn try_send(&mut self, from: usize, to: usize, text: &str) -> Result<MessageId, SendError> {
        let to = self.pk(to);
        let (now, unix) = (self.now, self.unix);
        let TestNode::End(e) = &mut self.nodes[from] else { panic!("relay cannot send") };
        e.send(now, &mut self.rng, unix, &to, text)
    }

    /// Drain every node's output and events; returns whether anything moved.
    pub fn pump(&mut self) -> bool {
        let mut moved = false;
        let mut buf = [0u8; wire::MAX_FRAME_LEN];
        for n in 0..self.nodes.len() {
            let now = self.now;
            while let Some(t) = self.nodes[n].node().poll_transmit(now, &mut buf) {
                let peer = t.link.0 as usize;
                let Some(w) = self.wires.get(&key(n, peer)).filter(|w| w.up) else { continue };
                assert!(t.len <= usize::from(w.caps.mtu), "frame above MTU");
                if w.loss > 0 && rand::RngExt::random_range(&mut self.rng, 0..1000) < w.loss {
                    continue;
                }
                let bytes = buf[..t.len].to_vec();
                match wire::classify(&bytes) {
                    Ok(Kind::Contact | Kind::FirstContact) => {
                        if let Ok(m) = crate::wire::MessageFrame::new_checked(&bytes[..]) {
                            self.message_log.push((n, peer, m.id()));
                        }
                        self.captured.push(bytes.clone());
                    }
                    Ok(Kind::Receipt) => self.receipts_sent.push((now, n)),
                    _ => {}
                }
                let e = self.sent.entry((n, peer)).or_default();
                e.0 += 1;
                e.1 += t.len as u64;
                self.seq += 1;
                self.flights.push(Flight {
                    at: now.saturating_add(w.latency),
                    seq: self.seq,
                    to: peer,
                    from: n,
                    bytes,
                });
                moved = true;
            }
            while let Some(ev) = self.nodes[n].node().poll_event() {
                self.events[n].push(ev);
                moved = true;
            }
        }
        moved
    }

    /// Run until `until`, delivering frames and firing timers in order.
    /// Checks every router's invariants at the end.
    pub fn run_until(&mut self, until: Instant) {
        let mut steps = 0u32;
        loop {
            steps += 1;
            assert!(steps < 2_000_000, "livelock: too many steps");
            self.pump();
            // Deliver everything due now.
            self.flights.sort_by_key(|f| (f.at, f.seq));
            let split = self.flights.iter().position(|f| f.at > self.now).unwrap_or(self.flights.len());
            let due: Vec<Flight> = self.flights.drain(..split).collect();
            if !due.is_empty() {
                for f in due {
                    let _ = self.inject(f.to, f.from, &f.bytes);
                }
                continue;
            }
            // Timers due now.
            let mut fired = false;
            for n in 0..self.nodes.len() {
                let now = self.now;
                if self.nodes[n].node_ref().poll_timeout().is_some_and(|t| t <= now) {
                    self.nodes[n].node().handle_timeout(now, &mut self.rng);
                    fired = true;
                }
            }
            if fired {
                continue;
            }
            // Advance to the next thing.
            let next = self
                .nodes
                .iter()
                .filter_map(|n| n.node_ref().poll_timeout())
                .chain(self.flights.first().map(|f| f.at))
                .min();
            match next {
                Some(t) if t <= until => self.now = t.max(self.now.saturating_add(Duration::from_millis(1))),
                _ => {
                    self.now = until;
                    self.pump();
                    for n in 0..self.nodes.len() {
                        assert_eq!(self.router(n).check_invariants(), Ok(()), "node {n}");
                    }
                    return;
                }
            }
        }
    }

    /// Run for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now.saturating_add(d);
        self.run_until(until);
    }

    /// The texts endpoint `n` was shown: (sender, sender is a contact, text).
    pub fn received(&self, n: usize) -> Vec<(PeerKey, bool, String)> {
        self.events[n]
            .iter()
            .filter_map(|e| match e {
                Event::Received(r) => Some((r.from, r.contact, r.text.as_str().to_owned())),
                _ => None,
            })
            .collect()
    }

    /// The states node `n` reported for message `id`, in order.
    pub fn states(&self, n: usize, id: MessageId) -> Vec<DeliveryState> {
        self.events[n]
            .iter()
            .filter_map(|e| match e {
                Event::Status { id: i, state } if *i == id => Some(*state),
                _ => None,
            })
            .collect()
    }
}
