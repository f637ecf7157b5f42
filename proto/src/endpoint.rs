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
//! Call order is the router's: after every input, drain
//! [`Endpoint::poll_transmit`] and [`Endpoint::poll_event`], then arm a timer
//! for [`Endpoint::poll_timeout`].

pub mod policy;

use heapless::binary_heap::{BinaryHeap, Max};
use heapless::index_map::FnvIndexMap;
use heapless::{Deque, String, Vec};

use self::policy::{BlockedFull, Policy, Verdict};
use crate::envelope::{self, Body, Identity, OpenError, Path, Payload, PeerKey, SealError};
pub use crate::node::{DeliveryState, Event};
use crate::node::{Node, Rng};
use crate::router::{
    self, FrameError, LinkCaps, LinkId, LinkInfo, Outcome, Router, Stats, Stranger, SubmitError, Transmit,
    ValidatedHello,
};
use crate::time::{Duration, Instant};
use crate::wire::{
    DEFAULT_LIFETIME_SECS, HOPS_MIN, HOPS_SPREAD, Kind, MAX_FRAME_LEN, MAX_LIFETIME_SECS, MessageFrame, MessageId,
    RECEIPT_SECRET_LEN, SizeClass, TAG_LEN,
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
/// Most replay entries evicted in one pass when the table is full.
const REPLAY_EVICT: usize = 256;
/// Receipts waiting for their random delay. When full, the oldest goes out
/// at once (less delay under load, never a lost receipt).
const PENDING_RECEIPTS: usize = 1024;
const PARTIALS: usize = 4;
const EVENTS: usize = 16;
const TRIAL_LINKS: usize = 16;

/// What the replay table keeps of a shown text.
#[derive(Clone, Copy, Debug)]
struct ReplayEntry {
    /// When it may be forgotten (its lifetime cannot outlast this).
    until: Instant,
    /// The sender's clock at sending.
    sent_at: u64,
    /// Its receipt was sent (a replay gets it again).
    receipted: bool,
    /// The sender was a contact.
    contact: bool,
}

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
}

/// A contact's one-time-tag counters (SPEC §4.4), to be kept across
/// restarts by the owner of the endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContactState {
    /// Next tag number to send with.
    pub tx_next: u32,
    /// One more than the highest tag number delivered.
    pub tx_acked: u32,
    /// Whether we have heard from the contact.
    pub heard: bool,
    /// Lowest tag number still expected from the contact.
    pub rx_base: u32,
    /// Which numbers from `rx_base` on were used (bit i: `rx_base + i`).
    pub rx_used: u32,
}

/// A peer this endpoint can talk to: named by the user, or known because
/// the user sent to its code.
#[derive(Clone)]
struct Contact {
    key: PeerKey,
    ss: [u8; 32],
    tx_key: [u8; 32],
    rx_key: [u8; 32],
    /// Next tag number to send with.
    tx_next: u32,
    /// One more than the highest tag number delivered.
    tx_acked: u32,
    /// We have received from them: they hold our key, so tags work.
    heard: bool,
    /// Lowest tag number still expected, and which numbers from there on
    /// were used (bit i: `rx_base + i`).
    rx_base: u32,
    rx_used: u32,
    /// Added by the user (not just sent to).
    named: bool,
    last_used: Instant,
}

impl Drop for Contact {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.ss.zeroize();
        self.tx_key.zeroize();
        self.rx_key.zeroize();
    }
}

#[derive(Clone, Copy, Debug)]
struct Part {
    id: MessageId,
    state: DeliveryState,
    tag: Option<(usize, u32)>,
}

#[derive(Clone, Debug)]
struct Outgoing {
    id: MessageId,
    parts: Vec<Part, MAX_PARTS>,
    state: DeliveryState,
}

/// A part that opened: what its receipt needs.
#[derive(Clone, Copy, Debug)]
struct PartRef {
    id: MessageId,
    secret: [u8; RECEIPT_SECRET_LEN],
}

struct Partial {
    from: PeerKey,
    group: u32,
    count: u8,
    sent_at: u64,
    id: MessageId,
    chunks: [Option<String<MAX_TEXT>>; MAX_PARTS],
    parts: [Option<PartRef>; MAX_PARTS],
    started: Instant,
}

