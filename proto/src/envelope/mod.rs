//! The sealed envelope (SPEC §4): who a message is from and what it says,
//! readable only by its recipient.
//!
//! * **First contact** (`Kind::FirstContact`): a Noise `X` one-way handshake.
//!   The sender's static key travels encrypted under `DH(e, rs)`; every node
//!   must try that one DH to learn whether a frame is for it.
//! * **Between contacts** (`Kind::Contact`): a Noise `K` one-way handshake
//!   with `DH(s, rs)` computed once per contact, found by a one-time tag
//!   `tag_n = HMAC(tag_key, n)[..8]` that the recipient keeps in a map. A
//!   node that holds no matching tag spends one hash lookup, no DH.
//!
//! The receipt secret `r` is derived from `DH(e, rs)` (so only the sender and
//! the recipient can know it); the frame carries `commit = H(r)`, which is
//! in the Noise prologue together with byte 0 and the clear prefix of the
//! sealed body, and the message id hashes all of it.

pub mod noise;

use hmac::{Mac, SimpleHmac};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize;

use crate::code::{self, CodeError, KeyError};
use crate::hash;
use crate::wire::{
    COMMIT_LEN, Kind, MESSAGE_HEADER_LEN, MessageFrame, MessageId, RECEIPT_SECRET_LEN, SizeClass, TAG_LEN,
};
use noise::{DHLEN, Initiator, Pattern, ReadError};

/// The key id carried in clear before the handshake. 0 names the
/// recipient's static identity key; other values are reserved for prekeys
/// and ratchets and are refused today.
pub const KEY_ID_STATIC: u8 = 0;

const PROLOGUE_DOMAIN: &[u8; 8] = b"ferry/v1";
const RECEIPT_DOMAIN: &[u8] = b"ferry/v1/receipt";
const TAG_DOMAIN: &[u8] = b"ferry/v1/tag-key";

/// A device's long-term X25519 identity. No account, number or name: the
/// public key *is* the identity, shown to people as a contact code.
pub struct Identity {
    secret: StaticSecret,
    public: PublicKey,
}

impl core::fmt::Debug for Identity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Identity(..)")
    }
}

impl Identity {
    /// A fresh identity from the caller's cryptographic RNG.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        let id = Self::from_secret_bytes(bytes);
        bytes.zeroize();
        id
    }

    /// Restore an identity from its 32 secret bytes (clamped as X25519 does).
    pub fn from_secret_bytes(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = noise::public_key(&secret);
        Identity { secret, public }
    }

    /// The secret bytes, for the owner's own storage only.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    /// The public key.
    pub fn public(&self) -> PeerKey {
        PeerKey(*self.public.as_bytes())
    }

    /// The contact code people exchange.
    pub fn code(&self) -> heapless::String<{ code::CODE_LEN }> {
        code::encode(self.public.as_bytes())
    }

    /// `DH(self, peer)`, refusing a non-contributory result.
    pub fn static_static(&self, peer: &PeerKey) -> Result<[u8; DHLEN], KeyError> {
        noise::dh(&self.secret, &PublicKey::from(peer.0)).map_err(|_| KeyError::LowOrder)
    }
}

/// A peer's validated X25519 public key (canonical, not low-order).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerKey([u8; 32]);

impl core::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print a whole key by accident (logs are zero-data).
        write!(f, "PeerKey({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

impl PeerKey {
    /// Validate 32 bytes as a peer key.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        code::check_public_key(&bytes)?;
        Ok(PeerKey(bytes))
    }

    /// Parse a contact code.
    pub fn from_code(s: &str) -> Result<Self, CodeError> {
        code::decode(s).map(PeerKey)
    }

    /// The key bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The contact code of this key.
    pub fn code(&self) -> heapless::String<{ code::CODE_LEN }> {
        code::encode(&self.0)
    }
}

/// The plaintext inside every sealed message (postcard, then zero padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload<'a> {
    /// The sender's own clock at sending, Unix seconds. Shown to the
    /// recipient; also bounds how long the recipient must remember it for
    /// replay protection.
    pub sent_at: u64,
    /// What the message says.
    #[serde(borrow)]
    pub body: Body<'a>,
}

/// The content kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body<'a> {
    /// A whole text.
    Text(&'a str),
    /// One part of a long text that only the recipient reassembles.
    Part {
        /// Random group id shared by all parts of one text.
        group: u32,
        /// Position of this part.
        index: u8,
        /// Number of parts.
        count: u8,
        /// This part's text (split on a character boundary).
        text: &'a str,
    },
}

/// Which path a message takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Noise K, found by this one-time tag.
    Contact {
        /// The tag the recipient expects next from us.
        tag: [u8; TAG_LEN],
    },
    /// Noise X: the sender key travels encrypted.
    FirstContact,
}

impl Path {
    fn kind(self) -> Kind {
        match self {
            Path::Contact { .. } => Kind::Contact,
            Path::FirstContact => Kind::FirstContact,
        }
    }
}

