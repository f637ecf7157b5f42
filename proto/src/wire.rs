//! The outer wire format: the only bytes a relay reads (SPEC §3).
//!
//! Two layers, smoltcp style. [`MessageFrame`] is a checked zero-copy view
//! over a buffer: after [`MessageFrame::new_checked`] succeeds, no accessor
//! can panic. The small fixed frames (receipts, hellos, summaries, link
//! segments) are parsed into plain values with `parse`/`emit`.
//!
//! Nothing here is a function of the sender's or recipient's identity: the
//! header is a version, a kind, a hop budget, a remaining lifetime, a message
//! id (a hash of the rest) and a receipt commitment.

use core::fmt;

use crate::hash;

/// Protocol version carried in the top three bits of every frame's byte 0.
pub const VERSION: u8 = 1;
/// Length of a message id.
pub const ID_LEN: usize = 16;
/// Length of a receipt commitment.
pub const COMMIT_LEN: usize = 12;
/// Length of the secret a receipt reveals.
pub const RECEIPT_SECRET_LEN: usize = 12;
/// Length of a one-time contact tag.
pub const TAG_LEN: usize = 8;
/// Length of a summary fingerprint.
pub const FINGERPRINT_LEN: usize = 4;
/// Length of the message header (byte 0, hops, lifetime, id, commit).
pub const MESSAGE_HEADER_LEN: usize = 33;
/// Fixed length of a receipt frame.
pub const RECEIPT_LEN: usize = 33;
/// Fixed length of a hello frame.
pub const HELLO_LEN: usize = 33;
/// Fixed length of a summary frame.
pub const SUMMARY_LEN: usize = 240;
/// Fingerprints in one summary frame.
pub const SUMMARY_MAX_FINGERPRINTS: usize = (SUMMARY_LEN - 4) / FINGERPRINT_LEN;
/// Header of a link segment.
pub const SEGMENT_HEADER_LEN: usize = 4;
/// The smallest link MTU the segmentation layer supports (BLE's default
/// ATT payload).
pub const MIN_MTU: usize = 20;
/// Largest remaining lifetime any node accepts or emits: 7 days.
pub const MAX_LIFETIME_SECS: u32 = 7 * 24 * 3600;
/// The lifetime a sender gives a message by default: 24 hours.
pub const DEFAULT_LIFETIME_SECS: u32 = 24 * 3600;
/// Senders draw a message's hop budget from `[HOPS_MIN, HOPS_MIN + HOPS_SPREAD]`:
/// random, so the budget left says little about how far a frame came (16
/// possible starts), and large enough to cross a 10,000-node mesh (the
/// simulator's reference graph has paths of up to 87 hops; 8–12, the first
/// choice, delivered 7% of its messages). Hops are not authenticated, so
/// the budget is not a security bound: relays cap what they accept at
/// [`MAX_HOPS_DEFAULT`], and dedup, not hops, stops loops.
pub const HOPS_MIN: u8 = 112;
/// See [`HOPS_MIN`].
pub const HOPS_SPREAD: u8 = 15;
/// The most a relay accepts (a larger budget or receipt level is capped).
pub const MAX_HOPS_DEFAULT: u8 = HOPS_MIN + HOPS_SPREAD;
/// The largest value the 24-bit lifetime field can carry.
const LIFETIME_FIELD_MAX: u32 = 0x00ff_ffff;

/// The two sizes every message frame is padded to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SizeClass {
    /// 240 bytes: one 255-byte radio frame with 15 bytes left for link framing.
    Small,
    /// 1200 bytes: one UDP datagram below the IPv6 minimum MTU.
    Large,
}

impl SizeClass {
    /// The frame length of this class.
    pub const fn frame_len(self) -> usize {
        match self {
            SizeClass::Small => 240,
            SizeClass::Large => 1200,
        }
    }

    /// The class of a frame of exactly `len` bytes, if any.
    pub const fn from_len(len: usize) -> Option<SizeClass> {
        match len {
            240 => Some(SizeClass::Small),
            1200 => Some(SizeClass::Large),
            _ => None,
        }
    }
}

/// The largest frame of any kind.
pub const MAX_FRAME_LEN: usize = SizeClass::Large.frame_len();

/// What a frame is; the low five bits of byte 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A sealed message found by a one-time contact tag (Noise K).
    Contact = 1,
    /// A sealed message whose sender key travels encrypted (Noise X).
    FirstContact = 2,
    /// A delivery receipt revealing a message's receipt secret.
    Receipt = 3,
    /// Link-level hello: nonce and cookie echo (address validation).
    Hello = 4,
    /// Link-level summary of the ids a node carries, salted per link.
    Summary = 5,
    /// Link-level segment of a frame larger than the link's MTU.
    Segment = 6,
}

impl Kind {
    /// Decode the kind bits.
    pub const fn from_bits(bits: u8) -> Option<Kind> {
        match bits {
            1 => Some(Kind::Contact),
            2 => Some(Kind::FirstContact),
            3 => Some(Kind::Receipt),
            4 => Some(Kind::Hello),
            5 => Some(Kind::Summary),
            6 => Some(Kind::Segment),
            _ => None,
        }
    }

    /// Byte 0 of a frame of this kind.
    pub const fn byte0(self) -> u8 {
        (VERSION << 5) | self as u8
    }

    /// Whether frames of this kind are sealed messages.
    pub const fn is_message(self) -> bool {
        matches!(self, Kind::Contact | Kind::FirstContact)
    }
}

