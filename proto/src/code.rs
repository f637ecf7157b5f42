//! Contact codes: the text people copy, read aloud or scan as a QR code to
//! add a contact.
//!
//! A contact code is `ferry1` followed by 59 characters (65 in all), for
//! example `ferry1qs5s0qzvfxzn4gayt0hwtg0hhtgxm7wsdycup4a8t5j5ca25mfe4q975pxx`
//! (the public key of RFC 7748's Alice). It carries the contact's
//! **whole** 32-byte X25519 public key. It is deliberately never shortened to
//! a fingerprint: an attacker can grind keys until a truncated prefix matches
//! someone else's, while matching all 256 bits is out of reach. Whoever holds
//! a correct code can therefore encrypt to the right person with no further
//! lookup, which is what an offline mesh needs.
//!
//! The encoding is bech32m ([BIP-350]): human-readable part [`HRP`], the
//! separator `1`, one 5-bit group holding the code [`VERSION`], the 32 key
//! bytes regrouped into 52 five-bit groups (the last four bits are zero
//! padding, as in segwit addresses), then a 6-character checksum. Bech32m
//! was chosen because it was designed for exactly this job:
//!
//! * its alphabet leaves out `1`, `b`, `i` and `o`, which are easily confused
//!   when read aloud or handwritten;
//! * its checksum is guaranteed to catch any error touching up to 4
//!   characters (so every single typo and every swap of two neighbouring
//!   characters) and misses a random corruption with odds of about 1 in 10⁹;
//! * an all-upper-case code fits QR alphanumeric mode, which makes the QR
//!   code smaller, so upper case is accepted on input (but never mixed case).
//!
//! The checksum is only used to *detect* errors. Bech32 can also locate and
//! fix a few wrong characters, but a "corrected" key is a guess: with more
//! errors than the code can fix it confidently yields a different, valid key,
//! i.e. the wrong contact. A person re-reading the code is the only safe fix.
//!
//! After the checksum, [`decode`] checks the key itself with
//! [`check_public_key`]: a non-canonical or low-order X25519 key is rejected,
//! since no honest Ferry device produces one and a low-order key would give a
//! predictable shared secret.
//!
//! Everything here is `core` only, allocation free and panic free on any
//! input: work is bounded by the input, which is capped at 90 characters (the
//! bech32 limit) before anything else is looked at.
//!
//! [BIP-350]: https://github.com/bitcoin/bips/blob/master/bip-0350.mediawiki

use core::fmt;

/// The human-readable part every contact code starts with (before the `1`).
pub const HRP: &str = "ferry";

/// The code version this crate writes, and the only one it reads.
///
/// It is the first data character (`q` for 0). A future format (another key
/// type, say) gets a new version so old software says "update Ferry" instead
/// of "typo".
pub const VERSION: u8 = 0;

/// Length of an encoded code in characters.
///
/// `ferry` (5) + `1` (1) + version (1) + key (52) + checksum (6) = 65.
pub const CODE_LEN: usize = HRP.len() + 1 + 1 + KEY_GROUPS + CHECKSUM_LEN;

/// Length of an X25519 public key in bytes.
const KEY_LEN: usize = 32;
/// Number of 5-bit groups the key takes: ceil(256 / 5) = 52.
const KEY_GROUPS: usize = (KEY_LEN * 8).div_ceil(5);
/// Number of 5-bit groups after the separator, checksum excluded.
const PAYLOAD_GROUPS: usize = 1 + KEY_GROUPS;
/// Length of the bech32 checksum in characters.
const CHECKSUM_LEN: usize = 6;
/// Longest string any bech32 decoder here looks at (BIP-173's limit).
const MAX_LEN: usize = 90;
/// The bech32m checksum constant (BIP-350).
const BECH32M_CONST: u32 = 0x2bc8_30a3;
/// The bech32 alphabet: value `v` is written as `CHARSET[v]`.
const CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
/// The BCH generator of the bech32 checksum (BIP-173).
const GENERATOR: [u32; 5] = [0x3b6a_57b2, 0x2650_8e6d, 0x1ea1_19fa, 0x3d42_33dd, 0x2a14_62b3];

/// The canonical u-coordinates of the X25519 points of small order (on the
/// curve or its twist): 0, 1, the two order-8 points and p − 1. This is the
/// canonical part of libsodium's blocklist and of the list at
/// <https://cr.yp.to/ecdh.html#validate>; the others there (p, p + 1, …) are
/// non-canonical and already refused as such.
const LOW_ORDER: [[u8; KEY_LEN]; 5] = [
    // 0
    [0; KEY_LEN],
    // 1
    [0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    // 325606250916557431795983626356110631294008115727848805560023387167927233504 (order 8)
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09,
        0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00,
    ],
    // 39382357235489614581723060781553021112529911719440698176882885853963445705823 (order 8)
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b, 0x04, 0x44,
        0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57,
    ],
    // p - 1 = 2^255 - 20
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ],
];

