//! Peer sync on point-to-point links (SPEC §6.1, §6.4): the hello
//! exchange that validates an address and salts the link, the stateless
//! cookies that answer addresses without a link, and the summary rounds
//! (sent at link-up and every `resync`) after which each side pushes what
//! the other lacks and the receipts of what it still carries.
//!
//! For an address without a link, nothing is kept until it proves (by
//! echoing a cookie) that it receives there.

use heapless::Vec;

use super::links::Item;
use super::seen::SeenState;
use super::{FrameError, LinkCaps, LinkId, Outcome, Router, Stranger, ValidatedHello};
use crate::hash;
use crate::node::Rng;
use crate::time::{Duration, Instant};
use crate::wire::{
    FINGERPRINT_LEN, HELLO_LEN, HelloRepr, SUMMARY_LEN, SUMMARY_MAX_FINGERPRINTS, SizeClass, SummaryRepr,
};

/// A validated link answers at most one hello in this long (SPEC §6.1).
pub const HELLO_ANSWER_MIN: Duration = Duration::from_millis(1_000);
/// A validated link takes a new peer nonce (a restart) at most once in this
/// long (SPEC §6.1).
pub const HELLO_RENEW_MIN: Duration = Duration::from_secs(5);

fn fp_sorted(summary: &SummaryRepr<'_>) -> Vec<[u8; FINGERPRINT_LEN], SUMMARY_MAX_FINGERPRINTS> {
    let mut v: Vec<[u8; FINGERPRINT_LEN], SUMMARY_MAX_FINGERPRINTS> =
        summary.iter().take(SUMMARY_MAX_FINGERPRINTS).collect();
    v.sort_unstable();
    v
}