/// Why bytes are not a frame. Deliberately small (smoltcp's `wire::Error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// No bytes at all.
    Empty,
    /// Byte 0 names a protocol version this node does not speak.
    BadVersion(u8),
    /// Byte 0 names no known kind.
    UnknownKind(u8),
    /// The length is not the fixed length (or a size class) of the kind.
    BadLength,
    /// A field holds a value the format forbids (lifetime above 7 days,
    /// summary count out of range, non-zero padding, bad segment numbers).
    BadField,
    /// A message frame's id is not the hash of its contents.
    BadId,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Empty => f.write_str("empty frame"),
            WireError::BadVersion(v) => write!(f, "unsupported protocol version {v}"),
            WireError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            WireError::BadLength => f.write_str("frame length does not match its kind"),
            WireError::BadField => f.write_str("a header field holds a forbidden value"),
            WireError::BadId => f.write_str("message id does not match the frame contents"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for WireError {}

/// Read byte 0 of a frame: its version and kind.
pub fn classify(bytes: &[u8]) -> Result<Kind, WireError> {
    let b0 = *bytes.first().ok_or(WireError::Empty)?;
    let version = b0 >> 5;
    if version != VERSION {
        return Err(WireError::BadVersion(version));
    }
    Kind::from_bits(b0 & 0x1f).ok_or(WireError::UnknownKind(b0 & 0x1f))
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = at.checked_add(N).and_then(|end| bytes.get(at..end)) {
        out.copy_from_slice(src);
    }
    out
}

fn u24(bytes: &[u8], at: usize) -> u32 {
    let [a, b, c] = array::<3>(bytes, at);
    u32::from_be_bytes([0, a, b, c])
}

fn put(bytes: &mut [u8], at: usize, src: &[u8]) {
    if let Some(dst) = at.checked_add(src.len()).and_then(|end| bytes.get_mut(at..end)) {
        dst.copy_from_slice(src);
    }
}

fn put_u24(bytes: &mut [u8], at: usize, v: u32) {
    let [_, a, b, c] = v.min(LIFETIME_FIELD_MAX).to_be_bytes();
    put(bytes, at, &[a, b, c]);
}

/// A message id: the first 16 bytes of a hash over the frame (SPEC §3.2).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MessageId(pub [u8; ID_LEN]);

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A checked, zero-copy view of a message frame (kinds `Contact` and
/// `FirstContact`).
///
/// Layout (SPEC §3.1): `byte0 | hops | lifetime u24 BE | id[16] | commit[12]
/// | sealed…`, the whole frame exactly one [`SizeClass`] long.
#[derive(Debug, Clone, Copy)]
pub struct MessageFrame<T: AsRef<[u8]>> {
    buffer: T,
}

mod field {
    use core::ops::Range;
    pub const HOPS: usize = 1;
    pub const LIFETIME: usize = 2;
    pub const ID: Range<usize> = 5..21;
    pub const COMMIT: Range<usize> = 21..33;
    pub const SEALED: usize = 33;
}

impl<T: AsRef<[u8]>> MessageFrame<T> {
    /// Check version, kind, length and the lifetime bound. After this, no
    /// accessor panics. The id is *not* checked here (it costs a hash); call
    /// [`MessageFrame::check_id`] before the id is trusted.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let bytes = buffer.as_ref();
        let kind = classify(bytes)?;
        if !kind.is_message() {
            return Err(WireError::UnknownKind(kind as u8));
        }
        if SizeClass::from_len(bytes.len()).is_none() {
            return Err(WireError::BadLength);
        }
        let frame = MessageFrame { buffer };
        if frame.lifetime_secs() > MAX_LIFETIME_SECS {
            return Err(WireError::BadField);
        }
        Ok(frame)
    }

    /// Wrap without checking. Accessors still never panic, but return zeros
    /// for fields outside a too-short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        MessageFrame { buffer }
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Unwrap the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// `Contact` or `FirstContact`.
    pub fn kind(&self) -> Kind {
        match self.byte0() & 0x1f {
            1 => Kind::Contact,
            _ => Kind::FirstContact,
        }
    }

    /// Byte 0 (version and kind).
    pub fn byte0(&self) -> u8 {
        self.as_bytes().first().copied().unwrap_or(0)
    }

    /// The frame's size class.
    pub fn class(&self) -> SizeClass {
        SizeClass::from_len(self.as_bytes().len()).unwrap_or(SizeClass::Large)
    }

    /// Remaining hop budget.
    pub fn hops(&self) -> u8 {
        self.as_bytes().get(field::HOPS).copied().unwrap_or(0)
    }

    /// Remaining lifetime in seconds.
    pub fn lifetime_secs(&self) -> u32 {
        u24(self.as_bytes(), field::LIFETIME)
    }

    /// The message id as carried (check it with [`MessageFrame::check_id`]).
    pub fn id(&self) -> MessageId {
        MessageId(array(self.as_bytes(), field::ID.start))
    }

    /// The receipt commitment.
    pub fn commit(&self) -> [u8; COMMIT_LEN] {
        array(self.as_bytes(), field::COMMIT.start)
    }

    /// The sealed body: everything after the header.
    pub fn sealed(&self) -> &[u8] {
        self.as_bytes().get(field::SEALED..).unwrap_or(&[])
    }

    /// The id this frame's contents hash to.
    pub fn compute_id(&self) -> MessageId {
        MessageId(hash::message_id(self.byte0(), &self.commit(), self.sealed()))
    }

    /// Check that the carried id is the hash of the contents, so that
    /// flipped bits cannot make a "new" message and junk cannot borrow a
    /// live id.
    pub fn check_id(&self) -> Result<MessageId, WireError> {
        let id = self.id();
        if self.compute_id() == id { Ok(id) } else { Err(WireError::BadId) }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> MessageFrame<T> {
    /// Set the hop budget (the only field besides lifetime a relay changes).
    pub fn set_hops(&mut self, hops: u8) {
        if let Some(b) = self.buffer.as_mut().get_mut(field::HOPS) {
            *b = hops;
        }
    }

    /// Set the remaining lifetime (clamped to the field's range).
    pub fn set_lifetime_secs(&mut self, secs: u32) {
        put_u24(self.buffer.as_mut(), field::LIFETIME, secs);
    }

    /// Write byte 0, hops, lifetime and commitment of a new frame; the
    /// caller then fills the sealed body and calls [`MessageFrame::fill_id`].
    pub fn emit_header(&mut self, kind: Kind, hops: u8, lifetime_secs: u32, commit: &[u8; COMMIT_LEN]) {
        let b = self.buffer.as_mut();
        put(b, 0, &[kind.byte0(), hops]);
        put_u24(b, field::LIFETIME, lifetime_secs.min(MAX_LIFETIME_SECS));
        put(b, field::COMMIT.start, commit);
    }

    /// Compute the id over the contents and write it.
    pub fn fill_id(&mut self) -> MessageId {
        let id = self.compute_id();
        put(self.buffer.as_mut(), field::ID.start, &id.0);
        id
    }

    /// The sealed body, writable.
    pub fn sealed_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut().get_mut(field::SEALED..).unwrap_or(&mut [])
    }
}

/// A delivery receipt (kind 3), fixed 33 bytes:
/// `byte0 | level | lifetime u24 | id[16] | secret[12]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiptRepr {
    /// The hop budget the transmitting node's first copy of the message
    /// arrived with (its own budget, at the sender): higher is nearer the
    /// sender. A node passes the receipt on only if its own level is higher
    /// (SPEC §5), so receipts climb toward the sender and cannot loop.
    pub level: u8,
    /// Remaining lifetime in seconds.
    pub lifetime_secs: u32,
    /// The message this receipt is for.
    pub id: MessageId,
    /// The secret whose hash is the message's commitment.
    pub secret: [u8; RECEIPT_SECRET_LEN],
}

impl ReceiptRepr {
    /// Parse a receipt frame.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        if classify(bytes)? != Kind::Receipt {
            return Err(WireError::UnknownKind(bytes.first().copied().unwrap_or(0) & 0x1f));
        }
        if bytes.len() != RECEIPT_LEN {
            return Err(WireError::BadLength);
        }
        let lifetime_secs = u24(bytes, 2);
        if lifetime_secs > MAX_LIFETIME_SECS {
            return Err(WireError::BadField);
        }
        Ok(ReceiptRepr {
            level: bytes.get(1).copied().unwrap_or(0),
            lifetime_secs,
            id: MessageId(array(bytes, 5)),
            secret: array(bytes, 21),
        })
    }

    /// Emit into `buf` (at least [`RECEIPT_LEN`] bytes); returns the length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let out = buf.get_mut(..RECEIPT_LEN).ok_or(WireError::BadLength)?;
        put(out, 0, &[Kind::Receipt.byte0(), self.level]);
        put_u24(out, 2, self.lifetime_secs.min(MAX_LIFETIME_SECS));
        put(out, 5, &self.id.0);
        put(out, 21, &self.secret);
        Ok(RECEIPT_LEN)
    }

    /// Whether this receipt opens `commit`.
    pub fn matches(&self, commit: &[u8; COMMIT_LEN]) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(hash::receipt_commit(&self.secret).ct_eq(commit))
    }
}