/// Why a string is not a usable contact code.
///
/// The [`Display`](fmt::Display) text is written for the person who typed or
/// pasted the code: it says what is wrong and what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodeError {
    /// Nothing but whitespace was given.
    Empty,
    /// The input is longer than any bech32 string may be (90 characters), so
    /// it was not looked at further.
    TooLong {
        /// Length of the input as given (before trimming), in bytes of UTF-8;
        /// for ASCII text that is the number of characters.
        len: usize,
    },
    /// The code mixes upper- and lower-case letters.
    MixedCase,
    /// There is no `1` separating the prefix from the data.
    MissingSeparator,
    /// The part before the `1` is not `ferry`: this is some other kind of
    /// code (a Bitcoin address, say), or its prefix has a typo.
    WrongPrefix,
    /// A character that cannot appear at this place in a code.
    InvalidChar {
        /// Zero-based index of the character in the code, counted in
        /// characters after leading whitespace is trimmed.
        position: usize,
        /// The offending character.
        ch: char,
    },
    /// The checksum does not match: the code has a typo. Not corrected, on
    /// purpose (see the module documentation).
    BadChecksum,
    /// A well-formed code of a version this software does not know.
    UnknownVersion(u8),
    /// The code has the wrong number of characters for its version
    /// (characters missing, doubled or cut off).
    BadLength,
    /// The unused bits at the end of the key are not zero. Ferry never writes
    /// such a code, so it was made by something else.
    NonZeroPadding,
    /// The code is well-formed but the key in it is not acceptable.
    Key(KeyError),
}

/// Why 32 bytes are not an acceptable X25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// Not the canonical encoding of a field element: the top bit is set, or
    /// the value is at least 2²⁵⁵ − 19.
    NonCanonical,
    /// One of the few points of small order, which give a shared secret an
    /// attacker can predict.
    LowOrder,
}

