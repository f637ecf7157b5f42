//! Two endpoints wired together by one link (plus a second link each for
//! garbage and replays), driven by arbitrary sends, link events, losses,
//! replays and clock steps. Errors are fine; panics are not; nobody is shown
//! a text that was not sent to them (or shown it more often than it was
//! sent); and a sender is told "delivered" only for what the recipient was
//! shown.

use std::collections::HashMap;

use crate::{TestRng, TxChecker};
use arbitrary::Arbitrary;
use ferry_proto::Node;
use ferry_proto::endpoint::{DeliveryState, Endpoint, Event};
use ferry_proto::envelope::{Identity, PeerKey};
use ferry_proto::router::{FrameError, LinkCaps, LinkId, Router};
use ferry_proto::time::{Duration, Instant};
use ferry_proto::wire::{MAX_FRAME_LEN, MessageId, SizeClass};

type Rt = Router<8, 4, 32, 4, 8, 2>;
type Ep = Endpoint<Rt, 4, 64, 4, 16>;

const MAX_OPS: usize = 200;
const MAX_TRANSMITS: usize = 10_000;
/// The link between the two endpoints.
const WIRE: LinkId = LinkId(0);
/// Each endpoint's second link: garbage and replays come in on it; what goes
/// out on it is captured.
const SIDE: LinkId = LinkId(1);
const CAPTURED: usize = 32;
const UNIX_BASE: u64 = 1_700_000_000;

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    Peer,
    Me,
    Third,
    Raw([u8; 32]),
}

#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Wire { up: bool, mtu: u16, broadcast: bool, large: bool },
    Side { b: bool, up: bool, mtu: u16 },
    Garbage { b: bool, wire: bool, bytes: Vec<u8> },
    Send { b: bool, to: Dest, text: String, skew: i8 },
    SendLong { b: bool, to: Dest, len: u16, fill: char },
    AddContact { b: bool, who: Dest },
    RemoveContact { b: bool, who: Dest },
    SetLifetime { b: bool, secs: u16 },
    Pump { loss: u64, rounds: u8 },
    Replay { b: bool, pick: u8, flip: Option<u16> },
    Advance { ms: u16 },
    AdvanceSecs { secs: u16 },
    Timeout,
}

#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub seed: u64,
    pub ops: Vec<Op>,
}

pub struct Side {
    pub ep: Box<Ep>,
    pub key: PeerKey,
    pub links: [Option<LinkCaps>; 2],
    pub tx: TxChecker,
    /// Ids `send` returned: the recipient (a side, or `usize::MAX`) and the
    /// last state reported.
    pub sent: HashMap<MessageId, (usize, Option<DeliveryState>)>,
    /// Ids of texts shown to this side's user.
    pub shown: Vec<MessageId>,
    /// Texts long enough to go in parts that were sent to this side.
    pub long_in: usize,
}

pub struct Harness {
    pub sides: [Side; 2],
    pub third: PeerKey,
    pub now: Instant,
    pub rng: TestRng,
    pub captured: crate::Captured<CAPTURED>,
    /// (from, to, text) -> texts sent that way / texts shown that way.
    pub sent_texts: HashMap<(usize, usize, String), (usize, usize)>,
}

fn side(secret: u8) -> Side {
    let identity = Identity::from_secret_bytes([secret; 32]);
    let key = identity.public();
    Side {
        ep: Box::new(Endpoint::new(identity, Rt::new(Default::default()))),
        key,
        links: [None; 2],
        tx: TxChecker::default(),
        sent: HashMap::new(),
        shown: Vec::new(),
        long_in: 0,
    }
}

impl Harness {
    fn new(seed: u64) -> Self {
        Harness {
            sides: [side(0x11), side(0x22)],
            third: Identity::from_secret_bytes([0x33; 32]).public(),
            now: Instant::ZERO,
            rng: TestRng::new(seed),
            captured: crate::Captured::default(),
            sent_texts: HashMap::new(),
        }
    }

    fn key(&self, from: usize, d: Dest) -> Option<PeerKey> {
        match d {
            Dest::Peer => Some(self.sides[1 - from].key),
            Dest::Me => Some(self.sides[from].key),
            Dest::Third => Some(self.third),
            Dest::Raw(bytes) => PeerKey::from_bytes(bytes).ok(),
        }
    }

    fn index_of(&self, key: &PeerKey) -> Option<usize> {
        self.sides.iter().position(|s| s.key == *key)
    }

    fn capture(&mut self, bytes: &[u8]) {
        self.captured.push(bytes);
    }

