//! The router's state per link: its queue of items to send, its token
//! buckets (frames accepted, messages that keep their full hop budget), its
//! hello and summary progress, and the frame being built or segmented for
//! it. `transmit_on` is where a link's next datagram is chosen: hello
//! first, then summaries, queued receipts and messages, then store sync.

use heapless::{Deque, Vec};

use super::seen::{SeenState, SeenTable};
use super::{Config, LinkCaps, LinkId, LinkInfo, Origin, Router, TOMBSTONE_MIN_SECS, Transmit};
use crate::node::{DeliveryState, Node, Rng};
use crate::segment;
use crate::time::{Duration, Instant};
use crate::wire::{
    MAX_FRAME_LEN, MAX_LIFETIME_SECS, MessageFrame, MessageId, RECEIPT_LEN, RECEIPT_SECRET_LEN, ReceiptRepr,
    SegmentRepr, SizeClass,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Item {
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

impl Item {
    pub(super) fn id(&self) -> MessageId {
        match self {
            Item::Message(id) | Item::Receipt { id, .. } => *id,
        }
    }
}

#[derive(Debug)]
struct TxSeg {
    frag: u8,
    count: u8,
    unit: usize,
    next: u8,
    len: usize,
}

pub(super) struct Link<const Q: usize> {
    pub(super) id: LinkId,
    pub(super) caps: LinkCaps,
    pub(super) nonce: [u8; 16],
    pub(super) peer_nonce: Option<[u8; 16]>,
    /// The peer echoed our nonce: its address is validated.
    pub(super) validated: bool,
    pub(super) salt: [u8; 16],
    pub(super) rx_bytes: u64,
    pub(super) tx_unvalidated: u64,
    pub(super) hello_due: Option<Instant>,
    pub(super) hello_left: u8,
    pub(super) hello_backoff: Duration,
    /// We owe the peer a hello (it sent one that did not echo our nonce).
    pub(super) hello_reply: bool,
    /// On a validated link: a new nonce the peer's address offered (the peer
    /// restarted, or someone spoofs its address), not taken until a hello
    /// with it echoes ours. Our hellos echo it meanwhile.
    pub(super) offered_nonce: Option<[u8; 16]>,
    /// An offered nonce that was proven (a hello with it echoed ours) while
    /// renewals were rate-limited: taken when `renewed_at` is
    /// `HELLO_RENEW_MIN` old. The peer already uses it, so leaving it would
    /// leave the two sides with different salts.
    pub(super) proven_nonce: Option<[u8; 16]>,
    /// When this validated link last answered a hello, and last took a new
    /// peer nonce: both are rate-limited (issue 12).
    pub(super) answered_at: Option<Instant>,
    pub(super) renewed_at: Option<Instant>,
    pub(super) summary_cursor: Option<usize>,
    pub(super) summary_seq: u8,
    pub(super) summaries_in: u8,
    /// When the peer's current summary round began.
    pub(super) round_at: Instant,
    /// When this side sends its next summary round.
    pub(super) next_resync: Instant,
    /// After the peer's last summary: walk the store and push what it lacks.
    pub(super) sync_cursor: Option<usize>,
    pub(super) queue: Deque<Item, Q>,
    pub(super) held: [u32; 2],
    pub(super) seen: u32,
    pub(super) tokens: u32,
    refill_at: Instant,
    /// New messages that may still keep their full hop budget (`far_rate`).
    pub(super) far: Bucket,
    pub(super) tx: Vec<u8, MAX_FRAME_LEN>,
    seg: Option<TxSeg>,
    next_frag: u8,
    /// Frames for this link are pulled with `poll_transmit_link` only
    /// (a link with flow control or credits), never handed out by
    /// `poll_transmit`.
    pub(super) pull: bool,
}

/// A token bucket: `rate` tokens a second, at most `burst`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bucket {
    tokens: u32,
    at: Instant,
}

impl Bucket {
    pub(super) fn take(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
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

impl<const S: usize, const L: usize, const D: usize, const LINKS: usize, const Q: usize, const R: usize>
    Router<S, L, D, LINKS, Q, R>
{
    /// Links currently up, with their caps and whether validated.
    pub fn links(&self) -> impl Iterator<Item = LinkInfo> + '_ {
        self.links.iter().flatten().map(|l| LinkInfo { id: l.id, caps: l.caps, validated: l.validated, pull: l.pull })
    }

    pub(super) fn link_index(&self, link: LinkId) -> Option<usize> {
        self.links.iter().position(|l| l.as_ref().is_some_and(|l| l.id == link))
    }

    /// A new link in a free slot, greeted with a hello unless broadcast.
    pub(super) fn new_link(&mut self, now: Instant, rng: Rng<'_>, link: LinkId, caps: LinkCaps) -> Option<usize> {
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
            offered_nonce: None,
            proven_nonce: None,
            answered_at: None,
            renewed_at: None,
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

    pub(super) fn refill(link: &mut Link<Q>, config: &Config, now: Instant) {
        let elapsed = now.saturating_since(link.refill_at).as_millis();
        let add = elapsed.saturating_mul(u64::from(config.link_rate)) / 1000;
        if add > 0 {
            let t = u64::from(link.tokens).saturating_add(add).min(u64::from(config.link_burst));
            link.tokens = u32::try_from(t).unwrap_or(u32::MAX);
            link.refill_at = now;
        }
    }

    /// A full queue drops a relayed item for the link (on a point-to-point
    /// link the next summary round offers it again); this node's own
    /// message or receipt takes the place of the newest relayed one instead:
    /// on a broadcast radio nothing would offer it again, and a busy
    /// neighbourhood must not silence the node itself. A queue of nothing
    /// but own items stays as it is (and the new one is dropped).
    pub(super) fn make_room(seen: &SeenTable<D>, l: &mut Link<Q>) {
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

    /// Produce the next datagram for link `li`.
    pub(super) fn transmit_on(&mut self, now: Instant, li: usize, buf: &mut [u8]) -> Option<Transmit> {
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

    /// Write a queued item into the link's `tx`; `None` if it no longer
    /// exists or the peer has it.
    pub(super) fn build_item(&mut self, now: Instant, li: usize, item: Item) -> Option<usize> {
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
                let link = self.links.get(li)?.as_ref()?;
                // On a point-to-point link, never back to where it came
                // from (SPEC §6.4), whatever the link's summaries said; a
                // broadcast link rebroadcasts on the link it heard it on.
                if !link.caps.broadcast && (meta.peer_has & bit != 0 || meta.origin == Origin::Link(link.id)) {
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
