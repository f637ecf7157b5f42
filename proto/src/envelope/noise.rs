//! The one-way Noise handshakes our envelope is made of (Noise spec rev. 34,
//! §7.4): `X` (`<- s; ... -> e, es, s, ss`) for first contact and `K`
//! (`-> s; <- s; ... -> e, es, ss`) between contacts, both with
//! `25519_ChaChaPoly_BLAKE2s`.
//!
//! This is a direct, small implementation of the spec's `SymmetricState` so
//! that it works in place on a caller's buffer with no heap; the Cacophony
//! test vectors for both patterns pass against it (`tests` below). Two
//! departures from a generic Noise library, both allowed by the spec: the
//! static-static DH of `K` may be passed in precomputed (it is the same for
//! every message to a contact), and every DH result is checked to be
//! contributory (a low-order peer key is an error, not an all-zero key).

use blake2::{Blake2s256, Digest};
use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, KeyInit};
use hmac::{Mac, SimpleHmac};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize;

/// `Noise_X_25519_ChaChaPoly_BLAKE2s` (exactly 32 bytes, so it is `h` as is).
pub const X_NAME: &[u8; 32] = b"Noise_X_25519_ChaChaPoly_BLAKE2s";
/// `Noise_K_25519_ChaChaPoly_BLAKE2s`.
pub const K_NAME: &[u8; 32] = b"Noise_K_25519_ChaChaPoly_BLAKE2s";
/// Public key and DH output length.
pub const DHLEN: usize = 32;
/// AEAD tag length.
pub const TAGLEN: usize = 16;

/// Which one-way pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// Sender static sent encrypted: `-> e, es, s, ss`.
    X,
    /// Sender static known to the recipient: `-> e, es, ss`.
    K,
}

/// Why a handshake failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoiseError {
    /// A DH output was all zeros: a low-order public key.
    NonContributory,
    /// An AEAD tag did not verify.
    Decrypt,
    /// The buffer is too short for the pattern.
    Short,
}

