//! Receiving (SPEC §4.5, §4.6, §5): trying to open each new message frame
//! (a tag lookup, or a rate-limited first-contact trial), putting long
//! texts back together, showing what the policy lets through, refusing
//! replays, and sending receipts after a random delay (or when the user
//! acknowledges).

use heapless::String;
use heapless::binary_heap::{BinaryHeap, Max};
use zeroize::Zeroize;

use super::policy::Verdict;
use super::{
    Ack, Carrier, Endpoint, Event, MAX_PARTS, MAX_TEXT, RECEIPT_DELAY_MS, RECEIPT_GRID_MS, Received, STRANGER_PARTIALS,
};
use crate::envelope::{self, Body, OpenError, PeerKey};
use crate::node::Rng;
use crate::router::LinkId;
use crate::time::{Duration, Instant};
use crate::wire::{Kind, MAX_FRAME_LEN, MAX_LIFETIME_SECS, MessageFrame, MessageId, RECEIPT_SECRET_LEN, TAG_LEN};

/// Most replay entries evicted in one pass when the table is full.
const REPLAY_EVICT: usize = 256;

/// What the replay table keeps of a shown text.
#[derive(Clone, Copy, Debug)]
pub(super) struct ReplayEntry {
    /// When it may be forgotten (its lifetime cannot outlast this).
    pub(super) until: Instant,
    /// The sender's clock at sending.
    sent_at: u64,
    /// Its receipt was sent (a replay gets it again).
    receipted: bool,
    /// The sender was a contact.
    contact: bool,
}

/// A part that opened: what its receipt needs.
#[derive(Clone, Copy, Debug)]
struct PartRef {
    id: MessageId,
    secret: [u8; RECEIPT_SECRET_LEN],
}

pub(super) struct Partial {
    from: PeerKey,
    /// From a named contact (room is kept for contacts).
    contact: bool,
    group: u32,
    count: u8,
    sent_at: u64,
    id: MessageId,
    chunks: [Option<String<MAX_TEXT>>; MAX_PARTS],
    parts: [Option<PartRef>; MAX_PARTS],
    pub(super) started: Instant,
}

/// A long text whose parts have all come.
struct Whole {
    text: String<MAX_TEXT>,
    id: MessageId,
    sent_at: u64,
    parts: [Option<PartRef>; MAX_PARTS],
}

fn push_str<const N: usize>(dst: &mut String<N>, s: &str) -> bool {
    dst.push_str(s).is_ok()
}

