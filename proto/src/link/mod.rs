//! The link layer under the router on links that are not UDP: serial lines
//! now, BLE next (SPEC §10).
//!
//! Every link frame is `version (1) | type | body`:
//!
//! | type | name | body |
//! |---|---|---|
//! | 0 | [`LinkFrame::Frame`] | one Ferry frame or segment (SPEC §3), 1 to the peer's MTU bytes |
//! | 1 | [`LinkFrame::Hello`] | [`LinkHello`]: highest version, MTU, flags, session, echo (12 bytes; no id of any kind) |
//! | 2 | [`LinkFrame::Credit`] | a credit grant: u16, the number of type-0 frames the peer may send more |
//! | 3–15 | [`LinkFrame::Reserved`] | link control of later versions (dongle stats, updates): ignored |
//!
//! A UDP datagram is not wrapped: it is one Ferry frame, as before (SPEC
//! §10.1 says why, and how a later version can move UDP onto this).
//!
//! [`Session`] is the state machine of one link's hellos and credits (SPEC
//! §10.3, §10.4); [`serial`] puts link frames on a byte stream (COBS,
//! CRC-16/KERMIT).
//!
//! * [`table`]: which address is which link, for drivers (origin, eviction, idle expiry, retries).

pub mod serial;
mod session;
pub mod table;

pub use session::{
    CONTROL_LEN, CREDIT_STALL, HELLO_RETRY_FIRST, HELLO_RETRY_MAX, LinkEvent, PEER_SESSION_MIN_INTERVAL, Session,
    SessionConfig, SessionError, SessionStats,
};

use core::fmt;

/// The link-layer version this code speaks.
pub const LINK_VERSION: u8 = 1;
/// Version and type.
pub const HEADER_LEN: usize = 2;
/// A link hello's body: highest version, MTU (u16), flags, session, echo.
pub const HELLO_BODY_LEN: usize = 12;
/// A session nonce's length.
pub const SESSION_LEN: usize = 4;
/// A credit grant's body: credits (u16).
pub const CREDIT_BODY_LEN: usize = 2;
/// The largest body of a type-0 frame: the largest Ferry frame.
pub const MAX_FRAME_BODY: usize = crate::wire::MAX_FRAME_LEN;
/// The largest link frame: header and the largest Ferry frame.
pub const MAX_LINK_FRAME: usize = HEADER_LEN + MAX_FRAME_BODY;

/// Link frame types (byte 1).
pub mod ty {
    /// A Ferry frame or segment.
    pub const FRAME: u8 = 0;
    /// A link hello.
    pub const HELLO: u8 = 1;
    /// A credit grant.
    pub const CREDIT: u8 = 2;
    /// The last type reserved for link control; higher ones are refused.
    pub const LAST_RESERVED: u8 = 15;
}

/// Hello flag bit 0: the sender grants credits. The peer may send it type-0
/// frames only against credits it has granted (one each); without the flag,
/// the peer sends freely.
pub const FLAG_CREDITS: u8 = 0x01;
/// Hello flag bit 1: the sender has not yet heard a hello that echoes its
/// session; the receiver answers with a hello (SPEC §10.3).
pub const FLAG_ASK: u8 = 0x02;
/// Every flag bit version 1 defines.
const KNOWN_FLAGS: u8 = FLAG_CREDITS | FLAG_ASK;

