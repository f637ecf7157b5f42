//! The store-carry-forward router: one sans-IO state machine per node
//! (SPEC §6), shaped like quinn-proto.
//!
//! Inputs: [`Router::handle_frame`], [`Router::handle_link_up`],
//! [`Router::handle_link_down`], [`Router::handle_timeout`],
//! [`Router::submit`], [`Router::emit_receipt`]. Outputs, drained after every
//! input: [`Router::poll_transmit`] until `None`, [`Router::poll_event`]
//! until `None`, then [`Router::poll_timeout`] for the next wake-up.
//!
//! The router never decrypts: it reads the outer header, checks message ids
//! and receipts against commitments, and keeps everything in memory bounded
//! by its const parameters:
//!
//! * `S`, `L`: store slots of the small (240 B) and large (1200 B) class;
//! * `D`: entries of the "seen" table (dedup, tombstones and store index;
//!   must be at least `2 × (S + L)`);
//! * `LINKS`: links up at once (at most 32);
//! * `Q`: per-link transmit queue;
//! * `R`: segment reassembly slots.
//!
//! Fairness: every store slot and seen entry is charged to the link it came
//! from; when full, the link holding the most pays, so a flooding neighbour
//! evicts its own frames. The node's own messages have a quota that relayed
//! traffic cannot evict.

use heapless::index_map::FnvIndexMap;
use heapless::{Deque, Vec};
use zeroize::Zeroize;

use crate::hash;
use crate::node::{DeliveryState, Event, Node, Rng};
use crate::segment::{self, Reassembly, SegmentError};
use crate::time::{Duration, Instant};
use crate::wire::{
    COMMIT_LEN, FINGERPRINT_LEN, Frame, HELLO_LEN, HelloRepr, MAX_FRAME_LEN, MAX_LIFETIME_SECS, MessageFrame,
    MessageId, RECEIPT_LEN, RECEIPT_SECRET_LEN, ReceiptRepr, SUMMARY_LEN, SUMMARY_MAX_FINGERPRINTS, SegmentRepr,
    SizeClass, SummaryRepr, WireError,
};

/// A link as the driver names it (a UDP peer address, a BLE connection, a
/// serial port, a radio). The router only compares ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u32);

/// What a link can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkCaps {
    /// Largest datagram the link carries, at least [`crate::wire::MIN_MTU`].
    pub mtu: u16,
    /// A broadcast medium (every frame reaches every neighbour on it) rather
    /// than one peer. Broadcast links skip hello and summaries and rebroadcast.
    pub broadcast: bool,
    /// The largest size class forwarded on this link.
    pub max_class: SizeClass,
}

/// Runtime limits and timers. All have safe defaults ([`Config::DEFAULT`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Cap on the remaining lifetime this node accepts and passes on.
    pub max_lifetime_secs: u32,
    /// Frames per second accepted from one link (token bucket rate).
    pub link_rate: u32,
    /// Token bucket depth.
    pub link_burst: u32,
    /// First hello retry delay (doubles each retry).
    pub hello_retry: Duration,
    /// Hello retries after the first hello of a link-up.
    pub hello_retries: u8,
    /// Summary frames sent and accepted per round.
    pub max_summary_frames: u8,
    /// How often a validated point-to-point link repeats the summary
    /// exchange, so that what a lossy link dropped is sent again.
    pub resync: Duration,
    /// Store slots of each class kept for this node's own messages.
    pub own_quota: usize,
    /// Link-ups accepted per second (bounds hellos to new addresses).
    pub link_ups_per_sec: u32,
    /// Frames from addresses without a link answered per second, statelessly
    /// (SPEC §6.1); beyond it they are dropped unanswered.
    pub stranger_answers_per_sec: u32,
    /// On a broadcast link, a relayed message or receipt is held back for
    /// a delay drawn from `0..=broadcast_defer` (per node and per id) and
    /// then sent only if fewer than `broadcast_copies` copies of it were
    /// heard on that link meanwhile (counting the one that brought it):
    /// neighbours that already covered the area save the airtime.
    /// Own messages and own receipts go at once. `0` copies: never
    /// suppress (plain flooding).
    pub broadcast_defer: Duration,
    /// See `broadcast_defer`.
    pub broadcast_copies: u8,
    /// The same for receipts, which climb toward the sender: a relayed
    /// receipt is dropped once this many copies were heard, counting the
    /// one that brought it and those from nodes at this node's level or
    /// the next one up (SPEC §5). Like `broadcast_copies`, only where
    /// relayed frames are held back at all (`broadcast_copies` > 0).
    pub receipt_copies: u8,
    /// New messages per second per link that keep the hop budget they came
    /// with (token bucket, `far_burst` deep); the rest go on with at most
    /// `near_hops`. A neighbour flooding fresh messages then reaches only
    /// a few hops, while everything within the rate travels as far as it
    /// asked. Receipts are not limited (they cannot be forged).
    pub far_rate: u32,
    /// See `far_rate`.
    pub far_burst: u32,
    /// See `far_rate`.
    pub near_hops: u8,
    /// `near_hops` for messages heard on a broadcast link. There one
    /// bucket serves every transmitter in range, so a flooder's messages
    /// that keep their budget at its neighbours drain the buckets of the
    /// whole mesh and honest messages are shortened too; and every hop of a
    /// shortened message costs a whole neighbourhood's airtime. One hop
    /// keeps the flood smallest (SPEC §6.5).
    pub near_hops_broadcast: u8,
    /// Store slots used at most, small and large (capped at the type's `S`
    /// and `L`): a memory budget below the compiled size. Slots are used
    /// from the lowest index up, so a router in untouched memory (a
    /// static) never touches the pages of the slots it may not use.
    pub store_slots: (usize, usize),
}

impl Config {
    /// The defaults documented in SPEC §6.
    pub const DEFAULT: Config = Config {
        max_lifetime_secs: MAX_LIFETIME_SECS,
        link_rate: 5_000,
        link_burst: 10_000,
        hello_retry: Duration::from_millis(1_000),
        hello_retries: 3,
        max_summary_frames: 16,
        resync: Duration::from_millis(15_000),
        own_quota: 16,
        link_ups_per_sec: 64,
        stranger_answers_per_sec: 256,
        broadcast_defer: Duration::from_millis(100),
        broadcast_copies: 3,
        receipt_copies: 3,
        far_rate: 5,
        far_burst: 100,
        near_hops: 2,
        near_hops_broadcast: 1,
        store_slots: (usize::MAX, usize::MAX),
    };
}

impl Config {
    /// Copies heard that cancel a held-back rebroadcast of `item`.
    fn copies_for(&self, item: &Item) -> u8 {
        match item {
            Item::Message(_) => self.broadcast_copies,
            Item::Receipt { .. } => self.receipt_copies,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::DEFAULT
    }
}

/// Where a frame in the store came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Submitted by this node.
    Own,
    /// Received on this link.
    Link(LinkId),
}

/// What storing a message did (SPEC §6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Stored in a free slot.
    Stored,
    /// Stored after evicting this message.
    Evicted(MessageId),
    /// Not stored: no slot could be freed for it (its id is still
    /// remembered, so it is not taken again).
    Full,
    /// Not stored: no hops left, or its class exceeds every link's.
    NotCarried,
}

/// What one input frame was.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// A message this node had not seen, id checked. `frame` is its bytes
    /// (for the endpoint to try to open).
    NewMessage {
        /// Its id.
        id: MessageId,
        /// What the store did with it.
        stored: StoreOutcome,
        /// The frame as received.
        frame: &'a [u8],
    },
    /// A message already seen (or delivered): dropped.
    Duplicate(MessageId),
    /// A receipt that matched a message's commitment.
    Receipt(MessageId),
    /// A link-level frame (hello, summary) was processed.
    Control,
    /// A segment was stored; the frame is not complete yet.
    Partial,
}

/// Why an input frame was dropped. None of these is fatal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The bytes are not a frame.
    Wire(WireError),
    /// A segment could not be reassembled.
    Segment(SegmentError),
    /// The link is not up.
    UnknownLink,
    /// The link exceeded its rate.
    RateLimited,
    /// A receipt for an id this node does not know, or whose secret does not
    /// match: nothing is erased and nothing is forwarded.
    UnverifiedReceipt,
    /// A link-level frame out of place (summary before hello, too many).
    Unexpected,
    /// This node's tables are full of entries it may not drop.
    Exhausted,
}

impl From<WireError> for FrameError {
    fn from(e: WireError) -> Self {
        FrameError::Wire(e)
    }
}

/// Why a submission was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubmitError {
    /// Not a valid message frame.
    Wire(WireError),
    /// Already submitted or seen.
    Duplicate,
    /// The own-message quota is used up: wait for deliveries or expiries.
    StoreFull,
}

/// A frame to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where.
    pub link: LinkId,
    /// Bytes written at the start of the caller's buffer.
    pub len: usize,
}

/// Statistics, for benchmarks, tests and the local API. Counters only: no
/// ids, no addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames handed to `handle_frame`.
    pub frames_in: u64,
    /// Frames dropped as malformed.
    pub malformed: u64,
    /// Message frames dropped for a wrong id.
    pub bad_id: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Frames dropped by a link's rate limit.
    pub rate_limited: u64,
    /// Receipts that erased a message.
    pub receipts_valid: u64,
    /// Receipts refused.
    pub receipts_refused: u64,
    /// Evictions.
    pub evictions: u64,
    /// Frames (or segments) handed out by `poll_transmit`.
    pub frames_out: u64,
    /// Bytes handed out.
    pub bytes_out: u64,
    /// Transmissions withheld by the anti-amplification limit.
    pub amplification_blocked: u64,
    /// Broadcast rebroadcasts saved: enough copies were heard meanwhile.
    pub suppressed: u64,
    /// New messages over their link's `far_rate`, sent on with `near_hops`.
    pub shortened: u64,
    /// Frames from addresses without a link answered with a cookie hello.
    pub stranger_answers: u64,
    /// Datagrams from addresses without a link dropped unanswered (not a
    /// Ferry frame of at least 33 bytes, or over `stranger_answers_per_sec`).
    pub stranger_dropped: u64,
    /// Links made from a hello that echoed a valid cookie.
    pub stranger_links: u64,
    /// Events lost because the driver did not drain `poll_event` (the
    /// queue holds 32).
    pub events_dropped: u64,
}

/// A link as [`Router::links`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// The driver's name for it.
    pub id: LinkId,
    /// What it carries.
    pub caps: LinkCaps,
    /// The peer proved it receives there (SPEC §6.1).
    pub validated: bool,
    /// Its frames come from [`Router::poll_transmit_link`] only.
    pub pull: bool,
}

