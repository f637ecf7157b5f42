//! Who is shown and receipted (SPEC §5): blocked codes and the rate of
//! strangers, in the core so that every driver applies the same policy.
//!
//! A received text is shown (and its receipt sent) unless its sender is
//! blocked, or is a stranger (not a named contact) over the strangers' rate:
//! [`STRANGER_PER_MINUTE`] texts a minute per sender, and
//! [`STRANGERS_PER_MINUTE`] a minute from all strangers together. A text
//! that is not shown gets no receipt: its sender sees it expire, so a
//! blocked code cannot even learn whether we are reachable.
//!
//! Memory and time are bounded whatever arrives: the per-sender counts live
//! in a fixed table of [`STRANGER_SLOTS`] entries, two candidate places per
//! sender (O(1) per text). A sender whose entry another one took gets a
//! fresh count; the all-strangers budget bounds what that can buy.

use heapless::index_set::FnvIndexSet;

use crate::envelope::PeerKey;
use crate::time::{Duration, Instant};

/// Texts a minute one stranger may have shown.
pub const STRANGER_PER_MINUTE: u32 = 5;
/// Texts a minute all strangers together may have shown.
pub const STRANGERS_PER_MINUTE: u32 = 60;
/// Entries of the per-stranger table.
pub const STRANGER_SLOTS: usize = 512;
/// Codes that can be blocked at once.
pub const MAX_BLOCKED: usize = 1024;

const WINDOW: Duration = Duration::from_secs(60);

/// Why a code could not be blocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockedFull;

impl core::fmt::Display for BlockedFull {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "at most {MAX_BLOCKED} codes can be blocked")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for BlockedFull {}

/// What the policy decided for one text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Show it and send its receipt.
    Show,
    /// The sender is blocked.
    Blocked,
    /// A stranger over the per-sender or the all-strangers rate.
    OverRate,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    sender: [u8; 8],
    since: Instant,
    count: u32,
}

/// Blocked codes and the strangers' rate.
#[derive(Debug)]
pub struct Policy {
    blocked: FnvIndexSet<[u8; 32], MAX_BLOCKED>,
    slots: [Option<Slot>; STRANGER_SLOTS],
    all: (Instant, u32),
    per_sender: u32,
    per_minute: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self::new()
    }
}

impl Policy {
    /// Nobody blocked, the default rates.
    pub const fn new() -> Self {
        Policy {
            blocked: FnvIndexSet::new(),
            slots: [None; STRANGER_SLOTS],
            all: (Instant::ZERO, 0),
            per_sender: STRANGER_PER_MINUTE,
            per_minute: STRANGERS_PER_MINUTE,
        }
    }

    /// Set the strangers' rates (texts a minute per sender, and from all).
    pub fn set_stranger_rate(&mut self, per_sender: u32, all: u32) {
        self.per_sender = per_sender;
        self.per_minute = all;
    }

    /// Block `key`: its texts are dropped unseen and never receipted.
    pub fn block(&mut self, key: &PeerKey) -> Result<(), BlockedFull> {
        self.blocked.insert(*key.as_bytes()).map(|_| ()).map_err(|_| BlockedFull)
    }

    /// Unblock `key`.
    pub fn unblock(&mut self, key: &PeerKey) -> bool {
        self.blocked.swap_remove(key.as_bytes())
    }

    /// Whether `key` is blocked.
    pub fn is_blocked(&self, key: &PeerKey) -> bool {
        self.blocked.contains(key.as_bytes())
    }

    /// Unblock everyone.
    pub fn clear_blocked(&mut self) {
        self.blocked.clear();
    }