/// A long text whose parts have all come.
struct Whole {
    text: String<MAX_TEXT>,
    id: MessageId,
    sent_at: u64,
    parts: [Option<PartRef>; MAX_PARTS],
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
    trials: Deque<(LinkId, MessageId), PENDING_TRIALS>,
    receipts: Vec<(Instant, MessageId, [u8; RECEIPT_SECRET_LEN]), PENDING_RECEIPTS>,
    trial_rate: u32,
    trial_buckets: Vec<(LinkId, u32, Instant), TRIAL_LINKS>,
    partials: Vec<Partial, PARTIALS>,
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
    /// [`Endpoint::poll_event`]): a text not shown this way is sent again by
    /// its sender; a lost status is not repeated.
    pub events_dropped: u64,
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

/// Which path a text to contact `c` takes, with `extra` tags already taken
/// for it: tags only once they have written to us, and only while few of our
/// tagged messages are unacknowledged (SPEC §4.4).
fn tagged(c: &Contact, extra: u32) -> bool {
    c.heard && c.tx_next.saturating_add(extra) < c.tx_acked.saturating_add(TAG_WINDOW / 2)
}

/// Whether payload `p` fits the plaintext of a `kind` frame of `class`
/// (serialised into `buf` to find out).
fn fits(kind: Kind, class: SizeClass, p: &Payload<'_>, buf: &mut [u8]) -> bool {
    let cap = envelope::plaintext_capacity(kind, class);
    buf.get_mut(..cap).is_some_and(|b| postcard::to_slice(p, b).is_ok())
}

fn push_str<const N: usize>(dst: &mut String<N>, s: &str) -> bool {
    dst.push_str(s).is_ok()
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
            trials: Deque::new(),
            receipts: Vec::new(),
            trial_rate: FIRST_CONTACT_RATE,
            trial_buckets: Vec::new(),
            partials: Vec::new(),
            events: Deque::new(),
            lifetime_secs: DEFAULT_LIFETIME_SECS,
            scratch: [0; MAX_FRAME_LEN],
            policy: Policy::new(),
            stats: EndpointStats { shown: 0, blocked: 0, over_rate: 0, events_dropped: 0 },
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
    /// host can afford more: each costs one X25519).
    pub fn set_first_contact_rate(&mut self, per_sec: u32) {
        self.trial_rate = per_sec.max(1);
    }

    /// Set the lifetime new messages get (capped at 7 days).
    pub fn set_lifetime_secs(&mut self, secs: u32) {
        self.lifetime_secs = secs.clamp(1, MAX_LIFETIME_SECS);
    }

    // ----- contacts ------------------------------------------------------

    /// Add (or mark as named) a contact. Computes the static-static secret
    /// once and installs the contact's next one-time tags.
    pub fn add_contact(&mut self, now: Instant, key: PeerKey) -> Result<(), SendError> {
        self.contact_index(now, &key, true).map(|_| ())
    }

    /// The tag counters of a contact, for the owner's own storage: a device
    /// that restarts without them would reuse tag numbers the peer already
    /// moved past (SPEC §4.4).
    pub fn contact_state(&self, key: &PeerKey) -> Option<ContactState> {
        self.contacts.iter().find(|c| c.key == *key).map(|c| ContactState {
            tx_next: c.tx_next,
            tx_acked: c.tx_acked,
            heard: c.heard,
            rx_base: c.rx_base,
            rx_used: c.rx_used,
        })
    }

    /// Add a named contact with counters saved by [`Endpoint::contact_state`].
    pub fn restore_contact(&mut self, now: Instant, key: PeerKey, state: ContactState) -> Result<(), SendError> {
        let ci = self.contact_index(now, &key, true)?;
        // Drop the default window's tags, then install the saved one.
        if let Some(c) = self.contacts.get(ci) {
            let rx_key = c.rx_key;
            for k in 0..TAG_WINDOW {
                self.tags.swap_remove(&envelope::tag(&rx_key, c.rx_base.saturating_add(k)));
            }
        }
        if let Some(c) = self.contacts.get_mut(ci) {
            c.tx_next = state.tx_next;
            c.tx_acked = state.tx_acked.min(state.tx_next);
            c.heard = state.heard;
            c.rx_base = state.rx_base;
            c.rx_used = state.rx_used & ((1 << TAG_WINDOW) - 1);
        }
        self.install_tags(ci);
        Ok(())
    }

    /// Remove a contact and its tags.
    pub fn remove_contact(&mut self, key: &PeerKey) -> bool {
        let Some(i) = self.contacts.iter().position(|c| c.key == *key) else { return false };
        self.drop_contact(i);
        true
    }

    /// Whether `key` is a named contact.
    pub fn is_contact(&self, key: &PeerKey) -> bool {
        self.contacts.iter().any(|c| c.key == *key && c.named)
    }

    fn drop_contact(&mut self, i: usize) {
        // Tags point at contact indexes: rebuild them after the shift.
        self.contacts.swap_remove(i);
        self.tags.clear();
        for ci in 0..self.contacts.len() {
            self.install_tags(ci);
        }
        for o in self.outbox.iter_mut() {
            for p in o.parts.iter_mut() {
                p.tag = None;
            }
        }
    }

    fn contact_index(&mut self, now: Instant, key: &PeerKey, named: bool) -> Result<usize, SendError> {
        if let Some(i) = self.contacts.iter().position(|c| c.key == *key) {
            if let Some(c) = self.contacts.get_mut(i) {
                c.named |= named;
                c.last_used = now;
            }
            return Ok(i);
        }
        if self.contacts.is_full() {
            // Forget the least recently used unnamed peer.
            let victim = self
                .contacts
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.named)
                .min_by_key(|(_, c)| c.last_used)
                .map(|(i, _)| i)
                .ok_or(SendError::ContactsFull)?;
            self.drop_contact(victim);
        }
        let ss = self.identity.static_static(key).map_err(|_| SendError::BadKey)?;
        let me = self.identity.public();
        let contact = Contact {
            key: *key,
            ss,
            tx_key: envelope::tag_key(&ss, &me, key),
            rx_key: envelope::tag_key(&ss, key, &me),
            tx_next: 0,
            tx_acked: 0,
            heard: false,
            rx_base: 0,
            rx_used: 0,
            named,
            last_used: now,
        };
        self.contacts.push(contact).map_err(|_| SendError::ContactsFull)?;
        let i = self.contacts.len().saturating_sub(1);
        self.install_tags(i);
        Ok(i)
    }

