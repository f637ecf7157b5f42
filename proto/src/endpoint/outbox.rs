//! Sending (SPEC §4, §7): a text is split into parts that each fit a size
//! class, every part is sealed (tagged once the contact has written to us)
//! and stored, all or nothing; the outbox then follows each part's
//! delivery state from the router's events and reports the text's.

use heapless::Vec;

use super::contacts::tagged;
use super::{Carrier, DeliveryState, Endpoint, Event, MAX_PARTS, MAX_TEXT, SendError};
use crate::envelope::{self, Body, Path, Payload, PeerKey, SealError};
use crate::node::Rng;
use crate::time::Instant;
use crate::wire::{HOPS_MIN, HOPS_SPREAD, Kind, MAX_FRAME_LEN, MessageId, SizeClass};

#[derive(Clone, Copy, Debug)]
pub(super) struct Part {
    id: MessageId,
    state: DeliveryState,
    pub(super) tag: Option<(usize, u32)>,
}

#[derive(Clone, Debug)]
pub(super) struct Outgoing {
    id: MessageId,
    pub(super) parts: Vec<Part, MAX_PARTS>,
    state: DeliveryState,
}

/// Whether payload `p` fits the plaintext of a `kind` frame of `class`
/// (serialised into `buf` to find out).
fn fits(kind: Kind, class: SizeClass, p: &Payload<'_>, buf: &mut [u8]) -> bool {
    let cap = envelope::plaintext_capacity(kind, class);
    buf.get_mut(..cap).is_some_and(|b| postcard::to_slice(p, b).is_ok())
}

impl<Rt: Carrier, const C: usize, const TAGS: usize, const OUT: usize, const REPLAY: usize>
    Endpoint<Rt, C, TAGS, OUT, REPLAY>
{
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
                if c.heard {
                    self.stats.tag_fallbacks = self.stats.tag_fallbacks.saturating_add(1);
                }
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
    pub(super) fn drain_router_events(&mut self) {
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