impl<Rt: Carrier, const C: usize, const TAGS: usize, const OUT: usize, const REPLAY: usize>
    Endpoint<Rt, C, TAGS, OUT, REPLAY>
{
    /// Take one first-contact trial token for `link`, if both its bucket
    /// and the node's have one.
    pub(super) fn take_trial_token(&mut self, now: Instant, link: LinkId) -> bool {
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
        let rate = self.trial_rate;
        let node_rate = rate.saturating_mul(2);
        let (node_tokens, node_at) = &mut self.trial_node;
        refill(node_tokens, node_at, now, node_rate);
        let Some((_, tokens, at)) = self.trial_buckets.get_mut(i) else { return false };
        refill(tokens, at, now, rate);
        // Both budgets: the link's (one neighbour cannot take it all) and
        // the node's (many links, or source ports, cannot multiply it).
        if *tokens == 0 || self.trial_node.0 == 0 {
            return false;
        }
        *tokens = tokens.saturating_sub(1);
        self.trial_node.0 = self.trial_node.0.saturating_sub(1);
        true
    }

    /// Bring back trials that a full queue let go (their messages marked in
    /// the router), oldest first, up to half the queue: the other half is
    /// left for what arrives meanwhile.
    pub(super) fn refill_trials(&mut self) {
        let room = (self.trials.capacity() / 2).saturating_sub(self.trials.len());
        if room == 0 || self.router.untried() == 0 {
            return;
        }
        let trials = &mut self.trials;
        let mut left = room;
        self.router.take_untried(&mut |id, link| {
            // A message from a link now gone is charged to the node's budget
            // and to a bucket of its own.
            let _ = trials.push_back((link.unwrap_or(LinkId(u32::MAX)), id));
            left = left.saturating_sub(1);
            left > 0
        });
    }

    pub(super) fn try_open(&mut self, now: Instant, rng: Rng<'_>, id: MessageId, frame: &[u8]) {
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
        // Parse what came from a copy (the scratch buffer is wiped at once;
        // the copy is wiped on every return).
        let mut pt = zeroize::Zeroizing::new([0u8; MAX_FRAME_LEN]);
        let len = opened.plaintext.len();
        if let (Some(dst), Some(src)) = (pt.get_mut(..len), self.scratch.get_mut(opened.plaintext.clone())) {
            dst.copy_from_slice(src);
            src.zeroize();
        }
        let plaintext = pt.get(..len).unwrap_or(&[]);
        let Ok(payload) = envelope::parse_payload(plaintext) else { return };
        let sent_at = payload.sent_at;
        // Replay protection: never deliver the same message twice. An exact
        // replay of something already shown gets its receipt again (that
        // erases the copies still travelling); anything refused otherwise
        // gets none, so its sender sees it expire rather than a false
        // "delivered".
        if let Some(e) = self.replay.get(&opened.secret).or_else(|| self.ahead.get(&opened.secret)) {
            if e.receipted {
                self.schedule_receipt(now, rng, id, opened.secret);
            }
            return;
        }
        let floor = self.replay_floor.get(usize::from(self.is_contact(&opened.sender))).copied().unwrap_or(u64::MAX);
        if sent_at <= floor {
            return;
        }
        // Dated beyond our clock and the slack: held aside, never a floor;
        // when that room is full, refused and not remembered (so refused
        // again every time: never shown twice).
        // (Room for every part of a long text: all are remembered when it is
        // shown.)
        if self.dated_ahead(now, sent_at) && self.ahead.len().saturating_add(MAX_PARTS) > self.ahead.capacity() {
            self.stats.too_far_ahead = self.stats.too_far_ahead.saturating_add(1);
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
            if let Some(entry) = match self.replay.get_mut(secret) {
                Some(e) => Some(e),
                None => self.ahead.get_mut(secret),
            } {
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
        let until = now.saturating_add(Duration::from_secs(u64::from(MAX_LIFETIME_SECS)));
        let entry = ReplayEntry { until, sent_at, receipted, contact };
        if self.dated_ahead(now, sent_at) && self.ahead.insert(secret, entry).is_ok() {
            return;
        }
        if self.replay.is_full() {
            self.evict_replay();
        }
        let _ = self.replay.insert(secret, entry);
    }

    /// Texts held aside whose lifetime ended go; those whose date has come
    /// within the slack join the replay table (where they may set a floor
    /// like any other).
    pub(super) fn settle_ahead(&mut self, now: Instant) {
        let mut done: heapless::Vec<([u8; RECEIPT_SECRET_LEN], bool), 32> = heapless::Vec::new();
        for (k, e) in self.ahead.iter() {
            let expired = e.until <= now;
            if (expired || !self.dated_ahead(now, e.sent_at)) && done.push((*k, expired)).is_err() {
                break;
            }
        }
        for (k, expired) in &done {
            if let Some(e) = self.ahead.swap_remove(k)
                && !expired
            {
                if self.replay.is_full() {
                    self.evict_replay();
                }
                let _ = self.replay.insert(*k, e);
            }
        }
    }

    /// A slot for a new long text from `from`, freed if need be (its
    /// parts were never receipted, so their senders see them expire).
    /// Strangers hold at most [`STRANGER_PARTIALS`] slots, one each: a
    /// stranger's new text pushes out its own older one, or else the oldest
    /// stranger's; a contact's text takes a free slot or pushes out the
    /// oldest stranger's, and only when contacts hold every slot the oldest
    /// contact's. So strangers can never push out a contact's text (issue
    /// 12). `None`: a stranger found every slot held by contacts.
    fn partial_slot(&mut self, from: PeerKey, contact: bool) -> Option<usize> {
        let oldest = |partials: &[Option<Partial>], keep: &dyn Fn(&Partial) -> bool| {
            partials
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.as_ref().filter(|p| keep(p)).map(|p| (p.started, i)))
                .min()
                .map(|(_, i)| i)
        };
        let strangers = self.partials.iter().flatten().filter(|p| !p.contact).count();
        let victim = if contact {
            match self.partials.iter().position(Option::is_none) {
                Some(free) => return Some(free),
                None => oldest(&self.partials, &|p| !p.contact).or_else(|| oldest(&self.partials, &|_| true))?,
            }
        } else if let Some(own) = oldest(&self.partials, &|p| p.from == from) {
            own
        } else if strangers >= STRANGER_PARTIALS {
            oldest(&self.partials, &|p| !p.contact)?
        } else {
            match self.partials.iter().position(Option::is_none) {
                Some(free) => return Some(free),
                None => oldest(&self.partials, &|p| !p.contact)?,
            }
        };
        drop_partial(self.partials.get_mut(victim)?);
        Some(victim)
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
        let pos =
            match self.partials.iter().position(|p| p.as_ref().is_some_and(|p| p.from == from && p.group == group)) {
                Some(p) => p,
                None => {
                    let free = self.partial_slot(from, self.is_contact(&from))?;
                    let p = Partial {
                        from,
                        contact: self.is_contact(&from),
                        group,
                        count,
                        sent_at,
                        id: part.id,
                        chunks: [const { None }; MAX_PARTS],
                        parts: [None; MAX_PARTS],
                        started: now,
                    };
                    *self.partials.get_mut(free)? = Some(p);
                    free
                }
            };
        let slot = self.partials.get_mut(pos)?;
        let p = slot.as_mut()?;
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
        let mut text: String<MAX_TEXT> = String::new();
        let whole = p.chunks.iter().flatten().all(|c| push_str(&mut text, c));
        let (id, sent_at, parts) = (p.id, p.sent_at, p.parts);
        drop_partial(slot);
        whole.then_some(Whole { text, id, sent_at, parts })
    }
}

/// Wipe a long text's slot where it is (its chunks' whole buffers) and free
/// it.
pub(super) fn drop_partial(slot: &mut Option<Partial>) {
    if let Some(p) = slot {
        for c in p.chunks.iter_mut().flatten() {
            c.zeroize();
        }
    }
    *slot = None;
}

/// Add to a token bucket what `rate` a second has earned since `at`, up to
/// `rate` (a second's worth).
fn refill(tokens: &mut u32, at: &mut Instant, now: Instant, rate: u32) {
    let add = now.saturating_since(*at).as_millis().saturating_mul(u64::from(rate)) / 1000;
    if add > 0 {
        *tokens = u32::try_from(u64::from(*tokens).saturating_add(add)).unwrap_or(u32::MAX).min(rate);
        *at = now;
    }
}
