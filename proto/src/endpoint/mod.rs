//! The end user's node: a [`Router`] plus an identity, contacts and the
//! sealed envelope (SPEC §4, §5, §7).
//!
//! An endpoint relays exactly like a relay (every frame goes through the
//! same router); on top, it tries to open each new message frame, delivers
//! what opens, sends a receipt for it after a short random delay, seals and
//! submits the user's texts, and tracks each one's delivery state.
//!
//! Who is shown and receipted (blocked codes, the strangers' rate) is the
//! endpoint's [`policy`], the same for every driver.
//!
//! It is driven through the same face as a relay ([`Node`]): after every
//! input, drain [`Node::poll_transmit`] and [`Node::poll_event`], then arm a
//! timer for [`Node::poll_timeout`].
//!
//! The `impl` of [`Endpoint`] is spread over submodules, one per concern:
//!
//! * `contacts`: contacts and their one-time tags ([`ContactState`],
//!   [`Endpoint::add_contact`], [`Endpoint::restore_contact`],
//!   [`Endpoint::remove_contact`]).
//! * `outbox`: sealing and submitting texts ([`Endpoint::send`]) and their
//!   delivery states.
//! * `inbox`: opening, reassembling long texts, showing, the replay table,
//!   receipts ([`Endpoint::acknowledge`]) and the first-contact trial rate.
//! * [`policy`]: who is shown and receipted.
//!
//! This file holds the public types, the [`Endpoint`] struct, its
//! constructor and settings, the [`Carrier`] trait and the [`Node`] face.

mod contacts;
mod inbox;
mod outbox;
pub mod policy;

use heapless::index_map::FnvIndexMap;
use heapless::{Deque, String, Vec};
use zeroize::Zeroize;

use self::contacts::Contact;
pub use self::contacts::ContactState;
use self::inbox::{Partial, ReplayEntry};
use self::outbox::Outgoing;
use self::policy::{BlockedFull, Policy};
use crate::envelope::{Identity, PeerKey};
pub use crate::node::{DeliveryState, Event};
use crate::node::{Node, Rng};
use crate::router::{
    self, FrameError, LinkCaps, LinkId, LinkInfo, Outcome, Router, Stats, Stranger, SubmitError, Transmit,
    ValidatedHello,
};
use crate::time::{Duration, Instant};
use crate::wire::{
    DEFAULT_LIFETIME_SECS, Kind, MAX_FRAME_LEN, MAX_LIFETIME_SECS, MessageFrame, MessageId, RECEIPT_SECRET_LEN, TAG_LEN,
};

/// The longest text a user can send, in UTF-8 bytes.
pub const MAX_TEXT: usize = 4096;
/// The most sealed frames one text is split into.
pub const MAX_PARTS: usize = 4;
/// One-time tags the recipient keeps per contact.
pub const TAG_WINDOW: u32 = 16;
/// First-contact trial decryptions per second per link (one X25519 each).
pub const FIRST_CONTACT_RATE: u32 = 200;
/// Receipts go out after a random delay in this range (milliseconds).
pub const RECEIPT_DELAY_MS: (u64, u64) = (50, 500);
/// Receipts leave on a grid of this many milliseconds (the random delay is
/// rounded up to it): under load they go out together, in one batch, and
/// their timing tells an observer even less.
pub const RECEIPT_GRID_MS: u64 = 25;
const PENDING_TRIALS: usize = 512;
/// Receipts waiting for their random delay. When full, the oldest goes out
/// at once (less delay under load, never a lost receipt).
const PENDING_RECEIPTS: usize = 1024;
/// Long texts being put together at once.
const PARTIALS: usize = 6;
/// Of those, at most this many from strangers (one per stranger): the rest
/// is kept for contacts.
const STRANGER_PARTIALS: usize = 3;
/// How far ahead of this node's clock a text may be dated and still count
/// as dated now (a day: clocks set to local time as if it were UTC are off
/// by up to 14 hours). SPEC §4.5.
pub const AHEAD_SLACK_SECS: u64 = 24 * 3600;
/// Texts dated further ahead than [`AHEAD_SLACK_SECS`] are remembered
/// apart, at most this many (more are refused): they never move a replay
/// floor, so a flood of them cannot shut anyone out (SPEC §4.5).
const AHEAD: usize = 256;
const EVENTS: usize = 16;
const TRIAL_LINKS: usize = 16;

