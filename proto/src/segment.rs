//! Per-link segmentation (SPEC §6.6): frames larger than a link's MTU travel
//! as segments and are reassembled by the next hop only.
//!
//! Every Ferry frame has one of three fixed lengths (33, 240 or 1200 bytes),
//! so a segment names its frame's length with a 2-bit code and the receiver
//! knows where every segment goes whatever order they arrive in. Reassembly
//! is bounded twice: a fixed number of slots for the node, at most
//! [`PER_LINK`] of them per link, and each slot dies after a short timeout.

use crate::router::LinkId;
use crate::time::{Duration, Instant};
use crate::wire::{HELLO_LEN, MAX_FRAME_LEN, SEGMENT_HEADER_LEN, SegmentRepr, SizeClass, WireError};

/// Reassembly slots one link may hold at once.
pub const PER_LINK: usize = 2;
/// How long a partial frame is kept.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The frame lengths a segment can belong to, by 2-bit code.
const LENGTHS: [usize; 3] = [HELLO_LEN, SizeClass::Small.frame_len(), SizeClass::Large.frame_len()];

/// The 2-bit code of a frame length.
pub fn length_code(len: usize) -> Option<u8> {
    LENGTHS.iter().position(|&l| l == len).and_then(|p| u8::try_from(p).ok())
}

fn length_of(code: u8) -> Option<usize> {
    LENGTHS.get(usize::from(code)).copied()
}

/// How a frame of `total` bytes is cut for a link of `mtu`: `(count, unit)`.
/// `None` if it needs no segmenting, or cannot be (MTU below the minimum or
/// more than 255 segments).
pub fn plan(total: usize, mtu: usize) -> Option<(u8, usize)> {
    if total <= mtu {
        return None;
    }
    let room = mtu.checked_sub(SEGMENT_HEADER_LEN).filter(|&r| r > 0)?;
    let count = total.div_ceil(room);
    let count = u8::try_from(count).ok()?;
    let unit = total.div_ceil(usize::from(count));
    Some((count, unit))
}

/// Segment `index` of a frame cut as `plan` said: its data range.
pub fn range(total: usize, count: u8, unit: usize, index: u8) -> core::ops::Range<usize> {
    let _ = count;
    let start = usize::from(index).saturating_mul(unit).min(total);
    let end = start.saturating_add(unit).min(total);
    start..end
}

#[derive(Clone, Copy)]
struct Slot {
    link: LinkId,
    frag: u8,
    total: usize,
    count: u8,
    got: [u64; 4],
    received: u8,
    deadline: Instant,
    buf: [u8; MAX_FRAME_LEN],
}

/// Why a segment was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentError {
    /// Malformed segment.
    Wire(WireError),
    /// The segment disagrees with the layout its frame length implies.
    Inconsistent,
    /// No reassembly slot could be had for this link.
    NoSlot,
}

/// Bounded reassembly state for `N` partial frames.
pub struct Reassembly<const N: usize> {
    slots: [Option<Slot>; N],
    last: [u8; MAX_FRAME_LEN],
}

impl<const N: usize> core::fmt::Debug for Reassembly<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let used = self.slots.iter().filter(|s| s.is_some()).count();
        write!(f, "Reassembly({used}/{N})")
    }
}

impl<const N: usize> Default for Reassembly<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// Empty a slot, wiping its bytes first (setting an `Option` to `None`
/// leaves the old payload's bytes in place).
fn wipe(slot: &mut Option<Slot>) {
    if let Some(s) = slot.as_mut() {
        s.buf.fill(0);
    }
    *slot = None;
}

fn bit(got: &[u64; 4], i: u8) -> bool {
    got.get(usize::from(i >> 6)).is_some_and(|w| w & (1u64 << (i & 63)) != 0)
}

impl<const N: usize> Reassembly<N> {
    /// Empty state.
    pub const fn new() -> Self {
        Reassembly { slots: [None; N], last: [0; MAX_FRAME_LEN] }
    }