    /// Put contact `ci`'s unused tags of its window into the map.
    fn install_tags(&mut self, ci: usize) {
        let Some(c) = self.contacts.get(ci) else { return };
        let (key, base, used) = (c.rx_key, c.rx_base, c.rx_used);
        for k in 0..TAG_WINDOW {
            if used & (1 << k) != 0 {
                continue;
            }
            let n = base.saturating_add(k);
            let t = envelope::tag(&key, n);
            // A full map means TAGS is below C × TAG_WINDOW: the tag is then
            // missing and that message takes longer (it expires unopened).
            let _ = self.tags.insert(t, (ci as u16, n));
        }
    }

    /// Contact `ci` used tag `n`: slide its window so that it keeps half a
    /// window behind the highest number seen and half ahead.
    fn consume_tag(&mut self, ci: usize, n: u32) {
        let Some(c) = self.contacts.get_mut(ci) else { return };
        let key = c.rx_key;
        if let Some(off) = n.checked_sub(c.rx_base).filter(|&o| o < TAG_WINDOW) {
            c.rx_used |= 1 << off;
        }
        self.tags.swap_remove(&envelope::tag(&key, n));
        let want_base = n.saturating_add(1).saturating_sub(TAG_WINDOW / 2).max(c.rx_base);
        while c.rx_base < want_base || c.rx_used & 1 != 0 {
            if c.rx_used & 1 == 0 {
                self.tags.swap_remove(&envelope::tag(&key, c.rx_base));
            }
            c.rx_base = c.rx_base.saturating_add(1);
            c.rx_used >>= 1;
        }
        c.heard = true;
        self.install_tags(ci);
    }

    // ----- links and timers (pass-through) -------------------------------