type HmacB2s = SimpleHmac<Blake2s256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // A 32-byte key is always accepted by HMAC; the fallback is unreachable.
    let Ok(mut mac) = <HmacB2s as hmac::digest::KeyInit>::new_from_slice(key) else {
        return [0; 32];
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Noise `HKDF(ck, ikm)` with two outputs.
fn hkdf2(ck: &[u8; 32], ikm: &[u8]) -> ([u8; 32], [u8; 32]) {
    let mut temp = hmac(ck, &[ikm]);
    let o1 = hmac(&temp, &[&[1u8]]);
    let o2 = hmac(&temp, &[&o1, &[2u8]]);
    temp.zeroize();
    (o1, o2)
}

/// Whether this build has the simulator's insecure Diffie-Hellman stand-in
/// (feature `sim-fast-dh`) instead of X25519. Programs that talk to real
/// peers check it and refuse to run (`ferry` does).
pub const INSECURE_SIM_DH: bool = cfg!(feature = "sim-fast-dh");

/// `DH(s, p)`, refusing a non-contributory result.
#[cfg(not(feature = "sim-fast-dh"))]
pub fn dh(secret: &StaticSecret, public: &PublicKey) -> Result<[u8; DHLEN], NoiseError> {
    let shared = secret.diffie_hellman(public);
    if shared.was_contributory() { Ok(*shared.as_bytes()) } else { Err(NoiseError::NonContributory) }
}

/// The public key of `secret` (X25519 base-point multiplication).
#[cfg(not(feature = "sim-fast-dh"))]
pub fn public_key(secret: &StaticSecret) -> PublicKey {
    PublicKey::from(secret)
}

#[cfg(feature = "sim-fast-dh")]
pub use fast_dh::{dh, public_key};

/// **Not cryptography.** The simulator's stand-in for X25519 (feature
/// `sim-fast-dh`, for `ferry-sim`'s largest runs only; never in `node` or
/// firmware). Keys are elements of the additive group of integers modulo
/// the Mersenne prime q = 2^61 − 1: a secret's scalar `a` is its first 8
/// bytes (little-endian) mod q, its public key is `a·G mod q` in the first
/// 8 bytes of 32 (the rest zero), and `DH(a, B) = BLAKE2s(domain ||
/// a·B mod q)`. So `DH(a, bG) = DH(b, aG)` exactly as X25519's, a wrong key
/// gives an unrelated secret (the AEAD then fails, as it would), an all-zero
/// key is refused as non-contributory, and every size is unchanged: the same
/// code paths make the same decisions, at a fraction of a microsecond
/// instead of tens. Anyone can recover a secret key by one division, which
/// is why it must never leave the simulator. The Cacophony and SPEC vector
/// tests fail with it on, by design.
#[cfg(feature = "sim-fast-dh")]
mod fast_dh {
    use blake2::{Blake2s256, Digest};
    use x25519_dalek::{PublicKey, StaticSecret};

    use super::{DHLEN, NoiseError};

    const Q: u128 = (1 << 61) - 1;
    const G: u128 = 0x0d2c_3b4a_5968_7f01;

    fn low64(bytes: &[u8; 32]) -> u128 {
        let mut b = [0u8; 8];
        for (d, s) in b.iter_mut().zip(bytes) {
            *d = *s;
        }
        u128::from(u64::from_le_bytes(b)).checked_rem(Q).unwrap_or(0)
    }

    fn scalar(secret: &StaticSecret) -> u128 {
        match low64(&secret.to_bytes()) {
            0 => 1,
            a => a,
        }
    }

    /// `a·G`, in the first 8 bytes of a 32-byte key.
    pub fn public_key(secret: &StaticSecret) -> PublicKey {
        let v = scalar(secret).wrapping_mul(G).checked_rem(Q).unwrap_or(0);
        let mut out = [0u8; 32];
        for (d, s) in out.iter_mut().zip((v as u64).to_le_bytes()) {
            *d = s;
        }
        PublicKey::from(out)
    }

    /// `BLAKE2s("ferry/sim-fast-dh" || a·B mod q)`; zero is refused.
    pub fn dh(secret: &StaticSecret, public: &PublicKey) -> Result<[u8; DHLEN], NoiseError> {
        let v = scalar(secret).wrapping_mul(low64(public.as_bytes())).checked_rem(Q).unwrap_or(0);
        if v == 0 {
            return Err(NoiseError::NonContributory);
        }
        let mut h = Blake2s256::new();
        h.update(b"ferry/sim-fast-dh");
        h.update((v as u64).to_le_bytes());
        Ok(h.finalize().into())
    }
}

fn nonce(n: u64) -> chacha20poly1305::Nonce {
    let mut bytes = [0u8; 12];
    for (b, v) in bytes.iter_mut().skip(4).zip(n.to_le_bytes()) {
        *b = v;
    }
    bytes.into()
}

/// A Noise `CipherState`.
pub struct CipherState {
    k: [u8; 32],
    n: u64,
}

impl core::fmt::Debug for CipherState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CipherState(..)")
    }
}

impl Drop for CipherState {
    fn drop(&mut self) {
        self.k.zeroize();
    }
}

impl CipherState {
    /// Encrypt `buf` in place with associated data `ad`; returns the tag.
    pub fn encrypt(&mut self, ad: &[u8], buf: &mut [u8]) -> [u8; TAGLEN] {
        let cipher = ChaCha20Poly1305::new(&self.k.into());
        let n = self.n;
        self.n = self.n.wrapping_add(1);
        // Encryption cannot fail for buffers this small (< 2^38 bytes).
        cipher.encrypt_inout_detached(&nonce(n), ad, buf.into()).map(Into::into).unwrap_or([0; TAGLEN])
    }

    /// Decrypt `buf` in place, checking `tag`.
    pub fn decrypt(&mut self, ad: &[u8], buf: &mut [u8], tag: &[u8; TAGLEN]) -> Result<(), NoiseError> {
        let cipher = ChaCha20Poly1305::new(&self.k.into());
        let n = self.n;
        cipher.decrypt_inout_detached(&nonce(n), ad, buf.into(), tag.into()).map_err(|_| NoiseError::Decrypt)?;
        self.n = self.n.wrapping_add(1);
        Ok(())
    }
}

/// The Noise `SymmetricState`.
pub struct SymmetricState {
    ck: [u8; 32],
    h: [u8; 32],
    cipher: Option<CipherState>,
}

impl core::fmt::Debug for SymmetricState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SymmetricState(..)")
    }
}

impl Drop for SymmetricState {
    fn drop(&mut self) {
        self.ck.zeroize();
    }
}

impl SymmetricState {
    /// `InitializeSymmetric(name)` for a 32-byte protocol name.
    pub fn new(name: &[u8; 32]) -> Self {
        SymmetricState { ck: *name, h: *name, cipher: None }
    }

