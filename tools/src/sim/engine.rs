//! The discrete-event core: a virtual clock, one event queue, the link
//! model, and the nodes, each running the real `ferry-proto` router (relays)
//! or the real endpoint around it (senders and recipients).
//!
//! Nodes are driven exactly as the daemon and the firmware drive them: after
//! every input (`handle_frame`, `handle_link_up`, `handle_timeout`, `send`)
//! the driver drains `poll_event`, asks `poll_transmit` for a frame if the
//! radio is idle, and re-arms its timer from `poll_timeout`. The radio pulls
//! one frame at a time (as a radio driver does when its transmit completes),
//! so a busy radio leaves frames waiting in the router's own bounded queues.
//!
//! Determinism: the clock is simulated (microseconds; the router sees whole
//! milliseconds), every random draw comes from a stream derived from the
//! seed and owned by one node (its router's, its link model's) or by the
//! coordinator, and nothing iterates a hash map. The same scenario and seed
//! give the same metrics, byte for byte.
//!
//! Threads: nodes are split into two lanes (contiguous ranges of node
//! numbers, which are spatially random), one thread each. The run is a
//! conservative parallel discrete-event simulation: a node can only affect
//! another node through a datagram, which takes at least the medium's
//! latency plus 1 µs (the lookahead). Each lane publishes a lower bound on
//! the time of everything it will still do, and runs an event as soon as
//! it is earlier than the other lane's bound plus the lookahead; datagrams
//! for the other lane go to its mailbox. World events (sends, churn, walls,
//! mobility, samples) run between epochs, with both lanes stopped. Events
//! are ordered by (time, the node that scheduled them, that node's count),
//! a key that does not depend on the split, so one thread and two give the
//! same metrics, byte for byte (a test checks it).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

use ferry_proto::endpoint::{Carrier, ContactState, DeliveryState, Endpoint, Event as EpEvent};
use ferry_proto::envelope::{Identity, PeerKey};
use ferry_proto::router::{Config, DongleRouter, HostRouter, LinkCaps, LinkId, Router};
use ferry_proto::wire::{self, Kind, MAX_FRAME_LEN, MessageFrame, MessageId, ReceiptRepr, SizeClass};
use ferry_proto::{Duration, Instant, Node as FerryNode, segment};
use std::time::Instant as WallClock;

use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

use super::report::{RouterTotals, RunReport, Sample, TxCounts, percentile};
use super::scenario::{AdversaryKind, MediumKind, Pairs, RelayKind, Scenario};
use super::world::World;

/// What the simulator needs from a router: the driver's API (the
/// endpoint's [`Carrier`]) plus the counters it reports. Every size of the
/// real [`Router`] has it.
pub trait SimRelay: Carrier + core::fmt::Debug + Send {
    /// Seen-table entries.
    fn seen_len(&self) -> usize;
}

impl<const S: usize, const L: usize, const D: usize, const LINKS: usize, const Q: usize, const R: usize> SimRelay
    for Router<S, L, D, LINKS, Q, R>
{
    fn seen_len(&self) -> usize {
        Router::seen_len(self)
    }
}

/// The dongle router with a 16-link table (for point-to-point media, where
/// the dongle's 4 links are too few for a dense neighbourhood).
pub type Dongle16Router = Router<64, 8, 256, 16, 32, 2>;

/// Contacts per endpoint.
pub const CONTACTS: usize = 16;
/// The endpoint of senders and recipients: 16 contacts, 256 tag entries, 16
/// texts in flight, 64 replay entries, around a boxed router.
pub type SimEndpoint = Endpoint<Box<dyn SimRelay>, CONTACTS, 256, 16, 64>;

/// A fresh router of the scenario's kind.
pub fn new_relay(kind: RelayKind, config: Config) -> Box<dyn SimRelay> {
    match kind {
        RelayKind::Dongle => Box::new(DongleRouter::new(config)),
        RelayKind::Dongle16 => Box::new(Dongle16Router::new(config)),
        RelayKind::Host => Box::new(HostRouter::new(config)),
    }
}

/// The router configuration a scenario asks for.
pub fn router_config(sc: &Scenario) -> Config {
    let o = &sc.router_config;
    let d = Config::DEFAULT;
    Config {
        max_lifetime_secs: o.max_lifetime_secs.unwrap_or(d.max_lifetime_secs),
        link_rate: o.link_rate.unwrap_or(d.link_rate),
        link_burst: o.link_burst.unwrap_or(d.link_burst),
        hello_retry: o.hello_retry_ms.map_or(d.hello_retry, Duration::from_millis),
        hello_retries: o.hello_retries.unwrap_or(d.hello_retries),
        max_summary_frames: o.max_summary_frames.unwrap_or(d.max_summary_frames),
        resync: o.resync_ms.map_or(d.resync, Duration::from_millis),
        own_quota: o.own_quota.unwrap_or(d.own_quota),
        link_ups_per_sec: o.link_ups_per_sec.unwrap_or(d.link_ups_per_sec),
        stranger_answers_per_sec: d.stranger_answers_per_sec,
        broadcast_defer: o.broadcast_defer_ms.map_or(d.broadcast_defer, Duration::from_millis),
        broadcast_copies: o.broadcast_copies.unwrap_or(d.broadcast_copies),
        receipt_copies: o.receipt_copies.unwrap_or(d.receipt_copies),
        far_rate: o.far_rate.unwrap_or(d.far_rate),
        far_burst: o.far_burst.unwrap_or(d.far_burst),
        near_hops: o.near_hops.unwrap_or(d.near_hops),
        near_hops_broadcast: o.near_hops_broadcast.unwrap_or(d.near_hops_broadcast),
        store_slots: d.store_slots,
    }
}

/// The kind of a frame a node transmitted, as the tallies count it
/// (`wire::Kind`'s number; 0 if it is not a Ferry frame, which a node never
/// sends).
fn kind_of(frame: &[u8]) -> u8 {
    wire::classify(frame).map_or(0, |k| k as u8)
}

/// Bytes of one router of `kind`.
pub fn relay_bytes(kind: RelayKind) -> usize {
    match kind {
        RelayKind::Dongle => core::mem::size_of::<DongleRouter>(),
        RelayKind::Dongle16 => core::mem::size_of::<Dongle16Router>(),
        RelayKind::Host => core::mem::size_of::<HostRouter>(),
    }
}

/// The link id of the broadcast radio, at every node.
const RADIO: LinkId = LinkId(u32::MAX);
const NONE: u64 = u64::MAX;
/// Length of a naive-flooding frame (a small message frame).
const FLOOD_LEN: usize = SizeClass::Small.frame_len();
/// The Unix time the simulated clock starts at (the senders' `sent_at`).
const UNIX_START: u64 = 1_800_000_000;

/// What the nodes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The real router and endpoints.
    Router,
    /// Naive flooding: every node sends every new message once.
    Flood,
    /// Counter-based flooding (a second baseline, on broadcast media): a
    /// node waits a random delay after the first copy and sends only if it
    /// heard fewer than `k` copies meanwhile.
    Counter {
        /// Copies that make a node stay silent.
        k: u32,
        /// Longest random delay, microseconds.
        delay: u64,
    },
}

impl Mode {
    fn floods(self) -> bool {
        !matches!(self, Mode::Router)
    }
}

/// A message of the scenario's traffic.
#[derive(Clone, Copy, Debug)]
pub struct Msg {
    /// Send time, microseconds.
    pub at: u64,
    /// Sender node.
    pub from: u32,
    /// Recipient node.
    pub to: u32,
    /// Between contacts (else first contact).
    pub contact: bool,
}

/// Everything drawn from the seed before the run: positions, roles,
/// identities, traffic and churn. Shared by the router run and the flooding
/// run so that both see the same graph and the same messages.
#[derive(Debug)]
pub struct Setup {
    /// The scenario.
    pub sc: Scenario,
    /// The seed.
    pub seed: u64,
    /// Initial positions and neighbours.
    pub world: World,
    /// Endpoint nodes, sorted.
    pub endpoints: Vec<u32>,
    /// Per node: its endpoint's identity secret, if it is one.
    pub secrets: Vec<Option<[u8; 32]>>,
    /// Contact pairs (a < b).
    pub contacts: Vec<(u32, u32)>,
    /// Messages, by send time.
    pub traffic: Vec<Msg>,
    /// Churn toggles: (time µs, node), sorted.
    pub churn: Vec<(u64, u32)>,
    /// Nodes that move (waypoint) and carriers.
    pub movers: Vec<u32>,
    /// Nodes in the largest component of the initial graph.
    pub largest_component: u32,
    /// Hostile nodes: (node, kind, frames per second, radio multiple),
    /// sorted by node.
    pub adversaries: Vec<(u32, AdversaryKind, f64, f64)>,
}