/// Bytes in clear between the header and the Noise message: tag and key id
/// (contact), or key id (first contact).
const fn clear_prefix(kind: Kind) -> usize {
    match kind {
        Kind::Contact => TAG_LEN.saturating_add(1),
        _ => 1,
    }
}

const fn pattern(kind: Kind) -> Pattern {
    match kind {
        Kind::Contact => Pattern::K,
        _ => Pattern::X,
    }
}

/// Plaintext bytes (postcard payload plus padding) that fit in a frame of
/// `class` on the path of `kind`.
pub const fn plaintext_capacity(kind: Kind, class: SizeClass) -> usize {
    class.frame_len().saturating_sub(fixed_overhead(kind))
}

/// Bytes every message of `kind` adds around its plaintext.
pub const fn fixed_overhead(kind: Kind) -> usize {
    MESSAGE_HEADER_LEN.saturating_add(clear_prefix(kind)).saturating_add(noise::overhead(pattern(kind)))
}

/// Why sealing failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    /// The payload does not fit the size class.
    TooLarge,
    /// The recipient key gave a non-contributory DH.
    BadKey,
}

/// Why a message frame did not open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenError {
    /// Not addressed to this identity (the common case for a relay).
    NotForUs,
    /// A key id this device does not have (reserved for prekeys).
    UnknownKeyId,
    /// Addressed to us, but the sender key is low-order or non-canonical.
    BadSenderKey,
    /// Addressed to us, but the commitment or a tag failed: tampered.
    Tampered,
    /// Decrypted, but the plaintext is not a well-formed payload.
    BadPayload,
}

/// What `seal` made.
#[derive(Clone, Copy, Debug)]
pub struct Sealed {
    /// The frame length (its size class).
    pub len: usize,
    /// The message id.
    pub id: MessageId,
    /// The receipt secret (the sender keeps it to recognise the receipt).
    pub secret: [u8; RECEIPT_SECRET_LEN],
    /// Its commitment, as in the frame.
    pub commit: [u8; COMMIT_LEN],
}

fn receipt_secret(es: &[u8; DHLEN]) -> [u8; RECEIPT_SECRET_LEN] {
    let mut out = [0u8; RECEIPT_SECRET_LEN];
    let Ok(mut mac) = <SimpleHmac<blake2::Blake2s256> as hmac::digest::KeyInit>::new_from_slice(RECEIPT_DOMAIN) else {
        return out;
    };
    mac.update(es);
    let full: [u8; 32] = mac.finalize().into_bytes().into();
    for (o, f) in out.iter_mut().zip(full) {
        *o = f;
    }
    out
}

fn prologue(byte0: u8, commit: &[u8; COMMIT_LEN], clear: &[u8]) -> heapless::Vec<u8, 32> {
    let mut p = heapless::Vec::new();
    // 8 + 1 + 12 + at most 9 bytes: always fits in 32.
    let _ = p.extend_from_slice(PROLOGUE_DOMAIN);
    let _ = p.push(byte0);
    let _ = p.extend_from_slice(commit);
    let _ = p.extend_from_slice(clear);
    p
}

/// Seal `payload` for `to` into `buf`, a frame of `class`.
///
/// `ss` is `DH(me, to)` (see [`Identity::static_static`]), `hops` and
/// `lifetime_secs` the outer fields. Randomness: the ephemeral key and the
/// padding-free layout need 32 bytes from `rng`.
#[allow(clippy::too_many_arguments)]
pub fn seal<R: CryptoRng + ?Sized>(
    rng: &mut R,
    me: &Identity,
    to: &PeerKey,
    ss: &[u8; DHLEN],
    path: Path,
    hops: u8,
    lifetime_secs: u32,
    class: SizeClass,
    payload: &Payload<'_>,
    buf: &mut [u8],
) -> Result<Sealed, SealError> {
    let kind = path.kind();
    let len = class.frame_len();
    let frame_buf = buf.get_mut(..len).ok_or(SealError::TooLarge)?;
    frame_buf.fill(0);
    let pre = clear_prefix(kind);
    let prefix = noise::prefix_len(pattern(kind));
    let body_start = MESSAGE_HEADER_LEN.saturating_add(pre).saturating_add(prefix);
    let body_end = len.saturating_sub(noise::TAGLEN);
    // Plaintext: postcard, then zeros (already zero).
    let body = frame_buf.get_mut(body_start..body_end).ok_or(SealError::TooLarge)?;
    postcard::to_slice(payload, body).map_err(|_| SealError::TooLarge)?;

    let mut e_bytes = [0u8; 32];
    rng.fill_bytes(&mut e_bytes);
    let e = StaticSecret::from(e_bytes);
    e_bytes.zeroize();
    let e_pub = noise::public_key(&e);
    let rs = PublicKey::from(to.0);
    let mut es = noise::dh(&e, &rs).map_err(|_| SealError::BadKey)?;
    let secret = receipt_secret(&es);
    let commit = hash::receipt_commit(&secret);

    let mut frame = MessageFrame::new_unchecked(&mut *frame_buf);
    frame.emit_header(kind, hops, lifetime_secs, &commit);
    let sealed = frame.sealed_mut();
    let (clear, msg) = sealed.split_at_mut(pre);
    if let Path::Contact { tag } = path {
        for (d, s) in clear.iter_mut().zip(tag) {
            *d = s;
        }
    }
    if let Some(k) = clear.last_mut() {
        *k = KEY_ID_STATIC;
    }
    let pro = prologue(kind.byte0(), &commit, clear);
    let keys = Initiator { s: (&me.secret, &me.public), e: &e_pub, rs: &rs, es: &es, ss };
    let outcome = noise::write(pattern(kind), &pro, &keys, msg);
    es.zeroize();
    outcome.map_err(|_| SealError::BadKey)?;
    let id = frame.fill_id();
    Ok(Sealed { len, id, secret, commit })
}