    fn take_trial_token(&mut self, now: Instant, link: LinkId) -> bool {
        let i = match self.trial_buckets.iter().position(|(l, _, _)| *l == link) {
            Some(i) => i,
            None => {
                if self.trial_buckets.is_full() {
                    self.trial_buckets.swap_remove(0);
                }
                let _ = self.trial_buckets.push((link, self.trial_rate, now));
                self.trial_buckets.len().saturating_sub(1)
            }
        };
        let Some((_, tokens, at)) = self.trial_buckets.get_mut(i) else { return false };
        let rate = self.trial_rate;
        let add = now.saturating_since(*at).as_millis().saturating_mul(u64::from(rate)) / 1000;
        if add > 0 {
            *tokens = u32::try_from(u64::from(*tokens).saturating_add(add)).unwrap_or(u32::MAX).min(rate);
            *at = now;
        }
        if *tokens == 0 {
            return false;
        }
        *tokens = tokens.saturating_sub(1);
        true
    }

    // ----- input ---------------------------------------------------------

    fn try_open(&mut self, now: Instant, rng: Rng<'_>, id: MessageId, frame: &[u8]) {
        let Ok(m) = MessageFrame::new_checked(frame) else { return };
        let contact = match m.kind() {
            Kind::Contact => {
                let mut tag = [0u8; TAG_LEN];
                for (d, s) in tag.iter_mut().zip(m.sealed()) {
                    *d = *s;
                }
                match self.tags.get(&tag) {
                    Some(&(ci, n)) => Some((usize::from(ci), n)),
                    None => return, // not for us: one hash lookup, no DH
                }
            }
            _ => None,
        };
        let opened = match contact.and_then(|(ci, _)| self.contacts.get(ci)) {
            Some(c) => envelope::open(&self.identity, &m, Some((&c.key, &c.ss)), &mut self.scratch),
            None if contact.is_some() => return,
            None => envelope::open(&self.identity, &m, None, &mut self.scratch),
        };
        let opened = match opened {
            Ok(o) => o,
            Err(OpenError::NotForUs) => return,
            Err(_) => return, // for us but tampered or malformed: drop silently
        };
        if let Some((ci, n)) = contact {
            self.consume_tag(ci, n);
        }
        // Parse what came (borrowing the scratch buffer).
        let mut pt = [0u8; MAX_FRAME_LEN];
        let src = self.scratch.get(opened.plaintext.clone()).unwrap_or(&[]);
        let plaintext = pt.get_mut(..src.len()).unwrap_or(&mut []);
        plaintext.copy_from_slice(src);
        let plaintext = &*plaintext;
        let Ok(payload) = envelope::parse_payload(plaintext) else { return };
        let sent_at = payload.sent_at;
        // Replay protection: never deliver the same message twice. An exact
        // replay of something already shown gets its receipt again (that
        // erases the copies still travelling); anything refused otherwise
        // gets none, so its sender sees it expire rather than a false
        // "delivered".
        if let Some(e) = self.replay.get(&opened.secret) {
            if e.receipted {
                self.schedule_receipt(now, rng, id, opened.secret);
            }
            return;
        }
        let floor = self.replay_floor.get(usize::from(self.is_contact(&opened.sender))).copied().unwrap_or(u64::MAX);
        if sent_at <= floor {
            return;
        }
        if let Some(ci) = self.contacts.iter().position(|c| c.key == opened.sender)
            && let Some(c) = self.contacts.get_mut(ci)
        {
            c.heard = true;
            c.last_used = now;
        }
        let contact = self.is_contact(&opened.sender);
        match payload.body {
            Body::Text(t) => {
                let mut text: String<MAX_TEXT> = String::new();
                if !push_str(&mut text, t) {
                    return;
                }
                let mut ack = Ack { parts: [None; MAX_PARTS] };
                if let Some(p) = ack.parts.first_mut() {
                    *p = Some((id, opened.secret));
                }
                self.show(now, rng, Received { id, from: opened.sender, contact, sent_at, text, ack });
            }
            Body::Part { group, index, count, text: chunk } => {
                let part = PartRef { id, secret: opened.secret };
                let Some(done) = self.add_part(now, opened.sender, part, sent_at, group, index, count, chunk) else {
                    return;
                };
                // Every part is receipted only once the whole text is shown.
                let ack = Ack { parts: done.parts.map(|p| p.map(|p| (p.id, p.secret))) };
                let (id, sent_at, text) = (done.id, done.sent_at, done.text);
                self.show(now, rng, Received { id, from: opened.sender, contact, sent_at, text, ack });
            }
        }
    }