/// SplitMix64: derive independent seeds from one.
pub fn mix(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn rng_for(seed: u64, stream: u64) -> StdRng {
    StdRng::seed_from_u64(mix(seed, stream))
}

const S_WORLD: u64 = 1;
const S_ROLES: u64 = 2;
const S_TRAFFIC: u64 = 3;
const S_CHURN: u64 = 4;
const S_MOBILITY: u64 = 5;
const S_LOSS: u64 = 6;
const S_NODE: u64 = 1 << 32;

fn exp(rng: &mut StdRng, mean: f64) -> f64 {
    -mean * (1.0 - rng.random::<f64>()).ln()
}

impl Setup {
    /// Draw everything the scenario leaves to chance.
    pub fn new(sc: &Scenario, seed: u64) -> Setup {
        let mut wrng = rng_for(seed, S_WORLD);
        let mut world = World::generate(sc, &mut wrng);
        let giant = world.largest_component();
        let n = sc.nodes;
        let mut roles = rng_for(seed, S_ROLES);
        let mut pool: Vec<u32> = match sc.traffic.pairs {
            Pairs::Connected => giant.clone(),
            Pairs::Any => (0..n).collect(),
        };
        // Partial Fisher-Yates: the first `endpoints` of the pool.
        let want = (sc.traffic.endpoints as usize).min(pool.len());
        for i in 0..want {
            let j = roles.random_range(i..pool.len());
            pool.swap(i, j);
        }
        let mut endpoints: Vec<u32> = pool[..want].to_vec();
        endpoints.sort_unstable();
        let mut is_end = vec![false; n as usize];
        for &e in &endpoints {
            is_end[e as usize] = true;
        }
        let mut relays: Vec<u32> = (0..n).filter(|&i| !is_end[i as usize]).collect();
        for i in 0..relays.len() {
            let j = roles.random_range(i..relays.len());
            relays.swap(i, j);
        }
        // Carriers, then waypoint movers, then churners, from the shuffled
        // relays (a relay has at most one of these roles).
        let mut next = 0usize;
        let mut movers = Vec::new();
        for c in &sc.carriers {
            if let Some(&r) = relays.get(next) {
                world.set_route(r as usize, c);
                movers.push(r);
                next += 1;
            }
        }
        let mut mrng = rng_for(seed, S_MOBILITY);
        if let Some(m) = &sc.mobility {
            let k = (m.fraction * relays.len() as f64).round() as usize;
            for &r in relays.iter().skip(next).take(k) {
                world.set_waypoint(r as usize, m, &mut mrng);
                movers.push(r);
            }
            next += k;
        }
        let mut churn = Vec::new();
        if let Some(c) = &sc.churn {
            let mut crng = rng_for(seed, S_CHURN);
            let k = (c.fraction * relays.len() as f64).round() as usize;
            let end = sc.duration_secs as f64;
            for &r in relays.iter().skip(next).take(k) {
                let mut t = exp(&mut crng, c.mean_up_secs);
                let mut up = true;
                while t < end {
                    churn.push(((t * 1e6) as u64, r));
                    t += exp(&mut crng, if up { c.mean_down_secs } else { c.mean_up_secs });
                    up = !up;
                }
            }
            churn.sort_unstable();
        }
        if !movers.is_empty() {
            world.rebuild();
        }
        let mut adversaries = Vec::new();
        if let Some(c) = &sc.churn {
            next += (c.fraction * relays.len() as f64).round() as usize;
        }
        let mut taken = vec![false; n as usize];
        for a in &sc.adversaries {
            for _ in 0..a.count {
                let fits = |r: u32| {
                    !taken[r as usize]
                        && (!a.near_endpoint || world.adj[r as usize].iter().any(|&j| is_end[j as usize]))
                };
                let Some(&r) = relays.iter().skip(next).find(|&&r| fits(r)) else { break };
                taken[r as usize] = true;
                adversaries.push((r, a.kind, a.rate, a.radio_x));
            }
        }
        adversaries.sort_by_key(|a| a.0);
        movers.sort_unstable();
        // Identities.
        let mut secrets = vec![None; n as usize];
        for &e in &endpoints {
            let mut r = rng_for(seed, S_NODE + u64::from(e));
            secrets[e as usize] = Some(Identity::generate(&mut r).secret_bytes());
        }
        // Traffic.
        let t = &sc.traffic;
        let mut trng = rng_for(seed, S_TRAFFIC);
        let mut contact_set: BTreeMap<(u32, u32), ()> = BTreeMap::new();
        let mut count = vec![0usize; n as usize];
        let mut traffic = Vec::new();
        let span = (t.end_secs - t.start_secs) as f64;
        let mut reach: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for _ in 0..t.messages {
            let at = ((t.start_secs as f64 + trng.random::<f64>() * span) * 1e6) as u64;
            let want_contact = trng.random::<f64>() < t.contact_fraction;
            let mut pick = || {
                for _ in 0..1000 {
                    let a = endpoints[trng.random_range(0..endpoints.len())];
                    let near: &Vec<u32> = match t.max_hops {
                        None => &endpoints,
                        Some(h) => reach.entry(a).or_insert_with(|| within(&world.adj, a, h, &is_end)),
                    };
                    if near.iter().any(|&b| b != a) {
                        let mut b = a;
                        while b == a {
                            b = near[trng.random_range(0..near.len())];
                        }
                        return (a, b);
                    }
                }
                (endpoints[0], endpoints[endpoints.len() - 1])
            };
            let mut chosen = None;
            for _ in 0..100 {
                let (a, b) = pick();
                let key = (a.min(b), a.max(b));
                let known = contact_set.contains_key(&key);
                if want_contact {
                    let room = count[a as usize] < CONTACTS - 4 && count[b as usize] < CONTACTS - 4;
                    if known || room {
                        if !known {
                            contact_set.insert(key, ());
                            count[a as usize] += 1;
                            count[b as usize] += 1;
                        }
                        chosen = Some((a, b, true));
                        break;
                    }
                } else if !known {
                    chosen = Some((a, b, false));
                    break;
                }
            }
            let (from, to, contact) = chosen.unwrap_or_else(|| {
                let (a, b) = pick();
                (a, b, contact_set.contains_key(&(a.min(b), a.max(b))))
            });
            traffic.push(Msg { at, from, to, contact });
        }
        traffic.sort_by_key(|m| m.at);
        let contacts = contact_set.into_keys().collect();
        Setup {
            sc: sc.clone(),
            seed,
            largest_component: giant.len() as u32,
            world,
            endpoints,
            secrets,
            contacts,
            traffic,
            churn,
            movers,
            adversaries,
        }
    }
}

/// Endpoints at most `hops` hops from `a` (breadth-first), sorted.
fn within(adj: &[Vec<u32>], a: u32, hops: u32, is_end: &[bool]) -> Vec<u32> {
    let mut dist: BTreeMap<u32, u32> = BTreeMap::new();
    dist.insert(a, 0);
    let mut frontier = vec![a];
    for d in 1..=hops {
        let mut next = Vec::new();
        for v in frontier {
            for &w in &adj[v as usize] {
                if let std::collections::btree_map::Entry::Vacant(e) = dist.entry(w) {
                    e.insert(d);
                    next.push(w);
                }
            }
        }
        frontier = next;
    }
    dist.into_keys().filter(|&v| is_end[v as usize]).collect()
}

/// A naive-flooding node: remembers every id (unbounded) and sends each new
/// message once on its radio (or once to every link but the one it came from).
#[derive(Debug, Default)]
struct FloodNode {
    seen: Vec<u64>,
    /// Counter-based flooding: copies heard of messages waiting to be sent.
    copies: BTreeMap<u32, u32>,
    queue: VecDeque<(u32, u32)>,
    /// An adversary's place in the baseline: hears, never sends.
    silent: bool,
}

impl FloodNode {
    fn new(messages: usize) -> Self {
        FloodNode {
            seen: vec![0; messages.div_ceil(64)],
            copies: BTreeMap::new(),
            queue: VecDeque::new(),
            silent: false,
        }
    }
    fn first_time(&mut self, m: u32) -> bool {
        if self.silent {
            return false;
        }
        let (w, b) = ((m / 64) as usize, m % 64);
        let Some(word) = self.seen.get_mut(w) else { return false };
        let new = *word & (1 << b) == 0;
        *word |= 1 << b;
        new
    }
    fn seen_count(&self) -> u32 {
        self.seen.iter().map(|w| w.count_ones()).sum()
    }
}

/// A hostile node (SPEC §8's active attacker).
#[derive(Debug)]
struct Adv {
    kind: AdversaryKind,
    /// Bandwidth multiple of its radio.
    radio_x: f64,
    /// Microseconds between attempts.
    gap: u64,
    /// Message frames heard (replayer), most recent last.
    heard: VecDeque<Vec<u8>>,
    /// Message ids heard (forger).
    ids: VecDeque<MessageId>,
    next: usize,
    rng: StdRng,
}

const ADV_MEMORY: usize = 256;

impl Adv {
    fn hear(&mut self, bytes: &[u8]) {
        let Ok(m) = MessageFrame::new_checked(bytes) else { return };
        if self.ids.len() >= ADV_MEMORY {
            self.ids.pop_front();
        }
        self.ids.push_back(m.id());
        if self.kind == AdversaryKind::Replayer {
            if self.heard.len() >= ADV_MEMORY {
                self.heard.pop_front();
            }
            self.heard.push_back(bytes.to_vec());
        }
    }

    /// The next frame to send, written to `buf`; its length.
    fn frame(&mut self, buf: &mut [u8], mtu: usize) -> Option<usize> {
        match self.kind {
            AdversaryKind::Dropper => None,
            AdversaryKind::Flooder => {
                let len = SizeClass::Small.frame_len();
                let out = buf.get_mut(..len)?;
                self.rng.fill_bytes(out);
                let mut commit = [0u8; wire::COMMIT_LEN];
                self.rng.fill_bytes(&mut commit);
                let mut f = MessageFrame::new_unchecked(out);
                f.emit_header(Kind::FirstContact, wire::MAX_HOPS_DEFAULT, wire::DEFAULT_LIFETIME_SECS, &commit);
                f.fill_id();
                Some(len)
            }
            AdversaryKind::Replayer => {
                if self.heard.is_empty() {
                    return None;
                }
                let k = self.next % self.heard.len();
                self.next = self.next.wrapping_add(1);
                let f = self.heard.get(k)?;
                buf.get_mut(..f.len())?.copy_from_slice(f);
                Some(f.len())
            }
            AdversaryKind::Garbage => {
                let len = self.rng.random_range(1..=mtu.min(buf.len()));
                let out = buf.get_mut(..len)?;
                self.rng.fill_bytes(out);
                // Half of it claims to be a version-1 frame of some kind.
                if self.rng.random::<bool>()
                    && let Some(b) = out.first_mut()
                {
                    *b = (1 << 5) | self.rng.random_range(1..=6u8);
                }
                Some(len)
            }
            AdversaryKind::Forger => {
                if self.ids.is_empty() {
                    return None;
                }
                let k = self.rng.random_range(0..self.ids.len());
                let id = *self.ids.get(k)?;
                let mut secret = [0u8; wire::RECEIPT_SECRET_LEN];
                self.rng.fill_bytes(&mut secret);
                ReceiptRepr { level: wire::MAX_HOPS_DEFAULT, lifetime_secs: 3600, id, secret }.emit(buf).ok()
            }
        }
    }
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Node {
    Relay(Box<dyn SimRelay>),
    End(Box<SimEndpoint>),
    Flood(Box<FloodNode>),
    Adv(Box<Adv>),
}

impl Node {
    /// The Ferry face of a relay or an endpoint (the baseline and the
    /// adversary are not Ferry nodes).
    fn ferry(&mut self) -> Option<&mut dyn FerryNode> {
        match self {
            Node::Relay(r) => Some(&mut **r),
            Node::End(ep) => Some(&mut **ep),
            Node::Flood(_) | Node::Adv(_) => None,
        }
    }

    fn ferry_ref(&self) -> Option<&dyn FerryNode> {
        match self {
            Node::Relay(r) => Some(&**r),
            Node::End(ep) => Some(&**ep),
            Node::Flood(_) | Node::Adv(_) => None,
        }
    }
}

/// An event of one node (or, `Arrive`, of the nodes in range of one). A
/// lane runs these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ev {
    /// A datagram arrives at `to` (`u32::MAX`: everyone in range of `from`).
    Arrive {
        from: u32,
        to: u32,
        len: u16,
        data: u32,
    },
    TxDone {
        node: u32,
        epoch: u32,
    },
    Timer {
        node: u32,
    },
    Attack {
        node: u32,
    },
    Rebroadcast {
        node: u32,
        msg: u32,
        epoch: u32,
    },
}

/// An event of the whole world. The coordinator runs these between
/// epochs, with every lane stopped, before any node event of the same
/// microsecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Global {
    Send { msg: u32 },
    Churn { node: u32 },
    Tick,
    Wall { index: u32, close: bool },
    Sample,
}