/// What [`Router::handle_stranger`] did with bytes from an address that has
/// no link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stranger {
    /// Dropped, unanswered: not a Ferry frame of at least 33 bytes, or over
    /// the answer rate.
    Dropped,
    /// Send these first bytes of `out` (a 33-byte hello) back to the
    /// address. Nothing was kept.
    Answer(usize),
    /// The hello echoed a cookie of ours for this address: the peer
    /// receives there. Make the link with [`Router::accept_stranger`].
    Validated(ValidatedHello),
}

/// A hello that echoed a valid cookie: only [`Router::handle_stranger`]
/// makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidatedHello {
    cookie: [u8; 16],
    peer_nonce: [u8; 16],
    len: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    class: SizeClass,
    index: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SeenState {
    /// In the store, at this slot.
    Held(Slot),
    /// Seen, no longer (or never) held.
    Gone,
    /// Its copy was evicted to make room: offered again (by a neighbour's
    /// store sync, at most once per round), it is taken again. Otherwise a
    /// message pushed out by a flood could never come back on this path.
    Evicted,
    /// A valid receipt passed: never store again, and pass the receipt on.
    /// `passed`: this node sent it on (it came from below this node's
    /// level), which it does at most once.
    Delivered { secret: [u8; RECEIPT_SECRET_LEN], passed: bool },
}

#[derive(Clone, Copy, Debug)]
struct Seen {
    commit: [u8; COMMIT_LEN],
    expires: Instant,
    origin: Origin,
    state: SeenState,
    /// The hop budget the first copy arrived with (an own message: the
    /// budget it was sent with). Receipts climb toward higher levels, that
    /// is toward the sender (SPEC §5).
    level: u8,
}

#[derive(Clone, Copy, Debug)]
struct Meta {
    id: MessageId,
    /// Hop budget to put on the next transmission.
    hops: u8,
    /// Whether it may be forwarded at all (hops were left).
    forward: bool,
    lifetime_secs: u32,
    arrived: Instant,
    origin: Origin,
    seq: u32,
    sent: bool,
    /// Bit i: the link in slot i of the link table has this message.
    peer_has: u32,
}

/// The seen table, keyed by message id XOR a per-router secret. Ids are
/// hashes, but a sender chooses its frames and can grind ids whose plain
/// FNV hashes collide in the table (a few hundred tries each), making every
/// lookup walk one long cluster. Under a secret key it cannot aim. The key
/// is drawn at the first link-up or send (both take an rng), before
/// anything enters the table, and never changes while entries live.
struct SeenTable<const D: usize> {
    map: FnvIndexMap<MessageId, Seen, D>,
    key: [u8; 16],
}

impl<const D: usize> SeenTable<D> {
    const fn new() -> Self {
        SeenTable { map: FnvIndexMap::new(), key: [0; 16] }
    }

    /// Both ways: the key is its own inverse.
    fn k(&self, id: &MessageId) -> MessageId {
        let mut out = id.0;
        for (o, k) in out.iter_mut().zip(self.key) {
            *o ^= k;
        }
        MessageId(out)
    }

    /// Draw the key, if nothing is in the table yet and none was drawn.
    fn seed(&mut self, rng: Rng<'_>) {
        if self.map.is_empty() && self.key == [0; 16] {
            rng.fill_bytes(&mut self.key);
        }
    }

    fn get(&self, id: &MessageId) -> Option<&Seen> {
        self.map.get(&self.k(id))
    }

    fn get_mut(&mut self, id: &MessageId) -> Option<&mut Seen> {
        let k = self.k(id);
        self.map.get_mut(&k)
    }

    fn contains_key(&self, id: &MessageId) -> bool {
        self.map.contains_key(&self.k(id))
    }

    fn insert(&mut self, id: MessageId, seen: Seen) -> Result<Option<Seen>, (MessageId, Seen)> {
        let k = self.k(&id);
        self.map.insert(k, seen)
    }

    fn swap_remove(&mut self, id: &MessageId) -> Option<Seen> {
        let k = self.k(id);
        self.map.swap_remove(&k)
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn get_index(&self, i: usize) -> Option<(MessageId, &Seen)> {
        self.map.get_index(i).map(|(k, v)| (self.k(k), v))
    }

    fn iter(&self) -> impl Iterator<Item = (MessageId, &Seen)> + '_ {
        self.map.iter().map(|(k, v)| (self.k(k), v))
    }

    fn values(&self) -> impl Iterator<Item = &Seen> + '_ {
        self.map.values()
    }
}

const NIL: u16 = u16::MAX;

struct Pool<const N: usize, const LEN: usize> {
    meta: [Option<Meta>; N],
    data: [[u8; LEN]; N],
    /// Occupied slots in arrival (= `seq`) order, doubly linked, so that
    /// `victim` finds the oldest message of an origin without a scan.
    prev: [u16; N],
    next: [u16; N],
    head: u16,
    tail: u16,
}

impl<const N: usize, const LEN: usize> Pool<N, LEN> {
    const fn new() -> Self {
        Pool { meta: [None; N], data: [[0; LEN]; N], prev: [NIL; N], next: [NIL; N], head: NIL, tail: NIL }
    }

    /// Append slot `i` (just occupied) as the newest.
    fn link_back(&mut self, i: usize) {
        let i16 = i as u16;
        if let Some(p) = self.prev.get_mut(i) {
            *p = self.tail;
        }
        if let Some(n) = self.next.get_mut(i) {
            *n = NIL;
        }
        match self.next.get_mut(usize::from(self.tail)) {
            Some(n) => *n = i16,
            None => self.head = i16,
        }
        self.tail = i16;
    }

    /// Take slot `i` (being freed) out of the order.
    fn unlink(&mut self, i: usize) {
        let p = self.prev.get(i).copied().unwrap_or(NIL);
        let n = self.next.get(i).copied().unwrap_or(NIL);
        match self.next.get_mut(usize::from(p)) {
            Some(x) => *x = n,
            None => self.head = n,
        }
        match self.prev.get_mut(usize::from(n)) {
            Some(x) => *x = p,
            None => self.tail = p,
        }
    }

    /// The oldest occupied slot whose meta satisfies `want`.
    fn oldest(&self, want: impl Fn(&Meta) -> bool) -> Option<(usize, MessageId)> {
        let mut i = self.head;
        while let Some(slot) = self.meta.get(usize::from(i)) {
            if let Some(m) = slot
                && want(m)
            {
                return Some((usize::from(i), m.id));
            }
            i = self.next.get(usize::from(i)).copied().unwrap_or(NIL);
        }
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item {
    Message(MessageId),
    /// A receipt carries what it needs, so that it still goes out if its
    /// tombstone is evicted (under a flood) before the link drains.
    Receipt {
        id: MessageId,
        secret: [u8; RECEIPT_SECRET_LEN],
        /// This node's level for the message (what the frame carries).
        level: u8,
        /// Emitted by this node (it is the recipient), not relayed.
        own: bool,
    },
}

#[derive(Debug)]
struct TxSeg {
    frag: u8,
    count: u8,
    unit: usize,
    next: u8,
    len: usize,
}

struct Link<const Q: usize> {
    id: LinkId,
    caps: LinkCaps,
    nonce: [u8; 16],
    peer_nonce: Option<[u8; 16]>,
    /// The peer echoed our nonce: its address is validated.
    validated: bool,
    salt: [u8; 16],
    rx_bytes: u64,
    tx_unvalidated: u64,
    hello_due: Option<Instant>,
    hello_left: u8,
    hello_backoff: Duration,
    /// We owe the peer a hello (it sent one that did not echo our nonce).
    hello_reply: bool,
    summary_cursor: Option<usize>,
    summary_seq: u8,
    summaries_in: u8,
    /// When the peer's current summary round began.
    round_at: Instant,
    /// When this side sends its next summary round.
    next_resync: Instant,
    /// After the peer's last summary: walk the store and push what it lacks.
    sync_cursor: Option<usize>,
    queue: Deque<Item, Q>,
    held: [u32; 2],
    seen: u32,
    tokens: u32,
    refill_at: Instant,
    /// New messages that may still keep their full hop budget (`far_rate`).
    far: Bucket,
    tx: Vec<u8, MAX_FRAME_LEN>,
    seg: Option<TxSeg>,
    next_frag: u8,
    /// Frames for this link are pulled with `poll_transmit_link` only
    /// (a link with flow control or credits), never handed out by
    /// `poll_transmit`.
    pull: bool,
}

/// A token bucket: `rate` tokens a second, at most `burst`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: u32,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        let elapsed = now.saturating_since(self.at).as_millis();
        let add = elapsed.saturating_mul(u64::from(rate)) / 1000;
        if add > 0 {
            let t = u64::from(self.tokens).saturating_add(add).min(u64::from(burst));
            self.tokens = u32::try_from(t).unwrap_or(u32::MAX);
            self.at = now;
        }
        match self.tokens.checked_sub(1) {
            Some(t) => {
                self.tokens = t;
                true
            }
            None => false,
        }
    }
}

/// A relayed item held back on a broadcast link (SPEC §6.5).
#[derive(Clone, Copy, Debug)]
struct Deferred {
    due: Instant,
    link: u8,
    /// Copies heard on that link, the first one included.
    heard: u8,
    item: Item,
}

impl Item {
    fn id(&self) -> MessageId {
        match self {
            Item::Message(id) | Item::Receipt { id, .. } => *id,
        }
    }
}

/// The router. Large: keep it in a `static` (firmware) or a `Box` (daemon).
pub struct Router<const S: usize, const L: usize, const D: usize, const LINKS: usize, const Q: usize, const R: usize> {
    config: Config,
    small: Pool<S, { SizeClass::Small.frame_len() }>,
    large: Pool<L, { SizeClass::Large.frame_len() }>,
    seen: SeenTable<D>,
    seen_hand: usize,
    /// Per class: slots in use, own messages among them, next free-slot guess.
    used: [usize; 2],
    own: [usize; 2],
    hint: [usize; 2],
    links: [Option<Link<Q>>; LINKS],
    /// Rebroadcasts waiting (bounded by the queue size: when full, items
    /// go out at once, as in plain flooding).
    deferred: Vec<Deferred, Q>,
    /// Secret per node: spreads the deferral delays.
    defer_salt: u32,
    reassembly: Reassembly<R>,
    events: Deque<(MessageId, DeliveryState), 32>,
    seq: u32,
    rr: usize,
    /// When the next expiry falls due (at most one sweep a second);
    /// `FAR_FUTURE` when nothing can expire.
    next_sweep: Instant,
    last_sweep: Instant,
    link_ups: (Instant, u32),
    /// Key of the stateless cookies (drawn at the first stranger).
    cookie_key: [u8; 16],
    /// Stateless answers in the current second.
    stranger_answers: (Instant, u32),
    stats: Stats,
}

/// A router sized for a relay dongle: under 64 KiB in all (64 small and 8
/// large store slots, 256 seen entries, 4 links, 2 partial frames).
pub type DongleRouter = Router<64, 8, 256, 4, 32, 2>;