    /// Hand a text to the user unless the policy says no; remember it
    /// (never shown twice, and a refused one is not looked at again) and,
    /// with automatic receipts, send its receipts.
    fn show(&mut self, now: Instant, rng: Rng<'_>, r: Received) {
        let (ack, sent_at, contact) = (r.ack, r.sent_at, r.contact);
        match self.policy.verdict(now, &r.from, contact) {
            Verdict::Show => {}
            refused => {
                match refused {
                    Verdict::Blocked => self.stats.blocked = self.stats.blocked.saturating_add(1),
                    _ => self.stats.over_rate = self.stats.over_rate.saturating_add(1),
                }
                for (_, secret) in ack.parts.iter().flatten() {
                    self.remember(now, *secret, sent_at, false, contact);
                }
                return;
            }
        }
        if self.events.push_back(Event::Received(r)).is_err() {
            self.stats.events_dropped = self.stats.events_dropped.saturating_add(1);
            return;
        }
        self.stats.shown = self.stats.shown.saturating_add(1);
        for (id, secret) in ack.parts.iter().flatten() {
            self.remember(now, *secret, sent_at, self.auto_receipts, contact);
            if self.auto_receipts {
                self.schedule_receipt(now, rng, *id, *secret);
            }
        }
    }

    /// Turn automatic receipts off (or on). With them off, the user of the
    /// endpoint decides for each received text whether the sender learns it
    /// was delivered: [`Endpoint::acknowledge`] sends the receipts; a text
    /// never acknowledged (blocked, over a rate limit) gets none and its
    /// sender sees it expire.
    pub fn set_auto_receipts(&mut self, on: bool) {
        self.auto_receipts = on;
    }

    /// Send the receipts of a received text (see
    /// [`Endpoint::set_auto_receipts`]). Acknowledging twice is harmless.
    pub fn acknowledge(&mut self, now: Instant, rng: Rng<'_>, ack: &Ack) {
        for (id, secret) in ack.parts.iter().flatten() {
            if let Some(entry) = self.replay.get_mut(secret) {
                if entry.receipted {
                    continue;
                }
                entry.receipted = true;
            }
            self.schedule_receipt(now, rng, *id, *secret);
        }
    }

    fn schedule_receipt(&mut self, now: Instant, rng: Rng<'_>, id: MessageId, secret: [u8; RECEIPT_SECRET_LEN]) {
        // Uniform in [min, max - grid), then rounded up to the grid: always
        // within [min, max].
        let spread = RECEIPT_DELAY_MS.1.saturating_sub(RECEIPT_DELAY_MS.0).saturating_sub(RECEIPT_GRID_MS);
        let delay = RECEIPT_DELAY_MS.0.saturating_add(rng.next_u64().checked_rem(spread).unwrap_or(0));
        let due = now.millis().saturating_add(delay).div_ceil(RECEIPT_GRID_MS).saturating_mul(RECEIPT_GRID_MS);
        if self.receipts.is_full() {
            let oldest = self.receipts.iter().enumerate().min_by_key(|(_, r)| r.0).map(|(i, _)| i);
            if let Some((_, id, secret)) = oldest.map(|i| self.receipts.swap_remove(i)) {
                let _ = self.router.emit_receipt(now, id, secret);
            }
        }
        let _ = self.receipts.push((Instant::from_millis(due), id, secret));
    }