    /// `MixHash(data)`.
    pub fn mix_hash(&mut self, parts: &[&[u8]]) {
        let mut d = Blake2s256::new();
        d.update(self.h);
        for p in parts {
            d.update(p);
        }
        self.h = d.finalize().into();
    }

    /// `MixKey(ikm)`.
    pub fn mix_key(&mut self, ikm: &[u8]) {
        let (ck, k) = hkdf2(&self.ck, ikm);
        self.ck = ck;
        self.cipher = Some(CipherState { k, n: 0 });
    }

    /// `EncryptAndHash` in place; returns the tag (all-zero and unused when
    /// no key is set yet, which never happens in X or K after `es`).
    pub fn encrypt_and_hash(&mut self, buf: &mut [u8]) -> [u8; TAGLEN] {
        let h = self.h;
        match self.cipher.as_mut() {
            Some(c) => {
                let tag = c.encrypt(&h, buf);
                self.mix_hash(&[buf, &tag]);
                tag
            }
            None => {
                self.mix_hash(&[buf]);
                [0; TAGLEN]
            }
        }
    }

    /// `DecryptAndHash` in place.
    pub fn decrypt_and_hash(&mut self, buf: &mut [u8], tag: &[u8; TAGLEN]) -> Result<(), NoiseError> {
        let h = self.h;
        match self.cipher.as_mut() {
            Some(c) => {
                // The hash covers the ciphertext, so compute it before decrypting.
                let mut d = Blake2s256::new();
                d.update(h);
                d.update(&*buf);
                d.update(tag);
                let next: [u8; 32] = d.finalize().into();
                c.decrypt(&h, buf, tag)?;
                self.h = next;
                Ok(())
            }
            None => {
                self.mix_hash(&[buf]);
                Ok(())
            }
        }
    }

    /// The handshake hash `h`.
    pub fn handshake_hash(&self) -> [u8; 32] {
        self.h
    }

    /// `Split()`: the initiator-to-responder transport cipher (the only one a
    /// one-way pattern uses).
    pub fn split(&self) -> CipherState {
        let (k1, _k2) = hkdf2(&self.ck, &[]);
        CipherState { k: k1, n: 0 }
    }
}

/// The sender's keys for one handshake.
#[allow(missing_debug_implementations)]
pub struct Initiator<'a> {
    /// The sender's static key pair.
    pub s: (&'a StaticSecret, &'a PublicKey),
    /// A fresh ephemeral public key.
    pub e: &'a PublicKey,
    /// The recipient's static public key.
    pub rs: &'a PublicKey,
    /// `DH(e, rs)`, computed by the caller (the envelope derives the receipt
    /// secret from it before the handshake starts).
    pub es: &'a [u8; DHLEN],
    /// `DH(s, rs)`, precomputed for the contact.
    pub ss: &'a [u8; DHLEN],
}

/// Secrets a handshake leaves behind that the envelope needs.
pub struct Outcome {
    /// `DH(e, rs)`: known only to the sender and the recipient; the receipt
    /// secret is derived from it.
    pub es: [u8; DHLEN],
    /// The symmetric state after the handshake (for tests: `h`, `Split`).
    pub state: SymmetricState,
}

impl core::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Outcome(..)")
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        self.es.zeroize();
    }
}

/// Bytes the handshake adds before the payload.
pub const fn prefix_len(pattern: Pattern) -> usize {
    match pattern {
        Pattern::X => 2 * DHLEN + TAGLEN,
        Pattern::K => DHLEN,
    }
}

/// Bytes the handshake adds in all (prefix and payload tag).
pub const fn overhead(pattern: Pattern) -> usize {
    prefix_len(pattern).saturating_add(TAGLEN)
}

type Parts<'a> = (&'a mut [u8], &'a mut [u8], &'a mut [u8]);

fn split3(msg: &mut [u8], prefix: usize) -> Result<Parts<'_>, NoiseError> {
    let body_len = msg.len().checked_sub(prefix).and_then(|l| l.checked_sub(TAGLEN)).ok_or(NoiseError::Short)?;
    let (head, rest) = msg.split_at_mut(prefix);
    let (body, tag) = rest.split_at_mut(body_len);
    Ok((head, body, tag))
}