/// A link hello (kind 4), fixed 33 bytes: `byte0 | nonce[16] | echo[16]`.
/// `echo` is the peer's last nonce, or zeros before one was heard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloRepr {
    /// This side's fresh nonce for the link (its address-validation cookie).
    pub nonce: [u8; 16],
    /// The nonce last heard from the peer, echoed back.
    pub echo: [u8; 16],
}

impl HelloRepr {
    /// Parse a hello frame.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        if classify(bytes)? != Kind::Hello {
            return Err(WireError::UnknownKind(bytes.first().copied().unwrap_or(0) & 0x1f));
        }
        if bytes.len() != HELLO_LEN {
            return Err(WireError::BadLength);
        }
        Ok(HelloRepr { nonce: array(bytes, 1), echo: array(bytes, 17) })
    }

    /// Emit into `buf`; returns the length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let out = buf.get_mut(..HELLO_LEN).ok_or(WireError::BadLength)?;
        put(out, 0, &[Kind::Hello.byte0()]);
        put(out, 1, &self.nonce);
        put(out, 17, &self.echo);
        Ok(HELLO_LEN)
    }
}

/// A summary frame (kind 5), fixed 240 bytes:
/// `byte0 | seq | flags | count | fingerprint[4] × count | zero padding`.
/// Flag bit 0 marks the last summary frame of this link-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SummaryRepr<'a> {
    /// Sequence number of this summary frame within the link-up.
    pub seq: u8,
    /// Whether this is the sender's last summary frame for this link-up.
    pub last: bool,
    /// `count` fingerprints, 4 bytes each.
    pub fingerprints: &'a [u8],
}

impl<'a> SummaryRepr<'a> {
    /// Parse a summary frame; padding must be zero.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        if classify(bytes)? != Kind::Summary {
            return Err(WireError::UnknownKind(bytes.first().copied().unwrap_or(0) & 0x1f));
        }
        if bytes.len() != SUMMARY_LEN {
            return Err(WireError::BadLength);
        }
        let [seq, flags, count] = array::<3>(bytes, 1);
        let count = usize::from(count);
        if count > SUMMARY_MAX_FINGERPRINTS || flags & !1 != 0 {
            return Err(WireError::BadField);
        }
        let end = count.saturating_mul(FINGERPRINT_LEN).saturating_add(4);
        let fingerprints = bytes.get(4..end).ok_or(WireError::BadField)?;
        if bytes.get(end..).unwrap_or(&[]).iter().any(|&b| b != 0) {
            return Err(WireError::BadField);
        }
        Ok(SummaryRepr { seq, last: flags & 1 == 1, fingerprints })
    }

    /// The fingerprints, one by one.
    pub fn iter(&self) -> impl Iterator<Item = [u8; FINGERPRINT_LEN]> + 'a {
        self.fingerprints.chunks_exact(FINGERPRINT_LEN).map(|c| array(c, 0))
    }

    /// Emit into `buf` (at least [`SUMMARY_LEN`] bytes); returns the length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let out = buf.get_mut(..SUMMARY_LEN).ok_or(WireError::BadLength)?;
        let count = self.fingerprints.len() / FINGERPRINT_LEN;
        if count > SUMMARY_MAX_FINGERPRINTS || !self.fingerprints.len().is_multiple_of(FINGERPRINT_LEN) {
            return Err(WireError::BadField);
        }
        out.fill(0);
        put(out, 0, &[Kind::Summary.byte0(), self.seq, u8::from(self.last), count as u8]);
        put(out, 4, self.fingerprints);
        Ok(SUMMARY_LEN)
    }
}

