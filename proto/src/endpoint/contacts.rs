//! Contacts and their one-time tags (SPEC §4.4). A contact's static-static
//! secret is computed once; the tags it may use next are kept in a map, so
//! that finding which contact a tagged message is from costs one lookup and
//! no Diffie-Hellman. Tag counters survive restarts through
//! [`ContactState`], which the owner of the endpoint stores.

use super::{Carrier, Endpoint, SendError, TAG_WINDOW};
use crate::envelope::{self, PeerKey};
use crate::time::Instant;

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
pub(super) struct Contact {
    pub(super) key: PeerKey,
    pub(super) ss: [u8; 32],
    pub(super) tx_key: [u8; 32],
    rx_key: [u8; 32],
    /// Next tag number to send with.
    pub(super) tx_next: u32,
    /// One more than the highest tag number delivered.
    pub(super) tx_acked: u32,
    /// We have received from them: they hold our key, so tags work.
    pub(super) heard: bool,
    /// Lowest tag number still expected, and which numbers from there on
    /// were used (bit i: `rx_base + i`).
    rx_base: u32,
    rx_used: u32,
    /// Added by the user (not just sent to).
    named: bool,
    pub(super) last_used: Instant,
}

impl Drop for Contact {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.ss.zeroize();
        self.tx_key.zeroize();
        self.rx_key.zeroize();
    }
}

/// Which path a text to contact `c` takes, with `extra` tags already taken
/// for it: tags only once they have written to us, and only while few of our
/// tagged messages are unacknowledged (SPEC §4.4).
pub(super) fn tagged(c: &Contact, extra: u32) -> bool {
    c.heard && c.tx_next.saturating_add(extra) < c.tx_acked.saturating_add(TAG_WINDOW / 2)
}

impl<Rt: Carrier, const C: usize, const TAGS: usize, const OUT: usize, const REPLAY: usize>
    Endpoint<Rt, C, TAGS, OUT, REPLAY>
{
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
    ///
    /// Counters never go back (issue 13): for a peer this endpoint already
    /// knows (the user sent to its code, or it is named already), the saved
    /// state is merged with the live one. The send counters take the higher
    /// of the two, "heard" stays set, and the receiving window only moves
    /// forward. So restating a contact from an older or empty record cannot
    /// make this side reuse a tag, or drop back to the first-contact path.
    pub fn restore_contact(&mut self, now: Instant, key: PeerKey, state: ContactState) -> Result<(), SendError> {
        let live = self.contact_state(&key);
        let ci = self.contact_index(now, &key, true)?;
        let mask = (1u32 << TAG_WINDOW) - 1;
        let state = match live {
            None => {
                ContactState { tx_acked: state.tx_acked.min(state.tx_next), rx_used: state.rx_used & mask, ..state }
            }
            Some(live) => {
                let tx_next = live.tx_next.max(state.tx_next);
                let (rx_base, rx_used) = match state.rx_base.cmp(&live.rx_base) {
                    core::cmp::Ordering::Greater => (state.rx_base, state.rx_used & mask),
                    core::cmp::Ordering::Equal => (live.rx_base, (live.rx_used | state.rx_used) & mask),
                    core::cmp::Ordering::Less => (live.rx_base, live.rx_used),
                };
                ContactState {
                    tx_next,
                    tx_acked: live.tx_acked.max(state.tx_acked).min(tx_next),
                    heard: live.heard || state.heard,
                    rx_base,
                    rx_used,
                }
            }
        };
        // Drop the current window's tags, then install the merged one.
        if let Some(c) = self.contacts.get(ci) {
            let rx_key = c.rx_key;
            for k in 0..TAG_WINDOW {
                self.tags.swap_remove(&envelope::tag(&rx_key, c.rx_base.saturating_add(k)));
            }
        }
        if let Some(c) = self.contacts.get_mut(ci) {
            c.tx_next = state.tx_next;
            c.tx_acked = state.tx_acked;
            c.heard = state.heard;
            c.rx_base = state.rx_base;
            c.rx_used = state.rx_used;
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

    pub(super) fn contact_index(&mut self, now: Instant, key: &PeerKey, named: bool) -> Result<usize, SendError> {
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
    pub(super) fn consume_tag(&mut self, ci: usize, n: u32) {
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
}