/// Why a link frame was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// Shorter than its header or its type's body.
    Truncated,
    /// Byte 0 is a link version this code does not speak.
    BadVersion(u8),
    /// Byte 1 is above the reserved range (16–255).
    UnknownType(u8),
    /// A body of the wrong length for its type (an empty type-0 frame, a
    /// hello or grant with bytes after its body, a frame over the MTU).
    BadLength,
    /// A field holds a forbidden value (an MTU below 20, unknown flag bits,
    /// a version of 0, a session of zeros, a grant of 0 credits).
    BadField,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Truncated => f.write_str("link frame truncated"),
            LinkError::BadVersion(v) => write!(f, "unsupported link version {v}"),
            LinkError::UnknownType(t) => write!(f, "unknown link frame type {t}"),
            LinkError::BadLength => f.write_str("link frame body has the wrong length for its type"),
            LinkError::BadField => f.write_str("a link frame field holds a forbidden value"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for LinkError {}

/// What a side says about itself when a link comes up. Nothing in it names
/// the device: no id, no serial number, no key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkHello {
    /// The highest link version the sender speaks (1 here). Both sides use
    /// the lower of the two; hellos are always sent as version 1 frames.
    pub version: u8,
    /// The largest type-0 body the sender accepts in one link frame, at
    /// least [`crate::wire::MIN_MTU`]. Ferry frames longer than this are
    /// segmented (SPEC §6.6).
    pub mtu: u16,
    /// [`FLAG_CREDITS`] and [`FLAG_ASK`], or 0.
    pub flags: u8,
    /// The sender's session: random, drawn afresh each time the sender
    /// (re)starts the link (SPEC §10.3). Never all zeros.
    pub session: [u8; SESSION_LEN],
    /// The peer's session as last heard by the sender, or zeros.
    pub echo: [u8; SESSION_LEN],
}

impl LinkHello {
    /// Whether the sender grants credits.
    pub fn wants_credits(&self) -> bool {
        self.flags & FLAG_CREDITS != 0
    }

    /// Whether the sender asks for an answer.
    pub fn asks(&self) -> bool {
        self.flags & FLAG_ASK != 0
    }

    /// What [`LinkFrame::parse`] accepts: a version other than 0, an MTU of
    /// at least 20, no unknown flag, a session other than zeros.
    fn is_valid(&self) -> bool {
        self.version != 0
            && usize::from(self.mtu) >= crate::wire::MIN_MTU
            && self.flags & !KNOWN_FLAGS == 0
            && self.session != [0; SESSION_LEN]
    }
}

/// One link frame, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkFrame<'a> {
    /// A Ferry frame or segment, for the router (not parsed here).
    Frame(&'a [u8]),
    /// The peer's hello.
    Hello(LinkHello),
    /// The peer grants this many more type-0 frames (at least 1).
    Credit(u16),
    /// A link-control type of a later version (3–15): ignore it.
    Reserved {
        /// The type byte.
        ty: u8,
    },
}