    /// Decide for one text from `from` (`contact`: a named contact).
    pub fn verdict(&mut self, now: Instant, from: &PeerKey, contact: bool) -> Verdict {
        if self.is_blocked(from) {
            return Verdict::Blocked;
        }
        if contact {
            return Verdict::Show;
        }
        if now.saturating_since(self.all.0) >= WINDOW {
            self.all = (now, 0);
        }
        if self.all.1 >= self.per_minute {
            return Verdict::OverRate;
        }
        let mut sender = [0u8; 8];
        sender.copy_from_slice(from.as_bytes().get(..8).unwrap_or(&[0; 8]));
        // Two candidate entries; a public key's bytes are already uniform
        // (one chosen to collide only resets a count: the all-strangers
        // budget above is the bound).
        let i = (u64::from_le_bytes(sender) as usize % STRANGER_SLOTS) & !1;
        let mine =
            [i, i | 1].into_iter().find(|&j| self.slots.get(j).copied().flatten().is_some_and(|s| s.sender == sender));
        let j = match mine {
            Some(j) => j,
            None => {
                // A free entry, or the one whose window began first.
                let age = |j: usize| self.slots.get(j).copied().flatten().map_or(Instant::ZERO, |s| s.since);
                let j = if age(i) <= age(i | 1) { i } else { i | 1 };
                if let Some(e) = self.slots.get_mut(j) {
                    *e = Some(Slot { sender, since: now, count: 0 });
                }
                j
            }
        };
        let Some(Some(slot)) = self.slots.get_mut(j) else { return Verdict::OverRate };
        if now.saturating_since(slot.since) >= WINDOW {
            *slot = Slot { sender, since: now, count: 0 };
        }
        if slot.count >= self.per_sender {
            return Verdict::OverRate;
        }
        slot.count = slot.count.saturating_add(1);
        self.all.1 = self.all.1.saturating_add(1);
        Verdict::Show
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Identity;

    fn key(seed: u8) -> PeerKey {
        Identity::from_secret_bytes([seed; 32]).public()
    }

    #[test]
    fn a_stranger_gets_five_a_minute_a_contact_all() {
        let mut p = Policy::new();
        let t = Instant::from_millis(1_000);
        let k = key(1);
        let shown = (0..8).filter(|_| p.verdict(t, &k, false) == Verdict::Show).count();
        assert_eq!(shown, 5);
        assert_eq!(p.verdict(t, &k, true), Verdict::Show, "a contact is not limited");
        let later = t.saturating_add(WINDOW);
        assert_eq!(p.verdict(later, &k, false), Verdict::Show, "a new minute");
    }

    #[test]
    fn all_strangers_together_get_sixty_a_minute() {
        let mut p = Policy::new();
        let t = Instant::from_millis(1_000);
        let shown = (0..100u8).filter(|&i| p.verdict(t, &key(i), false) == Verdict::Show).count();
        assert_eq!(shown, STRANGERS_PER_MINUTE as usize);
    }

    #[test]
    fn blocked_codes_are_never_shown_even_as_contacts() {
        let mut p = Policy::new();
        let t = Instant::from_millis(1_000);
        let k = key(3);
        p.block(&k).unwrap();
        assert_eq!(p.verdict(t, &k, true), Verdict::Blocked);
        assert!(p.unblock(&k));
        assert_eq!(p.verdict(t, &k, true), Verdict::Show);
        for i in 0..2 * MAX_BLOCKED {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&(i as u64 + 2).to_le_bytes());
            if let Ok(k) = PeerKey::from_bytes(b) {
                let _ = p.block(&k);
            }
        }
        assert_eq!(p.blocked.len(), MAX_BLOCKED);
        assert_eq!(p.block(&key(9)), Err(BlockedFull));
    }

    /// A flood of distinct strangers keeps the table at its size and each
    /// verdict a constant amount of work; the budget still holds.
    #[test]
    fn a_flood_of_strangers_stays_bounded() {
        let mut p = Policy::new();
        let mut shown = 0;
        for i in 0..100_000u32 {
            let t = Instant::from_millis(u64::from(i) * 10);
            let mut b = [7u8; 32];
            b[..4].copy_from_slice(&i.to_le_bytes());
            if let Ok(k) = PeerKey::from_bytes(b)
                && p.verdict(t, &k, false) == Verdict::Show
            {
                shown += 1;
            }
        }
        // 1,000 s of flood: at most 60 a minute, plus one window's start.
        assert!(shown <= (1_000 / 60 + 1) * STRANGERS_PER_MINUTE as usize, "{shown}");
        assert!(p.slots.iter().flatten().count() <= STRANGER_SLOTS);
    }
}