fn tag_of(bytes: &[u8]) -> [u8; TAGLEN] {
    let mut t = [0u8; TAGLEN];
    for (d, s) in t.iter_mut().zip(bytes) {
        *d = *s;
    }
    t
}

/// Write the one handshake message of `pattern` into `msg`, whose middle
/// (after [`prefix_len`], before the final tag) already holds the payload,
/// which is encrypted in place.
pub fn write(pattern: Pattern, prologue: &[u8], keys: &Initiator<'_>, msg: &mut [u8]) -> Result<Outcome, NoiseError> {
    let (head, body, tag) = split3(msg, prefix_len(pattern))?;
    let mut st = SymmetricState::new(match pattern {
        Pattern::X => X_NAME,
        Pattern::K => K_NAME,
    });
    st.mix_hash(&[prologue]);
    if pattern == Pattern::K {
        st.mix_hash(&[keys.s.1.as_bytes()]);
    }
    st.mix_hash(&[keys.rs.as_bytes()]);
    // e
    let (e_out, after_e) = head.split_at_mut(DHLEN);
    e_out.copy_from_slice(keys.e.as_bytes());
    st.mix_hash(&[keys.e.as_bytes()]);
    // es
    let es = *keys.es;
    st.mix_key(&es);
    // s (X only)
    if pattern == Pattern::X {
        let (s_ct, s_tag) = after_e.split_at_mut(DHLEN);
        s_ct.copy_from_slice(keys.s.1.as_bytes());
        let t = st.encrypt_and_hash(s_ct);
        s_tag.copy_from_slice(&t);
    }
    // ss
    st.mix_key(keys.ss);
    let t = st.encrypt_and_hash(body);
    tag.copy_from_slice(&t);
    Ok(Outcome { es, state: st })
}

/// What the recipient learns from a handshake message.
#[derive(Debug)]
pub struct Read {
    /// The sender's static public key (from the message for X; the one given
    /// for K).
    pub sender: PublicKey,
    /// The handshake secrets.
    pub outcome: Outcome,
}

/// Where `read` stops on a failure: before the sender was authenticated
/// (`es` failed: the frame is not for us) or after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// Not for this key (X: the encrypted static did not open; K: the
    /// payload did not open).
    NotForUs,
    /// For this key, but the sender's key or payload failed.
    Bad(NoiseError),
}