/// A link segment (kind 6): `byte0 | frag | index | count | data`. Every
/// segment but the last of a frame carries the same number of data bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentRepr<'a> {
    /// Which frame, among those in flight on this link, this belongs to.
    pub frag: u8,
    /// Position of this segment, `0..count`.
    pub index: u8,
    /// Number of segments of the frame, `2..=255`.
    pub count: u8,
    /// This segment's bytes of the frame.
    pub data: &'a [u8],
}

impl<'a> SegmentRepr<'a> {
    /// Parse a segment.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        if classify(bytes)? != Kind::Segment {
            return Err(WireError::UnknownKind(bytes.first().copied().unwrap_or(0) & 0x1f));
        }
        let [frag, index, count] = array::<3>(bytes, 1);
        let data = bytes.get(SEGMENT_HEADER_LEN..).ok_or(WireError::BadLength)?;
        if data.is_empty() || bytes.len() > MAX_FRAME_LEN {
            return Err(WireError::BadLength);
        }
        if count < 2 || index >= count {
            return Err(WireError::BadField);
        }
        Ok(SegmentRepr { frag, index, count, data })
    }

    /// Emit into `buf`; returns the length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.data.len().checked_add(SEGMENT_HEADER_LEN).ok_or(WireError::BadLength)?;
        let out = buf.get_mut(..len).ok_or(WireError::BadLength)?;
        put(out, 0, &[Kind::Segment.byte0(), self.frag, self.index, self.count]);
        put(out, SEGMENT_HEADER_LEN, self.data);
        Ok(len)
    }
}

/// Any frame, parsed as far as a relay can without decrypting.
#[derive(Clone, Copy, Debug)]
pub enum Frame<'a> {
    /// A sealed message (id not yet checked).
    Message(MessageFrame<&'a [u8]>),
    /// A delivery receipt.
    Receipt(ReceiptRepr),
    /// A link hello.
    Hello(HelloRepr),
    /// A link summary.
    Summary(SummaryRepr<'a>),
    /// A link segment.
    Segment(SegmentRepr<'a>),
}

impl<'a> Frame<'a> {
    /// Parse any frame. Never panics, never allocates.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        Ok(match classify(bytes)? {
            Kind::Contact | Kind::FirstContact => Frame::Message(MessageFrame::new_checked(bytes)?),
            Kind::Receipt => Frame::Receipt(ReceiptRepr::parse(bytes)?),
            Kind::Hello => Frame::Hello(HelloRepr::parse(bytes)?),
            Kind::Summary => Frame::Summary(SummaryRepr::parse(bytes)?),
            Kind::Segment => Frame::Segment(SegmentRepr::parse(bytes)?),
        })
    }
}

struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Prints, field by field, what a relay can see of a frame: the packet
/// inspector's core (`tools/` reuses it). Never panics on any input.
#[derive(Debug, Clone, Copy)]
pub struct PrettyPrinter<'a>(pub &'a [u8]);

