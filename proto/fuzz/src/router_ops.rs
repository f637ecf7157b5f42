//! A small router driven by an arbitrary sequence of link events, frames
//! (garbage, valid, replayed and mutated), submissions, receipts and clock
//! steps. After every operation its memory stays within its const bounds,
//! and every datagram it sends is well formed and fits its link.

use crate::{Seen, TestRng, TxChecker, message_frame, segments};
use arbitrary::Arbitrary;
use ferry_proto::Node;
use ferry_proto::hash;
use ferry_proto::node::{DeliveryState, Event};
use ferry_proto::router::{FrameError, LinkCaps, LinkId, Outcome, Router, SubmitError};
use ferry_proto::time::{Duration, Instant};
use ferry_proto::wire::{
    COMMIT_LEN, Frame, HelloRepr, Kind, MAX_FRAME_LEN, MessageFrame, MessageId, RECEIPT_SECRET_LEN, ReceiptRepr,
    SUMMARY_LEN, SUMMARY_MAX_FINGERPRINTS, SizeClass, SummaryRepr,
};

const S: usize = 8;
const L: usize = 4;
const D: usize = 32;
const R: usize = 2;
type Rt = Router<S, L, D, 4, 8, R>;

/// Link ids the driver uses (more than the router's 4 link slots).
const LINK_IDS: usize = 6;
const MAX_OPS: usize = 200;
/// More transmits than this from one drain is a livelock.
const MAX_TRANSMITS: usize = 10_000;
const KNOWN: usize = 48;
const CAPTURED: usize = 32;

#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Echo {
    /// The router's nonce on this link (validates the link).
    Ours,
    Zero,
    Other(u8),
}

#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub struct MsgSpec {
    pub first_contact: bool,
    pub large: bool,
    pub hops: u8,
    pub lifetime_secs: u16,
    pub secret: u8,
    pub seed: u64,
}

#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    LinkUp { link: u8, mtu: u16, broadcast: bool, large: bool },
    LinkDown { link: u8 },
    Raw { link: u8, bytes: Vec<u8> },
    Hello { link: u8, nonce: u8, echo: Echo },
    Summary { link: u8, seq: u8, last: bool, picks: Vec<u8>, junk: u8 },
    Message { link: u8, spec: MsgSpec, seg_mtu: Option<u16>, order: u64 },
    Replay { link: u8, pick: u8, flip: Option<u16> },
    Receipt { link: u8, pick: u8, forge: Option<[u8; RECEIPT_SECRET_LEN]>, level: u8 },
    Advance { ms: u16 },
    AdvanceSecs { secs: u16 },
    Timeout,
    Submit { spec: MsgSpec },
    SubmitRaw { bytes: Vec<u8> },
    EmitReceipt { pick: u8, delay_ms: u16, forge: bool },
    PollAll,
}

#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub seed: u64,
    pub ops: Vec<Op>,
}

pub struct Known {
    pub id: MessageId,
    pub commit: [u8; COMMIT_LEN],
    pub secret: Option<[u8; RECEIPT_SECRET_LEN]>,
    pub frame: Vec<u8>,
}

#[derive(Default, Clone, Copy)]
pub struct OwnState {
    pub sent: bool,
    pub delivered: bool,
    pub expired: bool,
}

pub struct Harness {
    pub router: Box<Rt>,
    pub now: Instant,
    pub rng: TestRng,
    pub links: [Option<LinkCaps>; LINK_IDS],
    pub router_nonce: [Option<[u8; 16]>; LINK_IDS],
    pub peer_nonce: [Option<[u8; 16]>; LINK_IDS],
    pub known: Vec<Known>,
    pub known_next: usize,
    pub captured: crate::Captured<CAPTURED>,
    pub own: Vec<(MessageId, OwnState)>,
    pub tx: TxChecker,
}

fn secret_of(k: u8) -> [u8; RECEIPT_SECRET_LEN] {
    // A few distinct secrets, so that commitments repeat across messages.
    [k % 8; RECEIPT_SECRET_LEN]
}

fn build(spec: &MsgSpec) -> (MessageId, [u8; RECEIPT_SECRET_LEN], Vec<u8>) {
    let kind = if spec.first_contact { Kind::FirstContact } else { Kind::Contact };
    let class = if spec.large { SizeClass::Large } else { SizeClass::Small };
    let secret = secret_of(spec.secret);
    let (id, frame) = message_frame(kind, class, spec.hops, u32::from(spec.lifetime_secs), &secret, spec.seed);
    (id, secret, frame)
}

