//! The store-carry-forward router: one sans-IO state machine per node
//! (SPEC §6), shaped like quinn-proto.
//!
//! Inputs: [`Node::handle_frame`], [`Node::handle_link_up`],
//! [`Node::handle_link_down`], [`Node::handle_timeout`],
//! [`Router::submit`], [`Router::emit_receipt`]. Outputs, drained after every
//! input: [`Node::poll_transmit`] until `None`, [`Node::poll_event`]
//! until `None`, then [`Node::poll_timeout`] for the next wake-up.
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
//!
//! The router is one struct whose `impl` is spread over submodules, one per
//! concern:
//!
//! * `store`: the slot pools; storing, evicting, expiring (`sweep`);
//!   [`Router::submit`], [`Router::withdraw`], [`Router::message_bytes`];
//!   receipts, which release stored messages ([`Router::emit_receipt`]).
//! * `seen`: the seen table (dedup, tombstones, store index) and its keyed
//!   hashing ([`Router::seed`]).
//! * `sync`: peer sync on point-to-point links: hellos, stateless cookies
//!   (the internals of `handle_stranger` and `accept_stranger`), summary
//!   rounds and resync.
//! * `broadcast`: suppression of relayed copies on broadcast links
//!   (deferred rebroadcast, SPEC §6.5).
//! * `links`: per-link state (queue, token buckets, hello and summary
//!   progress) and building the next datagram for a link.
//!
//! This file holds the public types, the [`Router`] struct, its constructor,
//! the input dispatch ([`Router::route_frame`]) and the [`Node`] face.

mod broadcast;
mod links;
mod seen;
mod store;
mod sync;

use heapless::{Deque, Vec};
use zeroize::Zeroize;

use self::broadcast::Deferred;
use self::links::Link;
use self::seen::{SeenState, SeenTable};
use self::store::Pool;
use crate::node::{DeliveryState, Event, Node, Rng};
use crate::segment::{Reassembly, SegmentError};
use crate::time::{Duration, Instant};
use crate::wire::{Frame, MAX_FRAME_LEN, MAX_LIFETIME_SECS, MessageId, SegmentRepr, SizeClass, WireError};

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
    /// Its frames come from [`Node::poll_transmit_link`] only.
    pub pull: bool,
}

/// What [`Node::handle_stranger`] did with bytes from an address that has
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
    /// receives there. Make the link with [`Node::accept_stranger`].
    Validated(ValidatedHello),
}

/// A hello that echoed a valid cookie: only [`Node::handle_stranger`]
/// makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidatedHello {
    cookie: [u8; 16],
    peer_nonce: [u8; 16],
    len: u16,
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
    /// Held messages an endpoint still has to try (see
    /// [`Router::mark_untried`]).
    untried: u32,
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

/// A delivered message's tombstone lives at least this long (seconds).
const TOMBSTONE_MIN_SECS: u64 = 60;

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
            untried: 0,
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

    /// Partial frames in reassembly.
    pub fn reassembling(&self) -> usize {
        self.reassembly.len()
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

    /// Queue an event; one that does not fit is counted, never lost
    /// silently.
    fn push_event(&mut self, id: MessageId, state: DeliveryState) {
        if self.events.push_back((id, state)).is_err() {
            self.stats.events_dropped = self.stats.events_dropped.saturating_add(1);
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
        self.answer_stranger(now, rng, addr, bytes, out)
    }

    fn probe(&mut self, now: Instant, rng: Rng<'_>, addr: &[u8], out: &mut [u8]) -> Option<usize> {
        self.probe_hello(now, rng, addr, out)
    }

    fn accept_stranger(
        &mut self,
        now: Instant,
        rng: Rng<'_>,
        link: LinkId,
        caps: LinkCaps,
        hello: ValidatedHello,
    ) -> bool {
        self.accept_validated(now, rng, link, caps, hello)
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
        self.take_proven_nonces(now);
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
        if let Some(t) = self.proven_nonce_due() {
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
