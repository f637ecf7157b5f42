//! The store (SPEC §6.2): slot pools of the two size classes, what goes in
//! (a new message from a link, or this node's own submission), what comes
//! out (evicted, expired, delivered: the ciphertext is wiped with its
//! slot), and the receipts that release stored messages.
//!
//! Fairness lives here: a full store evicts the oldest relayed message of
//! the link holding the most slots, never an own one.

use heapless::Vec;

use super::links::Item;
use super::seen::{Seen, SeenState};
use super::{FrameError, LinkId, Origin, Outcome, Router, StoreOutcome, SubmitError, TOMBSTONE_MIN_SECS};
use crate::node::DeliveryState;
use crate::time::{Duration, Instant};
use crate::wire::{MessageFrame, MessageId, RECEIPT_SECRET_LEN, ReceiptRepr, SizeClass, WireError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slot {
    pub(super) class: SizeClass,
    pub(super) index: u16,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Meta {
    pub(super) id: MessageId,
    /// Hop budget to put on the next transmission.
    pub(super) hops: u8,
    /// Whether it may be forwarded at all (hops were left).
    pub(super) forward: bool,
    pub(super) lifetime_secs: u32,
    pub(super) arrived: Instant,
    pub(super) origin: Origin,
    seq: u32,
    pub(super) sent: bool,
    /// Bit i: the link in slot i of the link table has this message.
    pub(super) peer_has: u32,
    /// An endpoint could not try this message yet (its trial queue was
    /// full) and will ask for it again ([`Router::take_untried`]).
    pub(super) untried: bool,
}

impl Meta {
    fn origin_link(&self) -> Option<LinkId> {
        match self.origin {
            Origin::Own => None,
            Origin::Link(l) => Some(l),
        }
    }
}

const NIL: u16 = u16::MAX;

pub(super) struct Pool<const N: usize, const LEN: usize> {
    pub(super) meta: [Option<Meta>; N],
    pub(super) data: [[u8; LEN]; N],
    /// Occupied slots in arrival (= `seq`) order, doubly linked, so that
    /// `victim` finds the oldest message of an origin without a scan.
    prev: [u16; N],
    next: [u16; N],
    head: u16,
    tail: u16,
}

impl<const N: usize, const LEN: usize> Pool<N, LEN> {
    pub(super) const fn new() -> Self {
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

const SWEEP: Duration = Duration::from_millis(1_000);

impl<const S: usize, const L: usize, const D: usize, const LINKS: usize, const Q: usize, const R: usize>
    Router<S, L, D, LINKS, Q, R>
{
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

    pub(super) fn slot_bytes(&self, slot: Slot) -> Option<&[u8]> {
        let i = usize::from(slot.index);
        match slot.class {
            SizeClass::Small => self.small.data.get(i).map(|d| &d[..]),
            SizeClass::Large => self.large.data.get(i).map(|d| &d[..]),
        }
    }

    pub(super) fn meta(&self, slot: Slot) -> Option<&Meta> {
        let i = usize::from(slot.index);
        match slot.class {
            SizeClass::Small => self.small.meta.get(i)?.as_ref(),
            SizeClass::Large => self.large.meta.get(i)?.as_ref(),
        }
    }

    pub(super) fn meta_mut(&mut self, slot: Slot) -> Option<&mut Meta> {
        let i = usize::from(slot.index);
        match slot.class {
            SizeClass::Small => self.small.meta.get_mut(i)?.as_mut(),
            SizeClass::Large => self.large.meta.get_mut(i)?.as_mut(),
        }
    }

    fn class_index(class: SizeClass) -> usize {
        match class {
            SizeClass::Small => 0,
            SizeClass::Large => 1,
        }
    }

    pub(super) fn handle_message<'a>(
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
                untried: false,
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
    pub(super) fn schedule_sweep(&mut self, at: Instant) {
        let t = at.max(self.last_sweep.saturating_add(SWEEP));
        if t < self.next_sweep {
            self.next_sweep = t;
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
            if m.untried {
                self.untried = self.untried.saturating_sub(1);
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

    pub(super) fn handle_receipt(
        &mut self,
        now: Instant,
        li: Option<usize>,
        r: ReceiptRepr,
    ) -> Result<MessageId, FrameError> {
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
            untried: false,
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

    /// Remember that the endpoint above could not try a held message yet
    /// (its bounded queue of trials overflowed): it stays held, and
    /// [`Router::take_untried`] hands it back later, so a first contact is
    /// never lost to a full queue while the store keeps it (issue 12).
    /// Returns whether the message is held (and now marked).
    pub fn mark_untried(&mut self, id: &MessageId) -> bool {
        let Some(Seen { state: SeenState::Held(slot), .. }) = self.seen.get(id).copied() else { return false };
        let meta = match slot.class {
            SizeClass::Small => self.small.meta.get_mut(usize::from(slot.index)),
            SizeClass::Large => self.large.meta.get_mut(usize::from(slot.index)),
        };
        let Some(Some(m)) = meta else { return false };
        if !m.untried {
            m.untried = true;
            self.untried = self.untried.saturating_add(1);
        }
        true
    }

    /// How many held messages are marked untried.
    pub fn untried(&self) -> u32 {
        self.untried
    }

    /// Hand back marked messages, oldest first (small ones, then large),
    /// unmarking each, while `take` returns `true`. `take` gets the id and
    /// the link the message came from. One walk of the store: call it when
    /// [`Router::untried`] is not zero.
    pub fn take_untried(&mut self, take: &mut dyn FnMut(MessageId, Option<LinkId>) -> bool) {
        if self.untried == 0 {
            return;
        }
        let mut more = true;
        for class in [SizeClass::Small, SizeClass::Large] {
            let (metas, next, mut i) = match class {
                SizeClass::Small => (&mut self.small.meta[..], &self.small.next[..], self.small.head),
                SizeClass::Large => (&mut self.large.meta[..], &self.large.next[..], self.large.head),
            };
            while more && self.untried > 0 {
                let Some(slot) = metas.get_mut(usize::from(i)) else { break };
                if let Some(m) = slot
                    && m.untried
                {
                    m.untried = false;
                    self.untried = self.untried.saturating_sub(1);
                    more = take(m.id, m.origin_link());
                }
                i = next.get(usize::from(i)).copied().unwrap_or(NIL);
            }
        }
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

    pub(super) fn sweep(&mut self, now: Instant) {
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
}