    fn unix(&self, skew: i8) -> u64 {
        (UNIX_BASE + self.now.millis() / 1000).saturating_add_signed(i64::from(skew))
    }

    /// Whether side `to` may have receipted a text it never showed, in the
    /// two ways the endpoint is known to (reported bugs: it sends the receipt
    /// as soon as a frame opens): a text refused because its replay table
    /// (16 entries) overflowed and raised the `sent_at` floor, or a long text
    /// whose parts were dropped when more than 4 were being reassembled.
    /// Outside those, "delivered" must mean "shown".

    fn check_bounds(&self) {
        for s in &self.sides {
            let r = s.ep.router();
            if let Err(e) = r.check_invariants() {
                panic!("router invariant broken: {e}");
            }
            assert!(r.held() <= 12, "held {}", r.held());
            assert!(r.seen_len() <= 32, "seen {}", r.seen_len());
            assert!(r.reassembling() <= 2, "reassembling {}", r.reassembling());
        }
    }

    fn events(&mut self, i: usize) {
        let mut n = 0;
        while let Some(ev) = self.sides[i].ep.poll_event() {
            n += 1;
            assert!(n <= 64, "endpoint events do not drain");
            match ev {
                Event::Received(r) => {
                    let Some(from) = self.index_of(&r.from) else {
                        panic!("a text from {:?}, whom nobody here is", r.from);
                    };
                    let entry = self.sent_texts.entry((from, i, r.text.as_str().to_owned())).or_default();
                    entry.1 += 1;
                    assert!(
                        entry.1 <= entry.0,
                        "side {i} was shown {:?} from side {from} {} times, but it was sent {} times",
                        r.text.as_str(),
                        entry.1,
                        entry.0
                    );
                    self.sides[i].shown.push(r.id);
                }
                Event::Status { id, state } => {
                    let Some(&(to, old)) = self.sides[i].sent.get(&id) else {
                        panic!("status {state:?} for {id:?}, which side {i} did not send");
                    };
                    assert!(Some(state) > old, "status went from {old:?} to {state:?}");
                    if state == DeliveryState::Delivered {
                        assert!(
                            to < 2 && self.sides[to].shown.contains(&id),
                            "side {i} was told {id:?} was delivered, but its recipient was never shown it"
                        );
                    }
                    self.sides[i].sent.insert(id, (to, Some(state)));
                }
                other => panic!("an event this harness does not know: {other:?}"),
            }
        }
    }

    /// Hand one datagram to side `i`.
    fn deliver(&mut self, i: usize, link: LinkId, bytes: &[u8]) {
        let up = self.sides[i].links[link.0 as usize].is_some();
        let res = self.sides[i].ep.handle_frame(self.now, &mut self.rng, link, bytes);
        if up {
            assert_ne!(res, Err(FrameError::UnknownLink), "link {link:?} of side {i} is up");
        } else {
            assert_eq!(res, Err(FrameError::UnknownLink), "link {link:?} of side {i} is down");
        }
        self.events(i);
    }

    /// Everything side `i` wants to send, checked.
    fn drain(&mut self, i: usize) -> Vec<(LinkId, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = [0u8; MAX_FRAME_LEN];
        let now = self.now;
        let s = &mut self.sides[i];
        while let Some(t) = s.ep.poll_transmit(now, &mut buf) {
            assert!(out.len() < MAX_TRANSMITS, "livelock: more than {MAX_TRANSMITS} transmits in one drain");
            let Some(caps) = s.links.get(t.link.0 as usize).copied().flatten() else {
                panic!("side {i} transmitted on {:?}, which is down", t.link);
            };
            let bytes = &buf[..t.len];
            let _ = s.tx.check(now, t.link, usize::from(caps.mtu), bytes);
            out.push((t.link, bytes.to_vec()));
        }
        self.events(i);
        out
    }

    fn pump(&mut self, mut loss: u64, rounds: u8) {
        for _ in 0..=(rounds % 8) {
            let mut moved = 0;
            for i in 0..2 {
                for (link, bytes) in self.drain(i) {
                    self.capture(&bytes);
                    if link != WIRE {
                        continue;
                    }
                    loss = loss.rotate_right(1);
                    if loss & 1 == 1 {
                        continue;
                    }
                    moved += 1;
                    self.deliver(1 - i, WIRE, &bytes);
                }
            }
            self.check_bounds();
            if moved == 0 {
                break;
            }
        }
    }