/// A router sized for the host daemon: about 3 MiB (2048 small and 1024
/// large slots, 8192 seen entries, 32 links). Box it.
pub type HostRouter = Router<2048, 1024, 8192, 32, 256, 16>;

impl<const S: usize, const L: usize, const D: usize, const LINKS: usize, const Q: usize, const R: usize>
    core::fmt::Debug for Router<S, L, D, LINKS, Q, R>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Router")
            .field("held", &self.held())
            .field("seen", &self.seen.len())
            .field("links", &self.links.iter().flatten().count())
            .field("stats", &self.stats)
            .finish()
    }
}

const SWEEP: Duration = Duration::from_millis(1_000);
/// A delivered message's tombstone lives at least this long (seconds).
const TOMBSTONE_MIN_SECS: u64 = 60;
/// Seen entries looked at, past the first evictable one, for one of the
/// heaviest link's: eviction stays O(1) per frame whatever the table holds.
const EVICT_SCAN: usize = 64;

fn fp_sorted(summary: &SummaryRepr<'_>) -> Vec<[u8; FINGERPRINT_LEN], SUMMARY_MAX_FINGERPRINTS> {
    let mut v: Vec<[u8; FINGERPRINT_LEN], SUMMARY_MAX_FINGERPRINTS> =
        summary.iter().take(SUMMARY_MAX_FINGERPRINTS).collect();
    v.sort_unstable();
    v
}