impl fmt::Display for CodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CodeError::Empty => f.write_str("the contact code is empty; paste or type a code that starts with ferry1"),
            CodeError::TooLong { len } => write!(
                f,
                "this is too long to be a contact code ({len} characters; a Ferry code has \
                 {CODE_LEN}); copy only the code itself"
            ),
            CodeError::MixedCase => f.write_str(
                "the code mixes upper- and lower-case letters; type it all in lower case \
                 (or all in upper case)",
            ),
            CodeError::MissingSeparator => f.write_str(
                "this is not a contact code: there is no \"1\" after the prefix; a Ferry code \
                 starts with ferry1",
            ),
            CodeError::WrongPrefix => f.write_str(
                "this is not a Ferry contact code: a Ferry code starts with ferry1; check the \
                 start of the code, or that you copied the right thing",
            ),
            CodeError::InvalidChar { position, ch } => write!(
                f,
                "character {} of the code, {ch:?}, cannot appear in a Ferry code (after ferry1 \
                 codes never use 1, b, i or o, spaces or punctuation); check that character",
                position.saturating_add(1)
            ),
            CodeError::BadChecksum => f.write_str(
                "the code has a typo: its checksum does not match; check each character \
                 against the original",
            ),
            CodeError::UnknownVersion(v) => write!(
                f,
                "this contact code is version {v}, which this version of Ferry cannot read; \
                 update Ferry and try again"
            ),
            CodeError::BadLength => write!(
                f,
                "the code has the wrong length: a Ferry code is exactly {CODE_LEN} characters; \
                 check for missing, doubled or cut-off characters"
            ),
            CodeError::NonZeroPadding => f.write_str(
                "this code was not made by Ferry (its last key bits are not zero); ask your \
                 contact to send their code again",
            ),
            CodeError::Key(e) => write!(f, "the code is readable but unusable: {e}"),
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            KeyError::NonCanonical => f.write_str(
                "the key in it is not validly encoded, so no Ferry device made it; ask your \
                 contact to send their code again",
            ),
            KeyError::LowOrder => f.write_str(
                "the key in it is a known weak key that would make messages readable by others; \
                 no Ferry device makes it, so do not trust whoever sent this code",
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CodeError::Key(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for KeyError {}

/// Encodes a public key as a contact code: `ferry1`, then 59 lower-case
/// characters.
///
/// The key is written as given; it is not checked (use [`check_public_key`]
/// if it did not come from this device's own key pair). A key that fails the
/// check still encodes, but [`decode`] will refuse the code.
///
/// # Panics
///
/// Never.
#[must_use]
pub fn encode(key: &[u8; 32]) -> heapless::String<CODE_LEN> {
    let mut data = [0u8; PAYLOAD_GROUPS];
    let mut slots = data.iter_mut();
    if let Some(slot) = slots.next() {
        *slot = VERSION;
    }
    // Regroup 8-bit bytes into 5-bit groups, most significant bits first.
    // `acc` never holds more than 12 meaningful bits.
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    for &byte in key {
        acc = (acc.wrapping_shl(8) | u32::from(byte)) & 0xfff;
        bits = bits.wrapping_add(8);
        while bits >= 5 {
            bits = bits.wrapping_sub(5);
            if let Some(slot) = slots.next() {
                *slot = group(acc.wrapping_shr(bits));
            }
        }
    }
    if bits > 0 {
        // The zero padding: the last `bits` bits, shifted to the top of a group.
        if let Some(slot) = slots.next() {
            *slot = group(acc.wrapping_shl(5u32.wrapping_sub(bits)));
        }
    }

    let checksum = create_checksum(HRP.as_bytes(), &data);
    let mut out = heapless::String::new();
    // Every push below fits: exactly CODE_LEN ASCII characters are written
    // (a unit test checks the length), so the results are always `Ok`.
    let _ = out.push_str(HRP);
    let _ = out.push('1');
    for &v in data.iter().chain(checksum.iter()) {
        let _ = out.push(char::from(letter(v)));
    }
    out
}

/// Decodes a contact code into the public key it carries.
///
/// Accepts the exact text [`encode`] writes, or the same in upper case (as in
/// a QR code), with leading and trailing ASCII whitespace ignored. Anything
/// else is an error; in particular typos are detected, never corrected. The
/// key is then checked with [`check_public_key`].
///
/// # Errors
///
/// When the code is not acceptable. Errors are reported in this order: [`TooLong`](CodeError::TooLong) (the
/// untrimmed input exceeds 90 bytes), [`Empty`](CodeError::Empty),
/// [`InvalidChar`](CodeError::InvalidChar) for characters outside printable
/// ASCII, [`MixedCase`](CodeError::MixedCase),
/// [`MissingSeparator`](CodeError::MissingSeparator),
/// [`WrongPrefix`](CodeError::WrongPrefix), `InvalidChar` for characters
/// outside the bech32 alphabet, then [`BadLength`](CodeError::BadLength) or
/// [`BadChecksum`](CodeError::BadChecksum) (a checksum mismatch is reported as
/// `BadLength` when the length is not [`CODE_LEN`], the likelier cause),
/// [`UnknownVersion`](CodeError::UnknownVersion), `BadLength`,
/// [`NonZeroPadding`](CodeError::NonZeroPadding) and
/// [`Key`](CodeError::Key).
///
/// # Panics
///
/// Never, whatever the input.
pub fn decode(code: &str) -> Result<[u8; 32], CodeError> {
    if code.len() > MAX_LEN {
        return Err(CodeError::TooLong { len: code.len() });
    }
    let code = code.trim_ascii();
    if code.is_empty() {
        return Err(CodeError::Empty);
    }
    let mut values = [0u8; MAX_LEN];
    let payload_len = match decode_bech32m(code, Some(HRP), &mut values) {
        Ok((_, n)) => n,
        Err(CodeError::BadChecksum) if code.len() != CODE_LEN => {
            return Err(CodeError::BadLength);
        }
        Err(e) => return Err(e),
    };
    let payload = values.get(..payload_len).ok_or(CodeError::BadLength)?;
    let (&version, groups) = payload.split_first().ok_or(CodeError::BadLength)?;
    if version != VERSION {
        return Err(CodeError::UnknownVersion(version));
    }
    if groups.len() != KEY_GROUPS {
        return Err(CodeError::BadLength);
    }
    let key = key_from_groups(groups)?;
    check_public_key(&key).map_err(CodeError::Key)?;
    Ok(key)
}

/// Checks that 32 bytes are an acceptable X25519 public key.
///
/// The key must be canonical (top bit clear and, read as a little-endian
/// integer, below p = 2²⁵⁵ − 19) and must not be one of the five canonical
/// u-coordinates of small order (0, 1, the two of order 8, and p − 1). Any
/// key produced by X25519 from a secret passes. Not constant time: public
/// keys are public.
///
/// # Errors
///
/// [`KeyError::NonCanonical`] or [`KeyError::LowOrder`].
///
/// # Panics
///
/// Never.
pub fn check_public_key(key: &[u8; 32]) -> Result<(), KeyError> {
    if !is_canonical(key) {
        return Err(KeyError::NonCanonical);
    }
    if LOW_ORDER.iter().any(|low| low == key) {
        return Err(KeyError::LowOrder);
    }
    Ok(())
}

/// Whether `key`, little-endian, is below p = 2²⁵⁵ − 19 (which also means
/// its top bit is clear).
fn is_canonical(key: &[u8; KEY_LEN]) -> bool {
    let Some((&last, rest)) = key.split_last() else {
        return false;
    };
    if last & 0x80 != 0 {
        return false;
    }
    // With the top bit clear, the only values >= p are
    // 0x7fff…ff{ed..ff}: top byte 0x7f, the 30 middle bytes 0xff and the low
    // byte at least 0xed.
    let Some((&first, middle)) = rest.split_first() else {
        return false;
    };
    !(last == 0x7f && middle.iter().all(|&b| b == 0xff) && first >= 0xed)
}

/// Rebuilds the key from its 52 five-bit groups and checks the padding.
fn key_from_groups(groups: &[u8]) -> Result<[u8; KEY_LEN], CodeError> {
    let mut key = [0u8; KEY_LEN];
    let mut slots = key.iter_mut();
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    for &g in groups {
        acc = (acc.wrapping_shl(5) | u32::from(g)) & 0xfff;
        bits = bits.wrapping_add(5);
        if bits >= 8 {
            bits = bits.wrapping_sub(8);
            let byte = acc.wrapping_shr(bits).to_le_bytes();
            let slot = slots.next().ok_or(CodeError::BadLength)?;
            *slot = byte.first().copied().unwrap_or(0);
        }
    }
    if slots.next().is_some() || bits >= 5 {
        return Err(CodeError::BadLength);
    }
    let padding_mask = 1u32.wrapping_shl(bits).wrapping_sub(1);
    if acc & padding_mask != 0 {
        return Err(CodeError::NonZeroPadding);
    }
    Ok(key)
}

/// Decodes any bech32m string: checks characters, case, separator and
/// checksum, and writes the 5-bit values after the separator into `out`.
///
/// Returns the human-readable part (in the input's case) and the number of
/// values before the checksum. `expected_hrp`, if given, must contain no `1`:
/// the string is then split at its *first* `1` (so a `1` typed by mistake in
/// the data is reported as an invalid character, not as a strange prefix)
/// and the prefix is compared, ignoring case, before the data is looked at.
/// Without it the split is at the last `1`, as BIP-173 says; the two agree on
/// every valid string whose prefix has no `1`.
///
/// The caller has already trimmed whatever it means to forgive; errors are
/// those of [`CodeError`], with [`WrongPrefix`](CodeError::WrongPrefix) also
/// for an empty prefix and [`BadLength`](CodeError::BadLength) for a data
/// part shorter than the checksum.
fn decode_bech32m<'a>(
    s: &'a str,
    expected_hrp: Option<&str>,
    out: &mut [u8; MAX_LEN],
) -> Result<(&'a str, usize), CodeError> {
    if s.len() > MAX_LEN {
        return Err(CodeError::TooLong { len: s.len() });
    }
    if s.is_empty() {
        return Err(CodeError::Empty);
    }
    // Printable ASCII only, and one case. After this every character is one
    // byte, so byte offsets are character positions.
    let mut has_lower = false;
    let mut has_upper = false;
    for (position, ch) in s.chars().enumerate() {
        if !matches!(ch, '!'..='~') {
            return Err(CodeError::InvalidChar { position, ch });
        }
        has_lower |= ch.is_ascii_lowercase();
        has_upper |= ch.is_ascii_uppercase();
    }
    if has_lower && has_upper {
        return Err(CodeError::MixedCase);
    }

    let sep = match expected_hrp {
        Some(_) => s.find('1'),
        None => s.rfind('1'),
    }
    .ok_or(CodeError::MissingSeparator)?;
    let hrp = s.get(..sep).ok_or(CodeError::MissingSeparator)?;
    let data_start = sep.checked_add(1).ok_or(CodeError::MissingSeparator)?;
    let data = s.get(data_start..).ok_or(CodeError::MissingSeparator)?;
    if hrp.is_empty() {
        return Err(CodeError::WrongPrefix);
    }
    if expected_hrp.is_some_and(|expected| !hrp.eq_ignore_ascii_case(expected)) {
        return Err(CodeError::WrongPrefix);
    }

    let mut n: usize = 0;
    for ((offset, &c), slot) in data.as_bytes().iter().enumerate().zip(out.iter_mut()) {
        *slot = value_of(c)
            .ok_or_else(|| CodeError::InvalidChar { position: data_start.saturating_add(offset), ch: char::from(c) })?;
        n = n.saturating_add(1);
    }
    let values = out.get(..n).ok_or(CodeError::TooLong { len: s.len() })?;
    let payload_len = n.checked_sub(CHECKSUM_LEN).ok_or(CodeError::BadLength)?;
    if !verify_checksum(hrp, values) {
        return Err(CodeError::BadChecksum);
    }
    Ok((hrp, payload_len))
}

/// Whether `data5` (5-bit values, checksum included) carries a valid bech32m
/// checksum for the human-readable part `hrp` (compared in lower case).
fn verify_checksum(hrp: &str, data5: &[u8]) -> bool {
    let chk = data5.iter().fold(hrp_state(hrp.as_bytes()), |c, &v| polymod_step(c, v));
    chk == BECH32M_CONST
}

/// The six checksum values for `hrp` and `data5` (checksum excluded).
fn create_checksum(hrp: &[u8], data5: &[u8]) -> [u8; CHECKSUM_LEN] {
    let chk =
        data5.iter().chain([0u8; CHECKSUM_LEN].iter()).fold(hrp_state(hrp), |c, &v| polymod_step(c, v)) ^ BECH32M_CONST;
    let mut out = [0u8; CHECKSUM_LEN];
    let mut shift: u32 = 25;
    for slot in &mut out {
        *slot = group(chk.wrapping_shr(shift));
        shift = shift.wrapping_sub(5);
    }
    out
}

/// The checksum state after the expanded human-readable part (BIP-173's
/// `hrp_expand`: high bits of each character, a zero, low bits of each),
/// starting from 1. Upper-case letters count as lower case.
fn hrp_state(hrp: &[u8]) -> u32 {
    let high = hrp.iter().fold(1, |c, &b| polymod_step(c, b.to_ascii_lowercase().wrapping_shr(5)));
    hrp.iter().fold(polymod_step(high, 0), |c, &b| polymod_step(c, b.to_ascii_lowercase() & 0x1f))
}

/// One step of the bech32 BCH checksum (BIP-173's `polymod` inner loop);
/// `v` must be below 32.
fn polymod_step(chk: u32, v: u8) -> u32 {
    let mut top = chk.wrapping_shr(25);
    let mut chk = (chk & 0x01ff_ffff).wrapping_shl(5) ^ u32::from(v);
    for g in GENERATOR {
        if top & 1 == 1 {
            chk ^= g;
        }
        top = top.wrapping_shr(1);
    }
    chk
}

/// The low 5 bits of `x`.
fn group(x: u32) -> u8 {
    x.to_le_bytes().first().copied().unwrap_or(0) & 0x1f
}

/// The character for a 5-bit value.
fn letter(v: u8) -> u8 {
    CHARSET.get(usize::from(v & 0x1f)).copied().unwrap_or(b'q')
}

/// The 5-bit value of a bech32 character, in either case.
fn value_of(c: u8) -> Option<u8> {
    let c = c.to_ascii_lowercase();
    CHARSET.iter().position(|&x| x == c).and_then(|i| u8::try_from(i).ok())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic
)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::string::{String, ToString};
    use std::vec::Vec;

    /// BIP-350's valid bech32m strings.
    const BIP350_VALID: [&str; 7] = [
        "A1LQFN3A",
        "a1lqfn3a",
        "an83characterlonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11sg7hg6",
        "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx",
        "11llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllludsr8",
        "split1checkupstagehandshakeupstreamerranterredcaperredlc445v",
        "?1v759aa",
    ];

    /// BIP-350's invalid bech32m strings, with the reason BIP-350 gives.
    const BIP350_INVALID: [(&str, CodeError); 14] = [
        ("\x201xj0phk", CodeError::InvalidChar { position: 0, ch: ' ' }), // HRP char out of range
        ("\x7f1g6xzxy", CodeError::InvalidChar { position: 0, ch: '\x7f' }), // HRP char out of range
        ("\u{80}1vctc34", CodeError::InvalidChar { position: 0, ch: '\u{80}' }), // HRP char out of range
        (
            "an84characterslonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11d6pts4",
            CodeError::TooLong { len: 91 },
        ), // overall max length exceeded
        ("qyrz8wqd2c9m", CodeError::MissingSeparator),                    // no separator character
        ("1qyrz8wqd2c9m", CodeError::WrongPrefix),                        // empty HRP
        ("y1b0jsk6g", CodeError::InvalidChar { position: 2, ch: 'b' }),   // invalid data character
        ("lt1igcx5c0", CodeError::InvalidChar { position: 3, ch: 'i' }),  // invalid data character
        ("in1muywd", CodeError::BadLength),                               // too short checksum
        ("mm1crxm3i", CodeError::InvalidChar { position: 8, ch: 'i' }),   // invalid char in checksum
        ("au1s5cgom", CodeError::InvalidChar { position: 7, ch: 'o' }),   // invalid char in checksum
        ("M1VUXWEZ", CodeError::BadChecksum), // checksum calculated with uppercase form of HRP
        ("16plkw9", CodeError::WrongPrefix),  // empty HRP
        ("1p2gdwpf", CodeError::WrongPrefix), // empty HRP
    ];

    /// A valid key (the X25519 base point, u = 9).
    const BASE_POINT: [u8; 32] = {
        let mut k = [0u8; 32];
        k[0] = 9;
        k
    };

    /// p = 2^255 - 19, little-endian.
    const P: [u8; 32] = {
        let mut k = [0xff; 32];
        k[0] = 0xed;
        k[31] = 0x7f;
        k
    };

    fn generic(s: &str) -> Result<(String, Vec<u8>), CodeError> {
        let mut out = [0u8; MAX_LEN];
        let (hrp, n) = decode_bech32m(s, None, &mut out)?;
        Ok((hrp.to_string(), out[..n].to_vec()))
    }

    /// Encodes arbitrary hrp and 5-bit data the bech32m way (for re-encoding
    /// the BIP vectors).
    fn generic_encode(hrp: &str, data: &[u8]) -> String {
        let mut s = String::from(hrp);
        s.push('1');
        for &v in data.iter().chain(create_checksum(hrp.as_bytes(), data).iter()) {
            s.push(char::from(letter(v)));
        }
        s
    }

    fn valid_key(mut k: [u8; 32]) -> [u8; 32] {
        k[31] &= 0x7f;
        if check_public_key(&k).is_err() {
            k = BASE_POINT;
        }
        k
    }

    #[test]
    fn code_len_is_65() {
        assert_eq!(CODE_LEN, 65);
        assert_eq!(KEY_GROUPS, 52);
        assert!(!HRP.contains('1'), "decode splits at the first '1'");
        assert_eq!(encode(&BASE_POINT).len(), CODE_LEN);
        assert_eq!(encode(&[0xff; 32]).len(), CODE_LEN);
    }

    #[test]
    fn bip350_valid_vectors() {
        for s in BIP350_VALID {
            let (hrp, data) = generic(s).unwrap_or_else(|e| panic!("{s}: {e:?}"));
            let mut full = data.clone();
            let mut out = [0u8; MAX_LEN];
            let lower = s.to_ascii_lowercase();
            let sep = lower.rfind('1').unwrap();
            for (i, c) in lower[sep + 1..].bytes().enumerate() {
                out[i] = value_of(c).unwrap();
            }
            full.extend_from_slice(&out[data.len()..data.len() + CHECKSUM_LEN]);
            assert!(verify_checksum(&hrp, &full), "{s}");
            // Re-encoding gives the vector back (in lower case).
            assert_eq!(generic_encode(&hrp.to_ascii_lowercase(), &data), lower);
            // Flipping one data bit breaks it.
            full[0] ^= 1;
            assert!(!verify_checksum(&hrp, &full), "{s}");
        }
    }

    #[test]
    fn bip350_invalid_vectors() {
        for (s, want) in BIP350_INVALID {
            assert_eq!(generic(s).map(|_| ()), Err(want), "{s:?}");
            assert!(decode(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn bech32_checksum_is_not_bech32m() {
        // A valid BIP-173 (bech32, constant 1) string is not valid bech32m.
        assert_eq!(generic("a12uel5l").map(|_| ()), Err(CodeError::BadChecksum));
        // A segwit v0 address: wrong prefix is reported before anything else.
        assert_eq!(decode("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"), Err(CodeError::WrongPrefix));
    }

    /// Pinned codes, computed once and cross-checked against an independent
    /// implementation of BIP-350's reference encoder.
    #[test]
    fn known_answers() {
        assert_eq!(encode(&BASE_POINT).as_str(), "ferry1qpyqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqwvqtzq");
        assert_eq!(encode(&[0x09; 32]).as_str(), "ferry1qpyysjzgfpyysjzgfpyysjzgfpyysjzgfpyysjzgfpyysjzgfpyyskdu0wm");
        // RFC 7748, section 6.1: Alice's public key.
        let rfc7748_alice_pub: [u8; 32] = [
            0x85, 0x20, 0xf0, 0x09, 0x89, 0x30, 0xa7, 0x54, 0x74, 0x8b, 0x7d, 0xdc, 0xb4, 0x3e, 0xf7, 0x5a, 0x0d, 0xbf,
            0x3a, 0x0d, 0x26, 0x38, 0x1a, 0xf4, 0xeb, 0xa4, 0xa9, 0x8e, 0xaa, 0x9b, 0x4e, 0x6a,
        ];
        assert_eq!(
            encode(&rfc7748_alice_pub).as_str(),
            "ferry1qs5s0qzvfxzn4gayt0hwtg0hhtgxm7wsdycup4a8t5j5ca25mfe4q975pxx"
        );
        for k in [BASE_POINT, [0x09; 32], rfc7748_alice_pub] {
            assert_eq!(decode(encode(&k).as_str()), Ok(k));
        }
    }

    #[test]
    fn uppercase_accepted_mixed_rejected() {
        let code = encode(&BASE_POINT);
        let upper = code.as_str().to_ascii_uppercase();
        assert_eq!(decode(&upper), Ok(BASE_POINT));
        let mut mixed = String::from("FERRY");
        mixed.push_str(&code[5..]);
        assert_eq!(decode(&mixed), Err(CodeError::MixedCase));
        let mut mixed = code.as_str().to_string();
        mixed.replace_range(64.., &code[64..].to_ascii_uppercase());
        assert_eq!(decode(&mixed), Err(CodeError::MixedCase));
    }

    #[test]
    fn whitespace_trimmed_only_at_ends() {
        let code = encode(&BASE_POINT);
        assert_eq!(decode(&std::format!("  \t{code}\r\n")), Ok(BASE_POINT));
        let mut inner = code.as_str().to_string();
        inner.insert(20, ' ');
        assert_eq!(decode(&inner), Err(CodeError::InvalidChar { position: 20, ch: ' ' }));
        // Non-ASCII whitespace is not forgiven.
        assert_eq!(decode(&std::format!("\u{a0}{code}")), Err(CodeError::InvalidChar { position: 0, ch: '\u{a0}' }));
        assert_eq!(decode(""), Err(CodeError::Empty));
        assert_eq!(decode(" \n\t "), Err(CodeError::Empty));
        // Length is checked first, on the input as given.
        let long = std::format!("{}{code}", " ".repeat(MAX_LEN + 1 - CODE_LEN));
        assert_eq!(decode(&long), Err(CodeError::TooLong { len: MAX_LEN + 1 }));
        let long = "x".repeat(10_000);
        assert_eq!(decode(&long), Err(CodeError::TooLong { len: 10_000 }));
    }

    #[test]
    fn structural_errors() {
        let code = encode(&BASE_POINT);
        let data = &code[6..];
        assert_eq!(decode(&std::format!("ferry{data}")), Err(CodeError::MissingSeparator));
        assert_eq!(decode(&std::format!("fery1{data}")), Err(CodeError::WrongPrefix));
        assert_eq!(decode(&std::format!("ferryy1{data}")), Err(CodeError::WrongPrefix));
        assert_eq!(decode(&std::format!("1{data}")), Err(CodeError::WrongPrefix));
        // A '1' typed for an 'l' is an invalid character, not a prefix problem.
        let mut one = code.as_str().to_string();
        one.replace_range(30..31, "1");
        assert_eq!(decode(&one), Err(CodeError::InvalidChar { position: 30, ch: '1' }));
        // Cut off or doubled characters.
        assert_eq!(decode(&code[..64]), Err(CodeError::BadLength));
        assert_eq!(decode(&code[..8]), Err(CodeError::BadLength));
        assert_eq!(decode("ferry1"), Err(CodeError::BadLength));
        assert_eq!(decode(&std::format!("{code}q")), Err(CodeError::BadLength));
        // One typo.
        let mut typo = code.as_str().to_string();
        typo.replace_range(40..41, "x");
        assert_eq!(decode(&typo), Err(CodeError::BadChecksum));
    }

    /// Builds a code with a correct checksum around arbitrary 5-bit values.
    fn forge(payload: &[u8]) -> String {
        generic_encode(HRP, payload)
    }

    fn payload_of(key: &[u8; 32]) -> Vec<u8> {
        let code = encode(key);
        code[6..CODE_LEN - CHECKSUM_LEN].bytes().map(|c| value_of(c).unwrap()).collect()
    }

    #[test]
    fn version_length_and_padding() {
        let mut p = payload_of(&BASE_POINT);
        assert_eq!(decode(&forge(&p)), Ok(BASE_POINT));
        p[0] = 1;
        assert_eq!(decode(&forge(&p)), Err(CodeError::UnknownVersion(1)));
        // A future version may be another length: version is checked first.
        let mut longer = p.clone();
        longer.extend_from_slice(&[0; 10]);
        longer[0] = 31;
        assert_eq!(decode(&forge(&longer)), Err(CodeError::UnknownVersion(31)));
        // Version 0 with valid checksum but wrong length.
        let mut p = payload_of(&BASE_POINT);
        p.push(0);
        assert_eq!(decode(&forge(&p)), Err(CodeError::BadLength));
        p.truncate(PAYLOAD_GROUPS - 1);
        assert_eq!(decode(&forge(&p)), Err(CodeError::BadLength));
        assert_eq!(decode(&forge(&[])), Err(CodeError::BadLength));
        assert_eq!(decode(&forge(&[0])), Err(CodeError::BadLength));
        // Non-zero padding: the low 4 bits of the last group.
        for bit in 0..4 {
            let mut p = payload_of(&BASE_POINT);
            p[PAYLOAD_GROUPS - 1] |= 1 << bit;
            assert_eq!(decode(&forge(&p)), Err(CodeError::NonZeroPadding));
        }
    }

    #[test]
    fn low_order_points_rejected() {
        for low in LOW_ORDER {
            assert_eq!(check_public_key(&low), Err(KeyError::LowOrder));
            assert_eq!(decode(&encode(&low)), Err(CodeError::Key(KeyError::LowOrder)));
        }
        // The non-canonical forms of low-order points are refused as such.
        let mut p_plus_1 = P;
        p_plus_1[0] = 0xee;
        for k in [P, p_plus_1] {
            assert_eq!(check_public_key(&k), Err(KeyError::NonCanonical));
        }
    }

    #[test]
    fn non_canonical_rejected() {
        // p itself and everything up to 2^255 - 1.
        for low in 0xed..=0xff {
            let mut k = P;
            k[0] = low;
            assert_eq!(check_public_key(&k), Err(KeyError::NonCanonical), "{low:#x}");
            assert_eq!(decode(&encode(&k)), Err(CodeError::Key(KeyError::NonCanonical)));
        }
        // Top bit set.
        for k in [[0xff; 32], {
            let mut k = BASE_POINT;
            k[31] = 0x80;
            k
        }] {
            assert_eq!(check_public_key(&k), Err(KeyError::NonCanonical));
            assert_eq!(decode(&encode(&k)), Err(CodeError::Key(KeyError::NonCanonical)));
        }
        // p - 2 and 2^255 - 19 with a lower middle byte are fine.
        let mut k = P;
        k[0] = 0xeb;
        assert_eq!(check_public_key(&k), Ok(()));
        let mut k = P;
        k[15] = 0xfe;
        assert_eq!(check_public_key(&k), Ok(()));
        let mut k = [0; 32];
        k[31] = 0x7f;
        assert_eq!(check_public_key(&k), Ok(()));
        assert_eq!(check_public_key(&BASE_POINT), Ok(()));
    }

    #[test]
    fn display_messages() {
        let code = encode(&BASE_POINT);
        let cases = [
            (decode(""), "empty"),
            (decode(&"q".repeat(95)), "95 characters"),
            (decode("Ferry1"), "lower case"),
            (decode("ferryqqq"), "ferry1"),
            (decode("bc1qqqqqq"), "starts with ferry1"),
            (decode("ferry1qqb"), "character 9 of the code, 'b'"),
            (decode(&code[..64]), "exactly 65 characters"),
            (decode(&encode(&[0; 32])), "weak key"),
            (decode(&encode(&[0xff; 32])), "not validly encoded"),
        ];
        for (result, needle) in cases {
            let msg = result.unwrap_err().to_string();
            assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        }
        let mut typo = code.as_str().to_string();
        typo.replace_range(40..41, "x");
        assert!(decode(&typo).unwrap_err().to_string().contains("typo"));
        assert!(CodeError::UnknownVersion(3).to_string().contains("update Ferry"));
        assert!(CodeError::NonZeroPadding.to_string().contains("not made by Ferry"));
    }

    /// Characters a substitution may introduce: the alphabet in both cases,
    /// the separator, the excluded letters and some punctuation.
    fn substitute_char() -> impl Strategy<Value = char> {
        prop::sample::select(
            "qpzry9x8gf2tvdw0s3jn54khce6mua7lQPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L1bioBIO -_.:".chars().collect::<Vec<_>>(),
        )
    }

    proptest! {
        #[test]
        fn round_trip(k in any::<[u8; 32]>()) {
            let k = valid_key(k);
            let code = encode(&k);
            prop_assert_eq!(code.len(), CODE_LEN);
            prop_assert!(code.starts_with("ferry1q"));
            prop_assert!(code.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
            prop_assert_eq!(decode(&code), Ok(k));
            prop_assert_eq!(decode(&code.to_ascii_uppercase()), Ok(k));
        }

        #[test]
        fn any_key_encodes_and_checks_consistently(k in any::<[u8; 32]>()) {
            match check_public_key(&k) {
                Ok(()) => prop_assert_eq!(decode(&encode(&k)), Ok(k)),
                Err(e) => prop_assert_eq!(decode(&encode(&k)), Err(CodeError::Key(e))),
            }
        }

        #[test]
        fn every_substitution_rejected(
            k in any::<[u8; 32]>(),
            pos in 0..CODE_LEN,
            ch in substitute_char(),
        ) {
            let k = valid_key(k);
            let code = encode(&k);
            let mut bad: Vec<char> = code.chars().collect();
            prop_assume!(bad[pos] != ch);
            bad[pos] = ch;
            let bad: String = bad.into_iter().collect();
            prop_assert!(decode(&bad).is_err(), "{} accepted", bad);
        }

        #[test]
        fn every_adjacent_transposition_rejected(k in any::<[u8; 32]>(), pos in 0..CODE_LEN - 1) {
            let k = valid_key(k);
            let code = encode(&k);
            let mut bad: Vec<u8> = code.bytes().collect();
            prop_assume!(bad[pos] != bad[pos + 1]);
            bad.swap(pos, pos + 1);
            let bad = String::from_utf8(bad).unwrap();
            prop_assert!(decode(&bad).is_err(), "{} accepted", bad);
        }

        #[test]
        fn decode_never_panics(s in ".{0,120}") {
            let _ = decode(&s);
        }

        #[test]
        fn decode_never_panics_near_codes(
            k in any::<[u8; 32]>(),
            cut in 0..CODE_LEN,
            extra in "[qpzry9x8gf2tvdw0s3jn54khce6mua7l1QP ]{0,30}",
        ) {
            let code = encode(&k);
            let s = std::format!("{}{}", &code[..cut], extra);
            let _ = decode(&s);
        }
    }

    /// Exhaustive version of the two properties above for one key: every
    /// single-character substitution (all printable ASCII) and every adjacent
    /// swap is rejected.
    #[test]
    fn exhaustive_single_errors_one_key() {
        let code = encode(&BASE_POINT);
        let bytes = code.as_bytes();
        for pos in 0..CODE_LEN {
            for c in b'!'..=b'~' {
                if c == bytes[pos] {
                    continue;
                }
                let mut bad = bytes.to_vec();
                bad[pos] = c;
                let bad = String::from_utf8(bad).unwrap();
                assert!(decode(&bad).is_err(), "{bad}");
            }
            if pos + 1 < CODE_LEN && bytes[pos] != bytes[pos + 1] {
                let mut bad = bytes.to_vec();
                bad.swap(pos, pos + 1);
                let bad = String::from_utf8(bad).unwrap();
                assert!(decode(&bad).is_err(), "{bad}");
            }
        }
    }
}