/// A text this endpoint received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Id of the (first) frame it came in.
    pub id: MessageId,
    /// The authenticated sender.
    pub from: PeerKey,
    /// Whether the sender is in the contact list.
    pub contact: bool,
    /// The sender's own clock at sending (Unix seconds, unverified).
    pub sent_at: u64,
    /// The text.
    pub text: String<MAX_TEXT>,
    /// What [`Endpoint::acknowledge`] needs to send this text's receipts,
    /// when automatic receipts are off.
    pub ack: Ack,
}

/// The receipts owed for one received text (one per part).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    parts: [Option<(MessageId, [u8; RECEIPT_SECRET_LEN])>; MAX_PARTS],
}

/// Why a text could not be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The text is longer than [`MAX_TEXT`] bytes.
    TooLong {
        /// The limit.
        max: usize,
    },
    /// The text is empty.
    Empty,
    /// The recipient key is unusable (low order).
    BadKey,
    /// Too many messages are waiting for delivery.
    OutboxFull,
    /// The contact table is full of named contacts.
    ContactsFull,
    /// The store refused it (own-message quota used up).
    StoreFull,
}

impl core::fmt::Display for SendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SendError::TooLong { max } => write!(f, "text is too long: at most {max} bytes"),
            SendError::Empty => f.write_str("text is empty"),
            SendError::BadKey => f.write_str("recipient key is not usable"),
            SendError::OutboxFull => f.write_str("too many messages waiting for delivery; try again later"),
            SendError::ContactsFull => f.write_str("contact list is full"),
            SendError::StoreFull => f.write_str("message store is full; try again later"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SendError {}

/// What the endpoint needs from its router beyond the [`Node`] face, so that
/// it can wrap any size of [`Router`] (or a boxed one).
pub trait Carrier: Node {
    /// See [`Router::route_frame`].
    fn route_frame<'a>(&'a mut self, now: Instant, link: LinkId, bytes: &'a [u8]) -> Result<Outcome<'a>, FrameError>;
    /// See [`Router::submit`].
    fn submit(&mut self, now: Instant, frame: &[u8]) -> Result<MessageId, SubmitError>;
    /// See [`Router::emit_receipt`].
    fn emit_receipt(&mut self, now: Instant, id: MessageId, secret: [u8; RECEIPT_SECRET_LEN]) -> bool;
    /// See [`Router::message_bytes`].
    fn message_bytes(&self, id: &MessageId) -> Option<&[u8]>;
    /// See [`Router::seed`].
    fn seed(&mut self, rng: Rng<'_>);
    /// See [`Router::withdraw`].
    fn withdraw(&mut self, id: &MessageId) -> bool;
    /// See [`Router::mark_untried`].
    fn mark_untried(&mut self, id: &MessageId) -> bool;
    /// See [`Router::untried`].
    fn untried(&self) -> u32;
    /// See [`Router::take_untried`].
    fn take_untried(&mut self, take: &mut dyn FnMut(MessageId, Option<LinkId>) -> bool);
}

impl<const S: usize, const L: usize, const D: usize, const LINKS: usize, const Q: usize, const R: usize> Carrier
    for Router<S, L, D, LINKS, Q, R>
{
    fn route_frame<'a>(&'a mut self, now: Instant, link: LinkId, bytes: &'a [u8]) -> Result<Outcome<'a>, FrameError> {
        Router::route_frame(self, now, link, bytes)
    }
    fn submit(&mut self, now: Instant, frame: &[u8]) -> Result<MessageId, SubmitError> {
        Router::submit(self, now, frame)
    }
    fn emit_receipt(&mut self, now: Instant, id: MessageId, secret: [u8; RECEIPT_SECRET_LEN]) -> bool {
        Router::emit_receipt(self, now, id, secret)
    }
    fn message_bytes(&self, id: &MessageId) -> Option<&[u8]> {
        Router::message_bytes(self, id)
    }
    fn seed(&mut self, rng: Rng<'_>) {
        Router::seed(self, rng)
    }
    fn withdraw(&mut self, id: &MessageId) -> bool {
        Router::withdraw(self, id)
    }
    fn mark_untried(&mut self, id: &MessageId) -> bool {
        Router::mark_untried(self, id)
    }
    fn untried(&self) -> u32 {
        Router::untried(self)
    }
    fn take_untried(&mut self, take: &mut dyn FnMut(MessageId, Option<LinkId>) -> bool) {
        Router::take_untried(self, take)
    }
}

#[cfg(feature = "std")]
impl<T: Carrier + ?Sized> Carrier for std::boxed::Box<T> {
    fn route_frame<'a>(&'a mut self, now: Instant, link: LinkId, bytes: &'a [u8]) -> Result<Outcome<'a>, FrameError> {
        (**self).route_frame(now, link, bytes)
    }
    fn submit(&mut self, now: Instant, frame: &[u8]) -> Result<MessageId, SubmitError> {
        (**self).submit(now, frame)
    }
    fn emit_receipt(&mut self, now: Instant, id: MessageId, secret: [u8; RECEIPT_SECRET_LEN]) -> bool {
        (**self).emit_receipt(now, id, secret)
    }
    fn message_bytes(&self, id: &MessageId) -> Option<&[u8]> {
        (**self).message_bytes(id)
    }
    fn seed(&mut self, rng: Rng<'_>) {
        (**self).seed(rng)
    }
    fn withdraw(&mut self, id: &MessageId) -> bool {
        (**self).withdraw(id)
    }
    fn mark_untried(&mut self, id: &MessageId) -> bool {
        (**self).mark_untried(id)
    }
    fn untried(&self) -> u32 {
        (**self).untried()
    }
    fn take_untried(&mut self, take: &mut dyn FnMut(MessageId, Option<LinkId>) -> bool) {
        (**self).take_untried(take)
    }
}

/// The endpoint. `C` contacts; `TAGS` tag-map entries (a power of two, at
/// least `C × TAG_WINDOW`); `OUT` messages awaiting delivery; `REPLAY`
/// receipt secrets remembered for replay protection (a power of two).
pub struct Endpoint<Rt: Carrier, const C: usize, const TAGS: usize, const OUT: usize, const REPLAY: usize> {
    /// The router inside: driven only through the endpoint; read it with
    /// [`Endpoint::router`] (statistics, links).
    router: Rt,
    identity: Identity,
    contacts: Vec<Contact, C>,
    tags: FnvIndexMap<[u8; TAG_LEN], (u16, u32), TAGS>,
    outbox: Vec<Outgoing, OUT>,
    /// Receipt secrets of shown texts → when they may be forgotten, and
    /// more.
    replay: FnvIndexMap<[u8; RECEIPT_SECRET_LEN], ReplayEntry, REPLAY>,
    auto_receipts: bool,
    /// Messages whose `sent_at` is at or below this are refused as possible
    /// replays (raised when the replay table overflows), for strangers
    /// (`[0]`) and contacts (`[1]`) apart: a flood of first-contact
    /// messages can raise only the strangers' floor.
    replay_floor: [u64; 2],
    /// Receipt secrets of texts dated beyond this node's clock plus
    /// [`AHEAD_SLACK_SECS`]: held aside from `replay` (never evicted, never
    /// a floor) until their date comes or they expire.
    ahead: FnvIndexMap<[u8; RECEIPT_SECRET_LEN], ReplayEntry, AHEAD>,
    /// This node's wall clock: a monotonic instant and the Unix time then
    /// (the driver's, [`Endpoint::set_unix_time`]); `None`: not known.
    clock: Option<(Instant, u64)>,
    trials: Deque<(LinkId, MessageId), PENDING_TRIALS>,
    receipts: Vec<(Instant, MessageId, [u8; RECEIPT_SECRET_LEN]), PENDING_RECEIPTS>,
    trial_rate: u32,
    /// The node-wide trial bucket: (tokens, last refill), at twice the
    /// per-link rate.
    trial_node: (u32, Instant),
    trial_buckets: Vec<(LinkId, u32, Instant), TRIAL_LINKS>,
    /// Long texts being put together, in fixed slots: a slot is wiped
    /// where it is when its text is done or abandoned (a `Vec` would move
    /// another text into it and leave a stale copy behind).
    partials: [Option<Partial>; PARTIALS],
    events: Deque<Event, EVENTS>,
    lifetime_secs: u32,
    scratch: [u8; MAX_FRAME_LEN],
    policy: Policy,
    stats: EndpointStats,
}

/// What the endpoint did not show, and why: counters only, never silent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Texts shown (and receipted, with automatic receipts).
    pub shown: u64,
    /// Texts from blocked codes, dropped unseen and unreceipted.
    pub blocked: u64,
    /// Texts from strangers over their rate, dropped unseen and unreceipted
    /// (their senders see them expire; a later copy is not shown either).
    pub over_rate: u64,
    /// Events lost because the queue was full (the user is not draining
    /// [`Node::poll_event`]): a text not shown this way is sent again by
    /// its sender; a lost status is not repeated.
    pub events_dropped: u64,
    /// Texts dated beyond this node's clock plus [`AHEAD_SLACK_SECS`] that
    /// were refused because [`AHEAD`] such texts are held already.
    pub too_far_ahead: u64,
    /// Messages (parts count one each) sealed for a contact this endpoint
    /// has heard from on the first-contact path, because the tags it may use
    /// ahead of the receipts (SPEC §4.4) were all taken: each costs two more
    /// X25519 at either end and shows the first-contact kind on the air.
    pub tag_fallbacks: u64,
}

impl<Rt: Carrier, const C: usize, const TAGS: usize, const OUT: usize, const REPLAY: usize> core::fmt::Debug
    for Endpoint<Rt, C, TAGS, OUT, REPLAY>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Endpoint")
            .field("contacts", &self.contacts.len())
            .field("outbox", &self.outbox.len())
            .field("replay", &self.replay.len())
            .finish()
    }
}

