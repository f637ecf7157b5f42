//! Link frames on a byte stream (a UART, USB CDC-ACM, a pty): SPEC §10.3.
//!
//! On the wire each link frame `f` is
//!
//! ```text
//! 0x00 || COBS(f || crc16(f) little-endian) || 0x00
//! ```
//!
//! with `crc16` = CRC-16/KERMIT (poly 0x1021 reflected, init 0, no final
//! XOR; check value 0x2189 for "123456789"). COBS leaves no zero byte inside,
//! so 0x00 only ever delimits. The leading 0x00 ends whatever noise came
//! before, so noise costs only itself, never the next frame.
//!
//! [`Deframer`] reads such a stream byte by byte into a buffer of `N` bytes
//! (`N` bounds everything; [`encoded_len`] says how much a link frame needs)
//! and resynchronises at the next 0x00 after anything it cannot use: an
//! overlong run, bad COBS, a bad CRC.

use crc::{CRC_16_KERMIT, Crc};

use super::MAX_LINK_FRAME;

/// The CRC of the serial framing (SPEC §10.3).
pub const CRC: Crc<u16> = Crc::<u16>::new(&CRC_16_KERMIT);
/// Bytes of CRC after each link frame.
pub const CRC_LEN: usize = 2;
/// The delimiter.
pub const DELIMITER: u8 = 0;

/// The encoded size of a link frame of `len` bytes, delimiters included.
pub const fn encoded_len(len: usize) -> usize {
    cobs::max_encoding_length(len.saturating_add(CRC_LEN)).saturating_add(2)
}

/// The buffer a [`Deframer`] needs for link frames up to `len` bytes:
/// everything between two delimiters.
pub const fn deframer_len(len: usize) -> usize {
    cobs::max_encoding_length(len.saturating_add(CRC_LEN))
}

/// A deframer for every link frame this version can send (2 + 1200 bytes).
pub type MaxDeframer = Deframer<{ deframer_len(MAX_LINK_FRAME) }>;

/// Why bytes between two delimiters were not a link frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SerialError {
    /// More than the deframer's buffer holds before a delimiter: dropped up
    /// to the next one.
    TooLong,
    /// Not valid COBS.
    Cobs,
    /// Too short to hold a CRC and a link header.
    Short,
    /// The CRC does not match.
    Crc,
    /// The output buffer of [`encode`] is too small.
    BufferTooSmall,
}

impl core::fmt::Display for SerialError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            SerialError::TooLong => "serial frame longer than the receive buffer",
            SerialError::Cobs => "serial frame is not valid COBS",
            SerialError::Short => "serial frame too short for a header and a CRC",
            SerialError::Crc => "serial frame CRC mismatch",
            SerialError::BufferTooSmall => "output buffer too small for the encoded frame",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SerialError {}

/// Encode one link frame (header and body, see [`super::LinkFrame::emit`])
/// for the wire, delimiters included; returns the length written.
pub fn encode(link_frame: &[u8], out: &mut [u8]) -> Result<usize, SerialError> {
    let crc = CRC.checksum(link_frame).to_le_bytes();
    let (first, rest) = out.split_first_mut().ok_or(SerialError::BufferTooSmall)?;
    *first = DELIMITER;
    // Room for the closing delimiter stays outside the encoder's slice.
    let body_room = rest.len().checked_sub(1).ok_or(SerialError::BufferTooSmall)?;
    let body = rest.get_mut(..body_room).ok_or(SerialError::BufferTooSmall)?;
    let mut enc = cobs::CobsEncoder::new(body);
    enc.push(link_frame).map_err(|_| SerialError::BufferTooSmall)?;
    enc.push(&crc).map_err(|_| SerialError::BufferTooSmall)?;
    let n = enc.finalize();
    let last = rest.get_mut(n).ok_or(SerialError::BufferTooSmall)?;
    *last = DELIMITER;
    n.checked_add(2).ok_or(SerialError::BufferTooSmall)
}

/// Counters of a [`Deframer`], for `stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeframerStats {
    /// Link frames delivered (CRC good).
    pub frames: u64,
    /// Runs between delimiters dropped, for any [`SerialError`].
    pub dropped: u64,
    /// Of those, for a bad CRC.
    pub crc_errors: u64,
}

/// Reads a byte stream into link frames, in a buffer of `N` bytes.
///
/// Memory is `N` plus a few words, whatever arrives. A run between two
/// delimiters longer than `N` is dropped whole; the frame after it is read
/// normally. The buffer is wiped after every frame it held.
#[derive(Debug)]
pub struct Deframer<const N: usize> {
    buf: [u8; N],
    /// Bytes of the current run in `buf`.
    len: usize,
    /// The current run outgrew `buf`: skip to the next delimiter.
    overflow: bool,
    /// Length of the frame handed out by the last call, still in `buf`.
    handed: usize,
    stats: DeframerStats,
}