/// A node event in a lane's queue. The order is (time, the node that
/// scheduled it, that node's count of scheduled events): a total order that
/// does not depend on how nodes are split into lanes. The last two share
/// `tie` (node << 32 | count: no node schedules 2^32 events in a run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    at: u64,
    tie: u64,
    ev: Ev,
}

impl Entry {
    fn new(at: u64, src: u32, seq: u32, ev: Ev) -> Entry {
        Entry { at, tie: (u64::from(src) << 32) | u64::from(seq), ev }
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.tie).cmp(&(other.at, other.tie))
    }
}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct MsgState {
    sent: bool,
    /// No path from sender to recipient when it was sent.
    cut: bool,
    delivered: Option<u64>,
    acked: Option<u64>,
    shown: u32,
}

/// One frame event in this many is timed for the profile (`perf.json`).
const PROF_SAMPLE: u32 = 32;

/// CPU time spent inside the router's entry points, summed over lanes (not
/// deterministic; kept out of the metrics; `handle_frame` is sampled).
#[derive(Clone, Copy, Debug, Default)]
pub struct Prof {
    /// In `handle_frame` (the endpoint's, for endpoints: opening included).
    pub handle_frame: std::time::Duration,
    /// In `handle_timeout`.
    pub handle_timeout: std::time::Duration,
    /// Lanes the run was split into (threads used).
    pub lanes: usize,
}

/// The driver's state of one node.
#[derive(Debug)]
struct Cell {
    node: Node,
    up: bool,
    busy: bool,
    epoch: u32,
    timer_at: u64,
    /// Events this node has scheduled: the tie-break of equal times.
    seq: u32,
    /// The node's random stream, handed to its router and endpoint (boxed:
    /// cells are read on every event and should stay small).
    rng: Box<StdRng>,
    /// The link model's draws at this node (loss of the frames it hears, a
    /// counter baseline's delays): SplitMix64 state.
    coin: u64,
    /// Point-to-point links up (sorted peers).
    links: Vec<u32>,
}

impl Cell {
    fn coin(&mut self) -> u64 {
        self.coin = self.coin.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.coin, 0)
    }
    /// Uniform in [0, 1).
    fn coin_f64(&mut self) -> f64 {
        (self.coin() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Counters a lane keeps (summed over lanes for the report).
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    tx: TxCounts,
    adv_tx: u64,
    tx_lost: u64,
    frame_events: u64,
    timer_events: u64,
    delivered: u32,
    acked: u32,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.tx.add(&o.tx);
        self.adv_tx += o.adv_tx;
        self.tx_lost += o.tx_lost;
        self.frame_events += o.frame_events;
        self.timer_events += o.timer_events;
        self.delivered += o.delivered;
        self.acked += o.acked;
    }
}

/// A datagram from another lane, with its bytes in the mailbox's `bytes`.
#[derive(Clone, Copy, Debug)]
struct Out {
    entry: Entry,
    start: u32,
    len: u32,
}

/// Datagrams another lane sent a lane, not yet in its queue.
#[derive(Debug)]
struct Mail {
    outs: Vec<Out>,
    bytes: Vec<u8>,
    /// The earliest arrival among them.
    min: u64,
}

impl Mail {
    fn new() -> Mail {
        Mail { outs: Vec::new(), bytes: Vec::new(), min: NONE }
    }
}

/// What a lane tells the other: how far it is, and its mailbox.
#[derive(Debug)]
struct Port {
    /// A lower bound on the time of every event the lane will still run,
    /// mail aside (its next event, or the one it is running).
    clock: AtomicU64,
    /// `mail.min`, readable without the lock.
    mail_min: AtomicU64,
    mail: Mutex<Mail>,
}

impl Port {
    fn new() -> Port {
        Port { clock: AtomicU64::new(0), mail_min: AtomicU64::new(NONE), mail: Mutex::new(Mail::new()) }
    }

    /// Nothing will happen in this lane before this time. Mail first: a
    /// lane taking its mail lowers its clock before it clears `mail_min`.
    fn bound(&self) -> u64 {
        let mail = self.mail_min.load(Ordering::Acquire);
        mail.min(self.clock.load(Ordering::Acquire))
    }

    fn post(&self, entry: Entry, bytes: &[u8]) {
        let mut m = self.mail.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let start = m.bytes.len() as u32;
        m.bytes.extend_from_slice(bytes);
        m.outs.push(Out { entry, start, len: bytes.len() as u32 });
        if entry.at < m.min {
            m.min = entry.at;
            self.mail_min.store(entry.at, Ordering::Release);
        }
    }
}

/// What every lane reads and nobody writes during an epoch.
#[derive(Debug)]
struct Ctx<'a> {
    setup: &'a Setup,
    mode: Mode,
    caps: LinkCaps,
    /// Nodes per lane (the last may have fewer).
    chunk: u32,
    /// How far past the other lane's bound a lane may run: no node can
    /// make anything happen at another node sooner (the medium's latency
    /// plus the shortest airtime, 1 µs).
    lookahead: u64,
    /// One per lane.
    ports: Vec<Port>,
}

impl Ctx<'_> {
    fn lane_of(&self, node: u32) -> usize {
        (node / self.chunk) as usize
    }
    fn broadcast(&self) -> bool {
        self.caps.broadcast
    }
}

/// What lanes read during an epoch and the coordinator changes between
/// epochs.
#[derive(Debug)]
struct Shared {
    world: World,
    /// Message id → index of the scenario's message.
    ids: BTreeMap<[u8; 16], u32>,
}

/// The coordinator's own state.
#[derive(Debug)]
struct Coord {
    now: u64,
    globals: BinaryHeap<Reverse<(u64, u64, Global)>>,
    gseq: u64,
    /// `sent` and `cut` of every message (lanes keep the rest).
    msgs: Vec<MsgState>,
    sent: u32,
    send_errors: u32,
    timeline: Vec<Sample>,
    mobility_rng: StdRng,
    keys: Vec<Option<PeerKey>>,
    /// Breadth-first search marks (stamped, so never cleared).
    mark: Vec<u32>,
    stamp: u32,
}

impl Coord {
    fn push(&mut self, at: u64, g: Global) {
        self.gseq += 1;
        self.globals.push(Reverse((at, self.gseq, g)));
    }
}

/// A contiguous range of nodes, their event queue and counters. Each lane
/// runs on its own thread; a node's state is only ever touched by its lane,
/// and a datagram for the other lane goes to that lane's mailbox.
#[derive(Debug)]
struct Lane {
    base: u32,
    cells: Vec<Cell>,
    now: u64,
    heap: BinaryHeap<Reverse<Entry>>,
    slab: Vec<Vec<u8>>,
    free: Vec<u32>,
    buf: Vec<u8>,
    /// This lane's number (its port).
    k: usize,
    /// Events before this time may run (the other lane's bound plus the
    /// lookahead, lowered by every datagram this lane posts).
    limit: u64,
    /// The clock last published on the port.
    published: u64,
    /// The mailbox swapped in when mail is taken.
    spare: Mail,
    /// Deliveries and receipts seen by this lane's nodes.
    msgs: Vec<MsgState>,
    tally: Tally,
    prof: Prof,
}

