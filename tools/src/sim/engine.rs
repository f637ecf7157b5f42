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
//! milliseconds), events are ordered by (time, sequence number), every random
//! draw comes from a stream derived from the seed, and nothing iterates a
//! hash map. The same scenario and seed give the same metrics, byte for byte.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use ferry_proto::endpoint::{Carrier, ContactState, DeliveryState, Endpoint, Event as EpEvent};
use ferry_proto::envelope::{Identity, PeerKey};
use ferry_proto::router::{Config, DongleRouter, HostRouter, LinkCaps, LinkId, Router, Stats};
use ferry_proto::wire::{self, Kind, MAX_FRAME_LEN, MessageFrame, MessageId, ReceiptRepr, SizeClass};
use ferry_proto::{Duration, Instant, segment};
use std::time::Instant as WallClock;

use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

use super::report::{RouterTotals, RunReport, Sample, TxCounts, percentile};
use super::scenario::{AdversaryKind, MediumKind, Pairs, RelayKind, Scenario};
use super::world::World;

/// What the simulator needs from a router: the driver's API (the
/// endpoint's [`Carrier`]) plus the counters it reports. Every size of the
/// real [`Router`] has it.
pub trait SimRelay: Carrier + core::fmt::Debug {
    /// Messages held in the store.
    fn held(&self) -> usize;
    /// Seen-table entries.
    fn seen_len(&self) -> usize;
    /// Counters.
    fn stats(&self) -> Stats;
}

