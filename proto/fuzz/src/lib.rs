//! Helpers shared by the fuzz targets (and the seed-corpus generator in
//! `examples/gen_corpus.rs`): a deterministic RNG, builders for valid frames,
//! and a checker that reassembles and validates what a router transmits.

pub mod endpoint_ops;
pub mod router_ops;

use std::convert::Infallible;

use ferry_proto::hash;
use ferry_proto::router::LinkId;
use ferry_proto::segment::{self, Reassembly};
use ferry_proto::time::Instant;
use ferry_proto::wire::{
    COMMIT_LEN, Frame, Kind, MAX_FRAME_LEN, MessageFrame, MessageId, RECEIPT_SECRET_LEN, SegmentRepr, SizeClass,
};

/// A deterministic, seedable RNG (SplitMix64). Marked `CryptoRng` only so
/// the endpoint API accepts it: this is a test double, not a secure RNG.
#[derive(Debug, Clone)]
pub struct TestRng(u64);

impl TestRng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        TestRng(seed)
    }

    /// The next 64 random bits.
    pub fn step(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fill `dst` with random bytes.
    pub fn fill(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let v = self.step().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

impl rand_core::TryRng for TestRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.step() as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.step())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.fill(dst);
        Ok(())
    }
}

impl rand_core::TryCryptoRng for TestRng {}

/// The last `CAP` frames seen on the air (a ring), for replays.
#[derive(Debug, Default)]
pub struct Captured<const CAP: usize> {
    frames: Vec<Vec<u8>>,
    next: usize,
}

impl<const CAP: usize> Captured<CAP> {
    /// Keep `bytes`, replacing the oldest once full.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.frames.len() < CAP {
            self.frames.push(bytes.to_vec());
        } else if let Some(slot) = self.frames.get_mut(self.next % CAP) {
            *slot = bytes.to_vec();
            self.next += 1;
        }
    }

    /// The frame `pick` (modulo how many there are), if any.
    pub fn pick(&self, pick: usize) -> Option<Vec<u8>> {
        self.frames.get(pick % self.frames.len().max(1)).cloned()
    }
}

/// A valid message frame (correct id) with a random body and
/// `commit = receipt_commit(secret)`. The router never decrypts, so this is
/// all it can check.
pub fn message_frame(
    kind: Kind,
    class: SizeClass,
    hops: u8,
    lifetime_secs: u32,
    secret: &[u8; RECEIPT_SECRET_LEN],
    seed: u64,
) -> (MessageId, Vec<u8>) {
    let mut buf = vec![0u8; class.frame_len()];
    let commit: [u8; COMMIT_LEN] = hash::receipt_commit(secret);
    let mut frame = MessageFrame::new_unchecked(&mut buf[..]);
    frame.emit_header(kind, hops, lifetime_secs, &commit);
    TestRng::new(seed).fill(frame.sealed_mut());
    let id = frame.fill_id();
    (id, buf)
}

/// Cut `frame` into link segments for `mtu`, as the router does (frag byte
/// = frag id | length code << 6). `None` if it fits whole or cannot be cut.
pub fn segments(frame: &[u8], mtu: usize, frag: u8) -> Option<Vec<Vec<u8>>> {
    let (count, unit) = segment::plan(frame.len(), mtu)?;
    let code = segment::length_code(frame.len())?;
    let mut out = Vec::with_capacity(usize::from(count));
    for index in 0..count {
        let r = segment::range(frame.len(), count, unit, index);
        let repr = SegmentRepr { frag: (frag & 0x3f) | (code << 6), index, count, data: &frame[r] };
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        let n = repr.emit(&mut buf).ok()?;
        buf.truncate(n);
        out.push(buf);
    }
    Some(out)
}

/// What [`TxChecker::check`] saw in one transmitted datagram.
#[derive(Debug)]
pub enum Seen {
    /// A whole frame (sent whole, or the last segment of one), bytes owned.
    Whole(Vec<u8>),
    /// A segment that did not complete a frame.
    Partial,
}

/// Validates everything a router transmits: every datagram is a well-formed
/// frame that fits the link, segments reassemble into well-formed non-segment
/// frames, and message frames carry a correct id.
pub struct TxChecker {
    reassembly: Box<Reassembly<16>>,
}

impl std::fmt::Debug for TxChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TxChecker")
    }
}

impl Default for TxChecker {
    fn default() -> Self {
        TxChecker { reassembly: Box::new(Reassembly::new()) }
    }
}

impl TxChecker {
    /// Check one datagram sent on `link` whose MTU is `mtu`. Panics on any
    /// violation.
    pub fn check(&mut self, now: Instant, link: LinkId, mtu: usize, bytes: &[u8]) -> Seen {
        assert!(bytes.len() <= MAX_FRAME_LEN, "transmit of {} bytes > {MAX_FRAME_LEN}", bytes.len());
        assert!(bytes.len() <= mtu, "transmit of {} bytes on {link:?} whose MTU is {mtu}", bytes.len());
        let frame = match Frame::parse(bytes) {
            Ok(f) => f,
            Err(e) => panic!("router transmitted a malformed frame ({e}): {bytes:02x?}"),
        };
        match frame {
            Frame::Segment(seg) => {
                let done = match self.reassembly.add(now, link, &seg) {
                    Ok(d) => d,
                    Err(e) => panic!("router transmitted a segment that does not reassemble ({e:?}): {seg:?}"),
                };
                match done {
                    Some(len) => {
                        let whole = self.reassembly.frame(len).to_vec();
                        assert!(whole.len() > mtu, "a {}-byte frame was segmented for MTU {mtu}", whole.len());
                        match Frame::parse(&whole) {
                            Ok(Frame::Segment(_)) => panic!("a segment reassembled into a segment"),
                            Ok(f) => check_whole(&f),
                            Err(e) => panic!("segments reassembled into a malformed frame ({e}): {whole:02x?}"),
                        }
                        Seen::Whole(whole)
                    }
                    None => Seen::Partial,
                }
            }
            f => {
                check_whole(&f);
                Seen::Whole(bytes.to_vec())
            }
        }
    }

    /// Forget partial frames of a link that went down.
    pub fn link_down(&mut self, link: LinkId) {
        self.reassembly.link_down(link);
    }
}

fn check_whole(f: &Frame<'_>) {
    if let Frame::Message(m) = f {
        assert!(m.check_id().is_ok(), "router transmitted a message whose id is wrong: {m:?}");
    }
}