impl Harness {
    fn new(seed: u64) -> Self {
        Harness {
            router: Box::new(Rt::new(Default::default())),
            now: Instant::ZERO,
            rng: TestRng::new(seed),
            links: [None; LINK_IDS],
            router_nonce: [None; LINK_IDS],
            peer_nonce: [None; LINK_IDS],
            known: Vec::new(),
            known_next: 0,
            captured: crate::Captured::default(),
            own: Vec::new(),
            tx: TxChecker::default(),
        }
    }

    fn remember(&mut self, id: MessageId, secret: Option<[u8; RECEIPT_SECRET_LEN]>, frame: &[u8]) {
        if let Some(k) = self.known.iter_mut().find(|k| k.id == id) {
            k.secret = k.secret.or(secret);
            return;
        }
        let commit = MessageFrame::new_unchecked(frame).commit();
        let k = Known { id, commit, secret, frame: frame.to_vec() };
        if self.known.len() < KNOWN {
            self.known.push(k);
        } else {
            self.known[self.known_next % KNOWN] = k;
            self.known_next += 1;
        }
    }

    fn capture(&mut self, bytes: &[u8]) {
        self.captured.push(bytes);
    }

    fn check_bounds(&self) {
        let r = &self.router;
        if let Err(e) = r.check_invariants() {
            panic!("router invariant broken: {e}");
        }
        assert!(r.held() <= S + L, "held {} > {}", r.held(), S + L);
        assert!(r.seen_len() <= D, "seen {} > {D}", r.seen_len());
        assert!(r.reassembling() <= R, "reassembling {} > {R}", r.reassembling());
        assert!(r.links().count() <= 4);
        for ferry_proto::router::LinkInfo { id, caps, .. } in r.links() {
            let model = self.links.get(id.0 as usize).copied().flatten();
            assert_eq!(model.map(|c| c.broadcast), Some(caps.broadcast), "router has link {id:?} the driver does not");
        }
    }