/// One run of the simulator.
#[derive(Debug)]
pub struct Sim<'a> {
    cx: Ctx<'a>,
    shared: RwLock<Shared>,
    lanes: Vec<Mutex<Lane>>,
    co: Coord,
    /// Run every lane on the calling thread, taking turns of 1 to this many
    /// events (tests use it to interleave the lanes finely; when a lane
    /// thread cannot be started, turns last until a lane is held back).
    one_thread: Option<u32>,
}

fn lock(m: &Mutex<Lane>) -> MutexGuard<'_, Lane> {
    // A poisoned lane means a lane thread panicked; the scope re-raises it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<'a> Sim<'a> {
    /// Build the nodes for `mode` (endpoints get their identities and
    /// contacts; relays an empty router), split into `threads` lanes. The
    /// metrics do not depend on `threads`.
    pub fn new(setup: &'a Setup, mode: Mode, threads: usize) -> Sim<'a> {
        let sc = &setup.sc;
        let n = sc.nodes as usize;
        let mut nodes = Vec::with_capacity(n);
        let mut keys = vec![None; n];
        let mut adv = setup.adversaries.iter().peekable();
        let config = router_config(sc);
        for (i, secret) in setup.secrets.iter().enumerate() {
            let hostile = adv.next_if(|a| a.0 as usize == i).map(|&(_, kind, rate, radio_x)| Adv {
                kind,
                radio_x,
                gap: ((1e6 / rate).round() as u64).max(1),
                heard: VecDeque::new(),
                ids: VecDeque::new(),
                next: 0,
                rng: rng_for(setup.seed, S_NODE + (2 << 31) + i as u64),
            });
            let node = match (mode, secret, hostile) {
                (Mode::Flood | Mode::Counter { .. }, _, Some(_)) => {
                    Node::Flood(Box::new(FloodNode { silent: true, ..FloodNode::new(0) }))
                }
                (Mode::Router, _, Some(a)) => Node::Adv(Box::new(a)),
                (Mode::Flood | Mode::Counter { .. }, _, None) => {
                    Node::Flood(Box::new(FloodNode::new(setup.traffic.len())))
                }
                (Mode::Router, None, None) => Node::Relay(new_relay(sc.relay, config)),
                (Mode::Router, Some(s), None) => {
                    let id = Identity::from_secret_bytes(*s);
                    keys[i] = Some(id.public());
                    let mut ep = Box::new(SimEndpoint::new(id, new_relay(sc.relay, config)));
                    ep.set_lifetime_secs(sc.traffic.lifetime_secs);
                    // The simulator measures the mesh, not the user's policy:
                    // every text that arrives is shown and receipted, however
                    // many a stranger sends.
                    ep.set_stranger_rate(u32::MAX, u32::MAX);
                    if let Some(r) = sc.router_config.first_contact_rate {
                        ep.set_first_contact_rate(r);
                    }
                    Node::End(ep)
                }
            };
            nodes.push(node);
        }
        if mode == Mode::Router {
            for &(a, b) in &setup.contacts {
                let state = ContactState { heard: true, ..ContactState::default() };
                for (x, y) in [(a, b), (b, a)] {
                    let key = keys[y as usize];
                    if let (Node::End(e), Some(k)) = (&mut nodes[x as usize], key) {
                        let _ = e.restore_contact(Instant::ZERO, k, state);
                    }
                }
            }
        }
        let caps = LinkCaps {
            mtu: sc.medium.mtu,
            broadcast: sc.medium.kind == MediumKind::Broadcast,
            max_class: SizeClass::Large,
        };
        // With no latency the lookahead is a microsecond: lanes would stop
        // after every event. The baselines' events are too cheap to share
        // (the handshake costs more than it saves). One lane then; the
        // metrics are the same. At most two: see `Lane::run_epoch`.
        let threads = if sc.medium.latency_ms == 0 || mode.floods() { 1 } else { threads.clamp(1, n.clamp(1, 2)) };
        let chunk = n.div_ceil(threads).max(1) as u32;
        let mut lanes = Vec::with_capacity(threads);
        let mut cells = nodes.into_iter().enumerate().map(|(i, node)| Cell {
            node,
            up: true,
            busy: false,
            epoch: 0,
            timer_at: NONE,
            seq: 0,
            rng: Box::new(rng_for(setup.seed, S_NODE + (1 << 31) + i as u64)),
            coin: mix(setup.seed, (S_LOSS << 32) | i as u64),
            links: Vec::new(),
        });
        for k in 0..threads {
            let lane_cells: Vec<Cell> = cells.by_ref().take(chunk as usize).collect();
            lanes.push(Mutex::new(Lane {
                base: k as u32 * chunk,
                cells: lane_cells,
                now: 0,
                heap: BinaryHeap::new(),
                slab: Vec::new(),
                free: Vec::new(),
                buf: vec![0; MAX_FRAME_LEN],
                k,
                limit: 0,
                published: 0,
                spare: Mail::new(),
                msgs: vec![MsgState::default(); setup.traffic.len()],
                tally: Tally::default(),
                prof: Prof::default(),
            }));
        }
        Sim {
            cx: Ctx {
                setup,
                mode,
                caps,
                chunk,
                lookahead: sc.medium.latency_ms * 1000 + 1,
                ports: (0..threads).map(|_| Port::new()).collect(),
            },
            shared: RwLock::new(Shared {
                world: World {
                    side: setup.world.side,
                    range: setup.world.range,
                    pos: setup.world.pos.clone(),
                    motion: setup.world.motion.clone(),
                    walls: Vec::new(),
                    adj: setup.world.adj.clone(),
                },
                ids: BTreeMap::new(),
            }),
            lanes,
            co: Coord {
                now: 0,
                globals: BinaryHeap::new(),
                gseq: 0,
                msgs: vec![MsgState::default(); setup.traffic.len()],
                sent: 0,
                send_errors: 0,
                timeline: Vec::new(),
                mobility_rng: rng_for(setup.seed, S_MOBILITY + 100),
                keys,
                mark: vec![0; n],
                stamp: 0,
            },
            one_thread: None,
        }
    }

    /// Run the lanes on the calling thread, taking turns of 1 to `turn`
    /// events drawn from a fixed sequence: the same results, no
    /// parallelism, and a deterministic interleaving as fine as threads
    /// could make it. For tests.
    #[doc(hidden)]
    pub fn on_one_thread(mut self, turn: u32) -> Self {
        self.one_thread = Some(turn.max(1));
        self
    }

    /// Run to the end of the scenario, calling `progress` with the simulated
    /// second now and then.
    ///
    /// Conservative parallel simulation in epochs: an epoch runs every node
    /// event before the next world event (a send, churn, a sample...),
    /// each lane on its own thread as far as the other allows (see
    /// [`Lane::run_epoch`]); then the world events of that time run alone.
    pub fn run(self, progress: &mut dyn FnMut(u64)) -> (RunReport, Prof) {
        let Sim { cx, shared, lanes, mut co, one_thread } = self;
        let end = cx.setup.sc.duration_secs * 1_000_000;
        staged(&cx, &mut co, &shared, &lanes, |st| {
            st.start();
            st.ready();
        });
        let ctl = Ctl::new(lanes.len());
        std::thread::scope(|s| {
            let mut workers = Vec::new();
            for (k, lane) in lanes.iter().enumerate().skip(1) {
                if one_thread.is_some() {
                    workers.push(None);
                    continue;
                }
                let (cx, ctl, shared) = (&cx, &ctl, &shared);
                let h = std::thread::Builder::new()
                    .name(format!("ferry-sim-lane-{k}"))
                    .stack_size(super::STACK)
                    .spawn_scoped(s, move || worker(k, cx, ctl, shared, lane));
                // A lane without a thread takes turns on this one: same
                // results.
                workers.push(h.ok());
            }
            let _stop = StopOnDrop(&ctl);
            let turn_max = one_thread.unwrap_or(u32::MAX);
            let mut draw = 0x2545_f491_4f6c_dd1d_u64;
            loop {
                let barrier = co.globals.peek().map_or(u64::MAX, |g| g.0.0).min(end + 1);
                let go = ctl.start(barrier);
                {
                    let sh = shared.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if workers.iter().all(Option::is_some) {
                        lock(&lanes[0]).run_epoch(&cx, &sh, barrier, None, &ctl.stop);
                    } else {
                        // Turns: each lane runs until the other holds it
                        // back or its turn is over; the one furthest behind
                        // always can run.
                        let mut done = vec![false; lanes.len()];
                        while done.iter().any(|d| !d) {
                            for (k, lane) in lanes.iter().enumerate() {
                                done[k] = if k == 0 || workers[k - 1].is_none() {
                                    draw = draw.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                                    let turn = if turn_max == u32::MAX {
                                        u32::MAX
                                    } else {
                                        1 + (draw >> 33) as u32 % turn_max
                                    };
                                    lock(lane).run_epoch(&cx, &sh, barrier, Some(turn), &ctl.stop)
                                } else {
                                    true
                                };
                            }
                        }
                    }
                }
                for (k, w) in workers.iter().enumerate() {
                    if let Some(h) = w {
                        ctl.wait_done(k + 1, go, h);
                    }
                }
                if barrier > end {
                    break;
                }
                progress(barrier / 1_000_000);
                staged(&cx, &mut co, &shared, &lanes, |st| {
                    while let Some(&Reverse((at, _, g))) = st.co.globals.peek()
                        && at == barrier
                    {
                        st.co.globals.pop();
                        st.set_now(at);
                        st.global(g);
                    }
                    st.ready();
                });
            }
        });
        staged(&cx, &mut co, &shared, &lanes, |st| {
            st.set_now(end);
            st.sample();
            st.report()
        })
    }
}