impl fmt::Display for PrettyPrinter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let frame = match Frame::parse(self.0) {
            Ok(frame) => frame,
            Err(e) => return write!(f, "not a Ferry frame ({} bytes): {e}", self.0.len()),
        };
        match frame {
            Frame::Message(m) => {
                let kind = match m.kind() {
                    Kind::Contact => "message (between contacts, tagged)",
                    _ => "message (first contact)",
                };
                writeln!(f, "{kind}, {} bytes ({:?} size class)", self.0.len(), m.class())?;
                writeln!(f, "  hops left   {}", m.hops())?;
                writeln!(f, "  lifetime    {} s", m.lifetime_secs())?;
                let ok = if m.check_id().is_ok() { "valid" } else { "INVALID: does not match contents" };
                writeln!(f, "  id          {} ({ok})", m.id())?;
                writeln!(f, "  commit      {}", Hex(&m.commit()))?;
                let sealed = m.sealed();
                if m.kind() == Kind::Contact {
                    writeln!(f, "  tag         {}", Hex(sealed.get(..TAG_LEN).unwrap_or(&[])))?;
                    writeln!(f, "  key id      {}", sealed.get(TAG_LEN).copied().unwrap_or(0))?;
                    writeln!(f, "  ephemeral   {}", Hex(sealed.get(9..41).unwrap_or(&[])))?;
                } else {
                    writeln!(f, "  key id      {}", sealed.first().copied().unwrap_or(0))?;
                    writeln!(f, "  ephemeral   {}", Hex(sealed.get(1..33).unwrap_or(&[])))?;
                }
                write!(f, "  sealed      {} bytes (sender, recipient and text are encrypted)", sealed.len())
            }
            Frame::Receipt(r) => {
                writeln!(f, "receipt, {RECEIPT_LEN} bytes")?;
                writeln!(f, "  level       {} (hops left on the transmitter's copy of the message)", r.level)?;
                writeln!(f, "  lifetime    {} s", r.lifetime_secs)?;
                writeln!(f, "  for id      {}", r.id)?;
                write!(f, "  secret      {}", Hex(&r.secret))
            }
            Frame::Hello(h) => {
                writeln!(f, "hello, {HELLO_LEN} bytes")?;
                writeln!(f, "  nonce       {}", Hex(&h.nonce))?;
                write!(f, "  echo        {}", Hex(&h.echo))
            }
            Frame::Summary(s) => {
                writeln!(f, "summary, {SUMMARY_LEN} bytes")?;
                writeln!(f, "  seq         {}{}", s.seq, if s.last { " (last)" } else { "" })?;
                write!(f, "  fingerprints {} (salted per link)", s.fingerprints.len() / FINGERPRINT_LEN)
            }
            Frame::Segment(s) => {
                writeln!(f, "link segment, {} bytes", self.0.len())?;
                write!(f, "  frag {} part {} of {}, {} data bytes", s.frag, s.index, s.count, s.data.len())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Every frame type against the published bytes of SPEC §9
    //! (`tests/vectors/ferry-v1.txt`): `test_parse` reads the bytes into the
    //! repr, `test_emit` writes the repr and compares with the same bytes.

    use super::*;

    /// SPEC §9, "first-contact message, alice -> bob (rng seed 1)": frame.
    static FIRST_CONTACT: [u8; 240] = [
        0x22, 0x0a, 0x01, 0x51, 0x80, 0xa2, 0xa6, 0x8f, 0xb6, 0x9c, 0x93, 0xe7, 0x35, 0x2d, 0x53, 0x68, 0xcc, 0xa5,
        0x1d, 0x0d, 0xd2, 0x85, 0x22, 0x81, 0x61, 0x98, 0x49, 0x27, 0xd2, 0xfd, 0xa5, 0xee, 0x2f, 0x00, 0xb8, 0xb0,
        0xa0, 0xf2, 0xe2, 0x24, 0xe0, 0x61, 0xf5, 0xcc, 0xb9, 0x76, 0x33, 0x8e, 0xd9, 0x83, 0x76, 0x04, 0xb8, 0x85,
        0x25, 0x8a, 0xf0, 0x18, 0x26, 0x3d, 0x6d, 0xbb, 0xe5, 0x2b, 0x7c, 0x3d, 0xaf, 0x2e, 0xf9, 0xbc, 0xe2, 0xcf,
        0xd1, 0x34, 0x39, 0x66, 0x5c, 0x52, 0x58, 0x3d, 0x55, 0xfb, 0xbb, 0x26, 0x30, 0xfb, 0x4d, 0xaa, 0xce, 0x3a,
        0xc8, 0x49, 0x14, 0xb5, 0x22, 0xdc, 0xf7, 0xed, 0xb4, 0x88, 0x2b, 0x15, 0x5b, 0x7e, 0xe1, 0x68, 0x28, 0x14,
        0x74, 0xfe, 0x2a, 0xdf, 0x50, 0x7c, 0x6e, 0x91, 0xeb, 0x41, 0x17, 0xa3, 0xc5, 0xf3, 0xca, 0xee, 0x38, 0x00,
        0x87, 0x5d, 0x0f, 0x16, 0xb6, 0xc4, 0x7f, 0x2b, 0x28, 0x1e, 0xfa, 0xc3, 0x36, 0x1f, 0xb2, 0xa4, 0xce, 0x08,
        0x47, 0xbf, 0x23, 0xea, 0xcb, 0x94, 0x6d, 0x71, 0x85, 0x0e, 0x4a, 0x35, 0xe4, 0x49, 0x8e, 0xcf, 0x63, 0x49,
        0xe4, 0xa0, 0x4d, 0x94, 0x3f, 0x7d, 0xe3, 0x01, 0xe9, 0x04, 0x3b, 0x03, 0xb9, 0xd6, 0x2e, 0xd6, 0x4b, 0x5f,
        0x2b, 0xe2, 0xb3, 0x24, 0x76, 0x12, 0x83, 0x54, 0x35, 0x5a, 0xd3, 0xff, 0x69, 0xda, 0x2d, 0xf5, 0xdf, 0x4d,
        0x6e, 0x90, 0x6f, 0x2c, 0xb0, 0x0a, 0xa7, 0xc4, 0x76, 0xf1, 0xa0, 0x0a, 0x85, 0x26, 0xa4, 0x84, 0x15, 0x6e,
        0xc7, 0xa0, 0xe6, 0x72, 0xd7, 0xb8, 0x49, 0x2f, 0x0f, 0x29, 0x0a, 0xb6, 0x83, 0xbf, 0x3b, 0x43, 0x95, 0xf3,
        0x76, 0x67, 0xd3, 0xb6, 0xff, 0xdd,
    ];
    /// Its id.
    const FIRST_CONTACT_ID: MessageId =
        MessageId([0xa2, 0xa6, 0x8f, 0xb6, 0x9c, 0x93, 0xe7, 0x35, 0x2d, 0x53, 0x68, 0xcc, 0xa5, 0x1d, 0x0d, 0xd2]);
    /// Its receipt commitment.
    const FIRST_CONTACT_COMMIT: [u8; COMMIT_LEN] =
        [0x85, 0x22, 0x81, 0x61, 0x98, 0x49, 0x27, 0xd2, 0xfd, 0xa5, 0xee, 0x2f];
    /// Its receipt secret.
    const RECEIPT_SECRET: [u8; RECEIPT_SECRET_LEN] =
        [0x12, 0xb4, 0x1a, 0x01, 0x9f, 0xa5, 0xa8, 0x31, 0x92, 0x86, 0x7f, 0xeb];

    /// SPEC §9, "contact message, alice -> bob, tag[0] (rng seed 2)": frame.
    static CONTACT: [u8; 240] = [
        0x21, 0x09, 0x00, 0x0e, 0x10, 0xfd, 0x92, 0x85, 0x8d, 0xc1, 0xaf, 0x19, 0x99, 0x5d, 0x9f, 0x63, 0xea, 0x5f,
        0x06, 0x81, 0x07, 0x41, 0x96, 0xae, 0xa0, 0x21, 0x34, 0x1b, 0xc3, 0x7d, 0x40, 0x8f, 0x96, 0x50, 0x80, 0x8f,
        0xdf, 0x32, 0xc2, 0x07, 0x4b, 0x00, 0x32, 0x57, 0xaf, 0xed, 0x82, 0x0d, 0xbd, 0xab, 0xd8, 0x56, 0xe4, 0xb3,
        0x44, 0xe3, 0x52, 0xd9, 0x14, 0x14, 0x4c, 0x62, 0xca, 0xce, 0xe9, 0x25, 0xeb, 0x5d, 0x6b, 0x0e, 0x19, 0x58,
        0xcb, 0x0c, 0x60, 0x93, 0x22, 0x09, 0x49, 0xed, 0x33, 0x8a, 0x11, 0x58, 0x9e, 0x6a, 0x42, 0xdc, 0xd3, 0xf2,
        0x95, 0xd5, 0xbd, 0xef, 0x8a, 0x7e, 0x6d, 0x08, 0x52, 0x01, 0xa5, 0x33, 0x8a, 0xd7, 0x88, 0xcf, 0xa7, 0xbc,
        0x19, 0xb5, 0x45, 0x0a, 0xaf, 0x1f, 0x0a, 0x40, 0xb1, 0xe9, 0xc4, 0x6f, 0x3c, 0xad, 0xa9, 0x69, 0x06, 0x42,
        0xad, 0x59, 0x03, 0xd5, 0x90, 0x2a, 0x6a, 0xa9, 0x12, 0xf5, 0xbf, 0xa0, 0x36, 0xa0, 0xa9, 0xbd, 0xa6, 0x84,
        0x5d, 0x38, 0x1f, 0xc9, 0x5d, 0x2f, 0x4e, 0xf5, 0x38, 0x75, 0x79, 0x6b, 0x0e, 0xa3, 0xd5, 0x2d, 0xab, 0xa9,
        0x94, 0xe9, 0xe6, 0xa8, 0x9f, 0x3d, 0x2c, 0x56, 0x2e, 0x0d, 0xca, 0xb6, 0x32, 0xf2, 0xc9, 0x34, 0x4a, 0x81,
        0x16, 0x9d, 0xfa, 0xb6, 0x39, 0xf9, 0x72, 0x71, 0x45, 0x80, 0x57, 0x79, 0xea, 0xce, 0xeb, 0xb5, 0x49, 0x36,
        0x6e, 0xde, 0x50, 0x52, 0xc4, 0x9c, 0xdb, 0x9b, 0xec, 0x06, 0xe4, 0x18, 0x62, 0x56, 0xab, 0xf6, 0x15, 0x34,
        0xa5, 0xc8, 0xcb, 0x9b, 0x8d, 0x42, 0x07, 0xd5, 0x6d, 0x9c, 0x41, 0x8b, 0x12, 0x9f, 0xee, 0xfb, 0x1a, 0x49,
        0x24, 0x72, 0x64, 0x7b, 0xb1, 0xaf,
    ];
    /// Its id.
    const CONTACT_ID: MessageId =
        MessageId([0xfd, 0x92, 0x85, 0x8d, 0xc1, 0xaf, 0x19, 0x99, 0x5d, 0x9f, 0x63, 0xea, 0x5f, 0x06, 0x81, 0x07]);
    /// tag[0], alice -> bob: the first bytes of its sealed body.
    const CONTACT_TAG: [u8; TAG_LEN] = [0x50, 0x80, 0x8f, 0xdf, 0x32, 0xc2, 0x07, 0x4b];

    /// SPEC §9, "receipt for the first-contact message".
    static RECEIPT: [u8; RECEIPT_LEN] = [
        0x23, 0x0a, 0x01, 0x51, 0x80, 0xa2, 0xa6, 0x8f, 0xb6, 0x9c, 0x93, 0xe7, 0x35, 0x2d, 0x53, 0x68, 0xcc, 0xa5,
        0x1d, 0x0d, 0xd2, 0x12, 0xb4, 0x1a, 0x01, 0x9f, 0xa5, 0xa8, 0x31, 0x92, 0x86, 0x7f, 0xeb,
    ];

    /// SPEC §9, "link frames": hello.
    static HELLO: [u8; HELLO_LEN] = [
        0x24, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xb2,
        0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2,
    ];

    /// SPEC §9, "link frames": summary, up to its zero padding.
    const SUMMARY_HEAD: [u8; 8] = [0x25, 0x00, 0x01, 0x01, 0x99, 0x84, 0x25, 0x3e];
    /// fingerprint(id) under salt(a1.., b2..): the summary's one fingerprint.
    const FINGERPRINT: [u8; FINGERPRINT_LEN] = [0x99, 0x84, 0x25, 0x3e];

    /// SPEC §9, "link frames": the receipt in three segments of 11 bytes.
    static SEGMENTS: [[u8; 15]; 3] = [
        [0x26, 0x05, 0x00, 0x03, 0x23, 0x0a, 0x01, 0x51, 0x80, 0xa2, 0xa6, 0x8f, 0xb6, 0x9c, 0x93],
        [0x26, 0x05, 0x01, 0x03, 0xe7, 0x35, 0x2d, 0x53, 0x68, 0xcc, 0xa5, 0x1d, 0x0d, 0xd2, 0x12],
        [0x26, 0x05, 0x02, 0x03, 0xb4, 0x1a, 0x01, 0x9f, 0xa5, 0xa8, 0x31, 0x92, 0x86, 0x7f, 0xeb],
    ];

    /// The summary vector: its head, then zeros.
    fn summary() -> [u8; SUMMARY_LEN] {
        let mut s = [0u8; SUMMARY_LEN];
        s[..SUMMARY_HEAD.len()].copy_from_slice(&SUMMARY_HEAD);
        s
    }

    /// The literals above are the published vectors, byte for byte (a
    /// regenerated vector file fails here until they are updated too).
    #[test]
    fn literals_are_the_published_vectors() {
        let file = include_str!("../tests/vectors/ferry-v1.txt");
        // Values longer than a line continue on indented lines: join them.
        let mut joined = std::string::String::new();
        for line in file.lines() {
            if line.starts_with(' ') {
                joined.push_str(line.trim());
            } else {
                joined.push('\n');
                joined.push_str(line);
            }
        }
        let hex = |b: &[u8]| b.iter().map(|b| std::format!("{b:02x}")).collect::<std::string::String>();
        let summary = summary();
        let wanted: [(&str, &[u8]); 11] = [
            ("frame", &FIRST_CONTACT),
            ("id", &FIRST_CONTACT_ID.0),
            ("commit", &FIRST_CONTACT_COMMIT),
            ("receipt_secret", &RECEIPT_SECRET),
            ("frame", &CONTACT),
            ("id", &CONTACT_ID.0),
            ("tag[0]", &CONTACT_TAG),
            ("receipt", &RECEIPT),
            ("hello", &HELLO),
            ("summary", &summary),
            ("fingerprint(id)", &FINGERPRINT),
        ];
        for (name, bytes) in wanted {
            let line = std::format!("\n{name:<23}{}\n", hex(bytes));
            assert!(joined.contains(&line), "{name} is not {}", hex(bytes));
        }
        for (i, seg) in SEGMENTS.iter().enumerate() {
            let line = std::format!("\n{:<23}{}\n", std::format!("receipt segment {i}"), hex(seg));
            assert!(joined.contains(&line), "receipt segment {i} is not {}", hex(seg));
        }
    }

    mod message {
        use super::*;

        #[test]
        fn test_parse() {
            let f = MessageFrame::new_checked(&FIRST_CONTACT[..]).unwrap();
            assert_eq!(f.kind(), Kind::FirstContact);
            assert_eq!(f.byte0(), 0x22);
            assert_eq!(f.class(), SizeClass::Small);
            assert_eq!(f.hops(), 10);
            assert_eq!(f.lifetime_secs(), 86_400);
            assert_eq!(f.id(), FIRST_CONTACT_ID);
            assert_eq!(f.commit(), FIRST_CONTACT_COMMIT);
            assert_eq!(f.sealed(), &FIRST_CONTACT[MESSAGE_HEADER_LEN..]);
            assert_eq!(f.check_id(), Ok(FIRST_CONTACT_ID));

            let f = MessageFrame::new_checked(&CONTACT[..]).unwrap();
            assert_eq!(f.kind(), Kind::Contact);
            assert_eq!(f.hops(), 9);
            assert_eq!(f.lifetime_secs(), 3_600);
            assert_eq!(f.sealed()[..TAG_LEN], CONTACT_TAG);
            assert_eq!(f.check_id(), Ok(CONTACT_ID));
        }

        #[test]
        fn test_emit() {
            let mut buf = [0xffu8; 240];
            let mut f = MessageFrame::new_unchecked(&mut buf[..]);
            f.emit_header(Kind::FirstContact, 10, 86_400, &FIRST_CONTACT_COMMIT);
            f.sealed_mut().copy_from_slice(&FIRST_CONTACT[MESSAGE_HEADER_LEN..]);
            assert_eq!(f.fill_id(), FIRST_CONTACT_ID);
            assert_eq!(buf, FIRST_CONTACT);
        }

        #[test]
        fn test_relay_fields() {
            // What a relay rewrites (hops, lifetime) is outside the id.
            let mut buf = FIRST_CONTACT;
            let mut f = MessageFrame::new_unchecked(&mut buf[..]);
            f.set_hops(9);
            f.set_lifetime_secs(3_600);
            assert_eq!(buf[1..5], [9, 0x00, 0x0e, 0x10]);
            assert_eq!(buf[5..], FIRST_CONTACT[5..]);
            assert_eq!(MessageFrame::new_checked(&buf[..]).unwrap().check_id(), Ok(FIRST_CONTACT_ID));
        }

        #[test]
        fn test_parse_refuses() {
            assert_eq!(MessageFrame::new_checked(&[][..]).err(), Some(WireError::Empty));
            assert_eq!(MessageFrame::new_checked(&FIRST_CONTACT[..239]).err(), Some(WireError::BadLength));
            assert_eq!(MessageFrame::new_checked(&RECEIPT[..]).err(), Some(WireError::UnknownKind(3)));
            let mut bad = FIRST_CONTACT;
            bad[0] = 0x42;
            assert_eq!(MessageFrame::new_checked(&bad[..]).err(), Some(WireError::BadVersion(2)));
            let mut bad = FIRST_CONTACT;
            bad[2..5].copy_from_slice(&[0x09, 0x3a, 0x81]); // 7 days + 1 s
            assert_eq!(MessageFrame::new_checked(&bad[..]).err(), Some(WireError::BadField));
            let mut bad = FIRST_CONTACT;
            bad[239] ^= 1;
            assert_eq!(MessageFrame::new_checked(&bad[..]).unwrap().check_id(), Err(WireError::BadId));
        }
    }

    mod receipt {
        use super::*;

        const REPR: ReceiptRepr =
            ReceiptRepr { level: 10, lifetime_secs: 86_400, id: FIRST_CONTACT_ID, secret: RECEIPT_SECRET };

        #[test]
        fn test_parse() {
            assert_eq!(ReceiptRepr::parse(&RECEIPT), Ok(REPR));
            assert!(REPR.matches(&FIRST_CONTACT_COMMIT));
            assert!(!REPR.matches(&[0; COMMIT_LEN]));
        }

        #[test]
        fn test_emit() {
            let mut buf = [0xffu8; RECEIPT_LEN + 1];
            assert_eq!(REPR.emit(&mut buf), Ok(RECEIPT_LEN));
            assert_eq!(buf[..RECEIPT_LEN], RECEIPT);
            assert_eq!(REPR.emit(&mut buf[..RECEIPT_LEN - 1]), Err(WireError::BadLength));
        }

        #[test]
        fn test_parse_refuses() {
            assert_eq!(ReceiptRepr::parse(&RECEIPT[..32]), Err(WireError::BadLength));
            assert_eq!(ReceiptRepr::parse(&HELLO), Err(WireError::UnknownKind(4)));
            let mut bad = RECEIPT;
            bad[2..5].copy_from_slice(&[0x09, 0x3a, 0x81]);
            assert_eq!(ReceiptRepr::parse(&bad), Err(WireError::BadField));
        }
    }

    mod hello {
        use super::*;

        const REPR: HelloRepr = HelloRepr { nonce: [0xa1; 16], echo: [0xb2; 16] };

        #[test]
        fn test_parse() {
            assert_eq!(HelloRepr::parse(&HELLO), Ok(REPR));
        }

        #[test]
        fn test_emit() {
            let mut buf = [0xffu8; HELLO_LEN];
            assert_eq!(REPR.emit(&mut buf), Ok(HELLO_LEN));
            assert_eq!(buf, HELLO);
            assert_eq!(REPR.emit(&mut buf[..HELLO_LEN - 1]), Err(WireError::BadLength));
        }

        #[test]
        fn test_parse_refuses() {
            assert_eq!(HelloRepr::parse(&HELLO[..32]), Err(WireError::BadLength));
            assert_eq!(HelloRepr::parse(&RECEIPT), Err(WireError::UnknownKind(3)));
        }
    }

    mod summary {
        use super::*;

        #[test]
        fn test_parse() {
            let bytes = summary();
            let s = SummaryRepr::parse(&bytes).unwrap();
            assert_eq!(s, SummaryRepr { seq: 0, last: true, fingerprints: &FINGERPRINT });
            assert_eq!(s.iter().collect::<std::vec::Vec<_>>(), [FINGERPRINT]);
        }

        #[test]
        fn test_emit() {
            let repr = SummaryRepr { seq: 0, last: true, fingerprints: &FINGERPRINT };
            let mut buf = [0xffu8; SUMMARY_LEN];
            assert_eq!(repr.emit(&mut buf), Ok(SUMMARY_LEN));
            assert_eq!(buf, summary());
            let ragged = SummaryRepr { fingerprints: &FINGERPRINT[..3], ..repr };
            assert_eq!(ragged.emit(&mut buf), Err(WireError::BadField));
        }

        #[test]
        fn test_parse_refuses() {
            let mut bad = summary();
            bad[SUMMARY_LEN - 1] = 1;
            assert_eq!(SummaryRepr::parse(&bad), Err(WireError::BadField), "padding not zero");
            let mut bad = summary();
            bad[2] = 2;
            assert_eq!(SummaryRepr::parse(&bad), Err(WireError::BadField), "unknown flag");
            let mut bad = summary();
            bad[3] = SUMMARY_MAX_FINGERPRINTS as u8 + 1;
            assert_eq!(SummaryRepr::parse(&bad), Err(WireError::BadField), "count");
            assert_eq!(SummaryRepr::parse(&summary()[..239]), Err(WireError::BadLength));
        }
    }

    mod segment {
        use super::*;

        fn repr(index: u8) -> SegmentRepr<'static> {
            let i = usize::from(index);
            SegmentRepr { frag: 5, index, count: 3, data: &RECEIPT[i * 11..(i + 1) * 11] }
        }

        #[test]
        fn test_parse() {
            for (i, seg) in SEGMENTS.iter().enumerate() {
                assert_eq!(SegmentRepr::parse(seg), Ok(repr(i as u8)));
            }
        }

        #[test]
        fn test_emit() {
            for (i, seg) in SEGMENTS.iter().enumerate() {
                let mut buf = [0xffu8; 16];
                assert_eq!(repr(i as u8).emit(&mut buf), Ok(15));
                assert_eq!(buf[..15], *seg);
            }
            assert_eq!(repr(0).emit(&mut [0u8; 14]), Err(WireError::BadLength));
        }

        #[test]
        fn test_parse_refuses() {
            assert_eq!(SegmentRepr::parse(&SEGMENTS[0][..4]), Err(WireError::BadLength), "no data");
            let mut bad = SEGMENTS[0];
            bad[3] = 1;
            assert_eq!(SegmentRepr::parse(&bad), Err(WireError::BadField), "count below 2");
            let mut bad = SEGMENTS[0];
            bad[2] = 3;
            assert_eq!(SegmentRepr::parse(&bad), Err(WireError::BadField), "index past count");
        }
    }

    mod frame {
        use super::*;

        #[test]
        fn test_parse() {
            assert!(matches!(Frame::parse(&FIRST_CONTACT), Ok(Frame::Message(m)) if m.id() == FIRST_CONTACT_ID));
            assert!(matches!(Frame::parse(&CONTACT), Ok(Frame::Message(m)) if m.id() == CONTACT_ID));
            assert!(matches!(Frame::parse(&RECEIPT), Ok(Frame::Receipt(r)) if r.id == FIRST_CONTACT_ID));
            assert!(matches!(Frame::parse(&HELLO), Ok(Frame::Hello(h)) if h.nonce == [0xa1; 16]));
            assert!(matches!(Frame::parse(&summary()), Ok(Frame::Summary(s)) if s.fingerprints == FINGERPRINT));
            assert!(matches!(Frame::parse(&SEGMENTS[1]), Ok(Frame::Segment(s)) if s.index == 1));
        }

        #[test]
        fn test_parse_refuses() {
            assert!(matches!(Frame::parse(&[]), Err(WireError::Empty)));
            assert!(matches!(Frame::parse(&[0x27]), Err(WireError::UnknownKind(7))));
            assert!(matches!(Frame::parse(&[0x00]), Err(WireError::BadVersion(0))));
            assert!(matches!(Frame::parse(&[0x23; 33]), Err(WireError::BadField)));
        }
    }
}