    /// The replay table is full: evict its oldest eighth by sender time (at
    /// most [`REPLAY_EVICT`] entries, in one pass, so a full table costs
    /// O(1) amortized per message), and refuse anything at least that old
    /// from the same class of sender from now on: bounded memory never
    /// means "deliver twice". While strangers hold half the table or more,
    /// only strangers' entries are evicted: a flood of first-contact
    /// messages (fresh keys, any `sent_at` they like) cannot push the
    /// contacts' floor up.
    fn evict_replay(&mut self) {
        let k = (REPLAY / 8).clamp(1, REPLAY_EVICT);
        let strangers = self.replay.values().filter(|e| !e.contact).count();
        let strangers_only = strangers.saturating_mul(2) >= REPLAY;
        // A max-heap of the k oldest seen so far.
        let mut oldest: BinaryHeap<(u64, bool, [u8; RECEIPT_SECRET_LEN]), Max, REPLAY_EVICT> = BinaryHeap::new();
        for (key, e) in self.replay.iter() {
            if strangers_only && e.contact {
                continue;
            }
            if oldest.len() < k {
                let _ = oldest.push((e.sent_at, e.contact, *key));
            } else if oldest.peek().is_some_and(|&(top, _, _)| e.sent_at < top) {
                let _ = oldest.pop();
                let _ = oldest.push((e.sent_at, e.contact, *key));
            }
        }
        for (at, contact, key) in oldest.iter() {
            self.replay.swap_remove(key);
            if let Some(f) = self.replay_floor.get_mut(usize::from(*contact)) {
                *f = (*f).max(*at);
            }
        }
    }

    fn remember(
        &mut self,
        now: Instant,
        secret: [u8; RECEIPT_SECRET_LEN],
        sent_at: u64,
        receipted: bool,
        contact: bool,
    ) {
        if self.replay.is_full() {
            self.evict_replay();
        }
        let until = now.saturating_add(Duration::from_secs(u64::from(MAX_LIFETIME_SECS)));
        let _ = self.replay.insert(secret, ReplayEntry { until, sent_at, receipted, contact });
    }

    #[allow(clippy::too_many_arguments)]
    fn add_part(
        &mut self,
        now: Instant,
        from: PeerKey,
        part: PartRef,
        sent_at: u64,
        group: u32,
        index: u8,
        count: u8,
        chunk: &str,
    ) -> Option<Whole> {
        if count < 2 || usize::from(count) > MAX_PARTS || index >= count {
            return None;
        }
        let pos = match self.partials.iter().position(|p| p.from == from && p.group == group) {
            Some(p) => p,
            None => {
                if self.partials.is_full() {
                    // The oldest half-built text goes; its parts were never
                    // receipted, so their senders will see them expire.
                    let oldest = self.partials.iter().enumerate().min_by_key(|(_, p)| p.started).map(|(i, _)| i)?;
                    self.partials.swap_remove(oldest);
                }
                let p = Partial {
                    from,
                    group,
                    count,
                    sent_at,
                    id: part.id,
                    chunks: [const { None }; MAX_PARTS],
                    parts: [None; MAX_PARTS],
                    started: now,
                };
                self.partials.push(p).ok()?;
                self.partials.len().saturating_sub(1)
            }
        };
        let p = self.partials.get_mut(pos)?;
        if p.count != count {
            return None;
        }
        let i = usize::from(index);
        if p.parts.get(i).is_some_and(Option::is_some) {
            return None; // this part is already here
        }
        if index == 0 {
            p.id = part.id;
            p.sent_at = sent_at;
        }
        let mut s = String::new();
        if !push_str(&mut s, chunk) {
            return None;
        }
        *p.chunks.get_mut(i)? = Some(s);
        *p.parts.get_mut(i)? = Some(part);
        if p.parts.iter().take(usize::from(count)).any(Option::is_none) {
            return None;
        }
        let p = self.partials.swap_remove(pos);
        let mut text: String<MAX_TEXT> = String::new();
        for c in p.chunks.iter().flatten() {
            if !push_str(&mut text, c) {
                return None;
            }
        }
        Some(Whole { text, id: p.id, sent_at: p.sent_at, parts: p.parts })
    }

    // ----- sending -------------------------------------------------------