impl<const S: usize, const L: usize, const D: usize, const LINKS: usize, const Q: usize, const R: usize> SimRelay
    for Router<S, L, D, LINKS, Q, R>
{
    fn held(&self) -> usize {
        Router::held(self)
    }
    fn seen_len(&self) -> usize {
        Router::seen_len(self)
    }
    fn stats(&self) -> Stats {
        Router::stats(self)
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
    Flood(FloodNode),
    Adv(Adv),
}

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
    Send {
        msg: u32,
    },
    Churn {
        node: u32,
    },
    Tick,
    Wall {
        index: u32,
        close: bool,
    },
    Sample,
    Attack {
        node: u32,
    },
    Rebroadcast {
        node: u32,
        msg: u32,
        epoch: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
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

/// Wall-clock time spent inside the router's entry points (not
/// deterministic; kept out of the metrics; `handle_frame` is sampled).
#[derive(Clone, Copy, Debug, Default)]
pub struct Prof {
    /// In `handle_frame` (the endpoint's, for endpoints: opening included).
    pub handle_frame: std::time::Duration,
    /// In `handle_timeout`.
    pub handle_timeout: std::time::Duration,
}

/// One run of the simulator.
#[derive(Debug)]
pub struct Sim<'a> {
    setup: &'a Setup,
    mode: Mode,
    now: u64,
    world: World,
    nodes: Vec<Node>,
    up: Vec<bool>,
    rngs: Vec<StdRng>,
    busy: Vec<bool>,
    epoch: Vec<u32>,
    timer_at: Vec<u64>,
    /// Point-to-point links up, per node (sorted peer lists).
    links: Vec<Vec<u32>>,
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    slab: Vec<Vec<u8>>,
    free: Vec<u32>,
    loss_rng: StdRng,
    flood_rng: StdRng,
    mobility_rng: StdRng,
    keys: Vec<Option<PeerKey>>,
    ids: BTreeMap<[u8; 16], u32>,
    msgs: Vec<MsgState>,
    tx: TxCounts,
    adv_tx: u64,
    tx_lost: u64,
    frame_events: u64,
    timer_events: u64,
    send_errors: u32,
    sent: u32,
    delivered: u32,
    acked: u32,
    timeline: Vec<Sample>,
    caps: LinkCaps,
    buf: Vec<u8>,
    prof: Prof,
    /// Breadth-first search marks (stamped, so never cleared).
    mark: Vec<u32>,
    stamp: u32,
}

impl<'a> Sim<'a> {
    /// Build the nodes for `mode` (endpoints get their identities and
    /// contacts; relays an empty router).
    pub fn new(setup: &'a Setup, mode: Mode) -> Sim<'a> {
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
                    Node::Flood(FloodNode { silent: true, ..FloodNode::new(0) })
                }
                (Mode::Router, _, Some(a)) => Node::Adv(a),
                (Mode::Flood | Mode::Counter { .. }, _, None) => Node::Flood(FloodNode::new(setup.traffic.len())),
                (Mode::Router, None, None) => Node::Relay(new_relay(sc.relay, config)),
                (Mode::Router, Some(s), None) => {
                    let id = Identity::from_secret_bytes(*s);
                    keys[i] = Some(id.public());
                    let mut ep = Box::new(SimEndpoint::new(id, new_relay(sc.relay, config)));
                    ep.set_lifetime_secs(sc.traffic.lifetime_secs);
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
        Sim {
            setup,
            mode,
            now: 0,
            world: World {
                side: setup.world.side,
                range: setup.world.range,
                pos: setup.world.pos.clone(),
                motion: setup.world.motion.clone(),
                walls: Vec::new(),
                adj: setup.world.adj.clone(),
            },
            nodes,
            up: vec![true; n],
            rngs: (0..n).map(|i| rng_for(setup.seed, S_NODE + (1 << 31) + i as u64)).collect(),
            busy: vec![false; n],
            epoch: vec![0; n],
            timer_at: vec![NONE; n],
            links: vec![Vec::new(); n],
            heap: BinaryHeap::new(),
            seq: 0,
            slab: Vec::new(),
            free: Vec::new(),
            loss_rng: rng_for(setup.seed, S_LOSS),
            flood_rng: rng_for(setup.seed, S_LOSS + 100),
            mobility_rng: rng_for(setup.seed, S_MOBILITY + 100),
            keys,
            ids: BTreeMap::new(),
            msgs: vec![MsgState::default(); setup.traffic.len()],
            tx: TxCounts::default(),
            adv_tx: 0,
            tx_lost: 0,
            frame_events: 0,
            timer_events: 0,
            send_errors: 0,
            sent: 0,
            delivered: 0,
            acked: 0,
            timeline: Vec::new(),
            caps,
            buf: vec![0; MAX_FRAME_LEN],
            prof: Prof::default(),
            mark: vec![0; n],
            stamp: 0,
        }
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse(Entry { at, seq: self.seq, ev }));
    }

    fn now_ms(&self) -> Instant {
        Instant::from_millis(self.now / 1000)
    }

    fn broadcast(&self) -> bool {
        self.caps.broadcast
    }

    /// Run to the end of the scenario, calling `progress` with the simulated
    /// second now and then.
    pub fn run(mut self, progress: &mut dyn FnMut(u64)) -> (RunReport, Prof) {
        let sc = &self.setup.sc;
        let end = sc.duration_secs * 1_000_000;
        // Radios on.
        for i in 0..self.nodes.len() {
            self.power_on(i as u32);
        }
        for (i, m) in self.setup.traffic.iter().enumerate() {
            self.push(m.at, Ev::Send { msg: i as u32 });
        }
        for &(at, node) in &self.setup.churn {
            self.push(at, Ev::Churn { node });
        }
        for (i, p) in sc.partitions.iter().enumerate() {
            self.push(p.start_secs * 1_000_000, Ev::Wall { index: i as u32, close: true });
            self.push(p.end_secs * 1_000_000, Ev::Wall { index: i as u32, close: false });
        }
        if sc.moves() {
            let tick = sc.mobility.as_ref().map_or(1, |m| m.tick_secs);
            self.push(tick * 1_000_000, Ev::Tick);
        }
        self.push(0, Ev::Sample);
        for &(node, _, _, _) in &self.setup.adversaries {
            if self.mode == Mode::Router {
                self.push(1_000_000, Ev::Attack { node });
            }
        }
        let mut last_progress = 0;
        while let Some(Reverse(e)) = self.heap.pop() {
            if e.at > end {
                break;
            }
            self.now = e.at;
            if self.now / 1_000_000 > last_progress {
                last_progress = self.now / 1_000_000;
                progress(last_progress);
            }
            self.dispatch(e);
        }
        self.now = end;
        self.sample();
        self.finish()
    }

    fn dispatch(&mut self, e: Entry) {
        match e.ev {
            Ev::Arrive { from, to, len, data } => self.arrive(from, to, len, data),
            Ev::TxDone { node, epoch } => {
                if self.epoch[node as usize] == epoch {
                    self.busy[node as usize] = false;
                    self.service(node);
                }
            }
            Ev::Timer { node } => {
                let i = node as usize;
                if self.timer_at[i] != e.at || !self.up[i] {
                    return;
                }
                self.timer_at[i] = NONE;
                self.timer_events += 1;
                let now = self.now_ms();
                let t = WallClock::now();
                match &mut self.nodes[i] {
                    Node::Relay(r) => r.handle_timeout(now),
                    Node::End(ep) => ep.handle_timeout(now, &mut self.rngs[i]),
                    Node::Flood(_) | Node::Adv(_) => {}
                }
                self.prof.handle_timeout += t.elapsed();
                self.service(node);
            }
            Ev::Send { msg } => self.send(msg),
            Ev::Churn { node } => {
                if self.up[node as usize] {
                    self.power_off(node);
                } else {
                    self.power_on(node);
                }
            }
            Ev::Tick => {
                let sc = &self.setup.sc;
                let tick = sc.mobility.as_ref().map_or(1, |m| m.tick_secs);
                let t = self.now as f64 / 1e6;
                self.world.step(t, tick as f64, sc.mobility.as_ref(), &mut self.mobility_rng);
                self.world.rebuild();
                self.sync_links();
                self.push(self.now + tick * 1_000_000, Ev::Tick);
            }
            Ev::Wall { index, close } => {
                let sc = &self.setup.sc;
                if let Some(p) = sc.partitions.get(index as usize) {
                    let wall = (p.axis, p.at * self.world.side);
                    if close {
                        self.world.walls.push(wall);
                    } else if let Some(k) = self.world.walls.iter().position(|w| *w == wall) {
                        self.world.walls.remove(k);
                    }
                    self.world.rebuild();
                    self.sync_links();
                }
            }
            Ev::Attack { node } => {
                let i = node as usize;
                if let Node::Adv(a) = &self.nodes[i] {
                    let gap = a.gap;
                    self.push(self.now + gap, Ev::Attack { node });
                }
                if self.up[i] && !self.busy[i] {
                    let mtu = usize::from(self.caps.mtu);
                    let len = match &mut self.nodes[i] {
                        Node::Adv(a) => a.frame(&mut self.buf, mtu),
                        _ => None,
                    };
                    if let Some(len) = len {
                        let to = if self.broadcast() {
                            u32::MAX
                        } else if self.links[i].is_empty() {
                            return;
                        } else {
                            let k = self.loss_rng.random_range(0..self.links[i].len());
                            self.links[i][k]
                        };
                        self.launch(node, len, to, u32::MAX, 0, true);
                    }
                }
            }
            Ev::Rebroadcast { node, msg, epoch } => {
                let i = node as usize;
                if self.epoch[i] != epoch || !self.up[i] {
                    return;
                }
                let k = match self.mode {
                    Mode::Counter { k, .. } => k,
                    _ => u32::MAX,
                };
                if let Node::Flood(f) = &mut self.nodes[i]
                    && f.copies.remove(&msg).is_some_and(|c| c < k)
                {
                    f.queue.push_back((msg, u32::MAX));
                }
                self.service(node);
            }
            Ev::Sample => {
                self.sample();
                self.push(self.now + self.setup.sc.sample_secs * 1_000_000, Ev::Sample);
            }
        }
    }

    // ----- nodes on and off, links ---------------------------------------

    fn power_on(&mut self, node: u32) {
        let i = node as usize;
        if self.mode == Mode::Router && matches!(self.nodes[i], Node::Relay(_)) && self.epoch[i] > 0 {
            // A dongle keeps nothing across a power cycle.
            self.nodes[i] = Node::Relay(new_relay(self.setup.sc.relay, router_config(&self.setup.sc)));
        }
        if let Node::Flood(f) = &mut self.nodes[i]
            && self.epoch[i] > 0
        {
            *f = FloodNode::new(self.setup.traffic.len());
        }
        self.up[i] = true;
        self.busy[i] = false;
        self.epoch[i] += 1;
        self.timer_at[i] = NONE;
        if self.broadcast() {
            let (now, caps) = (self.now_ms(), self.caps);
            let ok = match &mut self.nodes[i] {
                Node::Relay(r) => r.handle_link_up(now, &mut self.rngs[i], RADIO, caps),
                Node::End(ep) => ep.handle_link_up(now, &mut self.rngs[i], RADIO, caps),
                Node::Flood(_) | Node::Adv(_) => true,
            };
            debug_assert!(ok, "the radio link is refused");
            self.service(node);
        } else {
            self.sync_node_links(node);
        }
    }

    fn power_off(&mut self, node: u32) {
        let i = node as usize;
        self.up[i] = false;
        self.timer_at[i] = NONE;
        self.epoch[i] += 1;
        let peers = std::mem::take(&mut self.links[i]);
        for p in peers {
            self.link_down_one(p, node);
            self.service(p);
        }
    }

    fn link_up_one(&mut self, at: u32, peer: u32) -> bool {
        let (now, caps) = (self.now_ms(), self.caps);
        let i = at as usize;
        match &mut self.nodes[i] {
            Node::Relay(r) => r.handle_link_up(now, &mut self.rngs[i], LinkId(peer), caps),
            Node::End(ep) => ep.handle_link_up(now, &mut self.rngs[i], LinkId(peer), caps),
            Node::Flood(_) | Node::Adv(_) => true,
        }
    }

    fn link_down_one(&mut self, at: u32, peer: u32) {
        let now = self.now_ms();
        match &mut self.nodes[at as usize] {
            Node::Relay(r) => r.handle_link_down(now, LinkId(peer)),
            Node::End(ep) => ep.handle_link_down(now, LinkId(peer)),
            Node::Flood(_) | Node::Adv(_) => {}
        }
        let l = &mut self.links[at as usize];
        if let Ok(k) = l.binary_search(&peer) {
            l.remove(k);
        }
    }

    /// Point-to-point: bring links in line with the neighbour sets (links up
    /// to new neighbours, down to those out of range). A node whose link
    /// table is full refuses; the pair then stays unlinked until the next
    /// topology change.
    fn sync_links(&mut self) {
        if self.broadcast() {
            return;
        }
        for i in 0..self.nodes.len() {
            self.sync_node_links(i as u32);
        }
    }

    fn sync_node_links(&mut self, node: u32) {
        if self.broadcast() {
            return;
        }
        let i = node as usize;
        let want: Vec<u32> = if self.up[i] {
            self.world.adj[i].iter().copied().filter(|&j| self.up[j as usize]).collect()
        } else {
            Vec::new()
        };
        let have = self.links[i].clone();
        for &p in &have {
            if want.binary_search(&p).is_err() {
                self.link_down_one(node, p);
                self.link_down_one(p, node);
                self.service(p);
            }
        }
        for &p in &want {
            if self.links[i].binary_search(&p).is_ok() {
                continue;
            }
            let a = self.link_up_one(node, p);
            let b = a && self.link_up_one(p, node);
            if a && b {
                for (x, y) in [(node, p), (p, node)] {
                    let l = &mut self.links[x as usize];
                    if let Err(k) = l.binary_search(&y) {
                        l.insert(k, y);
                    }
                }
                self.service(p);
            } else if a {
                let now = self.now_ms();
                match &mut self.nodes[i] {
                    Node::Relay(r) => r.handle_link_down(now, LinkId(p)),
                    Node::End(ep) => ep.handle_link_down(now, LinkId(p)),
                    Node::Flood(_) | Node::Adv(_) => {}
                }
            }
        }
        self.service(node);
    }

    // ----- driving a node ------------------------------------------------

    /// After an input: drain events, transmit if the radio is idle, re-arm
    /// the timer.
    fn service(&mut self, node: u32) {
        let i = node as usize;
        if !self.up[i] {
            return;
        }
        self.drain_events(node);
        if !self.busy[i] {
            self.transmit(node);
            self.drain_events(node);
        }
        let t = match &self.nodes[i] {
            Node::Relay(r) => r.poll_timeout(),
            Node::End(ep) => ep.poll_timeout(),
            Node::Flood(_) | Node::Adv(_) => None,
        };
        let at = match t {
            None => NONE,
            Some(t) if t.millis() <= self.now / 1000 => (self.now / 1000 + 1) * 1000,
            Some(t) => t.millis().saturating_mul(1000),
        };
        if at != self.timer_at[i] {
            self.timer_at[i] = at;
            if at != NONE {
                self.push(at, Ev::Timer { node });
            }
        }
    }

    fn drain_events(&mut self, node: u32) {
        let now = self.now;
        match &mut self.nodes[node as usize] {
            Node::Relay(r) => while r.poll_event().is_some() {},
            Node::End(ep) => {
                while let Some(ev) = ep.poll_event() {
                    match ev {
                        EpEvent::Received(r) => {
                            if let Some(&m) = self.ids.get(&r.id.0) {
                                let st = &mut self.msgs[m as usize];
                                st.shown += 1;
                                if st.delivered.is_none() && self.setup.traffic[m as usize].to == node {
                                    st.delivered = Some(now);
                                    self.delivered += 1;
                                }
                            }
                        }
                        EpEvent::Status { id, state: DeliveryState::Delivered } => {
                            if let Some(&m) = self.ids.get(&id.0) {
                                let st = &mut self.msgs[m as usize];
                                if st.acked.is_none() {
                                    st.acked = Some(now);
                                    self.acked += 1;
                                }
                            }
                        }
                        EpEvent::Status { .. } => {}
                    }
                }
            }
            Node::Flood(_) | Node::Adv(_) => {}
        }
    }

    fn transmit(&mut self, node: u32) {
        let i = node as usize;
        let now = self.now_ms();
        let (len, to, data, kind) = match &mut self.nodes[i] {
            Node::Relay(r) => match r.poll_transmit(now, &mut self.buf) {
                Some(t) => (t.len, t.link, u32::MAX, self.buf.first().map_or(0, |b| b & 0x1f)),
                None => return,
            },
            Node::End(ep) => match ep.poll_transmit(now, &mut self.buf) {
                Some(t) => (t.len, t.link, u32::MAX, self.buf.first().map_or(0, |b| b & 0x1f)),
                None => return,
            },
            Node::Flood(f) => match f.queue.pop_front() {
                Some((m, to)) => (FLOOD_LEN, LinkId(to), m, 1),
                None => return,
            },
            // Hostile nodes send on their own schedule (`Ev::Attack`).
            Node::Adv(_) => return,
        };
        let to = if self.broadcast() { u32::MAX } else { to.0 };
        self.launch(node, len, to, data, kind, false);
    }

    /// Put a datagram on the air: the first `len` bytes of `self.buf` (or,
    /// flooding, message `data`), counted by `kind` (byte 0's low bits), or
    /// as an adversary's.
    fn launch(&mut self, node: u32, len: usize, to: u32, data: u32, kind: u8, hostile: bool) {
        let i = node as usize;
        // The wire: a naive-flooding frame above the MTU goes as segments
        // too, each with the 4-byte segment header.
        let (frames, bytes) = match self.mode {
            _ if self.mode.floods() => match segment::plan(len, usize::from(self.caps.mtu)) {
                Some((count, _)) if len > usize::from(self.caps.mtu) => {
                    (u64::from(count), (len + wire::SEGMENT_HEADER_LEN * usize::from(count)) as u64)
                }
                _ => (1, len as u64),
            },
            _ => (1, len as u64),
        };
        match kind {
            _ if hostile => self.adv_tx += 1,
            1 | 2 => self.tx.message += frames,
            3 => self.tx.receipt += 1,
            4 => self.tx.hello += 1,
            5 => self.tx.summary += 1,
            _ => self.tx.segment += 1,
        }
        if self.mode.floods() && frames > 1 {
            self.tx.message -= frames;
            self.tx.segment += frames;
        }
        if !hostile {
            self.tx.total += frames;
            self.tx.bytes += bytes;
        }
        let m = &self.setup.sc.medium;
        let mut ser = (bytes * 8 * 1_000_000).div_ceil(m.bandwidth_bps);
        if let Node::Adv(a) = &self.nodes[i] {
            ser = ((ser as f64 / a.radio_x).ceil() as u64).max(1);
        }
        self.busy[i] = true;
        let epoch = self.epoch[i];
        self.push(self.now + ser, Ev::TxDone { node, epoch });
        let data = match self.mode {
            Mode::Router => {
                let slot = match self.free.pop() {
                    Some(s) => s,
                    None => {
                        self.slab.push(Vec::with_capacity(MAX_FRAME_LEN));
                        (self.slab.len() - 1) as u32
                    }
                };
                let v = &mut self.slab[slot as usize];
                v.clear();
                v.extend_from_slice(&self.buf[..len]);
                slot
            }
            _ => data,
        };
        let frames_u16 = u16::try_from(frames).unwrap_or(u16::MAX);
        let len = if self.mode.floods() { frames_u16 } else { len as u16 };
        self.push(self.now + ser + m.latency_ms * 1000, Ev::Arrive { from: node, to, len, data });
    }

    fn arrive(&mut self, from: u32, to: u32, len: u16, data: u32) {
        let receivers: Vec<u32> = if to == u32::MAX {
            self.world.adj[from as usize].clone()
        } else if self.links[from as usize].binary_search(&to).is_ok() {
            vec![to]
        } else {
            self.tx_lost += 1;
            Vec::new()
        };
        let loss = self.setup.sc.medium.loss;
        for r in receivers {
            if !self.up[r as usize] {
                continue;
            }
            if loss > 0.0 {
                // Flooding: `len` is the number of segments; losing any one
                // loses the frame.
                let k = if self.mode.floods() { i32::from(len) } else { 1 };
                let p = 1.0 - (1.0 - loss).powi(k);
                if self.loss_rng.random::<f64>() < p {
                    continue;
                }
            }
            if !matches!(self.nodes[r as usize], Node::Adv(_)) {
                self.frame_events += 1;
            }
            // Reading the clock around every frame would cost more than
            // many frames do: time one in PROF_SAMPLE and scale.
            let sampled = self.frame_events.is_multiple_of(u64::from(PROF_SAMPLE));
            let link = if to == u32::MAX { RADIO } else { LinkId(from) };
            let now = self.now_ms();
            let i = r as usize;
            match &mut self.nodes[i] {
                Node::Relay(router) => {
                    let bytes = &self.slab[data as usize][..usize::from(len)];
                    let t = sampled.then(WallClock::now);
                    let _ = router.handle_frame(now, link, bytes);
                    if let Some(t) = t {
                        self.prof.handle_frame += t.elapsed() * PROF_SAMPLE;
                    }
                }
                Node::End(ep) => {
                    let bytes = &self.slab[data as usize][..usize::from(len)];
                    let t = sampled.then(WallClock::now);
                    let _ = ep.handle_frame(now, &mut self.rngs[i], link, bytes);
                    if let Some(t) = t {
                        self.prof.handle_frame += t.elapsed() * PROF_SAMPLE;
                    }
                }
                Node::Adv(a) => {
                    a.hear(&self.slab[data as usize][..usize::from(len)]);
                    continue;
                }
                Node::Flood(f) => {
                    if !f.first_time(data) {
                        if let Some(c) = f.copies.get_mut(&data) {
                            *c += 1;
                        }
                    } else {
                        if self.setup.traffic[data as usize].to == r {
                            let st = &mut self.msgs[data as usize];
                            if st.delivered.is_none() {
                                st.delivered = Some(self.now);
                                st.shown = 1;
                                self.delivered += 1;
                            }
                        }
                        if let (Mode::Counter { delay, .. }, true) = (self.mode, to == u32::MAX) {
                            f.copies.insert(data, 1);
                            let at = self.now + self.flood_rng.random_range(0..=delay);
                            let epoch = self.epoch[i];
                            self.seq += 1;
                            let ev = Ev::Rebroadcast { node: r, msg: data, epoch };
                            self.heap.push(Reverse(Entry { at, seq: self.seq, ev }));
                        } else if to == u32::MAX {
                            f.queue.push_back((data, u32::MAX));
                        } else {
                            for &p in &self.links[i] {
                                if p != from {
                                    f.queue.push_back((data, p));
                                }
                            }
                        }
                    }
                }
            }
            self.service(r);
        }
        if self.mode == Mode::Router {
            self.free.push(data);
        }
    }

    /// Whether `b` can be reached from `a` now (nodes on, in range, no wall).
    fn connected(&mut self, a: u32, b: u32) -> bool {
        self.stamp += 1;
        let stamp = self.stamp;
        let mut queue = VecDeque::from([a]);
        self.mark[a as usize] = stamp;
        while let Some(v) = queue.pop_front() {
            if v == b {
                return true;
            }
            for &w in &self.world.adj[v as usize] {
                if self.mark[w as usize] != stamp && self.up[w as usize] {
                    self.mark[w as usize] = stamp;
                    queue.push_back(w);
                }
            }
        }
        false
    }

    fn send(&mut self, msg: u32) {
        let m = self.setup.traffic[msg as usize];
        self.msgs[msg as usize].cut = !self.connected(m.from, m.to);
        let i = m.from as usize;
        if !self.up[i] {
            self.send_errors += 1;
            return;
        }
        let now = self.now_ms();
        let unix = UNIX_START + self.now / 1_000_000;
        let broadcast = self.broadcast();
        match &mut self.nodes[i] {
            Node::End(ep) => {
                let Some(to) = self.keys[m.to as usize] else {
                    self.send_errors += 1;
                    return;
                };
                let mut text = format!("message {msg} ");
                let want = self.setup.sc.traffic.text_len as usize;
                while text.len() < want {
                    text.push('x');
                }
                text.truncate(want);
                match ep.send(now, &mut self.rngs[i], unix, &to, &text) {
                    Ok(id) => {
                        self.ids.insert(id.0, msg);
                        self.msgs[msg as usize].sent = true;
                        self.sent += 1;
                    }
                    Err(_) => self.send_errors += 1,
                }
            }
            Node::Flood(f) => {
                f.first_time(msg);
                if broadcast {
                    f.queue.push_back((msg, u32::MAX));
                } else {
                    for &p in &self.links[i] {
                        f.queue.push_back((msg, p));
                    }
                }
                self.msgs[msg as usize].sent = true;
                self.sent += 1;
            }
            Node::Relay(_) | Node::Adv(_) => self.send_errors += 1,
        }
        self.service(m.from);
    }

    // ----- metrics -------------------------------------------------------

    fn sample(&mut self) {
        let (mut held, mut held_max, mut seen, mut up) = (0u64, 0u32, 0u64, 0u32);
        for (i, n) in self.nodes.iter().enumerate() {
            if !self.up[i] {
                continue;
            }
            up += 1;
            let (h, s) = match n {
                Node::Relay(r) => (r.held() as u32, r.seen_len() as u64),
                Node::End(ep) => (ep.router.held() as u32, ep.router.seen_len() as u64),
                Node::Flood(f) => (f.queue.len() as u32, u64::from(f.seen_count())),
                Node::Adv(_) => (0, 0),
            };
            held += u64::from(h);
            held_max = held_max.max(h);
            seen += s;
        }
        let live = f64::from(up.max(1));
        self.timeline.push(Sample {
            t: self.now / 1_000_000,
            sent: self.sent,
            delivered: self.delivered,
            acked: self.acked,
            tx: self.tx.total,
            held_mean: round4(held as f64 / live),
            held_max,
            seen_mean: round4(seen as f64 / live),
            up,
        });
    }

    fn finish(self) -> (RunReport, Prof) {
        let prof = self.prof;
        (self.report(), prof)
    }

    fn report(self) -> RunReport {
        let mut lat: Vec<u64> = self
            .msgs
            .iter()
            .zip(&self.setup.traffic)
            .filter_map(|(s, m)| s.delivered.map(|d| d.saturating_sub(m.at) / 1000))
            .collect();
        lat.sort_unstable();
        let mut totals = RouterTotals::default();
        for n in &self.nodes {
            let s = match n {
                Node::Relay(r) => r.stats(),
                Node::End(ep) => ep.router.stats(),
                Node::Flood(_) | Node::Adv(_) => continue,
            };
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
        for (s, m) in self.msgs.iter().zip(&self.setup.traffic) {
            if s.sent {
                if m.contact {
                    sent_contact += 1;
                } else {
                    sent_first += 1;
                }
            }
        }
        let messages = self.setup.traffic.len() as u32;
        let ms = |t: Option<u64>, at: u64| t.map_or(-1, |t| (t.saturating_sub(at) / 1000) as i64);
        let outcomes = self
            .msgs
            .iter()
            .zip(&self.setup.traffic)
            .map(|(s, m)| {
                [i64::from(m.from), i64::from(m.to), i64::from(m.contact), ms(s.delivered, m.at), ms(s.acked, m.at)]
            })
            .collect();
        let cut = self.msgs.iter().filter(|s| s.cut).count() as u32;
        let cut_delivered = self.msgs.iter().filter(|s| s.cut && s.delivered.is_some()).count() as u32;
        RunReport {
            outcomes,
            disconnected_at_send: cut,
            delivered_disconnected: cut_delivered,
            mode: match self.mode {
                Mode::Router => "router".to_owned(),
                Mode::Flood => "flood".to_owned(),
                Mode::Counter { k, .. } => format!("count-{k}"),
            },
            messages,
            sent: self.sent,
            sent_contact,
            sent_first,
            delivered: self.delivered,
            delivery_ratio: round4(f64::from(self.delivered) / f64::from(messages.max(1))),
            acked: self.acked,
            duplicate_deliveries: self.msgs.iter().map(|s| s.shown.saturating_sub(1)).sum(),
            send_errors: self.send_errors,
            latency_p50_ms: percentile(&lat, 50.0),
            latency_p90_ms: percentile(&lat, 90.0),
            latency_p99_ms: percentile(&lat, 99.0),
            latency_ms: lat,
            tx: self.tx,
            adversary_tx: self.adv_tx,
            tx_per_delivered: round4(self.tx.total as f64 / f64::from(self.delivered.max(1))),
            tx_lost: self.tx_lost,
            frame_events: self.frame_events,
            timer_events: self.timer_events,
            router: totals,
            timeline: self.timeline,
        }
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}
