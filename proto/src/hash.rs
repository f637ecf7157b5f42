//! The hashes a relay needs: message ids, receipt commitments and per-link
//! summary fingerprints.
//!
//! All are BLAKE2s-256 (RFC 7693) with a distinct, fixed-length domain string
//! in front, so no input of one can be read as an input of another. BLAKE2s
//! is the hash of our Noise suite too, so a relay-only build carries exactly
//! one hash function and no X25519 or AEAD code.

use blake2::{Blake2s256, Digest};

use crate::wire::{COMMIT_LEN, FINGERPRINT_LEN, ID_LEN, RECEIPT_SECRET_LEN};

const ID_DOMAIN: &[u8; 16] = b"ferry/v1/msg-id\0";
const COMMIT_DOMAIN: &[u8; 16] = b"ferry/v1/commit\0";
const FP_DOMAIN: &[u8; 16] = b"ferry/v1/summary";

/// Truncate a 32-byte digest to its first `N` bytes (N <= 32).
fn truncate<const N: usize>(digest: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    for (o, d) in out.iter_mut().zip(digest) {
        *o = *d;
    }
    out
}

/// `id = BLAKE2s("ferry/v1/msg-id\0" || byte0 || commit || sealed)[..16]`
/// (SPEC §3.2). `byte0` carries version and kind, so a frame cannot change
/// kind without changing its id.
pub fn message_id(byte0: u8, commit: &[u8; COMMIT_LEN], sealed: &[u8]) -> [u8; ID_LEN] {
    let mut h = Blake2s256::new();
    h.update(ID_DOMAIN);
    h.update([byte0]);
    h.update(commit);
    h.update(sealed);
    truncate(&h.finalize())
}

/// `commit = BLAKE2s("ferry/v1/commit\0" || r)[..12]` (SPEC §5). Finding a
/// second `r` for a given commitment is a 96-bit preimage search.
pub fn receipt_commit(secret: &[u8; RECEIPT_SECRET_LEN]) -> [u8; COMMIT_LEN] {
    let mut h = Blake2s256::new();
    h.update(COMMIT_DOMAIN);
    h.update(secret);
    truncate(&h.finalize())
}

/// A summary fingerprint: `BLAKE2s("ferry/v1/summary" || salt || id)[..4]`.
/// The salt is fresh per link-up, so the fingerprints a device offers on one
/// link cannot be matched with those it offers on another (SPEC §6.4).
pub fn fingerprint(salt: &[u8; 16], id: &[u8; ID_LEN]) -> [u8; FINGERPRINT_LEN] {
    let mut h = Blake2s256::new();
    h.update(FP_DOMAIN);
    h.update(salt);
    h.update(id);
    truncate(&h.finalize())
}

/// The summary salt both ends of a link derive from their two hello nonces,
/// in an order that does not depend on who is "first".
pub fn link_salt(a: &[u8; 16], b: &[u8; 16]) -> [u8; 16] {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h = Blake2s256::new();
    h.update(b"ferry/v1/lnksalt");
    h.update(lo);
    h.update(hi);
    truncate(&h.finalize())
}

/// A stateless address-validation cookie (SPEC §6.1): the nonce a node puts
/// in its answer to a frame from an address it has no link for.
/// `BLAKE2s("ferry/v1/cookie\0" || key || epoch || len(addr) || addr)[..16]`,
/// with `epoch` big-endian and `len(addr)` one byte (addresses of more than
/// 255 bytes are cut there). Only the node that knows `key` can make or
/// check one; it changes every epoch. Nodes do not need to agree on it: only
/// its maker checks it.
pub fn cookie(key: &[u8; 16], epoch: u32, addr: &[u8]) -> [u8; 16] {
    let addr = addr.get(..255).unwrap_or(addr);
    let mut h = Blake2s256::new();
    h.update(b"ferry/v1/cookie\0");
    h.update(key);
    h.update(epoch.to_be_bytes());
    h.update([u8::try_from(addr.len()).unwrap_or(u8::MAX)]);
    h.update(addr);
    truncate(&h.finalize())
}
