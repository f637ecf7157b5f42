//! One link's hellos and credits (SPEC §10.3, §10.4), sans-IO.
//!
//! A [`Session`] sits between a link's bytes and the router. The driver
//! hands it every parsed link frame ([`Session::handle`]); it returns the
//! Ferry frames to give the router and says when the router's link is up or
//! down ([`Session::poll_event`]). The driver sends what
//! [`Session::poll_transmit`] gives before any Ferry frame, and Ferry frames
//! only through [`Session::send_frame`] while [`Session::may_send`] says so.
//!
//! Each side draws a random *session* when it (re)starts the link and says
//! it in every hello, with an *echo* of the peer's. Until a side has heard a
//! hello that echoes its session, its hellos *ask* for an answer, and it
//! retries them. A hello that asks, that brings a session new to the
//! receiver or that does not echo the receiver's is answered with one hello;
//! an answer asks only if its sender has not been echoed yet, so hellos
//! cannot ping-pong. The sessions also mark, in the link's order, where credit
//! counts start again, so that grants of an earlier session are never
//! spent in a later one.

use rand_core::Rng;

use super::{FLAG_ASK, FLAG_CREDITS, LINK_VERSION, LinkError, LinkFrame, LinkHello, MAX_FRAME_BODY, SESSION_LEN};
use crate::time::{Duration, Instant};

/// The first hello retry; it doubles up to [`HELLO_RETRY_MAX`] and goes on
/// at that interval while no hello comes.
pub const HELLO_RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest interval between hello retries.
pub const HELLO_RETRY_MAX: Duration = Duration::from_secs(8);
/// A side that has had no credit this long starts a new session, which
/// resets the credits both ways (grants lost on a lossy line).
pub const CREDIT_STALL: Duration = Duration::from_secs(10);
/// New peer sessions are accepted at most once per this interval; a hello
/// that brings another sooner is ignored (the peer's retry brings it again).
pub const PEER_SESSION_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Room [`Session::poll_transmit`] needs: the largest control frame (a hello).
pub const CONTROL_LEN: usize = super::HEADER_LEN + super::HELLO_BODY_LEN;

/// What this side says in its hellos.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// The largest type-0 body this side accepts: 20 to 1200.
    pub mtu: u16,
    /// Type-0 frames this side can hold before its driver has handled them:
    /// the credits it grants. 0: it grants none, and the peer sends freely.
    pub window: u16,
}

/// A change the router must hear of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// Ferry frames may flow: bring the router's link up, with this MTU
    /// (the peer's; the driver may lower it to its medium's).
    Up {
        /// The largest Ferry frame or segment the peer accepts.
        peer_mtu: u16,
    },
    /// Either side started a new session: take the router's link down. An
    /// `Up` follows when the new session is up.
    Down,
}

/// Why [`Session::send_frame`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionError {
    /// Not up, a reply hello still to go out, or no credit.
    NotReady,
    /// Longer than the peer's MTU: segment it first (SPEC §6.6).
    TooLong,
    /// The frame or the buffer did not fit the link-frame rules.
    Link(LinkError),
}

impl core::fmt::Display for SessionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SessionError::NotReady => f.write_str("link not ready to send (not up, or no credit)"),
            SessionError::TooLong => f.write_str("frame longer than the peer's MTU"),
            SessionError::Link(e) => write!(f, "{e}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SessionError {}

/// Counters, for `stats`. Nothing dropped goes uncounted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Hellos received and accepted.
    pub hellos_in: u64,
    /// Hellos sent (starts, retries and answers).
    pub hellos_out: u64,
    /// New peer sessions accepted (the peer started or restarted).
    pub peer_sessions: u64,
    /// Hellos not taken: a new peer session within a second of the last.
    pub hellos_limited: u64,
    /// Sessions this side started after the first (credit stalls, restarts).
    pub restarts: u64,
    /// Of those, because no credit came for [`CREDIT_STALL`].
    pub credit_stalls: u64,
    /// Ferry frames dropped because they came before the peer echoed our
    /// session (sent in an earlier session).
    pub frames_early: u64,
    /// Ferry frames dropped beyond the credits granted.
    pub frames_overrun: u64,
    /// Ferry frames dropped as longer than this side's MTU.
    pub frames_too_long: u64,
    /// Grants ignored (before the peer echoed our session, or from a peer
    /// that does not grant).
    pub grants_ignored: u64,
}