/// Run `f` as the coordinator, every lane stopped and everything writable.
fn staged<'a, R>(
    cx: &Ctx<'a>,
    co: &mut Coord,
    shared: &RwLock<Shared>,
    lanes: &[Mutex<Lane>],
    f: impl FnOnce(&mut Stage<'_, 'a>) -> R,
) -> R {
    let mut sh = shared.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut guards: Vec<MutexGuard<'_, Lane>> = lanes.iter().map(lock).collect();
    let mut st = Stage { cx, co, sh: &mut sh, lanes: guards.iter_mut().map(|g| &mut **g).collect() };
    f(&mut st)
}

/// The handshake between the coordinator and the lane threads: an epoch
/// counter and barrier time, a done counter per lane, and a stop flag. Both
/// sides spin briefly before yielding the core.
#[derive(Debug)]
struct Ctl {
    go: AtomicU64,
    end: AtomicU64,
    done: Vec<AtomicU64>,
    stop: AtomicBool,
}

impl Ctl {
    fn new(lanes: usize) -> Ctl {
        Ctl {
            go: AtomicU64::new(0),
            end: AtomicU64::new(0),
            done: (0..lanes).map(|_| AtomicU64::new(0)).collect(),
            stop: AtomicBool::new(false),
        }
    }

    /// Open an epoch ending (exclusive) at `end`; its number.
    fn start(&self, end: u64) -> u64 {
        self.end.store(end, Ordering::Relaxed);
        self.go.fetch_add(1, Ordering::Release) + 1
    }

    fn wait_done<T>(&self, lane: usize, go: u64, h: &std::thread::ScopedJoinHandle<'_, T>) {
        let mut spins = 0u32;
        while self.done[lane].load(Ordering::Acquire) != go {
            if h.is_finished() {
                // The lane's thread died (a panic): the scope re-raises it.
                self.stop.store(true, Ordering::Release);
                panic!("simulation lane {lane} stopped");
            }
            pause(&mut spins);
        }
    }
}

fn pause(spins: &mut u32) {
    if *spins < 4096 {
        *spins += 1;
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// Stops the other lane threads however a thread leaves the scope.
struct StopOnDrop<'c>(&'c Ctl);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Release);
    }
}

/// Copy a datagram's bytes into a free slot of the slab; the slot.
fn store(slab: &mut Vec<Vec<u8>>, free: &mut Vec<u32>, bytes: &[u8]) -> u32 {
    let slot = match free.pop() {
        Some(s) => s,
        None => {
            slab.push(Vec::with_capacity(MAX_FRAME_LEN));
            (slab.len() - 1) as u32
        }
    };
    let v = &mut slab[slot as usize];
    v.clear();
    v.extend_from_slice(bytes);
    slot
}

fn worker(k: usize, cx: &Ctx<'_>, ctl: &Ctl, shared: &RwLock<Shared>, lane: &Mutex<Lane>) {
    // A panic here must not leave the coordinator waiting for this lane.
    let _stop = StopOnDrop(ctl);
    let mut seen = 0;
    loop {
        let mut spins = 0u32;
        let go = loop {
            if ctl.stop.load(Ordering::Acquire) {
                return;
            }
            let go = ctl.go.load(Ordering::Acquire);
            if go != seen {
                break go;
            }
            pause(&mut spins);
        };
        seen = go;
        let end = ctl.end.load(Ordering::Relaxed);
        {
            let sh = shared.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            lock(lane).run_epoch(cx, &sh, end, None, &ctl.stop);
        }
        ctl.done[k].store(go, Ordering::Release);
    }
}

impl Lane {
    fn cell(&mut self, node: u32) -> &mut Cell {
        &mut self.cells[(node - self.base) as usize]
    }

    fn owns(&self, node: u32) -> bool {
        node >= self.base && node - self.base < self.cells.len() as u32
    }

    fn next_seq(&mut self, src: u32) -> u32 {
        let c = self.cell(src);
        c.seq = c.seq.wrapping_add(1);
        c.seq
    }

    /// Schedule `ev` for `src`, one of this lane's nodes.
    fn push(&mut self, src: u32, at: u64, ev: Ev) {
        let seq = self.next_seq(src);
        self.heap.push(Reverse(Entry::new(at, src, seq, ev)));
    }

    fn now_ms(&self) -> Instant {
        Instant::from_millis(self.now / 1000)
    }

    /// Run this lane's events before `barrier`, each as soon as the other
    /// lane allows: an event may run if it is earlier than the other lane's
    /// bound plus the lookahead (nothing that lane does can reach this one
    /// sooner) and than any datagram this lane posted plus the lookahead
    /// (an answer to it could). Returns true when the epoch is over: every
    /// lane's bound is at or past the barrier. Without `turn`, spins until
    /// then; with one, returns false as soon as it is held back or has run
    /// that many events.
    ///
    /// Two lanes at most: with three, lane A could read lane C's bound
    /// before B posts to C and B's bound after, and miss the datagram in
    /// transit.
    fn run_epoch(&mut self, cx: &Ctx<'_>, sh: &Shared, barrier: u64, turn: Option<u32>, stop: &AtomicBool) -> bool {
        let mut spins = 0u32;
        let mut ran = 0u32;
        loop {
            if turn.is_some_and(|n| ran >= n) {
                return false;
            }
            self.take_mail(cx);
            let head = self.heap.peek().map_or(NONE, |e| e.0.at);
            if head < barrier && head < self.limit {
                self.publish(cx, head);
                if let Some(Reverse(e)) = self.heap.pop() {
                    // A datagram that came too late would make a router's
                    // clock go back: stop here rather than run on wrong.
                    assert!(e.at >= self.now, "lane {}: event at {} µs after {} µs", self.k, e.at, self.now);
                    self.now = e.at;
                    self.dispatch(cx, sh, e);
                    ran += 1;
                }
                spins = 0;
                continue;
            }
            self.publish(cx, head);
            if head >= barrier {
                if cx.ports.iter().all(|p| p.bound() >= barrier) {
                    return true;
                }
            } else {
                let other = cx.ports.iter().enumerate().filter(|&(j, _)| j != self.k).map(|(_, p)| p.bound()).min();
                self.limit = other.unwrap_or(NONE).saturating_add(cx.lookahead);
                if head < self.limit {
                    continue;
                }
            }
            if turn.is_some() {
                return false;
            }
            if stop.load(Ordering::Acquire) {
                // The other lane died (its panic is reported by the scope).
                panic!("simulation lane {}: the other lane stopped", self.k);
            }
            pause(&mut spins);
        }
    }

    /// Before an epoch, with every lane stopped: world events may have put
    /// earlier events in the queue than the clock says, and the other
    /// lane's, so publish the head and forget the limit.
    fn ready(&mut self, cx: &Ctx<'_>) {
        let head = self.heap.peek().map_or(NONE, |e| e.0.at);
        self.published = head;
        cx.ports[self.k].clock.store(head, Ordering::Release);
        self.limit = 0;
    }

    /// Say on the port that nothing will happen here before `t`.
    fn publish(&mut self, cx: &Ctx<'_>, t: u64) {
        if t != self.published {
            self.published = t;
            cx.ports[self.k].clock.store(t, Ordering::Release);
        }
    }

    /// Move the mail into the queue.
    fn take_mail(&mut self, cx: &Ctx<'_>) {
        let port = &cx.ports[self.k];
        if port.mail_min.load(Ordering::Acquire) == NONE {
            return;
        }
        {
            let mut mail = port.mail.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            std::mem::swap(&mut *mail, &mut self.spare);
            // The clock covers the mail before `mail_min` stops covering it.
            let low = self.published.min(self.spare.min);
            self.published = low;
            port.clock.store(low, Ordering::Release);
            port.mail_min.store(NONE, Ordering::Release);
        }
        let mut mail = std::mem::replace(&mut self.spare, Mail::new());
        for o in &mail.outs {
            let b = &mail.bytes[o.start as usize..(o.start + o.len) as usize];
            self.accept(cx.mode, o.entry, b);
        }
        mail.outs.clear();
        mail.bytes.clear();
        mail.min = NONE;
        self.spare = mail;
    }

    /// A datagram from another lane.
    fn accept(&mut self, mode: Mode, mut e: Entry, bytes: &[u8]) {
        if let (Mode::Router, Ev::Arrive { data, .. }) = (mode, &mut e.ev) {
            *data = store(&mut self.slab, &mut self.free, bytes);
        }
        self.heap.push(Reverse(e));
    }