impl<const S: usize, const L: usize, const D: usize, const LINKS: usize, const Q: usize, const R: usize>
    Router<S, L, D, LINKS, Q, R>
{
    /// An empty router. `const`, so it can live in a `static`.
    pub const fn new(config: Config) -> Self {
        // Deferred items name their link in a byte.
        const { assert!(LINKS <= 256, "at most 256 links") };
        Router {
            config,
            small: Pool::new(),
            large: Pool::new(),
            seen: SeenTable::new(),
            seen_hand: 0,
            used: [0; 2],
            own: [0; 2],
            hint: [0; 2],
            links: [const { None }; LINKS],
            deferred: Vec::new(),
            defer_salt: 0,
            reassembly: Reassembly::new(),
            events: Deque::new(),
            seq: 0,
            rr: 0,
            next_sweep: Instant::FAR_FUTURE,
            last_sweep: Instant::ZERO,
            link_ups: (Instant::ZERO, 0),
            cookie_key: [0; 16],
            stranger_answers: (Instant::ZERO, 0),
            stats: Stats {
                frames_in: 0,
                malformed: 0,
                bad_id: 0,
                duplicates: 0,
                rate_limited: 0,
                receipts_valid: 0,
                receipts_refused: 0,
                evictions: 0,
                frames_out: 0,
                bytes_out: 0,
                amplification_blocked: 0,
                suppressed: 0,
                shortened: 0,
                stranger_answers: 0,
                stranger_dropped: 0,
                stranger_links: 0,
                events_dropped: 0,
            },
        }
    }

    /// Check the router's internal consistency (for tests and fuzzing; it
    /// walks every table): slot counters match the slots, every held slot
    /// is indexed by its seen entry and the other way round.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        for (ci, metas) in [&self.small.meta[..], &self.large.meta[..]].into_iter().enumerate() {
            let used = metas.iter().flatten().count();
            let own = metas.iter().flatten().filter(|m| m.origin == Origin::Own).count();
            if self.used.get(ci) != Some(&used) || self.own.get(ci) != Some(&own) {
                return Err("slot counters out of step");
            }
            for (i, m) in metas.iter().enumerate() {
                let Some(m) = m else { continue };
                let class = if ci == 0 { SizeClass::Small } else { SizeClass::Large };
                let want = SeenState::Held(Slot { class, index: i as u16 });
                if self.seen.get(&m.id).map(|s| s.state) != Some(want) {
                    return Err("stored message without its seen entry");
                }
            }
        }
        for (id, s) in self.seen.iter() {
            if let SeenState::Held(slot) = s.state
                && self.meta(slot).map(|m| m.id) != Some(id)
            {
                return Err("seen entry points at a slot holding something else");
            }
        }
        if self.seen.len() > D {
            return Err("seen table over capacity");
        }
        let orders = [
            (&self.small.meta[..], &self.small.prev[..], &self.small.next[..], self.small.head),
            (&self.large.meta[..], &self.large.prev[..], &self.large.next[..], self.large.head),
        ];
        for (ci, (metas, prev, next, head)) in orders.into_iter().enumerate() {
            // The arrival-order list holds exactly the occupied slots, with
            // consistent back links (and increasing `seq`, wrapping aside).
            let (mut i, mut back, mut n, mut last_seq) = (head, NIL, 0usize, None);
            while let Some(m) = metas.get(usize::from(i)) {
                let Some(m) = m else { return Err("order list holds a free slot") };
                let wrapped = last_seq.is_some_and(|s: u32| m.seq.wrapping_sub(s) > u32::MAX / 2);
                if prev.get(usize::from(i)) != Some(&back) || wrapped || n > metas.len() {
                    return Err("order list out of order");
                }
                (back, last_seq, n) = (i, Some(m.seq), n.saturating_add(1));
                i = next.get(usize::from(i)).copied().unwrap_or(NIL);
            }
            if self.used.get(ci) != Some(&n) {
                return Err("order list misses occupied slots");
            }
        }
        Ok(())
    }

    /// Entries in the seen table.
    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    /// Partial frames in reassembly.
    pub fn reassembling(&self) -> usize {
        self.reassembly.len()
    }

    /// Whether a message is held.
    pub fn holds(&self, id: &MessageId) -> bool {
        matches!(self.seen.get(id), Some(Seen { state: SeenState::Held(_), .. }))
    }

    /// The bytes of a held message (as stored: hop and lifetime fields as
    /// received).
    pub fn message_bytes(&self, id: &MessageId) -> Option<&[u8]> {
        match self.seen.get(id)?.state {
            SeenState::Held(slot) => self.slot_bytes(slot),
            _ => None,
        }
    }

    /// Links currently up, with their caps and whether validated.
    pub fn links(&self) -> impl Iterator<Item = LinkInfo> + '_ {
        self.links.iter().flatten().map(|l| LinkInfo { id: l.id, caps: l.caps, validated: l.validated, pull: l.pull })
    }

    fn slot_bytes(&self, slot: Slot) -> Option<&[u8]> {
        let i = usize::from(slot.index);
        match slot.class {
            SizeClass::Small => self.small.data.get(i).map(|d| &d[..]),
            SizeClass::Large => self.large.data.get(i).map(|d| &d[..]),
        }
    }

    fn meta(&self, slot: Slot) -> Option<&Meta> {
        let i = usize::from(slot.index);
        match slot.class {
            SizeClass::Small => self.small.meta.get(i)?.as_ref(),
            SizeClass::Large => self.large.meta.get(i)?.as_ref(),
        }
    }

    fn meta_mut(&mut self, slot: Slot) -> Option<&mut Meta> {
        let i = usize::from(slot.index);
        match slot.class {
            SizeClass::Small => self.small.meta.get_mut(i)?.as_mut(),
            SizeClass::Large => self.large.meta.get_mut(i)?.as_mut(),
        }
    }

    fn link_index(&self, link: LinkId) -> Option<usize> {
        self.links.iter().position(|l| l.as_ref().is_some_and(|l| l.id == link))
    }

    fn class_index(class: SizeClass) -> usize {
        match class {
            SizeClass::Small => 0,
            SizeClass::Large => 1,
        }
    }

    // ----- links -------------------------------------------------------

    /// Cookies are valid in the epoch they were made and the next one:
    /// 10 to 20 s, many round trips even on a slow link.
    const COOKIE_EPOCH_MS: u64 = 10_000;

    fn cookie_epoch(now: Instant) -> u32 {
        u32::try_from(now.millis() / Self::COOKIE_EPOCH_MS).unwrap_or(u32::MAX)
    }

    /// A new link in a free slot, greeted with a hello unless broadcast.
    fn new_link(&mut self, now: Instant, rng: Rng<'_>, link: LinkId, caps: LinkCaps) -> Option<usize> {
        self.seed(&mut *rng);
        if self.link_index(link).is_some() {
            self.handle_link_down(now, link);
        }
        if now.saturating_since(self.link_ups.0) >= Duration::from_secs(1) {
            self.link_ups = (now, 0);
        }
        if self.link_ups.1 >= self.config.link_ups_per_sec {
            return None;
        }
        let free = self.links.iter().position(Option::is_none)?;
        self.link_ups.1 = self.link_ups.1.saturating_add(1);
        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        if self.defer_salt == 0 {
            self.defer_salt = rng.next_u32() | 1;
        }
        let caps = LinkCaps { mtu: caps.mtu.max(crate::wire::MIN_MTU as u16), ..caps };
        let state = Link {
            id: link,
            caps,
            nonce,
            peer_nonce: None,
            validated: caps.broadcast,
            salt: [0; 16],
            rx_bytes: 0,
            tx_unvalidated: 0,
            hello_due: (!caps.broadcast).then_some(now),
            hello_left: self.config.hello_retries.saturating_add(1),
            hello_backoff: self.config.hello_retry,
            hello_reply: false,
            summary_cursor: None,
            summary_seq: 0,
            summaries_in: 0,
            round_at: Instant::ZERO,
            next_resync: Instant::FAR_FUTURE,
            sync_cursor: None,
            queue: Deque::new(),
            held: [0; 2],
            seen: 0,
            tokens: self.config.link_burst,
            refill_at: now,
            far: Bucket { tokens: self.config.far_burst, at: now },
            tx: Vec::new(),
            seg: None,
            next_frag: 0,
            pull: false,
        };
        if let Some(s) = self.links.get_mut(free) {
            *s = Some(state);
        }
        let bit = !(1u32 << (free & 31));
        for m in self.small.meta.iter_mut().flatten() {
            m.peer_has &= bit;
        }
        for m in self.large.meta.iter_mut().flatten() {
            m.peer_has &= bit;
        }
        Some(free)
    }

    fn refill(link: &mut Link<Q>, config: &Config, now: Instant) {
        let elapsed = now.saturating_since(link.refill_at).as_millis();
        let add = elapsed.saturating_mul(u64::from(config.link_rate)) / 1000;
        if add > 0 {
            let t = u64::from(link.tokens).saturating_add(add).min(u64::from(config.link_burst));
            link.tokens = u32::try_from(t).unwrap_or(u32::MAX);
            link.refill_at = now;
        }
    }

    // ----- input ---------------------------------------------------------

    /// Handle one datagram received on `link`. Never panics; any bytes are
    /// fine (malformed ones are counted and refused with a typed error).
    pub fn route_frame<'a>(
        &'a mut self,
        now: Instant,
        link: LinkId,
        bytes: &'a [u8],
    ) -> Result<Outcome<'a>, FrameError> {
        self.stats.frames_in = self.stats.frames_in.saturating_add(1);
        let li = self.link_index(link).ok_or(FrameError::UnknownLink)?;
        let config = self.config;
        let Some(l) = self.links.get_mut(li).and_then(Option::as_mut) else {
            return Err(FrameError::UnknownLink);
        };
        Self::refill(l, &config, now);
        if l.tokens == 0 {
            self.stats.rate_limited = self.stats.rate_limited.saturating_add(1);
            return Err(FrameError::RateLimited);
        }
        l.tokens = l.tokens.saturating_sub(1);
        l.rx_bytes = l.rx_bytes.saturating_add(bytes.len() as u64);

        let frame = match Frame::parse(bytes) {
            Ok(f) => f,
            Err(e) => {
                self.stats.malformed = self.stats.malformed.saturating_add(1);
                return Err(e.into());
            }
        };
        if let Frame::Segment(seg) = frame {
            return self.handle_segment(now, li, link, seg);
        }
        self.handle_whole(now, li, frame)
    }

    fn handle_segment<'a>(
        &'a mut self,
        now: Instant,
        li: usize,
        link: LinkId,
        seg: SegmentRepr<'_>,
    ) -> Result<Outcome<'a>, FrameError> {
        let len = match self.reassembly.add(now, link, &seg) {
            Ok(Some(len)) => len,
            Ok(None) => return Ok(Outcome::Partial),
            Err(e) => {
                self.stats.malformed = self.stats.malformed.saturating_add(1);
                return Err(FrameError::Segment(e));
            }
        };
        // The reassembled frame lives in `self.reassembly`; copy it out so
        // that processing it may touch the rest of the router.
        let mut copy = [0u8; MAX_FRAME_LEN];
        let frame = self.reassembly.frame(len);
        let bytes = copy.get_mut(..frame.len()).unwrap_or(&mut []);
        bytes.copy_from_slice(frame);
        let bytes = &*bytes;
        let frame = match Frame::parse(bytes) {
            Ok(Frame::Segment(_)) => return Err(FrameError::Unexpected),
            Ok(f) => f,
            Err(e) => {
                self.stats.malformed = self.stats.malformed.saturating_add(1);
                return Err(e.into());
            }
        };
        let outcome = self.handle_whole(now, li, frame).map(|o| match o {
            Outcome::NewMessage { id, stored, .. } => (Some((id, stored)), Outcome::Partial),
            Outcome::Duplicate(id) => (None, Outcome::Duplicate(id)),
            Outcome::Receipt(id) => (None, Outcome::Receipt(id)),
            Outcome::Control => (None, Outcome::Control),
            Outcome::Partial => (None, Outcome::Partial),
        });
        copy.zeroize();
        match outcome? {
            (Some((id, stored)), _) => {
                // Hand the bytes out from the store or the reassembly buffer
                // (wiped at the next frame or timer).
                let frame = match self.seen.get(&id).map(|s| s.state) {
                    Some(SeenState::Held(slot)) => self.slot_bytes(slot).unwrap_or(&[]),
                    _ => self.reassembly.frame(len),
                };
                Ok(Outcome::NewMessage { id, stored, frame })
            }
            (None, o) => Ok(o),
        }
    }

    fn handle_whole<'a>(&mut self, now: Instant, li: usize, frame: Frame<'a>) -> Result<Outcome<'a>, FrameError> {
        match frame {
            Frame::Message(m) => self.handle_message(now, li, m),
            Frame::Receipt(r) => self.handle_receipt(now, Some(li), r).map(Outcome::Receipt),
            Frame::Hello(h) => self.handle_hello(now, li, h),
            Frame::Summary(s) => self.handle_summary(now, li, s),
            Frame::Segment(_) => Err(FrameError::Unexpected),
        }
    }

    fn handle_message<'a>(
        &mut self,
        now: Instant,
        li: usize,
        m: MessageFrame<&'a [u8]>,
    ) -> Result<Outcome<'a>, FrameError> {
        let id = m.id();
        let bit = 1u32 << (li & 31);
        // A message taken again keeps the level of its first copy: the
        // nodes that got it from this one have theirs from it.
        let mut retaken_level = 0;
        if let Some(seen) = self.seen.get(&id).copied()
            && seen.state == SeenState::Evicted
        {
            // Taken again as if new (its id is checked below like any other).
            retaken_level = seen.level;
            self.uncharge_seen(seen.origin);
            self.seen.swap_remove(&id);
        }
        if let Some(seen) = self.seen.get(&id) {
            // Already known: nothing new can come of it, so the id is not
            // even hashed (junk that borrows a live id is dropped here too).
            match seen.state {
                SeenState::Held(slot) => {
                    if let Some(meta) = self.meta_mut(slot) {
                        meta.peer_has |= bit;
                    }
                }
                // The peer does not know it was delivered: tell it (one
                // 33-byte receipt for a 240+ byte frame: no amplification).
                // Not on a broadcast link: there a late copy is a neighbour's
                // rebroadcast that was already on its way, and every
                // neighbour holding the tombstone would answer it.
                SeenState::Delivered { secret, .. } => {
                    let level = seen.level;
                    if let Some(l) = self.links.get_mut(li).and_then(Option::as_mut)
                        && !l.caps.broadcast
                    {
                        let _ = l.queue.push_back(Item::Receipt { id, secret, level, own: false });
                    }
                }
                SeenState::Gone | SeenState::Evicted => {}
            }
            if self.links.get(li).and_then(Option::as_ref).is_some_and(|l| l.caps.broadcast) {
                self.heard_again(li, id, None);
            }
            self.stats.duplicates = self.stats.duplicates.saturating_add(1);
            return Ok(Outcome::Duplicate(id));
        }
        if m.check_id().is_err() {
            self.stats.bad_id = self.stats.bad_id.saturating_add(1);
            return Err(FrameError::Wire(WireError::BadId));
        }
        let Some(link) = self.links.get(li).and_then(Option::as_ref) else {
            return Err(FrameError::UnknownLink);
        };
        let origin = Origin::Link(link.id);
        let broadcast = link.caps.broadcast;
        let lifetime = m.lifetime_secs().min(self.config.max_lifetime_secs);
        let expires = now.saturating_add(Duration::from_secs(u64::from(lifetime)));
        // A budget above what any sender draws was raised on the way: cap it.
        let mut hops = m.hops().min(crate::wire::MAX_HOPS_DEFAULT);
        let seen = Seen { commit: m.commit(), expires, origin, state: SeenState::Gone, level: hops.max(retaken_level) };
        self.insert_seen(id, seen)?;
        let class = m.class();
        // Beyond its rate of far-travelling messages, a link's new messages
        // go on with a short budget: a flood stays local (SPEC §6.5).
        let (far_rate, far_burst) = (self.config.far_rate, self.config.far_burst);
        let near = if broadcast { self.config.near_hops_broadcast } else { self.config.near_hops };
        if hops > near
            && let Some(l) = self.links.get_mut(li).and_then(Option::as_mut)
            && !l.far.take(now, far_rate, far_burst)
        {
            hops = near;
            self.stats.shortened = self.stats.shortened.saturating_add(1);
        }
        let forward = hops > 0 && lifetime > 0;
        let stored = if forward {
            let meta = Meta {
                id,
                hops: hops.saturating_sub(1),
                forward,
                lifetime_secs: lifetime,
                arrived: now,
                origin,
                seq: 0,
                sent: false,
                peer_has: bit,
            };
            let outcome = self.store(class, meta, m.as_bytes());
            if matches!(outcome, StoreOutcome::Stored | StoreOutcome::Evicted(_)) {
                self.enqueue_all(now, Item::Message(id), Some(li), class);
            }
            outcome
        } else {
            StoreOutcome::NotCarried
        };
        Ok(Outcome::NewMessage { id, stored, frame: m.into_inner() })
    }

    /// Something will expire at `at`: sweep then (but at most once a
    /// second), not on a fixed tick, so an idle node sleeps until its
    /// earliest deadline.
    fn schedule_sweep(&mut self, at: Instant) {
        let t = at.max(self.last_sweep.saturating_add(SWEEP));
        if t < self.next_sweep {
            self.next_sweep = t;
        }
    }

    fn insert_seen(&mut self, id: MessageId, seen: Seen) -> Result<(), FrameError> {
        self.schedule_sweep(seen.expires);
        // Keep the open-addressed map at most 3/4 full: its robin-hood probe
        // lengths blow up as the load factor nears 1.
        if self.seen.len() >= D.saturating_sub(D / 4) {
            self.evict_seen()?;
        }
        if let Origin::Link(l) = seen.origin
            && let Some(link) = self.link_index(l).and_then(|i| self.links.get_mut(i)).and_then(Option::as_mut)
        {
            link.seen = link.seen.saturating_add(1);
        }
        self.seen.insert(id, seen).map(|_| ()).map_err(|_| FrameError::Exhausted)
    }

    /// Free one seen entry that is not holding a store slot: expired ones
    /// first, else one from the link that has the most (clock hand).
    fn evict_seen(&mut self) -> Result<(), FrameError> {
        // The link charged with the most entries, if any link is charged at
        // all (when none is, the first evictable entry will do).
        let heaviest = self.links.iter().flatten().filter(|l| l.seen > 0).max_by_key(|l| l.seen).map(|l| l.id);
        let len = self.seen.len();
        let mut fallback: Option<(usize, usize)> = None;
        for step in 0..len {
            if fallback.is_some_and(|(at, _)| step.saturating_sub(at) > EVICT_SCAN) {
                break;
            }
            let i = self.seen_hand.wrapping_add(step).checked_rem(len).unwrap_or(0);
            let Some((_, s)) = self.seen.get_index(i) else { continue };
            if matches!(s.state, SeenState::Held(_)) {
                continue;
            }
            if heaviest.is_none() || Some(s.origin) == heaviest.map(Origin::Link) {
                self.seen_hand = i;
                return self.remove_seen_at(i);
            }
            if fallback.is_none() {
                fallback = Some((step, i));
            }
        }
        let fallback = fallback.map(|(_, i)| i);
        match fallback {
            Some(i) => {
                self.seen_hand = i;
                self.remove_seen_at(i)
            }
            None => Err(FrameError::Exhausted),
        }
    }

    fn remove_seen_at(&mut self, i: usize) -> Result<(), FrameError> {
        let Some((id, seen)) = self.seen.get_index(i).map(|(k, v)| (k, *v)) else {
            return Err(FrameError::Exhausted);
        };
        self.uncharge_seen(seen.origin);
        self.seen.swap_remove(&id);
        Ok(())
    }

    fn uncharge_seen(&mut self, origin: Origin) {
        if let Origin::Link(l) = origin
            && let Some(link) = self.link_index(l).and_then(|i| self.links.get_mut(i)).and_then(Option::as_mut)
        {
            link.seen = link.seen.saturating_sub(1);
        }
    }

    /// Slots of `class` this router may use: the type's count, or less if
    /// the configuration says so (at least one).
    fn slots(&self, class: SizeClass) -> usize {
        match class {
            SizeClass::Small => S.min(self.config.store_slots.0.max(1)),
            SizeClass::Large => L.min(self.config.store_slots.1.max(1)),
        }
    }

    /// Put a message in the store (SPEC §6.2) and point its seen entry at it.
    fn store(&mut self, class: SizeClass, mut meta: Meta, bytes: &[u8]) -> StoreOutcome {
        let own = meta.origin == Origin::Own;
        let cap = self.slots(class);
        let metas: &[Option<Meta>] = match class {
            SizeClass::Small => &self.small.meta,
            SizeClass::Large => &self.large.meta,
        };
        let ci = Self::class_index(class);
        let own_count = self.own.get(ci).copied().unwrap_or(0);
        if own && own_count >= self.config.own_quota.clamp(1, cap.max(1)) {
            return StoreOutcome::Full;
        }
        let mut evicted = None;
        // A free slot if there is one (searched from where the last one was
        // found, so a store that is not full finds one in a few steps); else
        // evict a relayed message (never an own one): the oldest from the
        // origin holding the most slots.
        let hint = self.hint.get(ci).copied().unwrap_or(0);
        let free = if self.used.get(ci).copied().unwrap_or(0) < cap {
            (0..cap)
                .map(|k| hint.wrapping_add(k).checked_rem(cap).unwrap_or(0))
                .find(|&i| metas.get(i).is_some_and(Option::is_none))
        } else {
            None
        };
        let index = match free {
            Some(i) => i,
            None => match self.victim(class, if own { None } else { meta.origin_link() }) {
                Some((i, id)) => {
                    evicted = Some(id);
                    i
                }
                None => return StoreOutcome::Full,
            },
        };
        if let Some(id) = evicted {
            self.free_slot(Slot { class, index: index as u16 }, id);
            if let Some(s) = self.seen.get_mut(&id)
                && s.state == SeenState::Gone
            {
                s.state = SeenState::Evicted;
            }
            self.stats.evictions = self.stats.evictions.saturating_add(1);
        }
        self.seq = self.seq.wrapping_add(1);
        meta.seq = self.seq;
        let slot = Slot { class, index: index as u16 };
        if let Some(u) = self.used.get_mut(ci) {
            *u = u.saturating_add(1);
        }
        if own && let Some(o) = self.own.get_mut(ci) {
            *o = o.saturating_add(1);
        }
        if let Some(h) = self.hint.get_mut(ci) {
            *h = index.saturating_add(1);
        }
        match class {
            SizeClass::Small => {
                if let (Some(m), Some(d)) = (self.small.meta.get_mut(index), self.small.data.get_mut(index)) {
                    *m = Some(meta);
                    d.copy_from_slice(bytes);
                    self.small.link_back(index);
                }
            }
            SizeClass::Large => {
                if let (Some(m), Some(d)) = (self.large.meta.get_mut(index), self.large.data.get_mut(index)) {
                    *m = Some(meta);
                    d.copy_from_slice(bytes);
                    self.large.link_back(index);
                }
            }
        }
        if let Some(seen) = self.seen.get_mut(&meta.id) {
            seen.state = SeenState::Held(slot);
        }
        if let Some(l) = meta.origin_link()
            && let Some(link) = self.link_index(l).and_then(|i| self.links.get_mut(i)).and_then(Option::as_mut)
            && let Some(h) = link.held.get_mut(Self::class_index(class))
        {
            *h = h.saturating_add(1);
        }
        match evicted {
            Some(id) => StoreOutcome::Evicted(id),
            None => StoreOutcome::Stored,
        }
    }

    /// The relayed message to evict for a newcomer from `from`: the oldest
    /// of the origin holding the most slots of this class (expired first).
    /// Own messages are never chosen.
    fn victim(&self, class: SizeClass, from: Option<LinkId>) -> Option<(usize, MessageId)> {
        // Count per origin among relayed entries (origins are links up or
        // links gone; count gone links together as "nobody").
        let ci = Self::class_index(class);
        let mut heaviest: Option<(Option<LinkId>, u32)> = None;
        for l in self.links.iter().flatten() {
            let n = l.held.get(ci).copied().unwrap_or(0);
            if heaviest.is_none_or(|(_, h)| n > h || (n == h && Some(l.id) == from)) {
                heaviest = Some((Some(l.id), n));
            }
        }
        let linked: u32 = self.links.iter().flatten().map(|l| l.held.get(ci).copied().unwrap_or(0)).sum();
        let relayed =
            self.used.get(ci).copied().unwrap_or(0).saturating_sub(self.own.get(ci).copied().unwrap_or(0)) as u32;
        let orphans = relayed.saturating_sub(linked);
        let target = match heaviest {
            Some((id, n)) if n >= orphans => id,
            _ => None,
        };
        let pick = |want: Option<Option<LinkId>>| {
            let ok = |m: &Meta| {
                m.origin != Origin::Own
                    && match want {
                        None => true,
                        Some(None) => m.origin_link().is_none_or(|l| self.link_index(l).is_none()),
                        Some(Some(l)) => m.origin_link() == Some(l),
                    }
            };
            // The order list is arrival order: the first match is the oldest.
            match class {
                SizeClass::Small => self.small.oldest(ok),
                SizeClass::Large => self.large.oldest(ok),
            }
        };
        pick(Some(target)).or_else(|| pick(None))
    }

    /// Release a slot (the seen entry stays, as `Gone`).
    fn free_slot(&mut self, slot: Slot, id: MessageId) {
        let meta = self.meta(slot).copied();
        let i = usize::from(slot.index);
        let ci = Self::class_index(slot.class);
        if let Some(m) = meta {
            if let Some(u) = self.used.get_mut(ci) {
                *u = u.saturating_sub(1);
            }
            if m.origin == Origin::Own
                && let Some(o) = self.own.get_mut(ci)
            {
                *o = o.saturating_sub(1);
            }
        }
        // Delivered, expired or evicted: the ciphertext goes with the slot
        // (SPEC §8: nothing of what a relay carried stays in its memory).
        // A plain memset: the slot stays part of the router, so the compiler
        // cannot drop the write (only writes to memory about to die can
        // go; those use `zeroize`).
        match slot.class {
            SizeClass::Small => {
                if let Some(m) = self.small.meta.get_mut(i)
                    && m.take().is_some()
                {
                    self.small.unlink(i);
                }
                if let Some(d) = self.small.data.get_mut(i) {
                    d.fill(0);
                }
            }
            SizeClass::Large => {
                if let Some(m) = self.large.meta.get_mut(i)
                    && m.take().is_some()
                {
                    self.large.unlink(i);
                }
                if let Some(d) = self.large.data.get_mut(i) {
                    d.fill(0);
                }
            }
        }
        if let Some(seen) = self.seen.get_mut(&id)
            && seen.state == SeenState::Held(slot)
        {
            seen.state = SeenState::Gone;
        }
        if let Some(meta) = meta {
            if meta.origin == Origin::Own && !meta.sent {
                // Only reachable through expiry or delivery; evicting own
                // messages is not possible.
            }
            if let Some(l) = meta.origin_link()
                && let Some(link) = self.link_index(l).and_then(|i| self.links.get_mut(i)).and_then(Option::as_mut)
                && let Some(h) = link.held.get_mut(Self::class_index(slot.class))
            {
                *h = h.saturating_sub(1);
            }
        }
    }

    /// Queue `item` on every link but the one it came from (a broadcast
    /// link gets it back: the medium reaches others). Relayed items on a
    /// broadcast link wait first (SPEC §6.5); own ones (`from` is `None`)
    /// go at once.
    fn enqueue_all(&mut self, now: Instant, item: Item, from: Option<usize>, class: SizeClass) {
        let defer = self.config.broadcast_copies > 0 && from.is_some();
        let window = self.config.broadcast_defer.as_millis();
        let id = item.id();
        let spread = u32::from_le_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]) ^ self.defer_salt;
        let due = now.saturating_add(Duration::from_millis(
            u64::from(spread).checked_rem(window.saturating_add(1)).unwrap_or(0),
        ));
        for (i, l) in self.links.iter_mut().enumerate() {
            let Some(l) = l.as_mut() else { continue };
            if Some(i) == from && !l.caps.broadcast {
                continue;
            }
            if matches!(item, Item::Message(_)) && class > l.caps.max_class {
                continue;
            }
            if defer && l.caps.broadcast {
                let heard = u8::from(Some(i) == from);
                let d = Deferred { due, link: i as u8, heard, item };
                if self.deferred.push(d).is_ok() {
                    continue;
                }
            }
            if from.is_none() && l.queue.is_full() {
                Self::make_room(&self.seen, l);
            }
            let _ = l.queue.push_back(item);
        }
    }

    /// A full queue drops a relayed item for the link (on a point-to-point
    /// link the next summary round offers it again); this node's own
    /// message or receipt takes the place of the newest relayed one instead:
    /// on a broadcast radio nothing would offer it again, and a busy
    /// neighbourhood must not silence the node itself. A queue of nothing
    /// but own items stays as it is (and the new one is dropped).
    fn make_room(seen: &SeenTable<D>, l: &mut Link<Q>) {
        let own = |item: &Item| match item {
            Item::Message(id) => seen.get(id).is_some_and(|s| s.origin == Origin::Own),
            Item::Receipt { own, .. } => *own,
        };
        let Some(victim) = l.queue.iter().rposition(|item| !own(item)) else { return };
        let mut kept: Deque<Item, Q> = Deque::new();
        for (i, item) in l.queue.iter().enumerate() {
            if i != victim {
                let _ = kept.push_back(*item);
            }
        }
        l.queue = kept;
    }

    /// Another copy of a message (`receipt` is `None`) or of its receipt
    /// (at that level) came in on broadcast link `li`. A receipt's copy
    /// counts only if it came from this node's level or the next one up:
    /// one from below has yet to pass here. A message's copy, short of the
    /// count that cancels it, also puts the rebroadcast back by one more
    /// hold-back window: a node in a well-covered spot waits longer and is
    /// likelier to hear the copy that makes it keep quiet, while one at the
    /// edge of the coverage (few copies heard) goes first (SPEC §6.5). An
    /// item settled by enough copies leaves the held-back list at once.
    fn heard_again(&mut self, li: usize, id: MessageId, receipt: Option<u8>) {
        let window = self.config.broadcast_defer;
        let mut i = 0;
        while let Some(d) = self.deferred.get_mut(i) {
            i = i.saturating_add(1);
            if usize::from(d.link) != li || d.item.id() != id {
                continue;
            }
            let counts = match (d.item, receipt) {
                (Item::Message(_), None) => true,
                // Only from this level or the next one up: a copy claiming
                // far more is no honest neighbour's, and must not silence
                // a whole neighbourhood.
                (Item::Receipt { level, .. }, Some(heard)) => heard >= level && heard <= level.saturating_add(1),
                _ => false,
            };
            if !counts {
                continue;
            }
            d.heard = d.heard.saturating_add(1);
            let enough = self.config.copies_for(&d.item);
            if enough > 0 && d.heard >= enough {
                // Settled: it will not be sent. Free its place at once (a
                // neighbour repeating copies cannot keep it here).
                self.deferred.swap_remove(i.saturating_sub(1));
                i = i.saturating_sub(1);
                self.stats.suppressed = self.stats.suppressed.saturating_add(1);
            } else if receipt.is_none() {
                d.due = d.due.saturating_add(window);
            }
        }
    }

    /// Deferred items whose time has come: queued, or dropped if enough
    /// copies were heard.
    fn release_deferred(&mut self, now: Instant) {
        let mut i = 0;
        while let Some(d) = self.deferred.get(i).copied() {
            if d.due > now {
                i = i.saturating_add(1);
                continue;
            }
            self.deferred.swap_remove(i);
            let enough = self.config.copies_for(&d.item);
            if enough > 0 && d.heard >= enough {
                self.stats.suppressed = self.stats.suppressed.saturating_add(1);
                continue;
            }
            if let Some(l) = self.links.get_mut(usize::from(d.link)).and_then(Option::as_mut) {
                let _ = l.queue.push_back(d.item);
            }
        }
    }

    fn handle_receipt(&mut self, now: Instant, li: Option<usize>, r: ReceiptRepr) -> Result<MessageId, FrameError> {
        let Some(seen) = self.seen.get(&r.id).copied() else {
            self.stats.receipts_refused = self.stats.receipts_refused.saturating_add(1);
            return Err(FrameError::UnverifiedReceipt);
        };
        // No honest level is above the hop cap.
        let level = r.level.min(crate::wire::MAX_HOPS_DEFAULT);
        // Receipts climb: passed on, once, by a node nearer the sender than
        // the one it came from (its first copy of the message arrived with
        // more hops left). Along the way the message came there always is
        // one, up to the sender; everyone else keeps quiet, and the level
        // rises at every step, so a receipt cannot loop (SPEC §5). The
        // sender is the end of the climb.
        let climbs = li.is_some() && seen.origin != Origin::Own && seen.level > level;
        if let SeenState::Delivered { secret, passed } = seen.state {
            if let Some(li) = li
                && self.links.get(li).and_then(Option::as_ref).is_some_and(|l| l.caps.broadcast)
            {
                self.heard_again(li, r.id, Some(level));
            }
            // The first copy heard came from above (a neighbour nearer the
            // sender, or a copy whose level was raised on the way): a copy
            // from below still has this node pass it on.
            if climbs && !passed && r.secret == secret {
                if let Some(s) = self.seen.get_mut(&r.id) {
                    s.state = SeenState::Delivered { secret, passed: true };
                }
                let item = Item::Receipt { id: r.id, secret, level: seen.level, own: false };
                self.enqueue_all(now, item, li, SizeClass::Small);
            }
            self.stats.duplicates = self.stats.duplicates.saturating_add(1);
            return Ok(r.id);
        }
        if !r.matches(&seen.commit) {
            self.stats.receipts_refused = self.stats.receipts_refused.saturating_add(1);
            return Err(FrameError::UnverifiedReceipt);
        }
        self.stats.receipts_valid = self.stats.receipts_valid.saturating_add(1);
        if let SeenState::Held(slot) = seen.state {
            self.free_slot(slot, r.id);
        }
        // Keep the tombstone until the message's lifetime would have ended
        // (at least long enough to pass the receipt on).
        let expires = seen.expires.max(now.saturating_add(Duration::from_secs(TOMBSTONE_MIN_SECS)));
        let pass = li.is_none() || climbs;
        if let Some(s) = self.seen.get_mut(&r.id) {
            s.state = SeenState::Delivered { secret: r.secret, passed: pass };
            s.expires = expires;
        }
        self.schedule_sweep(expires);
        if seen.origin == Origin::Own {
            self.push_event(r.id, DeliveryState::Delivered);
        }
        if pass {
            let item = Item::Receipt { id: r.id, secret: r.secret, level: seen.level, own: li.is_none() };
            self.enqueue_all(now, item, li, SizeClass::Small);
        }
        Ok(r.id)
    }

    fn handle_hello<'a>(&mut self, now: Instant, li: usize, h: HelloRepr) -> Result<Outcome<'a>, FrameError> {
        let resync = self.config.resync;
        let Some(l) = self.links.get_mut(li).and_then(Option::as_mut) else {
            return Err(FrameError::UnknownLink);
        };
        if l.caps.broadcast {
            return Ok(Outcome::Control);
        }
        let fresh_peer = l.peer_nonce != Some(h.nonce);
        if fresh_peer {
            // A new nonce from the peer (first hello, or it restarted the
            // link): start the summary exchange afresh.
            l.peer_nonce = Some(h.nonce);
            l.salt = hash::link_salt(&l.nonce, &h.nonce);
            l.summaries_in = 0;
            l.sync_cursor = None;
            l.summary_cursor = None;
            l.summary_seq = 0;
            // Whatever we believed this peer had may be gone with its old
            // self (a restart keeps no store): its summary will tell.
            let bit = !(1u32 << (li & 31));
            for m in self.small.meta.iter_mut().chain(self.large.meta.iter_mut()).flatten() {
                m.peer_has &= bit;
            }
        }
        let Some(l) = self.links.get_mut(li).and_then(Option::as_mut) else {
            return Err(FrameError::UnknownLink);
        };
        if h.echo != l.nonce || fresh_peer {
            // The peer has not heard us yet, or has a nonce we have not
            // echoed: answer (within the amplification limit, a hello for a
            // hello). A hello that echoes us and that we already echoed ends
            // the exchange.
            l.hello_reply = true;
        }
        if h.echo == l.nonce && !l.validated {
            l.validated = true;
            l.hello_due = None;
            l.next_resync = now.saturating_add(resync);
        }
        if l.validated && fresh_peer || (l.validated && l.summary_cursor.is_none() && l.summary_seq == 0) {
            l.summary_cursor = Some(0);
        }
        let _ = now;
        Ok(Outcome::Control)
    }

    fn handle_summary<'a>(&mut self, now: Instant, li: usize, s: SummaryRepr<'_>) -> Result<Outcome<'a>, FrameError> {
        let max = self.config.max_summary_frames;
        let min_round = Duration::from_millis(self.config.resync.as_millis() / 2);
        let Some(l) = self.links.get_mut(li).and_then(Option::as_mut) else {
            return Err(FrameError::UnknownLink);
        };
        if !l.validated || l.peer_nonce.is_none() || l.caps.broadcast {
            return Err(FrameError::Unexpected);
        }
        if s.seq == 0 {
            // A new round from the peer. At most one per half resync
            // interval: each costs us a walk of the store.
            if l.summaries_in > 0 && now.saturating_since(l.round_at) < min_round {
                return Err(FrameError::Unexpected);
            }
            l.summaries_in = 0;
            l.round_at = now;
            l.sync_cursor = None;
            // Forget what we believed the peer has; its summary says.
            let bit = !(1u32 << (li & 31));
            for m in self.small.meta.iter_mut().chain(self.large.meta.iter_mut()).flatten() {
                m.peer_has &= bit;
            }
        }
        let Some(l) = self.links.get_mut(li).and_then(Option::as_mut) else {
            return Err(FrameError::UnknownLink);
        };
        if l.summaries_in >= max || s.seq != l.summaries_in {
            return Err(FrameError::Unexpected);
        }
        l.summaries_in = l.summaries_in.saturating_add(1);
        let salt = l.salt;
        let last = s.last || l.summaries_in >= max;
        if last {
            l.sync_cursor = Some(0);
        }
        let fps = fp_sorted(&s);
        let bit = 1u32 << (li & 31);
        for m in self.small.meta.iter_mut().chain(self.large.meta.iter_mut()).flatten() {
            if fps.binary_search(&hash::fingerprint(&salt, &m.id.0)).is_ok() {
                m.peer_has |= bit;
            }
        }
        // The peer still carries messages we know were delivered: pass the
        // receipts on, so its copies die too.
        let Some(l) = self.links.get_mut(li).and_then(Option::as_mut) else {
            return Err(FrameError::UnknownLink);
        };
        for (id, seen) in self.seen.iter() {
            if let SeenState::Delivered { secret, .. } = seen.state
                && fps.binary_search(&hash::fingerprint(&salt, &id.0)).is_ok()
                && l.queue.push_back(Item::Receipt { id, secret, level: seen.level, own: false }).is_err()
            {
                break;
            }
        }
        Ok(Outcome::Control)
    }

    // ----- local input ---------------------------------------------------

    /// Submit one of this node's own sealed message frames. It is stored
    /// under the own-message quota and sent on every link.
    pub fn submit(&mut self, now: Instant, frame: &[u8]) -> Result<MessageId, SubmitError> {
        let m = MessageFrame::new_checked(frame).map_err(SubmitError::Wire)?;
        let id = m.check_id().map_err(SubmitError::Wire)?;
        if self.seen.contains_key(&id) {
            return Err(SubmitError::Duplicate);
        }
        let lifetime = m.lifetime_secs().min(self.config.max_lifetime_secs);
        let expires = now.saturating_add(Duration::from_secs(u64::from(lifetime)));
        let level = m.hops().min(crate::wire::MAX_HOPS_DEFAULT);
        let seen = Seen { commit: m.commit(), expires, origin: Origin::Own, state: SeenState::Gone, level };
        self.insert_seen(id, seen).map_err(|_| SubmitError::StoreFull)?;
        let meta = Meta {
            id,
            hops: m.hops(),
            forward: true,
            lifetime_secs: lifetime,
            arrived: now,
            origin: Origin::Own,
            seq: 0,
            sent: false,
            peer_has: 0,
        };
        match self.store(m.class(), meta, frame) {
            StoreOutcome::Stored | StoreOutcome::Evicted(_) => {
                self.enqueue_all(now, Item::Message(id), None, m.class());
                Ok(id)
            }
            StoreOutcome::Full | StoreOutcome::NotCarried => {
                self.seen.swap_remove(&id);
                Err(SubmitError::StoreFull)
            }
        }
    }

    /// Take back an own message that was submitted but not yet sent (a
    /// text whose later part could not be stored): its slot is wiped and it
    /// is forgotten as if never submitted; queued sends of it are skipped.
    /// Returns whether it was held.
    pub fn withdraw(&mut self, id: &MessageId) -> bool {
        let Some(seen) = self.seen.get(id).copied() else { return false };
        let SeenState::Held(slot) = seen.state else { return false };
        if seen.origin != Origin::Own || self.meta(slot).is_none_or(|m| m.sent) {
            return false;
        }
        self.free_slot(slot, *id);
        self.uncharge_seen(seen.origin);
        self.seen.swap_remove(id);
        true
    }

    /// Issue the receipt for a message this node opened (the endpoint
    /// calls this after a short random delay, so the first node to send a
    /// receipt is not obviously the recipient). The receipt acts as if it
    /// had arrived: the local copy is dropped and the receipt is sent on
    /// every link. Returns whether the id was known (it is, unless the seen
    /// table forgot it).
    pub fn emit_receipt(&mut self, now: Instant, id: MessageId, secret: [u8; RECEIPT_SECRET_LEN]) -> bool {
        // The level is filled in from the seen entry (an unknown id is refused).
        let r = ReceiptRepr { level: 0, lifetime_secs: 0, id, secret };
        self.handle_receipt(now, None, r).is_ok()
    }

    // ----- timers --------------------------------------------------------

    /// Draw this router's secret table key (SPEC §6.3) if it has none and
    /// its tables are empty; otherwise nothing. `handle_link_up` and the
    /// endpoint's `send` call it, so a node keys its tables before anything
    /// enters them; a driver that submits frames itself should call it
    /// first.
    pub fn seed(&mut self, rng: Rng<'_>) {
        self.seen.seed(rng);
    }

    fn sweep(&mut self, now: Instant) {
        // Expire stored messages.
        let mut expired: Vec<(Slot, MessageId, Origin, bool), 16> = Vec::new();
        loop {
            expired.clear();
            for (class, metas) in [(SizeClass::Small, &self.small.meta[..]), (SizeClass::Large, &self.large.meta[..])] {
                for (i, m) in metas.iter().enumerate() {
                    let Some(m) = m else { continue };
                    let end = m.arrived.saturating_add(Duration::from_secs(u64::from(m.lifetime_secs)));
                    if end <= now && expired.push((Slot { class, index: i as u16 }, m.id, m.origin, m.sent)).is_err() {
                        break;
                    }
                }
            }
            if expired.is_empty() {
                break;
            }
            for &(slot, id, origin, _) in &expired {
                self.free_slot(slot, id);
                if origin == Origin::Own {
                    self.push_event(id, DeliveryState::Expired);
                }
            }
        }
        // What is left: when does the first of it end?
        let mut next = Instant::FAR_FUTURE;
        for m in self.small.meta.iter().chain(self.large.meta.iter()).flatten() {
            next = next.min(m.arrived.saturating_add(Duration::from_secs(u64::from(m.lifetime_secs))));
        }
        // Forget seen entries past their time (never one that holds a slot).
        let mut gone: Vec<MessageId, 64> = Vec::new();
        loop {
            gone.clear();
            for (id, s) in self.seen.iter() {
                if s.expires <= now && !matches!(s.state, SeenState::Held(_)) && gone.push(id).is_err() {
                    break;
                }
            }
            if gone.is_empty() {
                break;
            }
            for id in &gone {
                if let Some(s) = self.seen.swap_remove(id) {
                    self.uncharge_seen(s.origin);
                }
            }
        }
        for s in self.seen.values() {
            if !matches!(s.state, SeenState::Held(_)) {
                next = next.min(s.expires);
            }
        }
        self.schedule_sweep(next);
    }

    /// Queue an event; one that does not fit is counted, never lost
    /// silently.
    fn push_event(&mut self, id: MessageId, state: DeliveryState) {
        if self.events.push_back((id, state)).is_err() {
            self.stats.events_dropped = self.stats.events_dropped.saturating_add(1);
        }
    }

    // ----- output --------------------------------------------------------

    /// Produce the next datagram for link `li`.
    fn transmit_on(&mut self, now: Instant, li: usize, buf: &mut [u8]) -> Option<Transmit> {
        // Continue a segmented frame first.
        if let Some(t) = self.next_segment(li, buf) {
            return Some(t);
        }
        let len = self.next_frame(now, li)?;
        let l = self.links.get_mut(li)?.as_mut()?;
        let mtu = usize::from(l.caps.mtu);
        if len <= mtu {
            let out = buf.get_mut(..len)?;
            out.copy_from_slice(l.tx.get(..len)?);
            // The frame now lives in the driver's buffer only.
            l.tx.as_mut_slice().fill(0);
            return Some(Transmit { link: l.id, len });
        }
        let (count, unit) = segment::plan(len, mtu)?;
        l.next_frag = l.next_frag.wrapping_add(1) & 0x3f;
        l.seg = Some(TxSeg { frag: l.next_frag, count, unit, next: 0, len });
        self.next_segment(li, buf)
    }

    fn next_segment(&mut self, li: usize, buf: &mut [u8]) -> Option<Transmit> {
        let l = self.links.get_mut(li)?.as_mut()?;
        let seg = l.seg.as_mut()?;
        let code = segment::length_code(seg.len)?;
        let r = segment::range(seg.len, seg.count, seg.unit, seg.next);
        let repr = SegmentRepr { frag: seg.frag | (code << 6), index: seg.next, count: seg.count, data: l.tx.get(r)? };
        let written = repr.emit(buf).ok()?;
        seg.next = seg.next.saturating_add(1);
        if seg.next >= seg.count {
            l.seg = None;
            l.tx.as_mut_slice().fill(0);
        }
        Some(Transmit { link: l.id, len: written })
    }

    /// Build the next whole frame for link `li` into its `tx` buffer.
    fn next_frame(&mut self, now: Instant, li: usize) -> Option<usize> {
        // 1. Hello: first one and retries, or a reply to the peer's hello.
        if let Some(len) = self.next_hello(now, li) {
            return Some(len);
        }
        let validated = self.links.get(li)?.as_ref()?.validated;
        if !validated {
            return None;
        }
        // 2. Summary frames of this link-up.
        if let Some(len) = self.next_summary(li) {
            return Some(len);
        }
        // 3. Queued receipts and messages.
        loop {
            let item = self.links.get_mut(li)?.as_mut()?.queue.pop_front();
            let Some(item) = item else { break };
            if let Some(len) = self.build_item(now, li, item) {
                return Some(len);
            }
        }
        // 4. Store sync after the peer's summary.
        self.next_sync(now, li)
    }

    fn next_hello(&mut self, now: Instant, li: usize) -> Option<usize> {
        let retry_limit = self.config.hello_retries;
        let l = self.links.get_mut(li)?.as_mut()?;
        if l.caps.broadcast {
            return None;
        }
        let scheduled = l.hello_due.is_some_and(|t| t <= now) && l.hello_left > 0;
        if !scheduled && !l.hello_reply {
            return None;
        }
        let initial = scheduled && l.hello_left > retry_limit;
        if !l.validated && !initial && !scheduled {
            // A reply to an unvalidated address: at most 3× what it sent us.
            let budget = l.rx_bytes.saturating_mul(3);
            if l.tx_unvalidated.saturating_add(HELLO_LEN as u64) > budget {
                self.stats.amplification_blocked = self.stats.amplification_blocked.saturating_add(1);
                l.hello_reply = false;
                return None;
            }
        }
        let hello = HelloRepr { nonce: l.nonce, echo: l.peer_nonce.unwrap_or([0; 16]) };
        l.tx.clear();
        let _ = l.tx.resize(HELLO_LEN, 0);
        hello.emit(&mut l.tx).ok()?;
        if !l.validated && !scheduled {
            // Replies count against the 3× budget; our own hellos of this
            // link-up (at most `hello_retries + 1`) are bounded separately.
            l.tx_unvalidated = l.tx_unvalidated.saturating_add(HELLO_LEN as u64);
        }
        l.hello_reply = false;
        if scheduled {
            l.hello_left = l.hello_left.saturating_sub(1);
            l.hello_due = (l.hello_left > 0 && !l.validated).then(|| now.saturating_add(l.hello_backoff));
            l.hello_backoff = Duration::from_millis(l.hello_backoff.as_millis().saturating_mul(2));
        }
        Some(HELLO_LEN)
    }

    fn next_summary(&mut self, li: usize) -> Option<usize> {
        let max = self.config.max_summary_frames;
        let l = self.links.get(li)?.as_ref()?;
        let cursor = l.summary_cursor?;
        let salt = l.salt;
        let seq = l.summary_seq;
        // Walk small then large slots from the cursor, gathering fingerprints.
        let mut fps: Vec<u8, { SUMMARY_MAX_FINGERPRINTS * FINGERPRINT_LEN }> = Vec::new();
        let total = S.saturating_add(L);
        let mut pos = cursor;
        while pos < total && fps.len() < SUMMARY_MAX_FINGERPRINTS * FINGERPRINT_LEN {
            let meta = if pos < S {
                self.small.meta.get(pos).and_then(Option::as_ref)
            } else {
                self.large.meta.get(pos.saturating_sub(S)).and_then(Option::as_ref)
            };
            if let Some(m) = meta
                && m.forward
            {
                let _ = fps.extend_from_slice(&hash::fingerprint(&salt, &m.id.0));
            }
            pos = pos.saturating_add(1);
        }
        let last = pos >= total || seq.saturating_add(1) >= max;
        let repr = SummaryRepr { seq, last, fingerprints: &fps };
        let l = self.links.get_mut(li)?.as_mut()?;
        l.tx.clear();
        let _ = l.tx.resize(SUMMARY_LEN, 0);
        repr.emit(&mut l.tx).ok()?;
        l.summary_seq = seq.saturating_add(1);
        l.summary_cursor = if last { None } else { Some(pos) };
        Some(SUMMARY_LEN)
    }

    fn next_sync(&mut self, now: Instant, li: usize) -> Option<usize> {
        let total = S.saturating_add(L);
        let bit = 1u32 << (li & 31);
        loop {
            let l = self.links.get(li)?.as_ref()?;
            let pos = l.sync_cursor?;
            let max_class = l.caps.max_class;
            if pos >= total {
                self.links.get_mut(li)?.as_mut()?.sync_cursor = None;
                return None;
            }
            if let Some(c) = self.links.get_mut(li).and_then(Option::as_mut) {
                c.sync_cursor = Some(pos.saturating_add(1));
            }
            let (meta, class) = if pos < S {
                (self.small.meta.get(pos).and_then(Option::as_ref), SizeClass::Small)
            } else {
                (self.large.meta.get(pos.saturating_sub(S)).and_then(Option::as_ref), SizeClass::Large)
            };
            let Some(m) = meta else { continue };
            if m.peer_has & bit != 0 || !m.forward || class > max_class {
                continue;
            }
            let id = m.id;
            if let Some(len) = self.build_item(now, li, Item::Message(id)) {
                return Some(len);
            }
        }
    }

    /// Write a queued item into the link's `tx`; `None` if it no longer
    /// exists or the peer has it.
    fn build_item(&mut self, now: Instant, li: usize, item: Item) -> Option<usize> {
        let bit = 1u32 << (li & 31);
        match item {
            Item::Receipt { id, secret, level, .. } => {
                // Its tombstone gives the remaining lifetime; without one
                // (evicted meanwhile) the receipt lives as long as the
                // shortest tombstone would have.
                let expires = match self.seen.get(&id) {
                    Some(seen) => seen.expires,
                    None => now.saturating_add(Duration::from_secs(TOMBSTONE_MIN_SECS)),
                };
                let remaining = expires.saturating_since(now).as_secs_ceil();
                let lifetime_secs = u32::try_from(remaining).unwrap_or(MAX_LIFETIME_SECS).min(MAX_LIFETIME_SECS);
                let r = ReceiptRepr { level, lifetime_secs, id, secret };
                let l = self.links.get_mut(li)?.as_mut()?;
                l.tx.clear();
                let _ = l.tx.resize(RECEIPT_LEN, 0);
                r.emit(&mut l.tx).ok()
            }
            Item::Message(id) => {
                let SeenState::Held(slot) = self.seen.get(&id)?.state else { return None };
                let meta = *self.meta(slot)?;
                if meta.peer_has & bit != 0 && !self.links.get(li)?.as_ref()?.caps.broadcast {
                    return None;
                }
                let held = now.saturating_since(meta.arrived).as_secs_ceil();
                let left = u64::from(meta.lifetime_secs).checked_sub(held).filter(|&l| l > 0)?;
                let first_send = meta.origin == Origin::Own && !meta.sent;
                if let Some(m) = self.meta_mut(slot) {
                    m.peer_has |= bit;
                    m.sent = true;
                }
                if first_send {
                    self.push_event(id, DeliveryState::Sent);
                }
                // Straight from the slot into the link's transmit buffer (no
                // copy on the stack, where it would outlive the message).
                let i = usize::from(slot.index);
                let bytes: &[u8] = match slot.class {
                    SizeClass::Small => self.small.data.get(i).map(|d| &d[..])?,
                    SizeClass::Large => self.large.data.get(i).map(|d| &d[..])?,
                };
                let l = self.links.get_mut(li)?.as_mut()?;
                l.tx.clear();
                l.tx.extend_from_slice(bytes).ok()?;
                let mut frame = MessageFrame::new_unchecked(l.tx.as_mut_slice());
                frame.set_hops(meta.hops);
                frame.set_lifetime_secs(u32::try_from(left).unwrap_or(MAX_LIFETIME_SECS));
                Some(l.tx.len())
            }
        }
    }
}