/// A message that opened.
#[derive(Debug)]
pub struct Opened {
    /// Who sent it (authenticated by the handshake).
    pub sender: PeerKey,
    /// The receipt secret to reveal.
    pub secret: [u8; RECEIPT_SECRET_LEN],
    /// Where the plaintext sits in the caller's scratch buffer.
    pub plaintext: core::ops::Range<usize>,
}

/// Open a message frame whose id the caller has checked.
///
/// `scratch` receives a copy of the frame (the frame itself stays intact
/// for relaying) and holds the plaintext afterwards. For a `Contact` frame
/// the caller has looked the tag up and passes the sender with its
/// precomputed `ss`; for `FirstContact` pass `None`.
pub fn open(
    me: &Identity,
    frame: &MessageFrame<&[u8]>,
    contact: Option<(&PeerKey, &[u8; DHLEN])>,
    scratch: &mut [u8],
) -> Result<Opened, OpenError> {
    let kind = frame.kind();
    let bytes = frame.as_bytes();
    let copy = scratch.get_mut(..bytes.len()).ok_or(OpenError::NotForUs)?;
    copy.copy_from_slice(bytes);
    let pre = clear_prefix(kind);
    let commit = frame.commit();
    let (clear, msg) = copy.get_mut(MESSAGE_HEADER_LEN..).ok_or(OpenError::NotForUs)?.split_at_mut(pre);
    if clear.last().copied() != Some(KEY_ID_STATIC) {
        return Err(OpenError::UnknownKeyId);
    }
    let pro = prologue(kind.byte0(), &commit, clear);
    let sender = contact.map(|(pk, ss)| (PublicKey::from(pk.0), ss));
    let read = noise::read(
        pattern(kind),
        &pro,
        (&me.secret, &me.public),
        sender.as_ref().map(|(pk, ss)| (pk, *ss)),
        msg,
        |k| code::check_public_key(k).is_ok(),
    )
    .map_err(|e| match e {
        ReadError::NotForUs => OpenError::NotForUs,
        ReadError::Bad(noise::NoiseError::NonContributory) => OpenError::BadSenderKey,
        ReadError::Bad(_) => OpenError::Tampered,
    })?;
    let secret = receipt_secret(&read.outcome.es);
    if hash::receipt_commit(&secret) != commit {
        return Err(OpenError::Tampered);
    }
    let start = MESSAGE_HEADER_LEN.saturating_add(pre).saturating_add(noise::prefix_len(pattern(kind)));
    let end = bytes.len().saturating_sub(noise::TAGLEN);
    Ok(Opened { sender: PeerKey(*read.sender.as_bytes()), secret, plaintext: start..end })
}

/// Decode a plaintext: postcard, then only zeros.
pub fn parse_payload(plaintext: &[u8]) -> Result<Payload<'_>, OpenError> {
    let (payload, rest) = postcard::take_from_bytes::<Payload<'_>>(plaintext).map_err(|_| OpenError::BadPayload)?;
    if rest.iter().any(|&b| b != 0) {
        return Err(OpenError::BadPayload);
    }
    Ok(payload)
}

/// The key from which the one-time tags of messages `from -> to` derive:
/// `HMAC(ss, "ferry/v1/tag-key" || from || to)`. Direction matters, so the
/// two sides of a conversation use unrelated tags.
pub fn tag_key(ss: &[u8; DHLEN], from: &PeerKey, to: &PeerKey) -> [u8; 32] {
    let Ok(mut mac) = <SimpleHmac<blake2::Blake2s256> as hmac::digest::KeyInit>::new_from_slice(ss) else {
        return [0; 32];
    };
    mac.update(TAG_DOMAIN);
    mac.update(&from.0);
    mac.update(&to.0);
    mac.finalize().into_bytes().into()
}

/// One-time tag number `n`: `HMAC(tag_key, n as u32 LE)[..8]`.
pub fn tag(tag_key: &[u8; 32], n: u32) -> [u8; TAG_LEN] {
    let mut out = [0u8; TAG_LEN];
    let Ok(mut mac) = <SimpleHmac<blake2::Blake2s256> as hmac::digest::KeyInit>::new_from_slice(tag_key) else {
        return out;
    };
    mac.update(&n.to_le_bytes());
    let full: [u8; 32] = mac.finalize().into_bytes().into();
    for (o, f) in out.iter_mut().zip(full) {
        *o = f;
    }
    out
}
