//! The seen table: every message id this node has met (dedup), the
//! tombstones of delivered ones (their receipt secret, so that a late copy
//! is answered), and the index from id to store slot (SPEC §6.3).
//!
//! It is keyed by a per-router secret so that a sender cannot grind ids
//! that collide in it, and bounded by `D`: when full, an entry that holds
//! no store slot is evicted, preferably one of the link charged with the
//! most entries.

use heapless::index_map::FnvIndexMap;

use super::store::Slot;
use super::{FrameError, Origin, Router};
use crate::node::Rng;
use crate::time::Instant;
use crate::wire::{COMMIT_LEN, MessageId, RECEIPT_SECRET_LEN};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SeenState {
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
pub(super) struct Seen {
    pub(super) commit: [u8; COMMIT_LEN],
    pub(super) expires: Instant,
    pub(super) origin: Origin,
    pub(super) state: SeenState,
    /// The hop budget the first copy arrived with (an own message: the
    /// budget it was sent with). Receipts climb toward higher levels, that
    /// is toward the sender (SPEC §5).
    pub(super) level: u8,
}

/// The seen table, keyed by message id XOR a per-router secret. Ids are
/// hashes, but a sender chooses its frames and can grind ids whose plain
/// FNV hashes collide in the table (a few hundred tries each), making every
/// lookup walk one long cluster. Under a secret key it cannot aim. The key
/// is drawn at the first link-up or send (both take an rng), before
/// anything enters the table, and never changes while entries live.
pub(super) struct SeenTable<const D: usize> {
    map: FnvIndexMap<MessageId, Seen, D>,
    key: [u8; 16],
}

impl<const D: usize> SeenTable<D> {
    pub(super) const fn new() -> Self {
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

    pub(super) fn get(&self, id: &MessageId) -> Option<&Seen> {
        self.map.get(&self.k(id))
    }

    pub(super) fn get_mut(&mut self, id: &MessageId) -> Option<&mut Seen> {
        let k = self.k(id);
        self.map.get_mut(&k)
    }

    pub(super) fn contains_key(&self, id: &MessageId) -> bool {
        self.map.contains_key(&self.k(id))
    }

    fn insert(&mut self, id: MessageId, seen: Seen) -> Result<Option<Seen>, (MessageId, Seen)> {
        let k = self.k(&id);
        self.map.insert(k, seen)
    }

    pub(super) fn swap_remove(&mut self, id: &MessageId) -> Option<Seen> {
        let k = self.k(id);
        self.map.swap_remove(&k)
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn get_index(&self, i: usize) -> Option<(MessageId, &Seen)> {
        self.map.get_index(i).map(|(k, v)| (self.k(k), v))
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (MessageId, &Seen)> + '_ {
        self.map.iter().map(|(k, v)| (self.k(k), v))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Seen> + '_ {
        self.map.values()
    }
}

/// Seen entries looked at, past the first evictable one, for one of the
/// heaviest link's: eviction stays O(1) per frame whatever the table holds.
const EVICT_SCAN: usize = 64;

impl<const S: usize, const L: usize, const D: usize, const LINKS: usize, const Q: usize, const R: usize>
    Router<S, L, D, LINKS, Q, R>
{
    /// Entries in the seen table.
    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    /// Draw this router's secret table key (SPEC §6.3) if it has none and
    /// its tables are empty; otherwise nothing. `handle_link_up` and the
    /// endpoint's `send` call it, so a node keys its tables before anything
    /// enters them; a driver that submits frames itself should call it
    /// first.
    pub fn seed(&mut self, rng: Rng<'_>) {
        self.seen.seed(rng);
    }

    pub(super) fn insert_seen(&mut self, id: MessageId, seen: Seen) -> Result<(), FrameError> {
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

    pub(super) fn uncharge_seen(&mut self, origin: Origin) {
        if let Origin::Link(l) = origin
            && let Some(link) = self.link_index(l).and_then(|i| self.links.get_mut(i)).and_then(Option::as_mut)
        {
            link.seen = link.seen.saturating_sub(1);
        }
    }
}