impl<'a> LinkFrame<'a> {
    /// Parse one link frame. Nothing but the header and the hello's and
    /// grant's fields is read; a type-0 body is handed on as it is.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, LinkError> {
        let (&version, rest) = bytes.split_first().ok_or(LinkError::Truncated)?;
        if version != LINK_VERSION {
            return Err(LinkError::BadVersion(version));
        }
        let (&ty, body) = rest.split_first().ok_or(LinkError::Truncated)?;
        match ty {
            ty::FRAME => {
                if body.is_empty() || body.len() > MAX_FRAME_BODY {
                    return Err(LinkError::BadLength);
                }
                Ok(LinkFrame::Frame(body))
            }
            ty::HELLO => {
                let b: [u8; HELLO_BODY_LEN] = exact(body)?;
                let [version, mtu_hi, mtu_lo, flags, s0, s1, s2, s3, e0, e1, e2, e3] = b;
                let hello = LinkHello {
                    version,
                    mtu: u16::from_be_bytes([mtu_hi, mtu_lo]),
                    flags,
                    session: [s0, s1, s2, s3],
                    echo: [e0, e1, e2, e3],
                };
                if !hello.is_valid() {
                    return Err(LinkError::BadField);
                }
                Ok(LinkFrame::Hello(hello))
            }
            ty::CREDIT => {
                let credits = u16::from_be_bytes(exact(body)?);
                if credits == 0 {
                    return Err(LinkError::BadField);
                }
                Ok(LinkFrame::Credit(credits))
            }
            ty if ty <= ty::LAST_RESERVED => Ok(LinkFrame::Reserved { ty }),
            ty => Err(LinkError::UnknownType(ty)),
        }
    }

    /// The length [`LinkFrame::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN.saturating_add(match self {
            LinkFrame::Frame(body) => body.len(),
            LinkFrame::Hello(_) => HELLO_BODY_LEN,
            LinkFrame::Credit(_) => CREDIT_BODY_LEN,
            LinkFrame::Reserved { .. } => 0,
        })
    }

    /// Write into `buf`; returns the length. Refuses what [`LinkFrame::parse`]
    /// would refuse, so that nothing invalid leaves this node.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, LinkError> {
        let len = self.buffer_len();
        let out = buf.get_mut(..len).ok_or(LinkError::Truncated)?;
        let (header, body) = out.split_at_mut(HEADER_LEN);
        let ty = match *self {
            LinkFrame::Frame(frame) => {
                if frame.is_empty() || frame.len() > MAX_FRAME_BODY {
                    return Err(LinkError::BadLength);
                }
                body.copy_from_slice(frame);
                ty::FRAME
            }
            LinkFrame::Hello(h) => {
                if !h.is_valid() {
                    return Err(LinkError::BadField);
                }
                let [hi, lo] = h.mtu.to_be_bytes();
                let (head, nonces) = body.split_at_mut(4);
                head.copy_from_slice(&[h.version, hi, lo, h.flags]);
                let (session, echo) = nonces.split_at_mut(SESSION_LEN);
                session.copy_from_slice(&h.session);
                echo.copy_from_slice(&h.echo);
                ty::HELLO
            }
            LinkFrame::Credit(n) => {
                if n == 0 {
                    return Err(LinkError::BadField);
                }
                body.copy_from_slice(&n.to_be_bytes());
                ty::CREDIT
            }
            LinkFrame::Reserved { ty } => {
                if !(ty::CREDIT < ty && ty <= ty::LAST_RESERVED) {
                    return Err(LinkError::UnknownType(ty));
                }
                ty
            }
        };
        header.copy_from_slice(&[LINK_VERSION, ty]);
        Ok(len)
    }
}