impl<Rt: Carrier, const C: usize, const TAGS: usize, const OUT: usize, const REPLAY: usize>
    Endpoint<Rt, C, TAGS, OUT, REPLAY>
{
    /// An endpoint for `identity` around `router`.
    pub fn new(identity: Identity, router: Rt) -> Self {
        Endpoint {
            router,
            identity,
            contacts: Vec::new(),
            tags: FnvIndexMap::new(),
            outbox: Vec::new(),
            replay: FnvIndexMap::new(),
            auto_receipts: true,
            replay_floor: [0; 2],
            ahead: FnvIndexMap::new(),
            clock: None,
            trials: Deque::new(),
            receipts: Vec::new(),
            trial_rate: FIRST_CONTACT_RATE,
            trial_node: (FIRST_CONTACT_RATE.saturating_mul(2), Instant::ZERO),
            trial_buckets: Vec::new(),
            partials: [const { None }; PARTIALS],
            events: Deque::new(),
            lifetime_secs: DEFAULT_LIFETIME_SECS,
            scratch: [0; MAX_FRAME_LEN],
            policy: Policy::new(),
            stats: EndpointStats {
                shown: 0,
                blocked: 0,
                over_rate: 0,
                events_dropped: 0,
                too_far_ahead: 0,
                tag_fallbacks: 0,
            },
        }
    }

    /// What was not shown, and why (the router's counters are
    /// [`Node::stats`]).
    pub fn endpoint_stats(&self) -> EndpointStats {
        self.stats
    }

    /// Queue an event; one that does not fit is counted.
    fn push_event(&mut self, ev: Event) {
        if self.events.push_back(ev).is_err() {
            self.stats.events_dropped = self.stats.events_dropped.saturating_add(1);
        }
    }

    /// The router inside, to read (its statistics, links and store); it is
    /// driven only through the endpoint.
    pub fn router(&self) -> &Rt {
        &self.router
    }

    /// Block `key`: its texts are dropped unseen and never receipted, so it
    /// cannot even learn whether this node is reachable (SPEC §8).
    pub fn block(&mut self, key: &PeerKey) -> Result<(), BlockedFull> {
        self.policy.block(key)
    }

    /// Unblock `key`.
    pub fn unblock(&mut self, key: &PeerKey) -> bool {
        self.policy.unblock(key)
    }

    /// Unblock everyone (before installing a list again).
    pub fn clear_blocked(&mut self) {
        self.policy.clear_blocked();
    }

    /// Texts a minute shown from one stranger and from all strangers
    /// (defaults [`policy::STRANGER_PER_MINUTE`], [`policy::STRANGERS_PER_MINUTE`]).
    pub fn set_stranger_rate(&mut self, per_sender: u32, all: u32) {
        self.policy.set_stranger_rate(per_sender, all);
    }

    /// This endpoint's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Set the first-contact trial decryptions allowed per second per link
    /// (default [`FIRST_CONTACT_RATE`], sized for a radio neighbour; a LAN
    /// host can afford more: each costs one X25519). The node as a whole
    /// allows twice that, however many links (or source ports) bring them
    /// (SPEC §4.7).
    pub fn set_first_contact_rate(&mut self, per_sec: u32) {
        self.trial_rate = per_sec.max(1);
    }

    /// Tell the endpoint the wall-clock time: Unix seconds `unix_secs` at
    /// `now`. Call it at start and now and then (the daemon: every tick).
    /// It is what tells a text dated ahead of this node's clock (SPEC
    /// §4.5); without it no text is.
    pub fn set_unix_time(&mut self, now: Instant, unix_secs: u64) {
        self.clock = Some((now, unix_secs));
    }

    /// Unix seconds at `now`, if the driver gave a clock.
    fn unix_at(&self, now: Instant) -> Option<u64> {
        let (at, unix) = self.clock?;
        let elapsed = now.saturating_since(at).as_millis() / 1000;
        Some(unix.saturating_add(elapsed))
    }

    /// Whether a text dated `sent_at` is dated beyond this node's clock plus
    /// [`AHEAD_SLACK_SECS`].
    fn dated_ahead(&self, now: Instant, sent_at: u64) -> bool {
        self.unix_at(now).is_some_and(|u| sent_at > u.saturating_add(AHEAD_SLACK_SECS))
    }

    /// Set the lifetime new messages get (capped at 7 days).
    pub fn set_lifetime_secs(&mut self, secs: u32) {
        self.lifetime_secs = secs.clamp(1, MAX_LIFETIME_SECS);
    }
}