/// Read the one handshake message of `pattern`, decrypting the payload in
/// place. `sender` is the initiator's static key, needed for K; `ss` its
/// precomputed DH with ours (K only; X computes it).
pub fn read(
    pattern: Pattern,
    prologue: &[u8],
    s: (&StaticSecret, &PublicKey),
    sender: Option<(&PublicKey, &[u8; DHLEN])>,
    msg: &mut [u8],
    check_key: impl Fn(&[u8; 32]) -> bool,
) -> Result<Read, ReadError> {
    let (head, body, tag) = split3(msg, prefix_len(pattern)).map_err(ReadError::Bad)?;
    let mut st = SymmetricState::new(match pattern {
        Pattern::X => X_NAME,
        Pattern::K => K_NAME,
    });
    st.mix_hash(&[prologue]);
    if pattern == Pattern::K {
        let (rs, _) = sender.ok_or(ReadError::Bad(NoiseError::Short))?;
        st.mix_hash(&[rs.as_bytes()]);
    }
    st.mix_hash(&[s.1.as_bytes()]);
    let (e_in, after_e) = head.split_at_mut(DHLEN);
    let mut e_bytes = [0u8; DHLEN];
    e_bytes.copy_from_slice(e_in);
    let re = PublicKey::from(e_bytes);
    st.mix_hash(&[&e_bytes]);
    let es = dh(s.0, &re).map_err(|_| ReadError::NotForUs)?;
    st.mix_key(&es);
    let (sender_pk, ss) = match pattern {
        Pattern::X => {
            let (s_ct, s_tag) = after_e.split_at_mut(DHLEN);
            st.decrypt_and_hash(s_ct, &tag_of(s_tag)).map_err(|_| ReadError::NotForUs)?;
            let mut pk = [0u8; DHLEN];
            pk.copy_from_slice(s_ct);
            if !check_key(&pk) {
                return Err(ReadError::Bad(NoiseError::NonContributory));
            }
            let pk = PublicKey::from(pk);
            let ss = dh(s.0, &pk).map_err(ReadError::Bad)?;
            (pk, ss)
        }
        Pattern::K => {
            let (rs, ss) = sender.ok_or(ReadError::Bad(NoiseError::Short))?;
            (*rs, *ss)
        }
    };
    st.mix_key(&ss);
    st.decrypt_and_hash(body, &tag_of(tag)).map_err(|e| match pattern {
        Pattern::K => ReadError::NotForUs,
        Pattern::X => ReadError::Bad(e),
    })?;
    Ok(Read { sender: sender_pk, outcome: Outcome { es, state: st } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn key(s: &str) -> StaticSecret {
        let b: [u8; 32] = hex(s).try_into().unwrap();
        StaticSecret::from(b)
    }

    /// The Cacophony vectors for the one-way patterns X and K with
    /// 25519/ChaChaPoly/BLAKE2s: handshake message, handshake hash, and the
    /// transport messages after Split, byte for byte, both directions.
    #[test]
    #[cfg(not(feature = "sim-fast-dh"))]
    fn cacophony_vectors() {
        let json: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/noise-cacophony-oneway-25519-chachapoly.json"))
                .unwrap();
        let mut checked = 0;
        for v in json["vectors"].as_array().unwrap() {
            let name = v["protocol_name"].as_str().unwrap();
            let pattern = match name {
                "Noise_X_25519_ChaChaPoly_BLAKE2s" => Pattern::X,
                "Noise_K_25519_ChaChaPoly_BLAKE2s" => Pattern::K,
                _ => continue,
            };
            let prologue = hex(v["init_prologue"].as_str().unwrap());
            let s = key(v["init_static"].as_str().unwrap());
            let s_pub = PublicKey::from(&s);
            let e = key(v["init_ephemeral"].as_str().unwrap());
            let e_pub = PublicKey::from(&e);
            let r = key(v["resp_static"].as_str().unwrap());
            let r_pub = PublicKey::from(&r);
            assert_eq!(r_pub.as_bytes().as_slice(), hex(v["init_remote_static"].as_str().unwrap()));
            let ss = dh(&s, &r_pub).unwrap();
            let msgs = v["messages"].as_array().unwrap();
            let payload = hex(msgs[0]["payload"].as_str().unwrap());
            let expected = hex(msgs[0]["ciphertext"].as_str().unwrap());
            let mut msg = std::vec![0u8; overhead(pattern) + payload.len()];
            msg[prefix_len(pattern)..prefix_len(pattern) + payload.len()].copy_from_slice(&payload);
            let es = dh(&e, &r_pub).unwrap();
            let keys = Initiator { s: (&s, &s_pub), e: &e_pub, rs: &r_pub, es: &es, ss: &ss };
            let out = write(pattern, &prologue, &keys, &mut msg).unwrap();
            assert_eq!(msg, expected, "{name} handshake message");
            assert_eq!(out.state.handshake_hash().as_slice(), hex(v["handshake_hash"].as_str().unwrap()));

            // The responder side reads it back.
            let ss_r = dh(&r, &s_pub).unwrap();
            let sender = (pattern == Pattern::K).then_some((&s_pub, &ss_r));
            let read = read(pattern, &prologue, (&r, &r_pub), sender, &mut msg, |_| true).unwrap();
            assert_eq!(read.sender.as_bytes(), s_pub.as_bytes());
            assert_eq!(&msg[prefix_len(pattern)..msg.len() - TAGLEN], payload.as_slice());

            // Transport messages after Split.
            let mut tx = out.state.split();
            let mut rx = read.outcome.state.split();
            for m in &msgs[1..] {
                let mut buf = hex(m["payload"].as_str().unwrap());
                let tag = tx.encrypt(&[], &mut buf);
                buf.extend_from_slice(&tag);
                assert_eq!(buf, hex(m["ciphertext"].as_str().unwrap()), "{name} transport");
                let n = buf.len() - TAGLEN;
                let (body, t) = buf.split_at_mut(n);
                rx.decrypt(&[], body, &tag_of(t)).unwrap();
                assert_eq!(body, hex(m["payload"].as_str().unwrap()).as_slice());
            }
            checked += 1;
        }
        assert_eq!(checked, 2, "both X and K vectors must be present");
    }

    #[test]
    fn low_order_peer_key_is_refused() {
        let s = StaticSecret::from([7u8; 32]);
        let zero = PublicKey::from([0u8; 32]);
        assert_eq!(dh(&s, &zero), Err(NoiseError::NonContributory));
    }
}