    /// Seal `text` for `to` and submit it; returns the id the delivery
    /// events will carry. `unix_secs` is the sender's own clock, shown to
    /// the recipient. Texts longer than one frame go as up to
    /// [`MAX_PARTS`] frames that only the recipient reassembles.
    pub fn send(
        &mut self,
        now: Instant,
        rng: Rng<'_>,
        unix_secs: u64,
        to: &PeerKey,
        text: &str,
    ) -> Result<MessageId, SendError> {
        // A node that sends before it ever had a link keys its tables now.
        self.router.seed(rng);
        if text.is_empty() {
            return Err(SendError::Empty);
        }
        if text.len() > MAX_TEXT {
            return Err(SendError::TooLong { max: MAX_TEXT });
        }
        if self.outbox.is_full() {
            return Err(SendError::OutboxFull);
        }
        let ci = self.contact_index(now, to, false)?;
        // Split into parts that each fit the path's plaintext capacity.
        let whole = Payload { sent_at: unix_secs, body: Body::Text(text) };
        // Wiped when dropped: it holds plaintext (serialised to measure it).
        let mut buf = zeroize::Zeroizing::new([0u8; MAX_FRAME_LEN]);
        let c = self.contacts.get(ci).ok_or(SendError::BadKey)?;
        let kind0 = if tagged(c, 0) { Kind::Contact } else { Kind::FirstContact };
        let mut chunks: Vec<(usize, usize), MAX_PARTS> = Vec::new();
        let single_class =
            [SizeClass::Small, SizeClass::Large].into_iter().find(|&cl| fits(kind0, cl, &whole, &mut buf[..]));
        if single_class.is_some() {
            let _ = chunks.push((0, text.len()));
        } else {
            // Part capacity on the costlier path, minus the part header.
            let room = envelope::plaintext_capacity(Kind::FirstContact, SizeClass::Large).saturating_sub(24);
            let mut start = 0;
            while start < text.len() {
                let mut end = start.saturating_add(room).min(text.len());
                while end > start && !text.is_char_boundary(end) {
                    end = end.saturating_sub(1);
                }
                chunks.push((start, end)).map_err(|_| SendError::TooLong { max: MAX_TEXT })?;
                start = end;
            }
        }
        let group = rng.next_u32();
        let mut parts: Vec<Part, MAX_PARTS> = Vec::new();
        // Tag numbers are taken for good only once every part is stored.
        let first_tag = self.contacts.get(ci).map_or(0, |c| c.tx_next);
        let mut next_tag = first_tag;
        let result = self.seal_parts(now, rng, ci, &chunks, group, &whole, text, unix_secs, &mut next_tag, &mut parts);
        if let Err(e) = result {
            // All or nothing: what was stored of this text goes again, before
            // anything of it was sent (sending happens after this returns).
            for p in &parts {
                self.router.withdraw(&p.id);
            }
            return Err(e);
        }
        if let Some(c) = self.contacts.get_mut(ci) {
            c.tx_next = next_tag;
        }
        let id = parts.first().map(|p| p.id).unwrap_or_default();
        let _ = self.outbox.push(Outgoing { id, parts, state: DeliveryState::Queued });
        self.push_event(Event::Status { id, state: DeliveryState::Queued });
        Ok(id)
    }