impl<const N: usize> Default for Deframer<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Deframer<N> {
    /// An empty deframer.
    pub const fn new() -> Self {
        Deframer {
            buf: [0; N],
            len: 0,
            overflow: false,
            handed: 0,
            stats: DeframerStats { frames: 0, dropped: 0, crc_errors: 0 },
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> DeframerStats {
        self.stats
    }

    /// Forget any partial frame (the line went down), wiping the buffer.
    pub fn reset(&mut self) {
        self.wipe_all();
        self.overflow = false;
    }

    fn wipe_all(&mut self) {
        let used = self.len.max(self.handed).min(N);
        if let Some(b) = self.buf.get_mut(..used) {
            b.fill(0);
        }
        self.len = 0;
        self.handed = 0;
    }

    /// Read from `input` up to the end of the next run between delimiters;
    /// `input` is advanced past what was read. Returns `None` once `input` is
    /// used up with no complete run (the partial one is kept for the next
    /// call), else the link frame (CRC checked and removed; not yet parsed:
    /// see [`super::LinkFrame::parse`]) or why the run was dropped. Empty
    /// runs (two delimiters in a row) are skipped.
    ///
    /// Call it again until it returns `None`.
    pub fn feed<'s>(&'s mut self, input: &mut &[u8]) -> Option<Result<&'s [u8], SerialError>> {
        if self.handed > 0 {
            // The frame handed out last time has been used: wipe it.
            self.wipe_all();
        }
        loop {
            let (&byte, rest) = input.split_first()?;
            *input = rest;
            if byte != DELIMITER {
                if self.overflow {
                    continue;
                }
                match self.buf.get_mut(self.len) {
                    Some(slot) => {
                        *slot = byte;
                        self.len = self.len.saturating_add(1);
                    }
                    None => {
                        self.overflow = true;
                        self.wipe_all();
                    }
                }
                continue;
            }
            if self.overflow {
                self.overflow = false;
                self.stats.dropped = self.stats.dropped.saturating_add(1);
                return Some(Err(SerialError::TooLong));
            }
            if self.len == 0 {
                continue;
            }
            return Some(self.finish());
        }
    }

    /// The run in `buf[..len]` ended at a delimiter: decode and check it.
    fn finish(&mut self) -> Result<&[u8], SerialError> {
        let run = self.len;
        // From here on the bytes up to `run` are wiped at the next call, whatever happens.
        self.handed = run;
        self.len = 0;
        let result = self.decode(run);
        match result {
            Ok(n) => {
                self.stats.frames = self.stats.frames.saturating_add(1);
                self.buf.get(..n).ok_or(SerialError::Short)
            }
            Err(e) => {
                self.stats.dropped = self.stats.dropped.saturating_add(1);
                if e == SerialError::Crc {
                    self.stats.crc_errors = self.stats.crc_errors.saturating_add(1);
                }
                Err(e)
            }
        }
    }

