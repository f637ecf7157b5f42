//! Broadcast suppression (SPEC §6.5): on a broadcast medium a relayed
//! message or receipt is held back for a short delay, and dropped if enough
//! neighbours were heard sending it meanwhile. Every transmitter in range
//! shares the airtime, so a copy that only repeats what the neighbourhood
//! already heard is the costliest kind of waste.

use super::links::Item;
use super::{Config, Router};
use crate::time::{Duration, Instant};
use crate::wire::{MessageId, SizeClass};

/// A relayed item held back on a broadcast link (SPEC §6.5).
#[derive(Clone, Copy, Debug)]
pub(super) struct Deferred {
    pub(super) due: Instant,
    pub(super) link: u8,
    /// Copies heard on that link, the first one included.
    heard: u8,
    item: Item,
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

impl<const S: usize, const L: usize, const D: usize, const LINKS: usize, const Q: usize, const R: usize>
    Router<S, L, D, LINKS, Q, R>
{
    /// Queue `item` on every link but the one it came from (a broadcast
    /// link gets it back: the medium reaches others). Relayed items on a
    /// broadcast link wait first (SPEC §6.5); own ones (`from` is `None`)
    /// go at once.
    pub(super) fn enqueue_all(&mut self, now: Instant, item: Item, from: Option<usize>, class: SizeClass) {
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

    /// Another copy of a message (`receipt` is `None`) or of its receipt
    /// (at that level) came in on broadcast link `li`. A receipt's copy
    /// counts only if it came from this node's level or the next one up:
    /// one from below has yet to pass here. A message's copy, short of the
    /// count that cancels it, also puts the rebroadcast back by one more
    /// hold-back window: a node in a well-covered spot waits longer and is
    /// likelier to hear the copy that makes it keep quiet, while one at the
    /// edge of the coverage (few copies heard) goes first (SPEC §6.5). An
    /// item settled by enough copies leaves the held-back list at once.
    pub(super) fn heard_again(&mut self, li: usize, id: MessageId, receipt: Option<u8>) {
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
    pub(super) fn release_deferred(&mut self, now: Instant) {
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
}