    /// Feed one datagram to the router and check what only the driver can.
    fn input(&mut self, link: usize, bytes: &[u8]) -> Result<Option<MessageId>, FrameError> {
        let up = self.links[link].is_some();
        let res = self.router.route_frame(self.now, LinkId(link as u32), bytes);
        if !up {
            assert_eq!(res.as_ref().err(), Some(&FrameError::UnknownLink), "frame on a link that is down");
        } else {
            assert_ne!(res.as_ref().err(), Some(&FrameError::UnknownLink), "link {link} is up");
        }
        match res {
            Ok(Outcome::NewMessage { id, frame, .. }) => {
                let m = MessageFrame::new_checked(frame).expect("a new message is a valid frame");
                assert_eq!(m.check_id(), Ok(id), "new message with a wrong id");
                Ok(Some(id))
            }
            Ok(_) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn drain_events(&mut self) {
        let mut n = 0;
        while let Some(ev) = self.router.poll_event() {
            n += 1;
            assert!(n <= 64, "event queue does not drain");
            let Event::Status { id, state } = ev else { panic!("a relay reported {ev:?}") };
            let Some((_, st)) = self.own.iter_mut().find(|(o, _)| *o == id) else {
                panic!("{ev:?} for a message this node did not submit");
            };
            match state {
                DeliveryState::Queued => panic!("a router reports no Queued state"),
                DeliveryState::Sent => {
                    assert!(!st.sent, "Sent twice");
                    st.sent = true;
                }
                DeliveryState::Delivered => {
                    assert!(!st.delivered && !st.expired, "Delivered after Delivered/Expired");
                    st.delivered = true;
                }
                DeliveryState::Expired => {
                    assert!(!st.delivered && !st.expired, "Expired after Delivered/Expired");
                    st.expired = true;
                }
            }
        }
    }

    fn poll_all(&mut self) {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let mut count = 0usize;
        while let Some(t) = self.router.poll_transmit(self.now, &mut buf) {
            count += 1;
            assert!(count <= MAX_TRANSMITS, "livelock: more than {MAX_TRANSMITS} transmits in one drain");
            let li = t.link.0 as usize;
            let Some(caps) = self.links.get(li).copied().flatten() else {
                panic!("transmit on link {li}, which is down");
            };
            assert!(t.len <= buf.len());
            let bytes = &buf[..t.len];
            match self.tx.check(self.now, t.link, usize::from(caps.mtu), bytes) {
                Seen::Partial => {}
                Seen::Whole(whole) => {
                    match Frame::parse(&whole) {
                        Ok(Frame::Hello(h)) => self.router_nonce[li] = Some(h.nonce),
                        Ok(Frame::Message(m)) => {
                            assert!(
                                m.class() <= caps.max_class,
                                "a {:?} message sent on a link whose max class is {:?}",
                                m.class(),
                                caps.max_class
                            );
                            let id = m.id();
                            self.remember(id, None, &whole);
                        }
                        _ => {}
                    }
                    self.capture(&whole);
                }
            }
        }
        self.drain_events();
    }

    /// A submission was taken. The same frame can be taken again once its
    /// seen entry is gone (after its lifetime): its events start afresh.
    fn submitted(&mut self, id: MessageId) {
        match self.own.iter_mut().find(|(o, _)| *o == id) {
            Some((_, st)) => *st = OwnState::default(),
            None => self.own.push((id, OwnState::default())),
        }
    }

    fn link(&self, l: u8) -> usize {
        usize::from(l) % LINK_IDS
    }

    fn run(&mut self, op: Op) {
        match op {
            Op::LinkUp { link, mtu, broadcast, large } => {
                let li = self.link(link);
                let caps = LinkCaps {
                    mtu: 20 + mtu % 1281,
                    broadcast,
                    max_class: if large { SizeClass::Large } else { SizeClass::Small },
                };
                self.links[li] = None;
                self.router_nonce[li] = None;
                self.peer_nonce[li] = None;
                self.tx.link_down(LinkId(li as u32));
                if self.router.handle_link_up(self.now, &mut self.rng, LinkId(li as u32), caps) {
                    self.links[li] = Some(caps);
                }
            }
            Op::LinkDown { link } => {
                let li = self.link(link);
                self.router.handle_link_down(self.now, LinkId(li as u32));
                self.links[li] = None;
                self.tx.link_down(LinkId(li as u32));
            }
            Op::Raw { link, bytes } => {
                let li = self.link(link);
                let _ = self.input(li, &bytes);
            }
            Op::Hello { link, nonce, echo } => {
                let li = self.link(link);
                let echo = match echo {
                    Echo::Ours => self.router_nonce[li].unwrap_or([0; 16]),
                    Echo::Zero => [0; 16],
                    Echo::Other(b) => [b; 16],
                };
                let h = HelloRepr { nonce: [nonce; 16], echo };
                let mut buf = [0u8; 64];
                let n = h.emit(&mut buf).expect("hello fits");
                if self.input(li, &buf[..n]).is_ok() {
                    self.peer_nonce[li] = Some(h.nonce);
                }
            }
            Op::Summary { link, seq, last, picks, junk } => {
                let li = self.link(link);
                let salt = match (self.router_nonce[li], self.peer_nonce[li]) {
                    (Some(a), Some(b)) => hash::link_salt(&a, &b),
                    _ => [0; 16],
                };
                let mut fps = Vec::new();
                for p in picks.iter().take(SUMMARY_MAX_FINGERPRINTS) {
                    if let Some(k) = self.known.get(usize::from(*p) % self.known.len().max(1)) {
                        fps.extend_from_slice(&hash::fingerprint(&salt, &k.id.0));
                    }
                }
                for _ in 0..usize::from(junk % 8) {
                    if fps.len() < SUMMARY_MAX_FINGERPRINTS * 4 {
                        fps.extend_from_slice(&(self.rng.step() as u32).to_le_bytes());
                    }
                }
                let s = SummaryRepr { seq, last, fingerprints: &fps };
                let mut buf = [0u8; SUMMARY_LEN];
                s.emit(&mut buf).expect("summary fits");
                let _ = self.input(li, &buf);
            }
            Op::Message { link, spec, seg_mtu, order } => {
                let li = self.link(link);
                let (id, secret, frame) = build(&spec);
                self.remember(id, Some(secret), &frame);
                let segs = seg_mtu.and_then(|m| segments(&frame, 20 + usize::from(m % 1281), order as u8));
                match segs {
                    None => {
                        if let Ok(Some(got)) = self.input(li, &frame) {
                            assert_eq!(got, id);
                        }
                    }
                    Some(mut segs) => {
                        // Any order, and a duplicate now and then.
                        let mut rng = TestRng::new(order);
                        for i in (1..segs.len()).rev() {
                            segs.swap(i, (rng.step() % (i as u64 + 1)) as usize);
                        }
                        if order & 1 == 1 {
                            let dup = segs[0].clone();
                            segs.insert(segs.len() / 2, dup);
                        }
                        for s in &segs {
                            if let Ok(Some(got)) = self.input(li, s) {
                                assert_eq!(got, id, "segments reassembled into another message");
                            }
                            self.check_bounds();
                        }
                    }
                }
            }
            Op::Replay { link, pick, flip } => {
                let li = self.link(link);
                let pool = if pick & 1 == 0 || self.known.is_empty() {
                    self.captured.pick(usize::from(pick >> 1))
                } else {
                    self.known.get(usize::from(pick >> 1) % self.known.len()).map(|k| k.frame.clone())
                };
                let Some(mut bytes) = pool else { return };
                let original_ok = MessageFrame::new_checked(&bytes[..]).is_ok_and(|m| m.check_id().is_ok());
                let flipped_at = flip.map(|f| usize::from(f) % (bytes.len() * 8));
                if let Some(bit) = flipped_at {
                    bytes[bit / 8] ^= 1 << (bit % 8);
                }
                let res = self.input(li, &bytes);
                // One flipped bit in the id or hashed contents of a valid
                // message never makes a new message.
                if let (true, Some(bit)) = (original_ok, flipped_at)
                    && bit / 8 >= 5
                {
                    assert!(!matches!(res, Ok(Some(_))), "a frame with a flipped bit at {bit} was taken as new");
                }
            }
            Op::Receipt { link, pick, forge, level } => {
                let li = self.link(link);
                let Some(k) = self.known.get(usize::from(pick) % self.known.len().max(1)) else { return };
                let (id, commit) = (k.id, k.commit);
                let secret = f_or(forge.or(k.secret));
                let genuine = hash::receipt_commit(&secret) == commit;
                let r = ReceiptRepr { level, lifetime_secs: 60, id, secret };
                let mut buf = [0u8; 64];
                let n = r.emit(&mut buf).expect("receipt fits");
                let held_before = self.router.holds(&id);
                let res = self.router.route_frame(self.now, LinkId(li as u32), &buf[..n]).map(|o| match o {
                    Outcome::Receipt(i) => Some(i),
                    _ => None,
                });
                if !genuine {
                    assert_eq!(self.router.holds(&id), held_before, "a forged receipt changed the store");
                    assert!(!matches!(res, Ok(None)), "a receipt was taken as something else");
                } else if let Ok(Some(got)) = res {
                    assert_eq!(got, id);
                    assert!(!self.router.holds(&id), "a valid receipt left its message in the store");
                }
            }
            Op::Advance { ms } => self.now = self.now.saturating_add(Duration::from_millis(u64::from(ms))),
            Op::AdvanceSecs { secs } => {
                self.now = self.now.saturating_add(Duration::from_secs(u64::from(secs)));
            }
            Op::Timeout => {
                self.router.handle_timeout(self.now, &mut self.rng);
                self.check_bounds();
                self.poll_all();
                if let Some(t) = self.router.poll_timeout() {
                    assert!(t > self.now, "poll_timeout {t} is not after now {} after handling timers", self.now);
                }
            }
            Op::Submit { spec } => {
                let (id, secret, frame) = build(&spec);
                let was_held = self.router.holds(&id);
                match self.router.submit(self.now, &frame) {
                    Ok(got) => {
                        assert_eq!(got, id);
                        assert!(!was_held, "a held message was submitted again");
                        assert!(self.router.holds(&id), "a submitted message is not held");
                        self.submitted(id);
                    }
                    Err(SubmitError::Duplicate | SubmitError::StoreFull) => {}
                    Err(e) => panic!("a valid frame was refused: {e:?}"),
                }
                self.remember(id, Some(secret), &frame);
            }
            Op::SubmitRaw { bytes } => {
                if let Ok(id) = self.router.submit(self.now, &bytes) {
                    let m = MessageFrame::new_checked(&bytes[..]).expect("submit took a malformed frame");
                    assert_eq!(m.check_id(), Ok(id));
                    self.submitted(id);
                }
            }
            Op::EmitReceipt { pick, delay_ms, forge } => {
                let Some(k) = self.known.get(usize::from(pick) % self.known.len().max(1)) else { return };
                let secret = if forge { [0xee; RECEIPT_SECRET_LEN] } else { f_or(k.secret) };
                // Receipts are issued at once; the delay lives in the endpoint.
                let _ = delay_ms;
                let _ = self.router.emit_receipt(self.now, k.id, secret);
            }
            Op::PollAll => self.poll_all(),
        }
        self.drain_events();
        self.check_bounds();
    }
}

fn f_or(secret: Option<[u8; RECEIPT_SECRET_LEN]>) -> [u8; RECEIPT_SECRET_LEN] {
    secret.unwrap_or([0x5a; RECEIPT_SECRET_LEN])
}

/// Run one input (the fuzz target's body). Returns the final state.
pub fn run(input: Input) -> Harness {
    let mut h = Harness::new(input.seed);
    for op in input.ops.into_iter().take(MAX_OPS) {
        h.run(op);
    }
    // Whatever happened, the node settles: timers fire and the queues drain.
    h.now = h.now.saturating_add(Duration::from_secs(10));
    h.run(Op::Timeout);
    h
}