    fn decode(&mut self, run: usize) -> Result<usize, SerialError> {
        let encoded = self.buf.get_mut(..run).ok_or(SerialError::TooLong)?;
        let n = cobs::decode_in_place(encoded).map_err(|_| SerialError::Cobs)?;
        let min = super::HEADER_LEN.saturating_add(CRC_LEN);
        if n < min {
            return Err(SerialError::Short);
        }
        let body_len = n.saturating_sub(CRC_LEN);
        let decoded = self.buf.get(..n).ok_or(SerialError::Cobs)?;
        let (frame, crc) = decoded.split_at(body_len);
        let crc = u16::from_le_bytes(crc.try_into().map_err(|_| SerialError::Short)?);
        if CRC.checksum(frame) != crc {
            return Err(SerialError::Crc);
        }
        Ok(body_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn wire(frame: &[u8]) -> Vec<u8> {
        let mut out = std::vec![0u8; encoded_len(frame.len())];
        let n = encode(frame, &mut out).unwrap();
        out.truncate(n);
        out
    }

    fn read_all<const N: usize>(d: &mut Deframer<N>, mut input: &[u8]) -> Vec<Result<Vec<u8>, SerialError>> {
        let mut got = Vec::new();
        while let Some(r) = d.feed(&mut input) {
            got.push(r.map(<[u8]>::to_vec));
        }
        got
    }

    #[test]
    fn crc_is_kermit() {
        assert_eq!(CRC.checksum(b"123456789"), 0x2189);
    }

    #[test]
    fn test_emit() {
        // A credit grant of 8: 01 02 00 08, CRC-16/KERMIT 0x2F5E little-endian.
        let crc = CRC.checksum(&[1, 2, 0, 8]).to_le_bytes();
        let mut raw = std::vec![1u8, 2, 0, 8];
        raw.extend_from_slice(&crc);
        let w = wire(&[1, 2, 0, 8]);
        assert_eq!(w.first(), Some(&0));
        assert_eq!(w.last(), Some(&0));
        assert!(!w[1..w.len() - 1].contains(&0), "{w:02x?}");
        let mut inner = w[1..w.len() - 1].to_vec();
        let n = cobs::decode_in_place(&mut inner).unwrap();
        assert_eq!(inner[..n], raw[..]);
    }

    #[test]
    fn test_parse_round_trip() {
        let mut d = MaxDeframer::new();
        let frames: [&[u8]; 3] = [&[1, 2, 0, 8], &[1, 0, 0x23, 0, 0, 0], &[1, 1, 1, 4, 0xb0, 1]];
        let stream: Vec<u8> = frames.iter().flat_map(|f| wire(f)).collect();
        let got = read_all(&mut d, &stream);
        assert_eq!(got, frames.iter().map(|f| Ok(f.to_vec())).collect::<Vec<_>>());
        assert_eq!(d.stats(), DeframerStats { frames: 3, dropped: 0, crc_errors: 0 });
    }

    #[test]
    fn largest_frame_fits_and_one_more_byte_does_not() {
        let mut big = std::vec![0xabu8; MAX_LINK_FRAME];
        big[0] = 1;
        big[1] = 0;
        let mut d = MaxDeframer::new();
        assert_eq!(read_all(&mut d, &wire(&big)), std::vec![Ok(big.clone())]);
        big.push(0xab);
        assert_eq!(read_all(&mut d, &wire(&big)), std::vec![Err(SerialError::TooLong)]);
        // And the stream goes on.
        assert_eq!(read_all(&mut d, &wire(&[1, 2, 0, 1])), std::vec![Ok(std::vec![1, 2, 0, 1])]);
    }

    #[test]
    fn byte_at_a_time_is_the_same() {
        let w = wire(&[1, 0, 5, 0, 6, 0, 0, 7]);
        let mut d = MaxDeframer::new();
        let mut got = Vec::new();
        for b in &w {
            got.extend(read_all(&mut d, core::slice::from_ref(b)));
        }
        assert_eq!(got, std::vec![Ok(std::vec![1, 0, 5, 0, 6, 0, 0, 7])]);
    }

    #[test]
    fn noise_costs_only_itself() {
        let mut stream = std::vec![0x55u8, 0x13, 0xff];
        stream.extend(wire(&[1, 2, 0, 3]));
        stream.extend([0x99, 0x98]);
        stream.extend(wire(&[1, 2, 0, 4]));
        let mut d = MaxDeframer::new();
        let got = read_all(&mut d, &stream);
        // The noise before each frame is ended by that frame's leading delimiter, so it is dropped on its own.
        assert_eq!(got.iter().filter(|r| r.is_ok()).count(), 2, "{got:?}");
        assert!(got.contains(&Ok(std::vec![1, 2, 0, 3])) && got.contains(&Ok(std::vec![1, 2, 0, 4])));
        assert_eq!(d.stats().frames, 2);
    }

    #[test]
    fn a_flipped_bit_is_caught() {
        let mut w = wire(&[1, 0, 0x23, 0x10, 0x20, 0x30]);
        w[3] ^= 0x04;
        let mut d = MaxDeframer::new();
        let got = read_all(&mut d, &w);
        assert_eq!(got.len(), 1);
        assert!(matches!(got[0], Err(SerialError::Crc | SerialError::Cobs)), "{got:?}");
        assert_eq!(d.stats().dropped, 1);
    }

    #[test]
    fn short_runs_are_refused() {
        let mut d = MaxDeframer::new();
        // COBS of [1, 2] (too short for header + CRC).
        assert_eq!(read_all(&mut d, &[0, 3, 1, 2, 0]), std::vec![Err(SerialError::Short)]);
    }

    #[test]
    fn the_buffer_is_wiped_after_each_frame() {
        let mut d = Deframer::<64>::new();
        let secret = [1u8, 0, 0x5e, 0xc2, 0xe7, 0x11];
        let w = wire(&secret);
        let mut input = &w[..];
        assert_eq!(d.feed(&mut input).unwrap().unwrap(), &secret);
        // The next call (here: with nothing to read) wipes what was handed out.
        assert!(d.feed(&mut input).is_none());
        assert!(d.buf.iter().all(|&b| b == 0), "{:02x?}", &d.buf[..16]);
        // A dropped overlong run leaves nothing either.
        let long = std::vec![0x42u8; 100];
        let mut input = &long[..];
        assert!(d.feed(&mut input).is_none());
        assert!(d.buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn encode_needs_room() {
        let mut small = [0u8; 5];
        assert_eq!(encode(&[1, 2, 0, 8], &mut small), Err(SerialError::BufferTooSmall));
        assert_eq!(encode(&[1, 2, 0, 8], &mut []), Err(SerialError::BufferTooSmall));
        let mut exact = [0u8; encoded_len(4)];
        assert!(encode(&[1, 2, 0, 8], &mut exact).is_ok());
    }
}