    /// Seal and store each part of a text (see [`Endpoint::send`]); the
    /// parts stored so far are in `parts` whatever happens.
    #[allow(clippy::too_many_arguments)]
    fn seal_parts(
        &mut self,
        now: Instant,
        rng: Rng<'_>,
        ci: usize,
        chunks: &[(usize, usize)],
        group: u32,
        whole: &Payload<'_>,
        text: &str,
        unix_secs: u64,
        next_tag: &mut u32,
        parts: &mut Vec<Part, MAX_PARTS>,
    ) -> Result<(), SendError> {
        let count = chunks.len();
        // Plaintext, then the sealed frame: wiped when dropped, whatever happens.
        let mut buf = zeroize::Zeroizing::new([0u8; MAX_FRAME_LEN]);
        for (index, &(a, b)) in chunks.iter().enumerate() {
            let chunk = text.get(a..b).unwrap_or("");
            let payload = if count == 1 {
                *whole
            } else {
                Payload {
                    sent_at: unix_secs,
                    body: Body::Part { group, index: index as u8, count: count as u8, text: chunk },
                }
            };
            let c = self.contacts.get(ci).ok_or(SendError::BadKey)?;
            let (path, tag) = if tagged(c, next_tag.saturating_sub(c.tx_next)) {
                (Path::Contact { tag: envelope::tag(&c.tx_key, *next_tag) }, Some((ci, *next_tag)))
            } else {
                (Path::FirstContact, None)
            };
            let kind = if tag.is_some() { Kind::Contact } else { Kind::FirstContact };
            let class = [SizeClass::Small, SizeClass::Large]
                .into_iter()
                .find(|&cl| fits(kind, cl, &payload, &mut buf[..]))
                .ok_or(SendError::TooLong { max: MAX_TEXT })?;
            let spread = rng.next_u32().checked_rem(u32::from(HOPS_SPREAD).saturating_add(1)).unwrap_or(0);
            let hops = HOPS_MIN.saturating_add(spread as u8);
            let (key, ss) = (c.key, c.ss);
            let sealed = envelope::seal(
                rng,
                &self.identity,
                &key,
                &ss,
                path,
                hops,
                self.lifetime_secs,
                class,
                &payload,
                &mut buf[..],
            )
            .map_err(|e| match e {
                SealError::TooLarge => SendError::TooLong { max: MAX_TEXT },
                _ => SendError::BadKey,
            })?;
            let frame = buf.get(..sealed.len).unwrap_or(&[]);
            self.router.submit(now, frame).map_err(|_| SendError::StoreFull)?;
            if let Some((_, n)) = tag {
                *next_tag = n.saturating_add(1);
            }
            let _ = parts.push(Part { id: sealed.id, state: DeliveryState::Queued, tag });
        }
        Ok(())
    }

    /// Map router events about own frames onto sent messages.
    fn drain_router_events(&mut self) {
        while let Some(ev) = self.router.poll_event() {
            let Event::Status { id: pid, state } = ev else { continue };
            let Some(oi) = self.outbox.iter().position(|o| o.parts.iter().any(|p| p.id == pid)) else { continue };
            let Some(o) = self.outbox.get_mut(oi) else { continue };
            let mut acked = None;
            for p in o.parts.iter_mut().filter(|p| p.id == pid) {
                if state > p.state {
                    p.state = state;
                    if state == DeliveryState::Delivered {
                        acked = p.tag;
                    }
                }
            }
            let overall = if o.parts.iter().any(|p| p.state == DeliveryState::Expired) {
                DeliveryState::Expired
            } else {
                o.parts.iter().map(|p| p.state).min().unwrap_or(DeliveryState::Queued)
            };
            let id = o.id;
            let changed = overall != o.state && overall > o.state;
            if changed {
                o.state = overall;
                self.push_event(Event::Status { id, state: overall });
            }
            if matches!(overall, DeliveryState::Delivered | DeliveryState::Expired) {
                self.outbox.swap_remove(oi);
            }
            if let Some((ci, n)) = acked
                && let Some(c) = self.contacts.get_mut(ci)
            {
                c.tx_acked = c.tx_acked.max(n.saturating_add(1));
            }
        }
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
        // Long texts whose parts never all came: give up after the maximum
        // lifetime.
        let max = Duration::from_secs(u64::from(MAX_LIFETIME_SECS));
        self.partials.retain(|p| now.saturating_since(p.started) < max);
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
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let router = self.router.poll_timeout();
        let receipt = self.receipts.iter().map(|r| r.0).min();
        let r = match (router, receipt) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if self.trials.is_empty() {
            r
        } else {
            // Trials wait for tokens: look again in a few milliseconds.
            let interval = Duration::from_millis(1000u64.checked_div(u64::from(self.trial_rate)).unwrap_or(1).max(1));
            let soon = self.trial_buckets.iter().map(|(_, _, t)| t.saturating_add(interval)).min();
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
        let kind = MessageFrame::new_unchecked(frame).kind();
        // No room to report a text (the driver has not drained events), or
        // over this link's DH budget: try later, if the store keeps it.
        let defer = self.events.is_full() || (kind == Kind::FirstContact && !self.take_trial_token(now, link));
        if defer {
            // Over this link's DH budget: try later if the store keeps it.
            if self.trials.is_full() {
                let _ = self.trials.pop_front();
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