    fn dispatch(&mut self, cx: &Ctx<'_>, sh: &Shared, e: Entry) {
        match e.ev {
            Ev::Arrive { from, to, len, data } => self.arrive(cx, sh, from, to, len, data),
            Ev::TxDone { node, epoch } => {
                let c = self.cell(node);
                if c.epoch == epoch {
                    c.busy = false;
                    self.service(cx, sh, node);
                }
            }
            Ev::Timer { node } => {
                let now = self.now_ms();
                let c = self.cell(node);
                if c.timer_at != e.at || !c.up {
                    return;
                }
                c.timer_at = NONE;
                let t = WallClock::now();
                if let Some(n) = c.node.ferry() {
                    n.handle_timeout(now, &mut c.rng);
                }
                self.prof.handle_timeout += t.elapsed();
                self.tally.timer_events += 1;
                self.service(cx, sh, node);
            }
            Ev::Attack { node } => self.attack(cx, node),
            Ev::Rebroadcast { node, msg, epoch } => {
                let c = self.cell(node);
                if c.epoch != epoch || !c.up {
                    return;
                }
                let k = match cx.mode {
                    Mode::Counter { k, .. } => k,
                    _ => u32::MAX,
                };
                if let Node::Flood(f) = &mut c.node
                    && f.copies.remove(&msg).is_some_and(|c| c < k)
                {
                    f.queue.push_back((msg, u32::MAX));
                }
                self.service(cx, sh, node);
            }
        }
    }

    fn attack(&mut self, cx: &Ctx<'_>, node: u32) {
        let now = self.now;
        let gap = match &self.cell(node).node {
            Node::Adv(a) => a.gap,
            _ => return,
        };
        self.push(node, now + gap, Ev::Attack { node });
        let mtu = usize::from(cx.caps.mtu);
        let i = (node - self.base) as usize;
        let Lane { cells, buf, .. } = self;
        let c = &mut cells[i];
        if !c.up || c.busy {
            return;
        }
        let Node::Adv(a) = &mut c.node else { return };
        let Some(len) = a.frame(buf, mtu) else { return };
        let to = if cx.broadcast() {
            u32::MAX
        } else if c.links.is_empty() {
            return;
        } else {
            c.links[a.rng.random_range(0..c.links.len())]
        };
        self.launch(cx, node, len, to, u32::MAX, 0, true);
    }

    // ----- nodes on and off, links ---------------------------------------

    /// The node's part of switching on: a fresh dongle, the radio link up.
    fn power_on(&mut self, cx: &Ctx<'_>, sh: &Shared, node: u32) {
        let now = self.now_ms();
        let c = self.cell(node);
        if cx.mode == Mode::Router && matches!(c.node, Node::Relay(_)) && c.epoch > 0 {
            // A dongle keeps nothing across a power cycle.
            c.node = Node::Relay(new_relay(cx.setup.sc.relay, router_config(&cx.setup.sc)));
        }
        if let Node::Flood(f) = &mut c.node
            && c.epoch > 0
        {
            **f = FloodNode::new(cx.setup.traffic.len());
        }
        c.up = true;
        c.busy = false;
        c.epoch += 1;
        c.timer_at = NONE;
        if cx.broadcast() {
            let caps = cx.caps;
            let ok = c.node.ferry().is_none_or(|n| n.handle_link_up(now, &mut c.rng, RADIO, caps));
            debug_assert!(ok, "the radio link is refused");
            self.service(cx, sh, node);
        }
    }

    /// The node's part of switching off; its peers (whose links went down).
    fn power_off(&mut self, node: u32) -> Vec<u32> {
        let c = self.cell(node);
        c.up = false;
        c.timer_at = NONE;
        c.epoch += 1;
        std::mem::take(&mut c.links)
    }

    fn link_up_one(&mut self, cx: &Ctx<'_>, at: u32, peer: u32) -> bool {
        let (now, caps) = (self.now_ms(), cx.caps);
        let c = self.cell(at);
        c.node.ferry().is_none_or(|n| n.handle_link_up(now, &mut c.rng, LinkId(peer), caps))
    }

    /// `at` forgets a link to `peer` its router had (or refused).
    fn router_link_down(&mut self, at: u32, peer: u32) {
        let now = self.now_ms();
        if let Some(n) = self.cell(at).node.ferry() {
            n.handle_link_down(now, LinkId(peer));
        }
    }

    fn link_down_one(&mut self, at: u32, peer: u32) {
        self.router_link_down(at, peer);
        let l = &mut self.cell(at).links;
        if let Ok(k) = l.binary_search(&peer) {
            l.remove(k);
        }
    }

    fn add_link(&mut self, at: u32, peer: u32) {
        let l = &mut self.cell(at).links;
        if let Err(k) = l.binary_search(&peer) {
            l.insert(k, peer);
        }
    }

    // ----- driving a node ------------------------------------------------

    /// After an input: drain events, transmit if the radio is idle, re-arm
    /// the timer.
    fn service(&mut self, cx: &Ctx<'_>, sh: &Shared, node: u32) {
        if !self.cell(node).up {
            return;
        }
        self.drain_events(sh, cx, node);
        if !self.cell(node).busy {
            self.transmit(cx, node);
            self.drain_events(sh, cx, node);
        }
        let now = self.now;
        let c = self.cell(node);
        let t = c.node.ferry_ref().and_then(|n| n.poll_timeout());
        let at = match t {
            None => NONE,
            Some(t) if t.millis() <= now / 1000 => (now / 1000 + 1) * 1000,
            Some(t) => t.millis().saturating_mul(1000),
        };
        if at != c.timer_at {
            c.timer_at = at;
            if at != NONE {
                self.push(node, at, Ev::Timer { node });
            }
        }
    }