#[derive(Clone, Copy, Debug)]
struct Peer {
    session: [u8; SESSION_LEN],
    mtu: u16,
    credits: bool,
}

/// One link's session state (SPEC §10.3, §10.4). About 80 bytes.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    session: [u8; SESSION_LEN],
    peer: Option<Peer>,
    /// A hello that echoes our session came since it started: Ferry frames
    /// flow both ways.
    up: bool,
    /// The peer's last hello echoed our session: its grants from here on
    /// belong to this session.
    echoed: bool,
    /// Ferry frames we may still send (when the peer grants).
    holdings: u16,
    /// Ferry frames the peer may still send us (when we grant).
    allowed: u16,
    /// Frames delivered to the driver and not yet released.
    unreleased: u16,
    /// Frames released and not yet granted back.
    released: u16,
    /// The peer session our first grant went to.
    granted_for: Option<[u8; SESSION_LEN]>,
    hello_pending: bool,
    grant_pending: u16,
    next_retry: Option<Instant>,
    retry_delay: Duration,
    /// Since when we have had no credit.
    starved_since: Option<Instant>,
    last_peer_session: Option<Instant>,
    /// The router was told `Up` and not yet `Down`.
    reported_up: bool,
    /// The router must hear `Down` before the next `Up`.
    bounce: bool,
    stats: SessionStats,
}

fn draw_session(rng: &mut dyn Rng, not: [u8; SESSION_LEN]) -> [u8; SESSION_LEN] {
    let mut s = [0u8; SESSION_LEN];
    for _ in 0..4 {
        rng.fill_bytes(&mut s);
        if s != [0; SESSION_LEN] && s != not {
            return s;
        }
    }
    // A broken RNG: still never zeros, never the last session.
    let n = u32::from_be_bytes(not).wrapping_add(1).max(1);
    n.to_be_bytes()
}

impl Session {
    /// A link just opened: the first hello goes out at the next
    /// [`Session::poll_transmit`].
    pub fn new(now: Instant, rng: &mut dyn Rng, cfg: SessionConfig) -> Self {
        let cfg = SessionConfig {
            mtu: cfg.mtu.clamp(crate::wire::MIN_MTU as u16, MAX_FRAME_BODY as u16),
            window: cfg.window,
        };
        Session {
            cfg,
            session: draw_session(rng, [0; SESSION_LEN]),
            peer: None,
            up: false,
            echoed: false,
            holdings: 0,
            allowed: 0,
            unreleased: 0,
            released: 0,
            granted_for: None,
            hello_pending: true,
            grant_pending: 0,
            next_retry: Some(now.saturating_add(HELLO_RETRY_FIRST)),
            retry_delay: HELLO_RETRY_FIRST,
            starved_since: None,
            last_peer_session: None,
            reported_up: false,
            bounce: false,
            stats: SessionStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Whether Ferry frames may flow (the peer echoed this session).
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// The peer's MTU, once a hello came.
    pub fn peer_mtu(&self) -> Option<u16> {
        self.peer.map(|p| p.mtu)
    }

    /// Credits left toward the peer, if it grants them.
    pub fn credits(&self) -> Option<u16> {
        self.peer.filter(|p| p.credits).map(|_| self.holdings)
    }

    /// Whether a Ferry frame may be sent now: up, no answer owed, and a
    /// credit if the peer grants them.
    pub fn may_send(&self) -> bool {
        match self.peer {
            Some(p) if self.up && !self.hello_pending => !p.credits || (self.echoed && self.holdings > 0),
            _ => false,
        }
    }

    /// Parse `bytes` as a link frame and handle it: see [`Session::handle`].
    pub fn handle_bytes<'a>(&mut self, now: Instant, bytes: &'a [u8]) -> Result<Option<&'a [u8]>, LinkError> {
        LinkFrame::parse(bytes).map(|f| self.handle(now, f))
    }