/// The endpoint shows the same face as a relay: see [`Node`].
impl<Rt: Carrier, const C: usize, const TAGS: usize, const OUT: usize, const REPLAY: usize> Node
    for Endpoint<Rt, C, TAGS, OUT, REPLAY>
{
    fn handle_link_up(&mut self, now: Instant, rng: Rng<'_>, link: LinkId, caps: LinkCaps) -> bool {
        self.router.handle_link_up(now, rng, link, caps)
    }

    fn handle_stranger(&mut self, now: Instant, rng: Rng<'_>, addr: &[u8], bytes: &[u8], out: &mut [u8]) -> Stranger {
        self.router.handle_stranger(now, rng, addr, bytes, out)
    }

    fn probe(&mut self, now: Instant, rng: Rng<'_>, addr: &[u8], out: &mut [u8]) -> Option<usize> {
        self.router.probe(now, rng, addr, out)
    }

    fn accept_stranger(
        &mut self,
        now: Instant,
        rng: Rng<'_>,
        link: LinkId,
        caps: LinkCaps,
        hello: ValidatedHello,
    ) -> bool {
        self.router.accept_stranger(now, rng, link, caps, hello)
    }

    fn handle_link_down(&mut self, now: Instant, link: LinkId) {
        self.router.handle_link_down(now, link);
        self.trial_buckets.retain(|(l, _, _)| *l != link);
    }

    fn handle_timeout(&mut self, now: Instant, rng: Rng<'_>) {
        let mut i = 0;
        while let Some(&(at, id, secret)) = self.receipts.get(i) {
            if at <= now {
                self.receipts.swap_remove(i);
                let _ = self.router.emit_receipt(now, id, secret);
            } else {
                i = i.saturating_add(1);
            }
        }
        self.router.handle_timeout(now, &mut *rng);
        self.drain_router_events();
        let mut budget = self.trials.len();
        while budget > 0 && !self.events.is_full() {
            budget = budget.saturating_sub(1);
            let Some((link, id)) = self.trials.pop_front() else { break };
            // A message gone meanwhile (expired, evicted) costs no token.
            if self.router.message_bytes(&id).is_none() {
                continue;
            }
            if !self.take_trial_token(now, link) {
                let _ = self.trials.push_back((link, id));
                continue;
            }
            let Some(bytes) = self.router.message_bytes(&id) else { continue };
            let Some(dst) = self.scratch.get_mut(..bytes.len()) else { continue };
            dst.copy_from_slice(bytes);
            let len = bytes.len();
            let mut frame_buf = [0u8; MAX_FRAME_LEN];
            if let (Some(d), Some(s)) = (frame_buf.get_mut(..len), self.scratch.get(..len)) {
                d.copy_from_slice(s);
            }
            self.try_open(now, rng, id, frame_buf.get(..len).unwrap_or(&[]));
        }
        self.refill_trials();
        // Long texts whose parts never all came: give up after the maximum
        // lifetime.
        let max = Duration::from_secs(u64::from(MAX_LIFETIME_SECS));
        for slot in &mut self.partials {
            if slot.as_ref().is_some_and(|p| now.saturating_since(p.started) >= max) {
                inbox::drop_partial(slot);
            }
        }
        // Replay entries past their time.
        let mut old: Vec<[u8; RECEIPT_SECRET_LEN], 32> = Vec::new();
        for (k, e) in self.replay.iter() {
            if e.until <= now && old.push(*k).is_err() {
                break;
            }
        }
        for k in &old {
            self.replay.swap_remove(k);
        }
        self.settle_ahead(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let router = self.router.poll_timeout();
        // (Marked trials come back in `handle_timeout` whenever the queue
        // has room; a queue with room and marks left is refilled there, so
        // the queue is empty here only when no mark is left.)
        let receipt = self.receipts.iter().map(|r| r.0).min();
        let r = match (router, receipt) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if self.trials.is_empty() {
            r
        } else {
            // Trials wait for their link's next token. Only links with a
            // trial waiting count: a bucket with nothing waiting would name
            // a time long past, and the driver would spin (issue 12).
            let rate = u64::from(self.trial_rate.max(1));
            let interval =
                Duration::from_millis(1000u64.saturating_add(rate.saturating_sub(1)).checked_div(rate).unwrap_or(1));
            let mut soon: Option<Instant> = None;
            for (link, _) in &self.trials {
                let t = match self.trial_buckets.iter().find(|(l, _, _)| l == link) {
                    // A link without a bucket gets a full one: now.
                    None => Instant::ZERO,
                    Some(&(_, tokens, at)) if tokens > 0 => at,
                    Some(&(_, _, at)) => at.saturating_add(interval),
                };
                soon = Some(soon.map_or(t, |s| s.min(t)));
                if t == Instant::ZERO {
                    break;
                }
            }
            // And the node's bucket must have a token too.
            let (node_tokens, node_at) = self.trial_node;
            if node_tokens == 0 {
                let node_rate = rate.saturating_mul(2);
                let node_interval = Duration::from_millis(
                    1000u64.saturating_add(node_rate.saturating_sub(1)).checked_div(node_rate).unwrap_or(1),
                );
                let ready = node_at.saturating_add(node_interval);
                soon = soon.map(|s| s.max(ready));
            }
            match (r, soon) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let t = self.router.poll_transmit(now, buf);
        self.drain_router_events();
        t
    }

    fn poll_transmit_link(&mut self, now: Instant, link: LinkId, buf: &mut [u8]) -> Option<Transmit> {
        let t = self.router.poll_transmit_link(now, link, buf);
        self.drain_router_events();
        t
    }

    fn set_pull(&mut self, link: LinkId, pull: bool) {
        self.router.set_pull(link, pull);
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.drain_router_events();
        // A text leaves as a copy and the queue slot it sat in is wiped: the
        // copy handed out is the only one left (README, Privacy).
        if let Some(Event::Received(r)) = self.events.front_mut() {
            let out = r.clone();
            r.text.zeroize();
            let _ = self.events.pop_front();
            return Some(Event::Received(out));
        }
        self.events.pop_front()
    }

    fn handle_frame(&mut self, now: Instant, rng: Rng<'_>, link: LinkId, bytes: &[u8]) -> Result<(), FrameError> {
        let mut frame_buf = [0u8; MAX_FRAME_LEN];
        let (id, len) = match self.router.route_frame(now, link, bytes)? {
            Outcome::NewMessage { id, frame, .. } => {
                let len = frame.len();
                frame_buf.get_mut(..len).ok_or(FrameError::Exhausted)?.copy_from_slice(frame);
                (id, len)
            }
            _ => {
                self.drain_router_events();
                return Ok(());
            }
        };
        self.drain_router_events();
        let frame = frame_buf.get(..len).unwrap_or(&[]);
        let m = MessageFrame::new_unchecked(frame);
        let kind = m.kind();
        // A first-contact frame for a key id we do not have is refused
        // before any Diffie-Hellman (SPEC §4.2), so it takes no token either:
        // such junk must not spend what honest first contacts need.
        if kind == Kind::FirstContact && m.sealed().first() != Some(&crate::envelope::KEY_ID_STATIC) {
            return Ok(());
        }
        // No room to report a text (the driver has not drained events), or
        // over this link's DH budget: try later, if the store keeps it.
        let defer = self.events.is_full() || (kind == Kind::FirstContact && !self.take_trial_token(now, link));
        if defer {
            // Over this link's DH budget: try later if the store keeps it.
            // A full queue lets its oldest trial go, but the router keeps
            // the message marked, and hands it back when the queue has room
            // (issue 12: the trial was lost for good, the message never
            // offered again since this node held it).
            if self.trials.is_full()
                && let Some((_, old)) = self.trials.pop_front()
            {
                self.router.mark_untried(&old);
            }
            let _ = self.trials.push_back((link, id));
            return Ok(());
        }
        self.try_open(now, rng, id, frame);
        Ok(())
    }

    fn set_config(&mut self, config: router::Config) {
        self.router.set_config(config);
    }

    fn link(&self, link: LinkId) -> Option<LinkInfo> {
        self.router.link(link)
    }

    fn stats(&self) -> Stats {
        self.router.stats()
    }

    fn held(&self) -> usize {
        self.router.held()
    }

    fn config(&self) -> &router::Config {
        self.router.config()
    }
}