    /// Add a segment received on `link`. Returns the length of the whole
    /// frame when this segment completed it; [`Reassembly::frame`] then
    /// holds it until the next call.
    pub fn add(&mut self, now: Instant, link: LinkId, seg: &SegmentRepr<'_>) -> Result<Option<usize>, SegmentError> {
        self.expire(now);
        let frag = seg.frag & 0x3f;
        let total = length_of(seg.frag >> 6).ok_or(SegmentError::Wire(WireError::BadField))?;
        let unit = total.div_ceil(usize::from(seg.count));
        let want = range(total, seg.count, unit, seg.index);
        if want.is_empty() || want.len() != seg.data.len() {
            return Err(SegmentError::Inconsistent);
        }
        let pos = match self.slots.iter().position(|s| s.as_ref().is_some_and(|s| s.link == link && s.frag == frag)) {
            Some(p) => p,
            None => self.claim(now, link, frag, total, seg.count)?,
        };
        let Some(slot) = self.slots.get_mut(pos).and_then(Option::as_mut) else {
            return Err(SegmentError::NoSlot);
        };
        if slot.total != total || slot.count != seg.count {
            // A new frame reused the frag number: start over.
            *slot = Slot { got: [0; 4], received: 0, total, count: seg.count, ..*slot };
        }
        if bit(&slot.got, seg.index) {
            return Ok(None);
        }
        let dst = slot.buf.get_mut(want).ok_or(SegmentError::Inconsistent)?;
        dst.copy_from_slice(seg.data);
        if let Some(w) = slot.got.get_mut(usize::from(seg.index >> 6)) {
            *w |= 1u64 << (seg.index & 63);
        }
        slot.received = slot.received.saturating_add(1);
        if slot.received < slot.count {
            return Ok(None);
        }
        let total = slot.total;
        // Done: release the slot (wiped), but hand out its bytes until the
        // next call.
        self.last = slot.buf;
        slot.buf.fill(0);
        if let Some(s) = self.slots.get_mut(pos) {
            *s = None;
        }
        Ok(Some(total))
    }

    fn claim(&mut self, now: Instant, link: LinkId, frag: u8, total: usize, count: u8) -> Result<usize, SegmentError> {
        let held_by = |l: LinkId| self.slots.iter().filter(|s| s.as_ref().is_some_and(|s| s.link == l)).count();
        let oldest_of = |l: LinkId| {
            self.slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.as_ref().filter(|s| s.link == l).map(|s| (i, s.deadline)))
                .min_by_key(|&(_, d)| d)
                .map(|(i, _)| i)
        };
        let mine = held_by(link);
        let pos = if mine >= PER_LINK {
            // At quota: reuse this link's oldest slot.
            oldest_of(link)
        } else if let Some(free) = self.slots.iter().position(Option::is_none) {
            Some(free)
        } else {
            // Full, and this link is under quota: take the oldest slot of the
            // link holding the most, if it holds more than this one would
            // after (so one neighbour cannot keep every slot busy).
            let heaviest = self.slots.iter().flatten().map(|s| s.link).max_by_key(|&l| held_by(l));
            heaviest.filter(|&l| held_by(l) > mine.saturating_add(1)).and_then(oldest_of)
        };
        let pos = pos.ok_or(SegmentError::NoSlot)?;
        if let Some(s) = self.slots.get_mut(pos) {
            *s = Some(Slot {
                link,
                frag,
                total,
                count,
                got: [0; 4],
                received: 0,
                deadline: now.saturating_add(TIMEOUT),
                buf: [0; MAX_FRAME_LEN],
            });
        }
        Ok(pos)
    }

    /// The last frame [`Reassembly::add`] completed, `len` bytes long.
    pub fn frame(&self, len: usize) -> &[u8] {
        self.last.get(..len).unwrap_or(&[])
    }

    /// Drop partial frames older than the timeout (wiped), and the last
    /// completed frame.
    pub fn expire(&mut self, now: Instant) {
        self.wipe_last();
        for s in self.slots.iter_mut() {
            if s.as_ref().is_some_and(|s| s.deadline <= now) {
                wipe(s);
            }
        }
    }

    /// Forget everything from `link` (wiped).
    pub fn link_down(&mut self, link: LinkId) {
        for s in self.slots.iter_mut() {
            if s.as_ref().is_some_and(|s| s.link == link) {
                wipe(s);
            }
        }
    }

    /// Wipe the last completed frame (handed out by [`Reassembly::frame`]
    /// until the next call).
    pub fn wipe_last(&mut self) {
        self.last.fill(0);
    }

    /// The earliest deadline, if any partial frame is held.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots.iter().flatten().map(|s| s.deadline).min()
    }

    /// Partial frames held.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Whether no partial frame is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