    /// Handle one link frame from the peer. Returns the Ferry frame to hand
    /// the router, if it carried one that may pass. Call
    /// [`Session::release`] once the driver is done with it.
    pub fn handle<'a>(&mut self, now: Instant, frame: LinkFrame<'a>) -> Option<&'a [u8]> {
        match frame {
            LinkFrame::Hello(h) => {
                self.on_hello(now, h);
                None
            }
            LinkFrame::Credit(n) => {
                match self.peer {
                    Some(p) if p.credits && self.echoed => {
                        self.holdings = self.holdings.saturating_add(n);
                        self.starved_since = None;
                    }
                    _ => self.stats.grants_ignored = self.stats.grants_ignored.saturating_add(1),
                }
                None
            }
            LinkFrame::Reserved { .. } => None,
            LinkFrame::Frame(body) => {
                if !self.up {
                    self.stats.frames_early = self.stats.frames_early.saturating_add(1);
                    return None;
                }
                if body.len() > usize::from(self.cfg.mtu) {
                    self.stats.frames_too_long = self.stats.frames_too_long.saturating_add(1);
                    return None;
                }
                if self.cfg.window > 0 {
                    match self.allowed.checked_sub(1) {
                        Some(left) => self.allowed = left,
                        None => {
                            self.stats.frames_overrun = self.stats.frames_overrun.saturating_add(1);
                            return None;
                        }
                    }
                    self.unreleased = self.unreleased.saturating_add(1);
                }
                Some(body)
            }
        }
    }

    fn on_hello(&mut self, now: Instant, h: LinkHello) {
        let new_peer = self.peer.map(|p| p.session) != Some(h.session);
        if new_peer {
            if let (Some(_), Some(last)) = (self.peer, self.last_peer_session)
                && now < last.saturating_add(PEER_SESSION_MIN_INTERVAL)
            {
                // Not taken now (its retry brings it again), but the peer
                // has moved on: grants from here belong to a session we do
                // not count yet.
                self.stats.hellos_limited = self.stats.hellos_limited.saturating_add(1);
                self.holdings = 0;
                self.echoed = false;
                return;
            }
            self.last_peer_session = Some(now);
            self.stats.peer_sessions = self.stats.peer_sessions.saturating_add(1);
            if self.reported_up {
                self.bounce = true;
            }
            self.peer = Some(Peer { session: h.session, mtu: h.mtu, credits: h.wants_credits() });
            // The peer starts from nothing: what it granted and what we
            // granted it are gone with its old session.
            self.holdings = 0;
            self.allowed = 0;
            self.unreleased = 0;
            self.released = 0;
            self.grant_pending = 0;
            self.granted_for = None;
            self.starved_since = None;
        }
        self.stats.hellos_in = self.stats.hellos_in.saturating_add(1);
        self.echoed = h.echo == self.session;
        if self.echoed {
            // The peer knows this session: what it sends from here on is
            // sent under it.
            if !self.up {
                // The stall clock counts from here, not from the first hello.
                self.starved_since = None;
            }
            self.up = true;
            self.next_retry = None;
        } else if self.next_retry.is_none() {
            // The peer does not know this session (it restarted): ask until
            // it echoes us.
            self.retry_delay = HELLO_RETRY_FIRST;
            self.next_retry = Some(now.saturating_add(HELLO_RETRY_FIRST));
        }
        if h.asks() || new_peer || !self.echoed {
            // Our answer echoes the peer's session; it asks only while we
            // are not echoed, so answers do not ping-pong.
            self.hello_pending = true;
        }
        if self.up && self.cfg.window > 0 && self.granted_for != Some(h.session) {
            // The first grant of this pair of sessions. It goes out after
            // any answer, so the peer counts it.
            self.granted_for = Some(h.session);
            self.allowed = self.cfg.window;
            self.grant_pending = self.cfg.window;
        }
        if h.wants_credits() && self.holdings == 0 && self.starved_since.is_none() {
            self.starved_since = Some(now);
        }
    }

    /// The driver is done with `n` Ferry frames this session delivered: their
    /// room is granted back to the peer (in grants of at least half the
    /// window, to keep grants few).
    pub fn release(&mut self, n: u16) {
        if self.cfg.window == 0 || self.granted_for.is_none() {
            return;
        }
        let n = n.min(self.unreleased);
        self.unreleased = self.unreleased.saturating_sub(n);
        self.released = self.released.saturating_add(n);
        let batch = (self.cfg.window / 2).max(1);
        if self.released >= batch {
            let room = self.cfg.window.saturating_sub(self.allowed);
            let grant = self.released.min(room);
            self.released = 0;
            self.allowed = self.allowed.saturating_add(grant);
            self.grant_pending = self.grant_pending.saturating_add(grant);
        }
    }

    /// The next control frame to send (a hello, then a grant), written into
    /// `buf` (at least [`CONTROL_LEN`] bytes). Send these before any Ferry
    /// frame.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
        if self.hello_pending {
            let hello = LinkHello {
                version: LINK_VERSION,
                mtu: self.cfg.mtu,
                flags: if self.cfg.window > 0 { FLAG_CREDITS } else { 0 } | if self.echoed { 0 } else { FLAG_ASK },
                session: self.session,
                echo: self.peer.map_or([0; SESSION_LEN], |p| p.session),
            };
            let n = LinkFrame::Hello(hello).emit(buf)?;
            self.hello_pending = false;
            self.stats.hellos_out = self.stats.hellos_out.saturating_add(1);
            return Ok(Some(n));
        }
        if self.grant_pending > 0 && self.up {
            let n = LinkFrame::Credit(self.grant_pending).emit(buf)?;
            self.grant_pending = 0;
            return Ok(Some(n));
        }
        Ok(None)
    }

    /// Wrap one Ferry frame (or segment) as a type-0 link frame into `buf`,
    /// spending a credit if the peer grants them.
    pub fn send_frame(&mut self, now: Instant, frame: &[u8], buf: &mut [u8]) -> Result<usize, SessionError> {
        if !self.may_send() {
            return Err(SessionError::NotReady);
        }
        let peer = self.peer.ok_or(SessionError::NotReady)?;
        if frame.len() > usize::from(peer.mtu) {
            return Err(SessionError::TooLong);
        }
        let n = LinkFrame::Frame(frame).emit(buf).map_err(SessionError::Link)?;
        if peer.credits {
            self.holdings = self.holdings.saturating_sub(1);
            if self.holdings == 0 {
                self.starved_since = Some(now);
            }
        }
        Ok(n)
    }

    /// When [`Session::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let stall = self
            .starved_since
            .filter(|_| self.up && self.peer.is_some_and(|p| p.credits))
            .map(|t| t.saturating_add(CREDIT_STALL));
        match (self.next_retry, stall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Hello retries until the peer echoes our session; a new session after
    /// a credit stall.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut dyn Rng) {
        if let Some(at) = self.next_retry
            && now >= at
        {
            self.hello_pending = true;
            self.retry_delay =
                Duration::from_millis(self.retry_delay.as_millis().saturating_mul(2).min(HELLO_RETRY_MAX.as_millis()));
            self.next_retry = Some(now.saturating_add(self.retry_delay));
        }
        if let Some(since) = self.starved_since
            && self.up
            && self.peer.is_some_and(|p| p.credits)
            && now >= since.saturating_add(CREDIT_STALL)
        {
            self.stats.credit_stalls = self.stats.credit_stalls.saturating_add(1);
            self.restart(now, rng);
        }
    }

    /// Start a new session on the same link: everything about credits starts
    /// again, both ways, and the router's link goes down until it is up.
    pub fn restart(&mut self, now: Instant, rng: &mut dyn Rng) {
        self.stats.restarts = self.stats.restarts.saturating_add(1);
        self.session = draw_session(rng, self.session);
        self.up = false;
        self.echoed = false;
        self.holdings = 0;
        self.allowed = 0;
        self.unreleased = 0;
        self.released = 0;
        self.granted_for = None;
        self.grant_pending = 0;
        self.starved_since = None;
        self.hello_pending = true;
        self.retry_delay = HELLO_RETRY_FIRST;
        self.next_retry = Some(now.saturating_add(HELLO_RETRY_FIRST));
    }

    /// The next change for the router: `Down` before `Up` when a session
    /// changed under a live link.
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        if self.reported_up && (self.bounce || !self.up) {
            self.reported_up = false;
            self.bounce = false;
            return Some(LinkEvent::Down);
        }
        self.bounce = false;
        match self.peer {
            Some(p) if self.up && !self.reported_up => {
                self.reported_up = true;
                Some(LinkEvent::Up { peer_mtu: p.mtu.min(MAX_FRAME_BODY as u16) })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::vec::Vec;

    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    const W: u16 = 4;

    /// One side: its session, the Ferry frames it wants to send (numbered),
    /// what it received, and frames delivered but not yet released.
    struct Side {
        s: Session,
        cfg: SessionConfig,
        outbox: VecDeque<u32>,
        next: u32,
        got: Vec<u32>,
        held: u16,
        events: Vec<LinkEvent>,
    }

    impl Side {
        fn new(now: Instant, rng: &mut StdRng, cfg: SessionConfig) -> Self {
            Side {
                s: Session::new(now, rng, cfg),
                cfg,
                outbox: VecDeque::new(),
                next: 0,
                got: Vec::new(),
                held: 0,
                events: Vec::new(),
            }
        }
        fn queue(&mut self, n: u32) {
            for _ in 0..n {
                self.outbox.push_back(self.next);
                self.next += 1;
            }
        }
        /// Everything it may send now, onto `wire`.
        fn pump(&mut self, now: Instant, wire: &mut VecDeque<Vec<u8>>) {
            let mut buf = [0u8; 64];
            while let Some(n) = self.s.poll_transmit(&mut buf).unwrap() {
                wire.push_back(buf[..n].to_vec());
            }
            while self.s.may_send() {
                let Some(k) = self.outbox.pop_front() else { break };
                // A 20-byte Ferry-sized body carrying the number.
                let mut body = [0x21u8; 20];
                body[..4].copy_from_slice(&k.to_be_bytes());
                let n = self.s.send_frame(now, &body, &mut buf).unwrap();
                wire.push_back(buf[..n].to_vec());
            }
            while let Some(e) = self.s.poll_event() {
                self.events.push(e);
            }
        }
        fn receive(&mut self, now: Instant, bytes: &[u8]) {
            if let Some(body) = self.s.handle_bytes(now, bytes).unwrap() {
                self.got.push(u32::from_be_bytes(body[..4].try_into().unwrap()));
                self.held += 1;
            }
            while let Some(e) = self.s.poll_event() {
                self.events.push(e);
            }
        }
        fn release_all(&mut self) {
            self.s.release(self.held);
            self.held = 0;
        }
    }

    struct Pair {
        now: Instant,
        rng: StdRng,
        a: Side,
        b: Side,
        ab: VecDeque<Vec<u8>>,
        ba: VecDeque<Vec<u8>>,
        /// Frames put on each wire, by type byte: [hellos, grants, frames].
        sent: [[u64; 3]; 2],
    }

    fn cfg(window: u16) -> SessionConfig {
        SessionConfig { mtu: 240, window }
    }

    impl Pair {
        fn new(seed: u64, a: SessionConfig, b: SessionConfig) -> Self {
            let mut rng = StdRng::seed_from_u64(seed);
            let now = Instant::from_millis(1000);
            let a = Side::new(now, &mut rng, a);
            let b = Side::new(now, &mut rng, b);
            Pair { now, rng, a, b, ab: VecDeque::new(), ba: VecDeque::new(), sent: [[0; 3]; 2] }
        }
        fn count(sent: &mut [u64; 3], wire: &VecDeque<Vec<u8>>, from: usize) {
            for f in wire.iter().skip(from) {
                sent[match f[1] {
                    1 => 0,
                    2 => 1,
                    _ => 2,
                }] += 1;
            }
        }
        fn pump(&mut self) {
            let (na, nb) = (self.ab.len(), self.ba.len());
            self.a.pump(self.now, &mut self.ab);
            self.b.pump(self.now, &mut self.ba);
            Self::count(&mut self.sent[0], &self.ab, na);
            Self::count(&mut self.sent[1], &self.ba, nb);
        }
        fn deliver_ab(&mut self) -> bool {
            self.ab.pop_front().map(|f| self.b.receive(self.now, &f)).is_some()
        }
        fn deliver_ba(&mut self) -> bool {
            self.ba.pop_front().map(|f| self.a.receive(self.now, &f)).is_some()
        }
        /// Deliver, release and pump until both wires are empty.
        fn settle(&mut self) {
            for _ in 0..10_000 {
                self.pump();
                let moved = self.deliver_ab() | self.deliver_ba();
                self.a.release_all();
                self.b.release_all();
                self.pump();
                if !moved && self.ab.is_empty() && self.ba.is_empty() {
                    return;
                }
            }
            panic!("the link did not settle");
        }
        fn advance(&mut self, ms: u64) {
            self.now = self.now.saturating_add(Duration::from_millis(ms));
            self.a.s.handle_timeout(self.now, &mut self.rng);
            self.b.s.handle_timeout(self.now, &mut self.rng);
        }
    }

    #[test]
    fn simultaneous_start_takes_three_hellos_and_one_grant_each_way() {
        let mut p = Pair::new(1, cfg(W), cfg(W));
        p.settle();
        assert!(p.a.s.is_up() && p.b.s.is_up());
        // Each side's asking hello, its asking answer to the other's (the two
        // cross), and its last answer that does not ask.
        assert_eq!(p.sent, [[3, 1, 0], [3, 1, 0]], "hellos, grants, frames on each wire");
        assert_eq!(p.a.events, [LinkEvent::Up { peer_mtu: 240 }]);
        assert_eq!(p.b.events, [LinkEvent::Up { peer_mtu: 240 }]);
        assert_eq!(p.a.s.credits(), Some(W));
        // Frames flow both ways, in order, W at a time.
        p.a.queue(50);
        p.b.queue(30);
        p.settle();
        assert_eq!(p.b.got, (0..50).collect::<Vec<_>>());
        assert_eq!(p.a.got, (0..30).collect::<Vec<_>>());
        assert_eq!(p.sent[0][0], 3, "no hello after the link is up");
        assert_eq!(p.a.s.stats().frames_overrun + p.b.s.stats().frames_overrun, 0);
        // Grants come back in halves of the window.
        assert!(p.sent[1][1] <= 1 + 50 / u64::from(W / 2), "{:?}", p.sent);
    }

    #[test]
    fn a_lost_first_hello_is_answered_not_retried() {
        let mut p = Pair::new(2, cfg(W), cfg(0));
        p.pump();
        p.ab.clear(); // B was not listening yet.
        p.settle();
        assert!(p.a.s.is_up() && p.b.s.is_up());
        // A's lost hello, B's, A's answer, B's answer (A was new to it): no
        // retry needed.
        assert_eq!(p.sent[0][0] + p.sent[1][0], 4);
        assert_eq!(p.b.s.credits(), Some(W), "A grants, B does not");
        assert_eq!(p.a.s.credits(), None);
        assert_eq!(p.a.s.poll_timeout(), None, "no retry, no stall clock");
    }

    #[test]
    fn hellos_retry_until_the_peer_comes() {
        let mut p = Pair::new(3, cfg(W), cfg(W));
        let mut times = Vec::new();
        for _ in 0..6 {
            p.pump();
            if !p.ab.is_empty() {
                times.push(p.now.millis() - 1000);
            }
            p.ab.clear();
            p.ba.clear();
            let next = p.a.s.poll_timeout().unwrap();
            p.advance(next.millis() - p.now.millis());
        }
        assert_eq!(times, [0, 1000, 3000, 7000, 15_000, 23_000]);
        p.settle();
        assert!(p.a.s.is_up() && p.b.s.is_up());
    }

    #[test]
    fn a_restarted_peer_gets_fresh_credits_and_no_frame_of_its_old_life() {
        let mut p = Pair::new(4, cfg(W), cfg(W));
        p.settle();
        p.a.queue(3);
        p.b.queue(3);
        p.pump();
        // B restarts (a new process) while frames and grants are in flight
        // both ways; A's frames to the old B reach the new one.
        p.advance(PEER_SESSION_MIN_INTERVAL.as_millis());
        let mut rng = StdRng::seed_from_u64(99);
        p.b = Side::new(p.now, &mut rng, cfg(W));
        p.settle();
        assert_eq!(p.a.events, [LinkEvent::Up { peer_mtu: 240 }, LinkEvent::Down, LinkEvent::Up { peer_mtu: 240 }]);
        assert!(p.b.got.is_empty(), "frames of the old session are dropped: {:?}", p.b.got);
        assert_eq!(p.b.s.stats().frames_early, 3);
        p.a.queue(20);
        p.b.queue(20);
        p.settle();
        assert_eq!(p.b.got, (3..23).collect::<Vec<_>>());
        assert_eq!(p.a.got[3..], (0..20).collect::<Vec<_>>()[..]);
        assert_eq!(p.a.s.stats().frames_overrun + p.b.s.stats().frames_overrun, 0);
    }

    #[test]
    fn a_lost_grant_stalls_then_a_new_session_recovers() {
        let mut p = Pair::new(5, cfg(W), cfg(W));
        p.settle();
        p.a.queue(W.into());
        p.settle();
        assert_eq!(p.b.got.len(), usize::from(W));
        // From here every grant of B's is lost on the line.
        p.a.queue(9);
        for _ in 0..4 {
            p.a.pump(p.now, &mut p.ab);
            while p.deliver_ab() {}
            p.b.release_all();
            p.b.pump(p.now, &mut p.ba);
            p.ba.retain(|f| f[1] != 2);
            while p.deliver_ba() {}
        }
        assert_eq!(p.b.got.len(), usize::from(2 * W), "A spent its credit and got no more");
        assert_eq!(p.a.s.credits(), Some(0));
        let stall = p.a.s.poll_timeout().expect("the stall clock runs");
        p.advance(stall.millis() - p.now.millis());
        assert_eq!(p.a.s.stats().credit_stalls, 1);
        p.settle();
        assert_eq!(p.b.got, (0..13).collect::<Vec<_>>());
        assert!(p.a.events.contains(&LinkEvent::Down));
        assert_eq!(p.a.events.last(), Some(&LinkEvent::Up { peer_mtu: 240 }));
    }

    #[test]
    fn the_stall_clock_starts_when_the_link_is_up_not_before() {
        let mut p = Pair::new(9, cfg(W), cfg(W));
        // B hears A but A hears nothing for 30 s (a one-way line at first).
        for _ in 0..6 {
            p.pump();
            p.ba.clear();
            while p.deliver_ab() {}
            p.advance(5_000);
        }
        // Now A hears B: A answers and grants; B's timers run between A's
        // answer and A's grant.
        p.pump();
        while p.deliver_ba() {}
        p.pump();
        assert!(p.deliver_ab(), "A's answer");
        assert!(p.b.s.is_up());
        p.advance(0);
        p.settle();
        assert!(p.a.s.is_up() && p.b.s.is_up());
        assert_eq!(p.b.s.credits(), Some(W));
        assert_eq!(p.a.s.stats().restarts + p.b.s.stats().restarts, 0, "no stall just for coming up late");
    }

    #[test]
    fn only_hellos_that_bring_news_are_answered() {
        let mut p = Pair::new(6, cfg(W), cfg(W));
        p.settle();
        let mut buf = [0u8; 64];
        let b_session = p.a.s.peer.unwrap().session;
        // B's own hello repeated (same session, echo of A's): no answer.
        let dup = LinkHello { version: 1, mtu: 240, flags: FLAG_CREDITS, session: b_session, echo: p.a.s.session };
        let n = LinkFrame::Hello(dup).emit(&mut buf).unwrap();
        p.a.receive(p.now, &buf[..n]);
        assert_eq!(p.a.s.poll_transmit(&mut buf).unwrap(), None);
        // One that asks: one answer, which does not ask and is not answered.
        let ask = LinkHello { flags: FLAG_CREDITS | FLAG_ASK, ..dup };
        let n = LinkFrame::Hello(ask).emit(&mut buf).unwrap();
        p.a.receive(p.now, &buf[..n]);
        let before = p.sent;
        p.settle();
        assert_eq!((p.sent[0][0] - before[0][0], p.sent[1][0] - before[1][0]), (1, 0));
        // One that does not echo A: A answers, asking (B may not know it),
        // B answers that once, and it stops.
        let stale = LinkHello { echo: [9; 4], ..dup };
        let n = LinkFrame::Hello(stale).emit(&mut buf).unwrap();
        p.a.receive(p.now, &buf[..n]);
        let before = p.sent;
        p.settle();
        assert_eq!((p.sent[0][0] - before[0][0], p.sent[1][0] - before[1][0]), (1, 1));
        assert_eq!(p.a.s.poll_timeout(), None, "echoed again: no retry");
    }

    #[test]
    fn new_peer_sessions_are_taken_once_a_second() {
        let mut p = Pair::new(7, cfg(W), cfg(W));
        p.settle();
        p.advance(PEER_SESSION_MIN_INTERVAL.as_millis());
        let mut buf = [0u8; 64];
        for i in 0..10u8 {
            let h = LinkHello { version: 1, mtu: 240, flags: 0, session: [i + 1, 7, 7, 7], echo: [0; 4] };
            let n = LinkFrame::Hello(h).emit(&mut buf).unwrap();
            p.a.receive(p.now, &buf[..n]);
        }
        let st = p.a.s.stats();
        assert_eq!((st.peer_sessions, st.hellos_limited), (2, 9), "B's, then one of ten at once");
    }

    #[test]
    fn frames_beyond_the_grant_are_dropped() {
        let mut p = Pair::new(8, cfg(W), cfg(0));
        p.settle();
        let mut buf = [0u8; 64];
        let n = LinkFrame::Frame(&[0x21; 20]).emit(&mut buf).unwrap();
        for _ in 0..W + 3 {
            p.a.receive(p.now, &buf[..n]);
        }
        assert_eq!(p.a.got.len(), usize::from(W));
        assert_eq!(p.a.s.stats().frames_overrun, 3);
        let big = [0x21u8; 241];
        let n = LinkFrame::Frame(&big).emit(&mut [0u8; 300]).unwrap();
        let mut b = [0u8; 300];
        LinkFrame::Frame(&big).emit(&mut b).unwrap();
        p.a.receive(p.now, &b[..n]);
        assert_eq!(p.a.s.stats().frames_too_long, 1);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Pump,
        DeliverAb(u8),
        DeliverBa(u8),
        LoseAb,
        LoseBa,
        Queue(bool, u8),
        Release(bool),
        Advance(u16),
        Restart(bool),
        NewProcessB,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Pump),
            4 => (1u8..8).prop_map(Op::DeliverAb),
            4 => (1u8..8).prop_map(Op::DeliverBa),
            1 => Just(Op::LoseAb),
            1 => Just(Op::LoseBa),
            3 => (any::<bool>(), 1u8..6).prop_map(|(a, n)| Op::Queue(a, n)),
            3 => any::<bool>().prop_map(Op::Release),
            2 => (0u16..12_000).prop_map(Op::Advance),
            1 => any::<bool>().prop_map(Op::Restart),
            1 => Just(Op::NewProcessB),
        ]
    }

    proptest! {
        /// Whatever the interleaving, restarts and losses: no side ever
        /// receives a frame beyond its grant, frames arrive in order and
        /// never twice, and once the line is quiet the link comes up and
        /// carries frames both ways.
        #[test]
        fn credits_are_never_overrun_and_the_link_recovers(
            seed in any::<u64>(),
            wa in 0u16..6,
            wb in 0u16..6,
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let mut p = Pair::new(seed, cfg(wa), cfg(wb));
            let mut rng = StdRng::seed_from_u64(seed ^ 1);
            for op in ops {
                match op {
                    Op::Pump => p.pump(),
                    Op::DeliverAb(n) => for _ in 0..n { p.deliver_ab(); },
                    Op::DeliverBa(n) => for _ in 0..n { p.deliver_ba(); },
                    Op::LoseAb => { p.ab.pop_front(); }
                    Op::LoseBa => { p.ba.pop_front(); }
                    Op::Queue(a, n) => if a { p.a.queue(n.into()) } else { p.b.queue(n.into()) },
                    Op::Release(a) => if a { p.a.release_all() } else { p.b.release_all() },
                    Op::Advance(ms) => p.advance(ms.into()),
                    Op::Restart(a) => if a { p.a.s.restart(p.now, &mut rng) } else { p.b.s.restart(p.now, &mut rng) },
                    Op::NewProcessB => { let c = p.b.cfg; p.b.s = Session::new(p.now, &mut rng, c); p.b.held = 0; }
                }
                prop_assert_eq!(p.a.s.stats().frames_overrun, 0);
                prop_assert_eq!(p.b.s.stats().frames_overrun, 0);
            }
            for side in [&p.a, &p.b] {
                prop_assert!(side.got.windows(2).all(|w| w[0] < w[1]), "in order, never twice: {:?}", side.got);
            }
            // Quiet line: retries and stall recovery bring the link up.
            for _ in 0..4 {
                p.settle();
                p.advance(CREDIT_STALL.as_millis());
            }
            p.settle();
            prop_assert!(p.a.s.is_up() && p.b.s.is_up());
            let (na, nb) = (p.a.got.len(), p.b.got.len());
            let (qa, qb) = (p.a.outbox.len(), p.b.outbox.len());
            p.a.queue(3);
            p.b.queue(3);
            p.settle();
            prop_assert_eq!(p.b.got.len(), nb + qa + 3);
            prop_assert_eq!(p.a.got.len(), na + qb + 3);
        }
    }
}