    fn drain_events(&mut self, sh: &Shared, cx: &Ctx<'_>, node: u32) {
        let now = self.now;
        let i = (node - self.base) as usize;
        let Lane { cells, msgs, tally, .. } = self;
        let Node::End(ep) = &mut cells[i].node else {
            if let Node::Relay(r) = &mut cells[i].node {
                while r.poll_event().is_some() {}
            }
            return;
        };
        while let Some(ev) = ep.poll_event() {
            match ev {
                EpEvent::Received(r) => {
                    if let Some(&m) = sh.ids.get(&r.id.0) {
                        let st = &mut msgs[m as usize];
                        st.shown += 1;
                        if st.delivered.is_none() && cx.setup.traffic[m as usize].to == node {
                            st.delivered = Some(now);
                            tally.delivered += 1;
                        }
                    }
                }
                EpEvent::Status { id, state: DeliveryState::Delivered } => {
                    if let Some(&m) = sh.ids.get(&id.0) {
                        let st = &mut msgs[m as usize];
                        if st.acked.is_none() {
                            st.acked = Some(now);
                            tally.acked += 1;
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn transmit(&mut self, cx: &Ctx<'_>, node: u32) {
        let now = self.now_ms();
        let i = (node - self.base) as usize;
        let Lane { cells, buf, .. } = self;
        let (len, to, data, kind) = match &mut cells[i].node {
            Node::Relay(_) | Node::End(_) => match cells[i].node.ferry().and_then(|n| n.poll_transmit(now, buf)) {
                Some(t) => (t.len, t.link, u32::MAX, kind_of(buf)),
                None => return,
            },
            Node::Flood(f) => match f.queue.pop_front() {
                Some((m, to)) => (FLOOD_LEN, LinkId(to), m, 1),
                None => return,
            },
            // Hostile nodes send on their own schedule (`Ev::Attack`).
            Node::Adv(_) => return,
        };
        let to = if cx.broadcast() { u32::MAX } else { to.0 };
        self.launch(cx, node, len, to, data, kind, false);
    }

    /// Put a datagram on the air: the first `len` bytes of `self.buf` (or,
    /// flooding, message `data`), counted by `kind` (byte 0's low bits), or
    /// as an adversary's.
    #[allow(clippy::too_many_arguments)]
    fn launch(&mut self, cx: &Ctx<'_>, node: u32, len: usize, to: u32, data: u32, kind: u8, hostile: bool) {
        let mode = cx.mode;
        // The wire: a naive-flooding frame above the MTU goes as segments
        // too, each with the 4-byte segment header.
        let (frames, bytes) = match mode {
            _ if mode.floods() => match segment::plan(len, usize::from(cx.caps.mtu)) {
                Some((count, _)) if len > usize::from(cx.caps.mtu) => {
                    (u64::from(count), (len + wire::SEGMENT_HEADER_LEN * usize::from(count)) as u64)
                }
                _ => (1, len as u64),
            },
            _ => (1, len as u64),
        };
        let tx = &mut self.tally.tx;
        match kind {
            _ if hostile => self.tally.adv_tx += 1,
            1 | 2 => tx.message += frames,
            3 => tx.receipt += 1,
            4 => tx.hello += 1,
            5 => tx.summary += 1,
            _ => tx.segment += 1,
        }
        let tx = &mut self.tally.tx;
        if mode.floods() && frames > 1 {
            tx.message -= frames;
            tx.segment += frames;
        }
        if !hostile {
            tx.total += frames;
            tx.bytes += bytes;
        }
        let m = &cx.setup.sc.medium;
        let mut ser = (bytes * 8 * 1_000_000).div_ceil(m.bandwidth_bps).max(1);
        let c = self.cell(node);
        if let Node::Adv(a) = &c.node {
            ser = ((ser as f64 / a.radio_x).ceil() as u64).max(1);
        }
        c.busy = true;
        let epoch = c.epoch;
        let now = self.now;
        self.push(node, now + ser, Ev::TxDone { node, epoch });
        if to != u32::MAX && to >= cx.setup.sc.nodes {
            self.tally.tx_lost += 1;
            return;
        }
        let frames_u16 = u16::try_from(frames).unwrap_or(u16::MAX);
        let wire_len = if mode.floods() { frames_u16 } else { len as u16 };
        let seq = self.next_seq(node);
        let arrive = Ev::Arrive { from: node, to, len: wire_len, data };
        let entry = Entry::new(now + ser + m.latency_ms * 1000, node, seq, arrive);
        let here = to == u32::MAX || self.owns(to);
        let bytes = if mode == Mode::Router { &self.buf[..len] } else { &[][..] };
        for (d, port) in cx.ports.iter().enumerate() {
            if d != self.k && (to == u32::MAX || cx.lane_of(to) == d) {
                port.post(entry, bytes);
                // The other lane may answer this as soon as it arrives.
                self.limit = self.limit.min(entry.at.saturating_add(cx.lookahead));
            }
        }
        if here {
            let mut e = entry;
            if let (Mode::Router, Ev::Arrive { data, .. }) = (mode, &mut e.ev) {
                *data = store(&mut self.slab, &mut self.free, &self.buf[..len]);
            }
            self.heap.push(Reverse(e));
        }
    }

    fn arrive(&mut self, cx: &Ctx<'_>, sh: &Shared, from: u32, to: u32, len: u16, data: u32) {
        let one = [to];
        let receivers: &[u32] = if to == u32::MAX {
            // The neighbours of `from` in this lane (the lists are sorted).
            let adj = &sh.world.adj[from as usize];
            let (lo, hi) = (self.base, self.base + self.cells.len() as u32);
            &adj[adj.partition_point(|&r| r < lo)..adj.partition_point(|&r| r < hi)]
        } else if self.cell(to).links.binary_search(&from).is_ok() {
            &one
        } else {
            self.tally.tx_lost += 1;
            &[]
        };
        let loss = cx.setup.sc.medium.loss;
        let mode = cx.mode;
        for &r in receivers {
            let i = (r - self.base) as usize;
            if !self.cells[i].up {
                continue;
            }
            if loss > 0.0 {
                // Flooding: `len` is the number of segments; losing any one
                // loses the frame.
                let k = if mode.floods() { i32::from(len) } else { 1 };
                let p = 1.0 - (1.0 - loss).powi(k);
                if self.cells[i].coin_f64() < p {
                    continue;
                }
            }
            if !matches!(self.cells[i].node, Node::Adv(_)) {
                self.tally.frame_events += 1;
            }
            // Reading the clock around every frame would cost more than
            // many frames do: time one in PROF_SAMPLE and scale.
            let sampled = self.tally.frame_events.is_multiple_of(u64::from(PROF_SAMPLE));
            let link = if to == u32::MAX { RADIO } else { LinkId(from) };
            let now = self.now_ms();
            let Lane { cells, slab, msgs, tally, prof, heap, .. } = self;
            let c = &mut cells[i];
            match &mut c.node {
                Node::Relay(_) | Node::End(_) => {
                    let bytes = &slab[data as usize][..usize::from(len)];
                    let t = sampled.then(WallClock::now);
                    if let Some(n) = c.node.ferry() {
                        let _ = n.handle_frame(now, &mut c.rng, link, bytes);
                    }
                    if let Some(t) = t {
                        prof.handle_frame += t.elapsed() * PROF_SAMPLE;
                    }
                }
                Node::Adv(a) => {
                    a.hear(&slab[data as usize][..usize::from(len)]);
                    continue;
                }
                Node::Flood(f) => {
                    if !f.first_time(data) {
                        if let Some(n) = f.copies.get_mut(&data) {
                            *n += 1;
                        }
                    } else {
                        if cx.setup.traffic[data as usize].to == r {
                            let st = &mut msgs[data as usize];
                            if st.delivered.is_none() {
                                st.delivered = Some(self.now);
                                st.shown = 1;
                                tally.delivered += 1;
                            }
                        }
                        if let (Mode::Counter { delay, .. }, true) = (mode, to == u32::MAX) {
                            f.copies.insert(data, 1);
                            let wait = c.coin() % (delay + 1);
                            c.seq = c.seq.wrapping_add(1);
                            let ev = Ev::Rebroadcast { node: r, msg: data, epoch: c.epoch };
                            heap.push(Reverse(Entry::new(self.now + wait, r, c.seq, ev)));
                        } else if to == u32::MAX {
                            f.queue.push_back((data, u32::MAX));
                        } else {
                            for &p in &c.links {
                                if p != from {
                                    f.queue.push_back((data, p));
                                }
                            }
                        }
                    }
                }
            }
            self.service(cx, sh, r);
        }
        if mode == Mode::Router {
            self.free.push(data);
        }
    }
}

/// The coordinator between epochs: every lane stopped, everything
/// writable.
struct Stage<'s, 'a> {
    cx: &'s Ctx<'a>,
    co: &'s mut Coord,
    sh: &'s mut Shared,
    lanes: Vec<&'s mut Lane>,
}

impl Stage<'_, '_> {
    fn lane(&mut self, node: u32) -> &mut Lane {
        let k = self.cx.lane_of(node);
        &mut *self.lanes[k]
    }

    fn up(&self, node: u32) -> bool {
        let l = &self.lanes[self.cx.lane_of(node)];
        l.cells[(node - l.base) as usize].up
    }

    fn set_now(&mut self, t: u64) {
        self.co.now = t;
        for l in &mut self.lanes {
            l.now = t;
        }
    }

    /// Every lane ready for the next epoch.
    fn ready(&mut self) {
        for l in &mut self.lanes {
            l.ready(self.cx);
        }
    }

    /// Radios on, the scenario's events queued.
    fn start(&mut self) {
        let cx = self.cx;
        let sc = &cx.setup.sc;
        for i in 0..sc.nodes {
            self.power_on(i);
        }
        for (i, m) in cx.setup.traffic.iter().enumerate() {
            self.co.push(m.at, Global::Send { msg: i as u32 });
        }
        for &(at, node) in &cx.setup.churn {
            self.co.push(at, Global::Churn { node });
        }
        for (i, p) in sc.partitions.iter().enumerate() {
            self.co.push(p.start_secs * 1_000_000, Global::Wall { index: i as u32, close: true });
            self.co.push(p.end_secs * 1_000_000, Global::Wall { index: i as u32, close: false });
        }
        if sc.moves() {
            let tick = sc.mobility.as_ref().map_or(1, |m| m.tick_secs);
            self.co.push(tick * 1_000_000, Global::Tick);
        }
        self.co.push(0, Global::Sample);
        if cx.mode == Mode::Router {
            for &(node, _, _, _) in &cx.setup.adversaries {
                self.lane(node).push(node, 1_000_000, Ev::Attack { node });
            }
        }
    }

    fn global(&mut self, g: Global) {
        let cx = self.cx;
        let sc = &cx.setup.sc;
        match g {
            Global::Send { msg } => self.send(msg),
            Global::Churn { node } => {
                if self.up(node) {
                    self.power_off(node);
                } else {
                    self.power_on(node);
                }
            }
            Global::Tick => {
                let tick = sc.mobility.as_ref().map_or(1, |m| m.tick_secs);
                let t = self.co.now as f64 / 1e6;
                self.sh.world.step(t, tick as f64, sc.mobility.as_ref(), &mut self.co.mobility_rng);
                self.sh.world.rebuild();
                self.sync_links();
                let at = self.co.now + tick * 1_000_000;
                self.co.push(at, Global::Tick);
            }
            Global::Wall { index, close } => {
                if let Some(p) = sc.partitions.get(index as usize) {
                    let wall = (p.axis, p.at * self.sh.world.side);
                    if close {
                        self.sh.world.walls.push(wall);
                    } else if let Some(k) = self.sh.world.walls.iter().position(|w| *w == wall) {
                        self.sh.world.walls.remove(k);
                    }
                    self.sh.world.rebuild();
                    self.sync_links();
                }
            }
            Global::Sample => {
                self.sample();
                let at = self.co.now + sc.sample_secs * 1_000_000;
                self.co.push(at, Global::Sample);
            }
        }
    }

    fn service(&mut self, node: u32) {
        let k = self.cx.lane_of(node);
        self.lanes[k].service(self.cx, self.sh, node);
    }

    fn power_on(&mut self, node: u32) {
        let k = self.cx.lane_of(node);
        self.lanes[k].power_on(self.cx, self.sh, node);
        if !self.cx.broadcast() {
            self.sync_node_links(node);
        }
    }

    fn power_off(&mut self, node: u32) {
        for p in self.lane(node).power_off(node) {
            self.lane(p).link_down_one(p, node);
            self.service(p);
        }
    }

    /// Point-to-point: bring links in line with the neighbour sets (links up
    /// to new neighbours, down to those out of range). A node whose link
    /// table is full refuses; the pair then stays unlinked until the next
    /// topology change.
    fn sync_links(&mut self) {
        if self.cx.broadcast() {
            return;
        }
        for i in 0..self.cx.setup.sc.nodes {
            self.sync_node_links(i);
        }
    }

    fn sync_node_links(&mut self, node: u32) {
        if self.cx.broadcast() {
            return;
        }
        let want: Vec<u32> = if self.up(node) {
            self.sh.world.adj[node as usize].iter().copied().filter(|&j| self.up(j)).collect()
        } else {
            Vec::new()
        };
        let have = self.lane(node).cell(node).links.clone();
        for &p in &have {
            if want.binary_search(&p).is_err() {
                self.lane(node).link_down_one(node, p);
                self.lane(p).link_down_one(p, node);
                self.service(p);
            }
        }
        for &p in &want {
            if self.lane(node).cell(node).links.binary_search(&p).is_ok() {
                continue;
            }
            let cx = self.cx;
            let a = self.lane(node).link_up_one(cx, node, p);
            let b = a && self.lane(p).link_up_one(cx, p, node);
            if a && b {
                self.lane(node).add_link(node, p);
                self.lane(p).add_link(p, node);
                self.service(p);
            } else if a {
                self.lane(node).router_link_down(node, p);
            }
        }
        self.service(node);
    }

    /// Whether `b` can be reached from `a` now (nodes on, in range, no wall).
    fn connected(&mut self, a: u32, b: u32) -> bool {
        self.co.stamp += 1;
        let stamp = self.co.stamp;
        let mut queue = VecDeque::from([a]);
        self.co.mark[a as usize] = stamp;
        while let Some(v) = queue.pop_front() {
            if v == b {
                return true;
            }
            for &w in &self.sh.world.adj[v as usize] {
                if self.co.mark[w as usize] != stamp && self.up(w) {
                    self.co.mark[w as usize] = stamp;
                    queue.push_back(w);
                }
            }
        }
        false
    }

    fn send(&mut self, msg: u32) {
        let cx = self.cx;
        let m = cx.setup.traffic[msg as usize];
        self.co.msgs[msg as usize].cut = !self.connected(m.from, m.to);
        if !self.up(m.from) {
            self.co.send_errors += 1;
            return;
        }
        let now = Instant::from_millis(self.co.now / 1000);
        let unix = UNIX_START + self.co.now / 1_000_000;
        let broadcast = cx.broadcast();
        let k = cx.lane_of(m.from);
        let Stage { co, sh, lanes, .. } = self;
        let c = lanes[k].cell(m.from);
        match &mut c.node {
            Node::End(ep) => {
                let Some(to) = co.keys[m.to as usize] else {
                    co.send_errors += 1;
                    return;
                };
                let mut text = format!("message {msg} ");
                let want = cx.setup.sc.traffic.text_len as usize;
                while text.len() < want {
                    text.push('x');
                }
                text.truncate(want);
                match ep.send(now, &mut c.rng, unix, &to, &text) {
                    Ok(id) => {
                        sh.ids.insert(id.0, msg);
                        co.msgs[msg as usize].sent = true;
                        co.sent += 1;
                    }
                    Err(_) => co.send_errors += 1,
                }
            }
            Node::Flood(f) => {
                f.first_time(msg);
                if broadcast {
                    f.queue.push_back((msg, u32::MAX));
                } else {
                    for &p in &c.links {
                        f.queue.push_back((msg, p));
                    }
                }
                co.msgs[msg as usize].sent = true;
                co.sent += 1;
            }
            Node::Relay(_) | Node::Adv(_) => co.send_errors += 1,
        }
        self.service(m.from);
    }

    fn tally(&self) -> Tally {
        let mut t = Tally::default();
        for l in &self.lanes {
            t.add(&l.tally);
        }
        t
    }

    // ----- metrics -------------------------------------------------------

    fn sample(&mut self) {
        let (mut held, mut held_max, mut seen, mut up) = (0u64, 0u32, 0u64, 0u32);
        for c in self.lanes.iter().flat_map(|l| l.cells.iter()) {
            if !c.up {
                continue;
            }
            up += 1;
            let (h, s) = match &c.node {
                Node::Relay(r) => (r.held() as u32, r.seen_len() as u64),
                Node::End(ep) => (ep.held() as u32, ep.router().seen_len() as u64),
                Node::Flood(f) => (f.queue.len() as u32, u64::from(f.seen_count())),
                Node::Adv(_) => (0, 0),
            };
            held += u64::from(h);
            held_max = held_max.max(h);
            seen += s;
        }
        let live = f64::from(up.max(1));
        let t = self.tally();
        self.co.timeline.push(Sample {
            t: self.co.now / 1_000_000,
            sent: self.co.sent,
            delivered: t.delivered,
            acked: t.acked,
            tx: t.tx.total,
            held_mean: round4(held as f64 / live),
            held_max,
            seen_mean: round4(seen as f64 / live),
            up,
        });
    }

    fn report(&mut self) -> (RunReport, Prof) {
        let cx = self.cx;
        let traffic = &cx.setup.traffic;
        // Every message's state: sent and cut from the coordinator, the rest
        // from the lanes (one node delivers, one node is acked).
        let mut msgs = std::mem::take(&mut self.co.msgs);
        let mut prof = Prof { lanes: self.lanes.len(), ..Prof::default() };
        for l in &self.lanes {
            for (s, o) in msgs.iter_mut().zip(&l.msgs) {
                s.delivered = match (s.delivered, o.delivered) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                s.acked = match (s.acked, o.acked) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                s.shown += o.shown;
            }
            prof.handle_frame += l.prof.handle_frame;
            prof.handle_timeout += l.prof.handle_timeout;
        }
        let tally = self.tally();
        let mut lat: Vec<u64> =
            msgs.iter().zip(traffic).filter_map(|(s, m)| s.delivered.map(|d| d.saturating_sub(m.at) / 1000)).collect();
        lat.sort_unstable();
        let mut totals = RouterTotals::default();
        for c in self.lanes.iter().flat_map(|l| l.cells.iter()) {
            let Some(s) = c.node.ferry_ref().map(|n| n.stats()) else { continue };
            totals.frames_in += s.frames_in;
            totals.duplicates += s.duplicates;
            totals.malformed += s.malformed;
            totals.bad_id += s.bad_id;
            totals.rate_limited += s.rate_limited;
            totals.evictions += s.evictions;
            totals.receipts_valid += s.receipts_valid;
            totals.receipts_refused += s.receipts_refused;
        }
        let (mut sent_contact, mut sent_first) = (0, 0);
        for (s, m) in msgs.iter().zip(traffic) {
            if s.sent {
                if m.contact {
                    sent_contact += 1;
                } else {
                    sent_first += 1;
                }
            }
        }
        let messages = traffic.len() as u32;
        let ms = |t: Option<u64>, at: u64| t.map_or(-1, |t| (t.saturating_sub(at) / 1000) as i64);
        let outcomes = msgs
            .iter()
            .zip(traffic)
            .map(|(s, m)| {
                [i64::from(m.from), i64::from(m.to), i64::from(m.contact), ms(s.delivered, m.at), ms(s.acked, m.at)]
            })
            .collect();
        let cut = msgs.iter().filter(|s| s.cut).count() as u32;
        let cut_delivered = msgs.iter().filter(|s| s.cut && s.delivered.is_some()).count() as u32;
        let report = RunReport {
            outcomes,
            disconnected_at_send: cut,
            delivered_disconnected: cut_delivered,
            mode: match cx.mode {
                Mode::Router => "router".to_owned(),
                Mode::Flood => "flood".to_owned(),
                Mode::Counter { k, .. } => format!("count-{k}"),
            },
            messages,
            sent: self.co.sent,
            sent_contact,
            sent_first,
            delivered: tally.delivered,
            delivery_ratio: round4(f64::from(tally.delivered) / f64::from(messages.max(1))),
            acked: tally.acked,
            duplicate_deliveries: msgs.iter().map(|s| s.shown.saturating_sub(1)).sum(),
            send_errors: self.co.send_errors,
            latency_p50_ms: percentile(&lat, 50.0),
            latency_p90_ms: percentile(&lat, 90.0),
            latency_p99_ms: percentile(&lat, 99.0),
            latency_ms: lat,
            tx: tally.tx,
            adversary_tx: tally.adv_tx,
            tx_per_delivered: round4(tally.tx.total as f64 / f64::from(tally.delivered.max(1))),
            tx_lost: tally.tx_lost,
            frame_events: tally.frame_events,
            timer_events: tally.timer_events,
            router: totals,
            timeline: std::mem::take(&mut self.co.timeline),
        };
        (report, prof)
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::scenario::Scenario;

    /// Both lanes taking turns on one thread, deterministically, in turns
    /// of one event, a few, or until held back (the fallback when a lane
    /// thread cannot start): each must give one lane's results.
    #[test]
    fn lanes_taking_turns_on_one_thread_match_one_lane() {
        let text = "name = \"turns\"\nnodes = 80\nduration_secs = 40\nsample_secs = 10\n\
                    [graph]\nmean_degree = 8.0\nrange_m = 100.0\n\
                    [medium]\nkind = \"broadcast\"\nmtu = 255\nbandwidth_bps = 250000\nlatency_ms = 5\nloss = 0.05\n\
                    [traffic]\nmessages = 20\nendpoints = 16\ncontact_fraction = 0.8\nstart_secs = 2\nend_secs = 25\n\
                    text_len = 40\nlifetime_secs = 600\npairs = \"connected\"\n";
        let sc = match Scenario::from_toml(text) {
            Ok(s) => s,
            Err(e) => panic!("scenario refused: {e}"),
        };
        // Routers are built on the stack before they are boxed: give the
        // run the simulator's stack.
        let run = move || {
            let setup = Setup::new(&sc, 5);
            let one = Sim::new(&setup, Mode::Router, 1).run(&mut |_| {}).0;
            let turns: Vec<RunReport> = [1, 3, 8, u32::MAX]
                .map(|t| Sim::new(&setup, Mode::Router, 2).on_one_thread(t).run(&mut |_| {}).0)
                .into();
            (one, turns)
        };
        let h = std::thread::Builder::new().stack_size(super::super::STACK).spawn(run);
        let (one, turns) = match h.map(std::thread::JoinHandle::join) {
            Ok(Ok(r)) => r,
            Ok(Err(p)) => std::panic::resume_unwind(p),
            Err(e) => panic!("no thread: {e}"),
        };
        assert!(one.delivered > 0 && one.frame_events > 0, "nothing happened");
        for (t, r) in [1, 3, 8, u32::MAX].iter().zip(&turns) {
            assert!(&one == r, "two lanes taking turns of up to {t} events gave other results than one lane");
        }
    }
}