impl Meta {
    fn origin_link(&self) -> Option<LinkId> {
        match self.origin {
            Origin::Own => None,
            Origin::Link(l) => Some(l),
        }
    }
}

/// The relay is the node face itself: see [`Node`] for what each call does.
impl<const S: usize, const L: usize, const D: usize, const LINKS: usize, const Q: usize, const R: usize> Node
    for Router<S, L, D, LINKS, Q, R>
{
    fn config(&self) -> &Config {
        &self.config
    }

    fn set_config(&mut self, config: Config) {
        self.config = config;
    }

    fn stats(&self) -> Stats {
        self.stats
    }

    fn held(&self) -> usize {
        self.used[0].saturating_add(self.used[1])
    }

    fn handle_link_up(&mut self, now: Instant, rng: Rng<'_>, link: LinkId, caps: LinkCaps) -> bool {
        self.new_link(now, rng, link, caps).is_some()
    }

    fn handle_stranger(&mut self, now: Instant, rng: Rng<'_>, addr: &[u8], bytes: &[u8], out: &mut [u8]) -> Stranger {
        self.seed(&mut *rng);
        if self.cookie_key == [0; 16] {
            // Drawn at the first stranger, not in `seed`: drivers that never
            // see one (the simulator, a dongle on serial links) keep the same
            // random streams.
            rng.fill_bytes(&mut self.cookie_key);
        }
        let hello = HelloRepr::parse(bytes).ok();
        let epoch = Self::cookie_epoch(now);
        if let Some(h) = hello
            && [epoch, epoch.saturating_sub(1)].iter().any(|&e| hash::cookie(&self.cookie_key, e, addr) == h.echo)
        {
            return Stranger::Validated(ValidatedHello {
                cookie: h.echo,
                peer_nonce: h.nonce,
                len: u16::try_from(bytes.len()).unwrap_or(u16::MAX),
            });
        }
        if bytes.len() < HELLO_LEN || crate::wire::classify(bytes).is_err() {
            self.stats.stranger_dropped = self.stats.stranger_dropped.saturating_add(1);
            return Stranger::Dropped;
        }
        if now.saturating_since(self.stranger_answers.0) >= Duration::from_secs(1) {
            self.stranger_answers = (now, 0);
        }
        if self.stranger_answers.1 >= self.config.stranger_answers_per_sec {
            self.stats.stranger_dropped = self.stats.stranger_dropped.saturating_add(1);
            return Stranger::Dropped;
        }
        let answer =
            HelloRepr { nonce: hash::cookie(&self.cookie_key, epoch, addr), echo: hello.map_or([0; 16], |h| h.nonce) };
        match answer.emit(out) {
            Ok(n) => {
                self.stranger_answers.1 = self.stranger_answers.1.saturating_add(1);
                self.stats.stranger_answers = self.stats.stranger_answers.saturating_add(1);
                Stranger::Answer(n)
            }
            Err(_) => Stranger::Dropped,
        }
    }

    fn accept_stranger(
        &mut self,
        now: Instant,
        rng: Rng<'_>,
        link: LinkId,
        caps: LinkCaps,
        hello: ValidatedHello,
    ) -> bool {
        let caps = LinkCaps { broadcast: false, ..caps };
        let Some(li) = self.new_link(now, rng, link, caps) else {
            return false;
        };
        let resync = self.config.resync;
        if let Some(l) = self.links.get_mut(li).and_then(Option::as_mut) {
            // Our nonce on this link is the cookie the peer echoed: both
            // sides derive the salt from the same two nonces.
            l.nonce = hello.cookie;
            l.peer_nonce = Some(hello.peer_nonce);
            l.salt = hash::link_salt(&hello.cookie, &hello.peer_nonce);
            l.validated = true;
            l.hello_due = None;
            l.summary_cursor = Some(0);
            l.next_resync = now.saturating_add(resync);
            l.rx_bytes = u64::from(hello.len);
        }
        self.stats.stranger_links = self.stats.stranger_links.saturating_add(1);
        true
    }

    fn handle_link_down(&mut self, _now: Instant, link: LinkId) {
        if let Some(i) = self.link_index(link)
            && let Some(l) = self.links.get_mut(i)
        {
            *l = None;
            self.deferred.retain(|d| usize::from(d.link) != i);
        }
        self.reassembly.link_down(link);
    }

    fn handle_timeout(&mut self, now: Instant, _rng: Rng<'_>) {
        if now >= self.next_sweep {
            self.last_sweep = now;
            self.next_sweep = Instant::FAR_FUTURE;
            self.sweep(now);
        }
        self.reassembly.expire(now);
        self.release_deferred(now);
        // Periodic summary rounds on validated point-to-point links.
        let resync = self.config.resync;
        for l in self.links.iter_mut().flatten() {
            if l.validated && !l.caps.broadcast && l.next_resync <= now {
                if l.summary_cursor.is_none() {
                    l.summary_cursor = Some(0);
                    l.summary_seq = 0;
                }
                l.next_resync = now.saturating_add(resync);
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if (self.held() > 0 || !self.seen.is_empty()) && self.next_sweep < Instant::FAR_FUTURE {
            consider(self.next_sweep);
        }
        for l in self.links.iter().flatten() {
            if let Some(t) = l.hello_due {
                consider(t);
            }
            if l.validated && !l.caps.broadcast {
                consider(l.next_resync);
            }
        }
        if let Some(t) = self.reassembly.next_deadline() {
            consider(t);
        }
        if let Some(t) = self.deferred.iter().map(|d| d.due).min() {
            consider(t);
        }
        next
    }

    fn poll_event(&mut self) -> Option<Event> {
        let (id, state) = self.events.pop_front()?;
        Some(Event::Status { id, state })
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if !self.deferred.is_empty() {
            self.release_deferred(now);
        }
        let n = LINKS;
        for step in 0..n {
            let li = self.rr.wrapping_add(step).checked_rem(n).unwrap_or(0);
            if self.links.get(li).and_then(Option::as_ref).is_none_or(|l| l.pull) {
                continue;
            }
            if let Some(t) = self.transmit_on(now, li, buf) {
                self.rr = li.wrapping_add(1);
                self.stats.frames_out = self.stats.frames_out.saturating_add(1);
                self.stats.bytes_out = self.stats.bytes_out.saturating_add(t.len as u64);
                return Some(t);
            }
        }
        None
    }

    fn poll_transmit_link(&mut self, now: Instant, link: LinkId, buf: &mut [u8]) -> Option<Transmit> {
        if !self.deferred.is_empty() {
            self.release_deferred(now);
        }
        let li = self.link_index(link)?;
        let t = self.transmit_on(now, li, buf)?;
        self.stats.frames_out = self.stats.frames_out.saturating_add(1);
        self.stats.bytes_out = self.stats.bytes_out.saturating_add(t.len as u64);
        Some(t)
    }

    fn set_pull(&mut self, link: LinkId, pull: bool) {
        if let Some(l) = self.link_index(link).and_then(|i| self.links.get_mut(i)).and_then(Option::as_mut) {
            l.pull = pull;
        }
    }

    fn handle_frame(&mut self, now: Instant, _rng: Rng<'_>, link: LinkId, bytes: &[u8]) -> Result<(), FrameError> {
        self.route_frame(now, link, bytes).map(|_| ())
    }

    fn link(&self, link: LinkId) -> Option<LinkInfo> {
        self.links().find(|l| l.id == link)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Router::new` is `const`: a dongle keeps its router in a `static`.
    static DONGLE: DongleRouter = DongleRouter::new(Config::DEFAULT);

    #[test]
    fn resource_sizes_are_as_documented() {
        assert_eq!(DONGLE.held(), 0);
        let dongle = core::mem::size_of::<DongleRouter>();
        let host = core::mem::size_of::<HostRouter>();
        std::eprintln!("DongleRouter {dongle} B, HostRouter {host} B");
        assert!(dongle <= 64 * 1024, "DongleRouter is {dongle} bytes");
        assert!(host <= 4 * 1024 * 1024, "HostRouter is {host} bytes");
    }
}