    fn link_up(&mut self, i: usize, link: LinkId, caps: LinkCaps) {
        let s = &mut self.sides[i];
        s.links[link.0 as usize] = None;
        s.tx.link_down(link);
        if s.ep.handle_link_up(self.now, &mut self.rng, link, caps) {
            s.links[link.0 as usize] = Some(caps);
        }
    }

    fn link_down(&mut self, i: usize, link: LinkId) {
        let s = &mut self.sides[i];
        s.ep.handle_link_down(self.now, link);
        s.links[link.0 as usize] = None;
        s.tx.link_down(link);
    }

    fn send(&mut self, i: usize, to: Dest, text: &str, skew: i8) {
        let Some(key) = self.key(i, to) else { return };
        let unix = self.unix(skew);
        let res = self.sides[i].ep.send(self.now, &mut self.rng, unix, &key, text);
        if let Ok(id) = res {
            let to_i = self.index_of(&key).unwrap_or(usize::MAX);
            assert!(self.sides[i].sent.insert(id, (to_i, None)).is_none(), "send reused an id");
            if to_i < 2 {
                self.sent_texts.entry((i, to_i, text.to_owned())).or_default().0 += 1;
                if text.len() > 900 {
                    self.sides[to_i].long_in += 1;
                }
            }
        }
        self.events(i);
    }

    fn run(&mut self, op: Op) {
        match op {
            Op::Wire { up, mtu, broadcast, large } => {
                if up {
                    let caps = LinkCaps {
                        mtu: 20 + mtu % 1281,
                        broadcast,
                        max_class: if large { SizeClass::Large } else { SizeClass::Small },
                    };
                    self.link_up(0, WIRE, caps);
                    self.link_up(1, WIRE, caps);
                } else {
                    self.link_down(0, WIRE);
                    self.link_down(1, WIRE);
                }
            }
            Op::Side { b, up, mtu } => {
                let i = usize::from(b);
                if up {
                    let caps = LinkCaps { mtu: 20 + mtu % 1281, broadcast: false, max_class: SizeClass::Large };
                    self.link_up(i, SIDE, caps);
                } else {
                    self.link_down(i, SIDE);
                }
            }
            Op::Garbage { b, wire, bytes } => {
                self.deliver(usize::from(b), if wire { WIRE } else { SIDE }, &bytes);
            }
            Op::Send { b, to, text, skew } => self.send(usize::from(b), to, &text, skew),
            Op::SendLong { b, to, len, fill } => {
                let text: String = std::iter::repeat_n(fill, usize::from(len % 5000)).collect();
                self.send(usize::from(b), to, &text, 0);
            }
            Op::AddContact { b, who } => {
                let i = usize::from(b);
                if let Some(key) = self.key(i, who) {
                    let _ = self.sides[i].ep.add_contact(self.now, key);
                }
            }
            Op::RemoveContact { b, who } => {
                let i = usize::from(b);
                if let Some(key) = self.key(i, who) {
                    let _ = self.sides[i].ep.remove_contact(&key);
                }
            }
            Op::SetLifetime { b, secs } => self.sides[usize::from(b)].ep.set_lifetime_secs(u32::from(secs)),
            Op::Pump { loss, rounds } => self.pump(loss, rounds),
            Op::Replay { b, pick, flip } => {
                let Some(mut bytes) = self.captured.pick(usize::from(pick)) else {
                    return;
                };
                if let Some(f) = flip {
                    let bit = usize::from(f) % (bytes.len() * 8);
                    bytes[bit / 8] ^= 1 << (bit % 8);
                }
                let link = if pick & 0x80 != 0 { WIRE } else { SIDE };
                self.deliver(usize::from(b), link, &bytes);
            }
            Op::Advance { ms } => self.now = self.now.saturating_add(Duration::from_millis(u64::from(ms))),
            Op::AdvanceSecs { secs } => self.now = self.now.saturating_add(Duration::from_secs(u64::from(secs))),
            Op::Timeout => {
                for i in 0..2 {
                    self.sides[i].ep.handle_timeout(self.now, &mut self.rng);
                    self.events(i);
                }
                self.pump(0, 2);
            }
        }
        self.check_bounds();
    }
}

/// Run one input (the fuzz target's body). Returns the final state.
pub fn run(input: Input) -> Harness {
    let mut h = Harness::new(input.seed);
    for op in input.ops.into_iter().take(MAX_OPS) {
        h.run(op);
    }
    // Let receipts and retries play out on a lossless wire.
    for _ in 0..4 {
        h.now = h.now.saturating_add(Duration::from_secs(3));
        h.run(Op::Timeout);
    }
    h
}