fn exact<const N: usize>(body: &[u8]) -> Result<[u8; N], LinkError> {
    match body.len() {
        n if n < N => Err(LinkError::Truncated),
        n if n > N => Err(LinkError::BadLength),
        _ => body.try_into().map_err(|_| LinkError::BadLength),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: [u8; 14] = [1, 1, 1, 0x04, 0xb0, 1, 0xa1, 0xa2, 0xa3, 0xa4, 0, 0, 0, 0];
    const HELLO_REPR: LinkHello =
        LinkHello { version: 1, mtu: 1200, flags: FLAG_CREDITS, session: [0xa1, 0xa2, 0xa3, 0xa4], echo: [0; 4] };

    fn hello_with(f: impl FnOnce(&mut [u8; 14])) -> [u8; 14] {
        let mut h = HELLO;
        f(&mut h);
        h
    }
    const CREDIT: [u8; 4] = [0x01, 0x02, 0x00, 0x08];

    #[test]
    fn test_parse() {
        assert_eq!(LinkFrame::parse(&HELLO), Ok(LinkFrame::Hello(HELLO_REPR)));
        let echoed = hello_with(|h| h[10..].copy_from_slice(&[0, 0, 0, 9]));
        assert_eq!(LinkFrame::parse(&echoed), Ok(LinkFrame::Hello(LinkHello { echo: [0, 0, 0, 9], ..HELLO_REPR })));
        assert_eq!(LinkFrame::parse(&CREDIT), Ok(LinkFrame::Credit(8)));
        assert_eq!(LinkFrame::parse(&[1, 0, 0x23, 0xaa]), Ok(LinkFrame::Frame(&[0x23, 0xaa])));
        assert_eq!(LinkFrame::parse(&[1, 3]), Ok(LinkFrame::Reserved { ty: 3 }));
        assert_eq!(LinkFrame::parse(&[1, 15, 9, 9]), Ok(LinkFrame::Reserved { ty: 15 }));
    }

    /// SPEC §9, "link layer": a hello that asks for an answer and grants
    /// credits, its answer, a grant of 8 and a receipt in a type-0 frame.
    const SPEC_HELLO_ASKS: [u8; 14] =
        [0x01, 0x01, 0x01, 0x04, 0xb0, 0x03, 0xa1, 0xa2, 0xa3, 0xa4, 0x00, 0x00, 0x00, 0x00];
    const SPEC_HELLO_ANSWER: [u8; 14] =
        [0x01, 0x01, 0x01, 0x00, 0xf0, 0x00, 0xb1, 0xb2, 0xb3, 0xb4, 0xa1, 0xa2, 0xa3, 0xa4];
    const SPEC_CREDIT: [u8; 4] = [0x01, 0x02, 0x00, 0x08];
    const SPEC_FRAME: [u8; 35] = [
        0x01, 0x00, 0x23, 0x0a, 0x01, 0x51, 0x80, 0xa2, 0xa6, 0x8f, 0xb6, 0x9c, 0x93, 0xe7, 0x35, 0x2d, 0x53, 0x68,
        0xcc, 0xa5, 0x1d, 0x0d, 0xd2, 0x12, 0xb4, 0x1a, 0x01, 0x9f, 0xa5, 0xa8, 0x31, 0x92, 0x86, 0x7f, 0xeb,
    ];
    const SPEC_HELLO_ASKS_REPR: LinkHello = LinkHello {
        version: 1,
        mtu: 1200,
        flags: FLAG_CREDITS | FLAG_ASK,
        session: [0xa1, 0xa2, 0xa3, 0xa4],
        echo: [0; 4],
    };
    const SPEC_HELLO_ANSWER_REPR: LinkHello =
        LinkHello { version: 1, mtu: 240, flags: 0, session: [0xb1, 0xb2, 0xb3, 0xb4], echo: [0xa1, 0xa2, 0xa3, 0xa4] };

    #[test]
    fn test_parse_spec_vectors() {
        assert_eq!(LinkFrame::parse(&SPEC_HELLO_ASKS), Ok(LinkFrame::Hello(SPEC_HELLO_ASKS_REPR)));
        assert_eq!(LinkFrame::parse(&SPEC_HELLO_ANSWER), Ok(LinkFrame::Hello(SPEC_HELLO_ANSWER_REPR)));
        assert_eq!(LinkFrame::parse(&SPEC_CREDIT), Ok(LinkFrame::Credit(8)));
        assert_eq!(LinkFrame::parse(&SPEC_FRAME), Ok(LinkFrame::Frame(&SPEC_FRAME[HEADER_LEN..])));
        assert!(SPEC_HELLO_ASKS_REPR.asks() && SPEC_HELLO_ASKS_REPR.wants_credits());
        assert!(!SPEC_HELLO_ANSWER_REPR.asks() && !SPEC_HELLO_ANSWER_REPR.wants_credits());
    }

    #[test]
    fn test_emit_spec_vectors() {
        let mut buf = [0u8; 40];
        assert_eq!(LinkFrame::Hello(SPEC_HELLO_ASKS_REPR).emit(&mut buf), Ok(14));
        assert_eq!(buf[..14], SPEC_HELLO_ASKS);
        assert_eq!(LinkFrame::Hello(SPEC_HELLO_ANSWER_REPR).emit(&mut buf), Ok(14));
        assert_eq!(buf[..14], SPEC_HELLO_ANSWER);
        assert_eq!(LinkFrame::Credit(8).emit(&mut buf), Ok(4));
        assert_eq!(buf[..4], SPEC_CREDIT);
        assert_eq!(LinkFrame::Frame(&SPEC_FRAME[HEADER_LEN..]).emit(&mut buf), Ok(35));
        assert_eq!(buf[..35], SPEC_FRAME);
    }

    #[test]
    fn test_parse_refuses() {
        assert_eq!(LinkFrame::parse(&[]), Err(LinkError::Truncated));
        assert_eq!(LinkFrame::parse(&[1]), Err(LinkError::Truncated));
        assert_eq!(LinkFrame::parse(&[2, 0, 0x23]), Err(LinkError::BadVersion(2)));
        assert_eq!(LinkFrame::parse(&[0x23, 0, 0]), Err(LinkError::BadVersion(0x23)));
        assert_eq!(LinkFrame::parse(&[1, 16]), Err(LinkError::UnknownType(16)));
        assert_eq!(LinkFrame::parse(&[1, 0xff, 0]), Err(LinkError::UnknownType(0xff)));
        assert_eq!(LinkFrame::parse(&[1, 0]), Err(LinkError::BadLength));
        let big = [0u8; HEADER_LEN + MAX_FRAME_BODY + 1];
        let mut big = big;
        big[0] = 1;
        assert_eq!(LinkFrame::parse(&big), Err(LinkError::BadLength));
        assert_eq!(LinkFrame::parse(&HELLO[..13]), Err(LinkError::Truncated));
        let mut long = [0u8; 15];
        long[..14].copy_from_slice(&HELLO);
        assert_eq!(LinkFrame::parse(&long), Err(LinkError::BadLength));
        assert_eq!(LinkFrame::parse(&hello_with(|h| h[2] = 0)), Err(LinkError::BadField), "version 0");
        assert_eq!(
            LinkFrame::parse(&hello_with(|h| h[3..5].copy_from_slice(&[0, 19]))),
            Err(LinkError::BadField),
            "MTU below 20"
        );
        assert_eq!(LinkFrame::parse(&hello_with(|h| h[5] = 4)), Err(LinkError::BadField), "unknown flag");
        assert_eq!(LinkFrame::parse(&hello_with(|h| h[6..10].fill(0))), Err(LinkError::BadField), "zero session");
        assert_eq!(LinkFrame::parse(&[1, 2, 0, 0]), Err(LinkError::BadField), "zero credits");
        assert_eq!(LinkFrame::parse(&[1, 2, 0]), Err(LinkError::Truncated));
        assert_eq!(LinkFrame::parse(&[1, 2, 0, 1, 0]), Err(LinkError::BadLength));
    }

    #[test]
    fn test_emit() {
        let mut buf = [0u8; 16];
        assert_eq!(LinkFrame::Hello(HELLO_REPR).emit(&mut buf), Ok(14));
        assert_eq!(buf[..14], HELLO);
        assert_eq!(LinkFrame::Credit(8).emit(&mut buf), Ok(4));
        assert_eq!(buf[..4], CREDIT);
        assert_eq!(LinkFrame::Frame(&[0x23, 0xaa]).emit(&mut buf), Ok(4));
        assert_eq!(buf[..4], [1, 0, 0x23, 0xaa]);
        assert_eq!(LinkFrame::Reserved { ty: 7 }.emit(&mut buf), Ok(2));
        assert_eq!(buf[..2], [1, 7]);
    }

    #[test]
    fn test_emit_refuses_what_parse_refuses() {
        let mut buf = [0u8; 8];
        assert_eq!(LinkFrame::Frame(&[]).emit(&mut buf), Err(LinkError::BadLength));
        assert_eq!(LinkFrame::Credit(0).emit(&mut buf), Err(LinkError::BadField));
        let mut big = [0u8; 16];
        assert_eq!(LinkFrame::Hello(LinkHello { mtu: 19, ..HELLO_REPR }).emit(&mut big), Err(LinkError::BadField));
        assert_eq!(
            LinkFrame::Hello(LinkHello { session: [0; 4], ..HELLO_REPR }).emit(&mut big),
            Err(LinkError::BadField)
        );
        assert_eq!(LinkFrame::Reserved { ty: 0 }.emit(&mut buf), Err(LinkError::UnknownType(0)));
        assert_eq!(LinkFrame::Reserved { ty: 16 }.emit(&mut buf), Err(LinkError::UnknownType(16)));
        assert_eq!(LinkFrame::Frame(&[1; 7]).emit(&mut buf), Err(LinkError::Truncated), "buffer too small");
    }
}