impl<const S: usize, const L: usize, const D: usize, const LINKS: usize, const Q: usize, const R: usize>
    Router<S, L, D, LINKS, Q, R>
{
    /// Cookies are valid in the epoch they were made and the next one:
    /// 10 to 20 s, many round trips even on a slow link.
    const COOKIE_EPOCH_MS: u64 = 10_000;

    fn cookie_epoch(now: Instant) -> u32 {
        u32::try_from(now.millis() / Self::COOKIE_EPOCH_MS).unwrap_or(u32::MAX)
    }

    /// [`Node::handle_stranger`](crate::node::Node::handle_stranger): a
    /// cookie hello for bytes from an address without a link, or the hello
    /// that echoed a valid cookie (SPEC §6.1).
    fn cookie_key(&mut self, rng: Rng<'_>) {
        self.seed(&mut *rng);
        if self.cookie_key == [0; 16] {
            // Drawn at the first stranger, not in `seed`: drivers that never
            // see one (the simulator, a dongle on serial links) keep the same
            // random streams.
            rng.fill_bytes(&mut self.cookie_key);
        }
    }

    /// [`Node::probe`](crate::node::Node::probe): a hello to `addr` whose
    /// nonce is our cookie for it, so that its answer validates statelessly.
    pub(super) fn probe_hello(&mut self, now: Instant, rng: Rng<'_>, addr: &[u8], out: &mut [u8]) -> Option<usize> {
        self.cookie_key(rng);
        let nonce = hash::cookie(&self.cookie_key, Self::cookie_epoch(now), addr);
        HelloRepr { nonce, echo: [0; 16] }.emit(out).ok()
    }

    pub(super) fn answer_stranger(
        &mut self,
        now: Instant,
        rng: Rng<'_>,
        addr: &[u8],
        bytes: &[u8],
        out: &mut [u8],
    ) -> Stranger {
        self.cookie_key(rng);
        let hello = HelloRepr::parse(bytes).ok();
        let epoch = Self::cookie_epoch(now);
        if let Some(h) = hello
            && [epoch, epoch.saturating_sub(1)].iter().any(|&e| hash::cookie(&self.cookie_key, e, addr) == h.echo)
        {
            return Stranger::Validated(ValidatedHello {
                cookie: h.echo,
                peer_nonce: h.nonce,
                len: u16::try_from(bytes.len()).unwrap_or(u16::MAX),
            });
        }
        if bytes.len() < HELLO_LEN || crate::wire::classify(bytes).is_err() {
            self.stats.stranger_dropped = self.stats.stranger_dropped.saturating_add(1);
            return Stranger::Dropped;
        }
        if now.saturating_since(self.stranger_answers.0) >= Duration::from_secs(1) {
            self.stranger_answers = (now, 0);
        }
        if self.stranger_answers.1 >= self.config.stranger_answers_per_sec {
            self.stats.stranger_dropped = self.stats.stranger_dropped.saturating_add(1);
            return Stranger::Dropped;
        }
        let answer =
            HelloRepr { nonce: hash::cookie(&self.cookie_key, epoch, addr), echo: hello.map_or([0; 16], |h| h.nonce) };
        match answer.emit(out) {
            Ok(n) => {
                self.stranger_answers.1 = self.stranger_answers.1.saturating_add(1);
                self.stats.stranger_answers = self.stats.stranger_answers.saturating_add(1);
                Stranger::Answer(n)
            }
            Err(_) => Stranger::Dropped,
        }
    }

    /// [`Node::accept_stranger`](crate::node::Node::accept_stranger): the
    /// link a validated hello asked for, validated from the start.
    pub(super) fn accept_validated(
        &mut self,
        now: Instant,
        rng: Rng<'_>,
        link: LinkId,
        caps: LinkCaps,
        hello: ValidatedHello,
    ) -> bool {
        let caps = LinkCaps { broadcast: false, ..caps };
        let Some(li) = self.new_link(now, rng, link, caps) else {
            return false;
        };
        let resync = self.config.resync;
        if let Some(l) = self.links.get_mut(li).and_then(Option::as_mut) {
            // Our nonce on this link is the cookie the peer echoed: both
            // sides derive the salt from the same two nonces.
            l.nonce = hello.cookie;
            l.peer_nonce = Some(hello.peer_nonce);
            l.salt = hash::link_salt(&hello.cookie, &hello.peer_nonce);
            l.validated = true;
            l.hello_due = None;
            // One hello echoing the peer's nonce: when the hello that made
            // this link was the peer's answer to our probe, the peer keeps
            // nothing yet and validates on this echo of its cookie (SPEC
            // §6.1); otherwise the peer knows it already and ignores it.
            l.hello_reply = true;
            l.summary_cursor = Some(0);
            l.next_resync = now.saturating_add(resync);
            l.rx_bytes = u64::from(hello.len);
        }
        self.stats.stranger_links = self.stats.stranger_links.saturating_add(1);
        true
    }

    pub(super) fn handle_hello<'a>(
        &mut self,
        now: Instant,
        li: usize,
        h: HelloRepr,
    ) -> Result<Outcome<'a>, FrameError> {
        let resync = self.config.resync;
        let Some(l) = self.links.get_mut(li).and_then(Option::as_mut) else {
            return Err(FrameError::UnknownLink);
        };
        if l.caps.broadcast {
            return Ok(Outcome::Control);
        }
        let fresh_peer = l.peer_nonce != Some(h.nonce);
        if l.validated && !fresh_peer {
            // The peer we know: whatever was offered in its name was not it.
            l.offered_nonce = None;
            l.proven_nonce = None;
        }
        if l.validated && fresh_peer {
            // A new nonce from a validated peer's address: the peer
            // restarted, or someone spoofs its address. Nothing changes
            // until a hello with that nonce echoes ours (it receives here,
            // SPEC §6.1), and at most once per `HELLO_RENEW_MIN`; meanwhile
            // it gets at most one hello back per `HELLO_ANSWER_MIN`, echoing
            // the new nonce. So hellos buy no summary rounds, and every
            // answer is one hello for at least one hello (issue 12).
            let echoes = h.echo == l.nonce;
            let proven = echoes && l.renewed_at.is_none_or(|t| now.saturating_since(t) >= HELLO_RENEW_MIN);
            if !proven {
                l.offered_nonce = Some(h.nonce);
                // Proven but too soon after the last renewal: taken when the
                // 5 s are over (`take_proven_nonces`); a later offer replaces it.
                l.proven_nonce = echoes.then_some(h.nonce);
                if l.answered_at.is_none_or(|t| now.saturating_since(t) >= HELLO_ANSWER_MIN) {
                    l.answered_at = Some(now);
                    l.hello_reply = true;
                }
                return Ok(Outcome::Control);
            }
            l.offered_nonce = None;
            l.proven_nonce = None;
            l.renewed_at = Some(now);
        }
        if fresh_peer {
            self.take_peer_nonce(li, h.nonce);
        }
        let Some(l) = self.links.get_mut(li).and_then(Option::as_mut) else {
            return Err(FrameError::UnknownLink);
        };
        if h.echo != l.nonce || fresh_peer {
            // The peer has not heard us yet, or has a nonce we have not
            // echoed: answer (within the amplification limit, a hello for a
            // hello). A hello that echoes us and that we already echoed ends
            // the exchange.
            l.hello_reply = true;
        }
        if h.echo == l.nonce && !l.validated {
            l.validated = true;
            l.hello_due = None;
            l.next_resync = now.saturating_add(resync);
        }
        if l.validated && fresh_peer || (l.validated && l.summary_cursor.is_none() && l.summary_seq == 0) {
            l.summary_cursor = Some(0);
        }
        let _ = now;
        Ok(Outcome::Control)
    }

    /// A new nonce from the peer (first hello, or it restarted the link):
    /// a new salt, and the summary exchange starts afresh.
    fn take_peer_nonce(&mut self, li: usize, nonce: [u8; 16]) {
        let Some(l) = self.links.get_mut(li).and_then(Option::as_mut) else { return };
        l.peer_nonce = Some(nonce);
        l.salt = hash::link_salt(&l.nonce, &nonce);
        l.summaries_in = 0;
        l.sync_cursor = None;
        l.summary_cursor = None;
        l.summary_seq = 0;
        // Whatever we believed this peer had may be gone with its old
        // self (a restart keeps no store): its summary will tell.
        let bit = !(1u32 << (li & 31));
        for m in self.small.meta.iter_mut().chain(self.large.meta.iter_mut()).flatten() {
            m.peer_has &= bit;
        }
    }

    /// Proven nonces whose renewal wait is over: taken now, with a fresh
    /// summary round (the peer already uses them).
    pub(super) fn take_proven_nonces(&mut self, now: Instant) {
        for li in 0..LINKS {
            let Some(l) = self.links.get_mut(li).and_then(Option::as_mut) else { continue };
            let Some(nonce) = l.proven_nonce else { continue };
            if l.renewed_at.is_some_and(|t| now.saturating_since(t) < HELLO_RENEW_MIN) {
                continue;
            }
            l.proven_nonce = None;
            l.offered_nonce = None;
            l.renewed_at = Some(now);
            self.take_peer_nonce(li, nonce);
            if let Some(l) = self.links.get_mut(li).and_then(Option::as_mut) {
                l.summary_cursor = Some(0);
            }
        }
    }

    /// When the next proven nonce may be taken.
    pub(super) fn proven_nonce_due(&self) -> Option<Instant> {
        self.links
            .iter()
            .flatten()
            .filter(|l| l.proven_nonce.is_some())
            .map(|l| l.renewed_at.map_or(Instant::ZERO, |t| t.saturating_add(HELLO_RENEW_MIN)))
            .min()
    }

    pub(super) fn handle_summary<'a>(
        &mut self,
        now: Instant,
        li: usize,
        s: SummaryRepr<'_>,
    ) -> Result<Outcome<'a>, FrameError> {
        let max = self.config.max_summary_frames;
        let min_round = Duration::from_millis(self.config.resync.as_millis() / 2);
        let Some(l) = self.links.get_mut(li).and_then(Option::as_mut) else {
            return Err(FrameError::UnknownLink);
        };
        if !l.validated || l.peer_nonce.is_none() || l.caps.broadcast {
            return Err(FrameError::Unexpected);
        }
        if s.seq == 0 {
            // A new round from the peer. At most one per half resync
            // interval: each costs us a walk of the store.
            if l.summaries_in > 0 && now.saturating_since(l.round_at) < min_round {
                return Err(FrameError::Unexpected);
            }
            l.summaries_in = 0;
            l.round_at = now;
            l.sync_cursor = None;
            // Forget what we believed the peer has; its summary says.
            let bit = !(1u32 << (li & 31));
            for m in self.small.meta.iter_mut().chain(self.large.meta.iter_mut()).flatten() {
                m.peer_has &= bit;
            }
        }
        let Some(l) = self.links.get_mut(li).and_then(Option::as_mut) else {
            return Err(FrameError::UnknownLink);
        };
        if l.summaries_in >= max || s.seq != l.summaries_in {
            return Err(FrameError::Unexpected);
        }
        l.summaries_in = l.summaries_in.saturating_add(1);
        let salt = l.salt;
        let last = s.last || l.summaries_in >= max;
        if last {
            l.sync_cursor = Some(0);
        }
        let fps = fp_sorted(&s);
        let bit = 1u32 << (li & 31);
        for m in self.small.meta.iter_mut().chain(self.large.meta.iter_mut()).flatten() {
            if fps.binary_search(&hash::fingerprint(&salt, &m.id.0)).is_ok() {
                m.peer_has |= bit;
            }
        }
        // The peer still carries messages we know were delivered: pass the
        // receipts on, so its copies die too.
        let Some(l) = self.links.get_mut(li).and_then(Option::as_mut) else {
            return Err(FrameError::UnknownLink);
        };
        for (id, seen) in self.seen.iter() {
            if let SeenState::Delivered { secret, .. } = seen.state
                && fps.binary_search(&hash::fingerprint(&salt, &id.0)).is_ok()
                && l.queue.push_back(Item::Receipt { id, secret, level: seen.level, own: false }).is_err()
            {
                break;
            }
        }
        Ok(Outcome::Control)
    }

    pub(super) fn next_hello(&mut self, now: Instant, li: usize) -> Option<usize> {
        let retry_limit = self.config.hello_retries;
        let l = self.links.get_mut(li)?.as_mut()?;
        if l.caps.broadcast {
            return None;
        }
        let scheduled = l.hello_due.is_some_and(|t| t <= now) && l.hello_left > 0;
        if !scheduled && !l.hello_reply {
            return None;
        }
        let initial = scheduled && l.hello_left > retry_limit;
        if !l.validated && !initial && !scheduled {
            // A reply to an unvalidated address: at most 3× what it sent us.
            let budget = l.rx_bytes.saturating_mul(3);
            if l.tx_unvalidated.saturating_add(HELLO_LEN as u64) > budget {
                self.stats.amplification_blocked = self.stats.amplification_blocked.saturating_add(1);
                l.hello_reply = false;
                return None;
            }
        }
        let hello = HelloRepr { nonce: l.nonce, echo: l.offered_nonce.or(l.peer_nonce).unwrap_or([0; 16]) };
        l.tx.clear();
        let _ = l.tx.resize(HELLO_LEN, 0);
        hello.emit(&mut l.tx).ok()?;
        if !l.validated && !scheduled {
            // Replies count against the 3× budget; our own hellos of this
            // link-up (at most `hello_retries + 1`) are bounded separately.
            l.tx_unvalidated = l.tx_unvalidated.saturating_add(HELLO_LEN as u64);
        }
        l.hello_reply = false;
        if scheduled {
            l.hello_left = l.hello_left.saturating_sub(1);
            l.hello_due = (l.hello_left > 0 && !l.validated).then(|| now.saturating_add(l.hello_backoff));
            l.hello_backoff = Duration::from_millis(l.hello_backoff.as_millis().saturating_mul(2));
        }
        Some(HELLO_LEN)
    }

    pub(super) fn next_summary(&mut self, li: usize) -> Option<usize> {
        let max = self.config.max_summary_frames;
        let l = self.links.get(li)?.as_ref()?;
        let cursor = l.summary_cursor?;
        let salt = l.salt;
        let seq = l.summary_seq;
        // Walk small then large slots from the cursor, gathering fingerprints.
        let mut fps: Vec<u8, { SUMMARY_MAX_FINGERPRINTS * FINGERPRINT_LEN }> = Vec::new();
        let total = S.saturating_add(L);
        let mut pos = cursor;
        while pos < total && fps.len() < SUMMARY_MAX_FINGERPRINTS * FINGERPRINT_LEN {
            let meta = if pos < S {
                self.small.meta.get(pos).and_then(Option::as_ref)
            } else {
                self.large.meta.get(pos.saturating_sub(S)).and_then(Option::as_ref)
            };
            if let Some(m) = meta
                && m.forward
            {
                let _ = fps.extend_from_slice(&hash::fingerprint(&salt, &m.id.0));
            }
            pos = pos.saturating_add(1);
        }
        let last = pos >= total || seq.saturating_add(1) >= max;
        let repr = SummaryRepr { seq, last, fingerprints: &fps };
        let l = self.links.get_mut(li)?.as_mut()?;
        l.tx.clear();
        let _ = l.tx.resize(SUMMARY_LEN, 0);
        repr.emit(&mut l.tx).ok()?;
        l.summary_seq = seq.saturating_add(1);
        l.summary_cursor = if last { None } else { Some(pos) };
        Some(SUMMARY_LEN)
    }

    pub(super) fn next_sync(&mut self, now: Instant, li: usize) -> Option<usize> {
        let total = S.saturating_add(L);
        let bit = 1u32 << (li & 31);
        loop {
            let l = self.links.get(li)?.as_ref()?;
            let pos = l.sync_cursor?;
            let max_class = l.caps.max_class;
            if pos >= total {
                self.links.get_mut(li)?.as_mut()?.sync_cursor = None;
                return None;
            }
            if let Some(c) = self.links.get_mut(li).and_then(Option::as_mut) {
                c.sync_cursor = Some(pos.saturating_add(1));
            }
            let (meta, class) = if pos < S {
                (self.small.meta.get(pos).and_then(Option::as_ref), SizeClass::Small)
            } else {
                (self.large.meta.get(pos.saturating_sub(S)).and_then(Option::as_ref), SizeClass::Large)
            };
            let Some(m) = meta else { continue };
            if m.peer_has & bit != 0 || !m.forward || class > max_class {
                continue;
            }
            let id = m.id;
            if let Some(len) = self.build_item(now, li, Item::Message(id)) {
                return Some(len);
            }
        }
    }
}
