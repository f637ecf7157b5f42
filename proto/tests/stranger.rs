//! Stateless validation of addresses a node did not choose (SPEC §6.1):
//! junk takes no link, a stranger gets at most one 33-byte hello per frame,
//! and a peer that answers the cookie links and carries a message.

use ferry_proto::Node;
use ferry_proto::router::{Config, LinkCaps, LinkId, LinkInfo, Outcome, Router, Stranger};
use ferry_proto::time::{Duration, Instant};
use ferry_proto::wire::{self, HELLO_LEN, HelloRepr, MessageFrame, SizeClass};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

type SmallRouter = Router<8, 4, 32, 4, 8, 2>;
const CAPS: LinkCaps = LinkCaps { mtu: 1300, broadcast: false, max_class: SizeClass::Large };

fn hello(nonce: u8, echo: [u8; 16]) -> [u8; HELLO_LEN] {
    let mut b = [0u8; HELLO_LEN];
    HelloRepr { nonce: [nonce; 16], echo }.emit(&mut b).unwrap();
    b
}

fn answer_of(r: &mut SmallRouter, now: Instant, rng: &mut StdRng, addr: &[u8], bytes: &[u8]) -> Option<HelloRepr> {
    let mut out = [0u8; 64];
    match r.handle_stranger(now, rng, addr, bytes, &mut out) {
        Stranger::Answer(n) => {
            assert_eq!(n, HELLO_LEN);
            Some(HelloRepr::parse(&out[..n]).unwrap())
        }
        Stranger::Dropped => None,
        Stranger::Validated(_) => panic!("validated without a cookie"),
    }
}

#[test]
fn a_hello_gets_one_cookie_hello_and_its_echo_makes_a_validated_link() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut r = Box::new(SmallRouter::new(Config::DEFAULT));
    let now = Instant::from_millis(5_000);
    let ans = answer_of(&mut r, now, &mut rng, b"peer-1", &hello(7, [0; 16])).expect("a hello is answered");
    assert_eq!(ans.echo, [7; 16]);
    assert_eq!(r.links().count(), 0, "nothing kept for a stranger");
    // The cookie is bound to the address: from elsewhere it is not valid.
    let mut out = [0u8; 64];
    let echo = hello(7, ans.nonce);
    assert!(matches!(r.handle_stranger(now, &mut rng, b"peer-2", &echo, &mut out), Stranger::Answer(_)));
    // From the right address, within 10-20 s, it is.
    let later = now.saturating_add(Duration::from_secs(9));
    let Stranger::Validated(v) = r.handle_stranger(later, &mut rng, b"peer-1", &echo, &mut out) else {
        panic!("the echoed cookie was not accepted");
    };
    assert!(r.accept_stranger(later, &mut rng, LinkId(1), CAPS, v));
    assert_eq!(r.links().collect::<Vec<_>>(), [LinkInfo { id: LinkId(1), caps: CAPS, validated: true, pull: false }]);
    // Too late: two epochs on, the cookie is stale.
    let stale = now.saturating_add(Duration::from_secs(25));
    assert!(matches!(r.handle_stranger(stale, &mut rng, b"peer-1", &echo, &mut out), Stranger::Answer(_)));
}

#[test]
fn junk_gets_no_answer_and_a_frame_that_is_not_a_hello_gets_one_with_a_zero_echo() {
    let mut rng = StdRng::seed_from_u64(2);
    let mut r = Box::new(SmallRouter::new(Config::DEFAULT));
    let now = Instant::from_millis(1_000);
    for junk in [&[0u8][..], &[0x24; 32], &[0xff; 240], &[0x20; 240], &[]] {
        assert_eq!(answer_of(&mut r, now, &mut rng, b"x", junk), None, "{junk:02x?}");
    }
    // A message frame from a peer that still believes it has a link to us.
    let mut m = vec![0u8; SizeClass::Small.frame_len()];
    let mut f = MessageFrame::new_unchecked(&mut m[..]);
    f.emit_header(wire::Kind::Contact, 9, 100, &[1; 12]);
    f.fill_id();
    let ans = answer_of(&mut r, now, &mut rng, b"x", &m).expect("answered");
    assert_eq!(ans.echo, [0; 16]);
    assert_eq!(r.stats().stranger_answers, 1);
    assert_eq!(r.stats().stranger_dropped, 5);
}

#[test]
fn answers_to_strangers_are_rate_limited() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut r = Box::new(SmallRouter::new(Config::DEFAULT));
    let now = Instant::from_millis(1_000);
    let limit = Config::DEFAULT.stranger_answers_per_sec;
    let answered =
        (0..limit + 100).filter(|i| answer_of(&mut r, now, &mut rng, &i.to_be_bytes(), &hello(1, [0; 16])).is_some());
    assert_eq!(answered.count(), limit as usize);
    let next = now.saturating_add(Duration::from_secs(1));
    assert!(answer_of(&mut r, next, &mut rng, b"y", &hello(1, [0; 16])).is_some());
}

/// A chose B; B learns A through the cookie. They validate and carry a
/// message both ways of the exchange.
#[test]
fn a_learned_peer_links_through_the_cookie_and_delivers() {
    let mut rng = StdRng::seed_from_u64(4);
    let mut a = Box::new(SmallRouter::new(Config::DEFAULT));
    let mut b = Box::new(SmallRouter::new(Config::DEFAULT));
    let now = Instant::from_millis(1_000);
    assert!(a.handle_link_up(now, &mut rng, LinkId(1), CAPS));
    let mut buf = [0u8; 1300];
    let mut b_link = None;
    for _round in 0..6 {
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            let bytes = buf[..t.len].to_vec();
            match b_link {
                Some(l) => {
                    let _ = b.route_frame(now, l, &bytes);
                }
                None => {
                    let mut out = [0u8; 64];
                    match b.handle_stranger(now, &mut rng, b"a", &bytes, &mut out) {
                        Stranger::Answer(n) => {
                            let _ = a.route_frame(now, LinkId(1), &out[..n]);
                        }
                        Stranger::Validated(v) => {
                            assert!(b.accept_stranger(now, &mut rng, LinkId(9), CAPS, v));
                            b_link = Some(LinkId(9));
                        }
                        Stranger::Dropped => {}
                    }
                }
            }
        }
        while let Some(t) = b.poll_transmit(now, &mut buf) {
            let bytes = buf[..t.len].to_vec();
            let _ = a.route_frame(now, LinkId(1), &bytes);
        }
    }
    assert_eq!(b_link, Some(LinkId(9)));
    assert!(a.links().all(|l| l.validated) && b.links().all(|l| l.validated), "both ends validated");
    // A message submitted at A reaches B over the learned link.
    let mut m = vec![0u8; SizeClass::Small.frame_len()];
    let mut f = MessageFrame::new_unchecked(&mut m[..]);
    f.emit_header(wire::Kind::Contact, 9, 100, &[1; 12]);
    let id = f.fill_id();
    a.submit(now, &m).unwrap();
    let mut got = false;
    while let Some(t) = a.poll_transmit(now, &mut buf) {
        let bytes = buf[..t.len].to_vec();
        if let Ok(Outcome::NewMessage { id: got_id, .. }) = b.route_frame(now, LinkId(9), &bytes) {
            got |= got_id == id;
        }
    }
    assert!(got, "the message crossed the learned link");
}

/// A probe (SPEC §6.1): A greets B's address without keeping anything; B answers as it answers any
/// stranger, and B's answer echoes A's cookie, so it validates at A; A's hello then echoes B's cookie
/// and validates at B. Both ends end up with a validated link, and the nonces agree (the same salt).
/// An address that never answers costs A nothing.
#[test]
fn a_probe_links_two_routers_through_their_cookies_and_keeps_nothing() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut a = Box::new(SmallRouter::new(Config::DEFAULT));
    let mut b = Box::new(SmallRouter::new(Config::DEFAULT));
    let now = Instant::from_millis(3_000);
    let mut probe = [0u8; 64];
    let n = a.probe(now, &mut rng, b"addr-of-b", &mut probe).expect("a probe fits 64 bytes");
    assert_eq!(n, HELLO_LEN);
    assert_eq!(HelloRepr::parse(&probe[..n]).unwrap().echo, [0; 16]);
    assert_eq!(a.links().count(), 0, "a probe keeps nothing");
    assert_eq!(a.probe(now, &mut rng, b"x", &mut [0u8; 10]), None);
    // B answers the probe with its cookie hello.
    let answer = answer_of(&mut b, now, &mut rng, b"addr-of-a", &probe[..n]).expect("B answers a probe");
    let mut answer_bytes = [0u8; HELLO_LEN];
    answer.emit(&mut answer_bytes).unwrap();
    // At A, the answer echoes A's cookie for B's address: a validated link at once.
    let mut out = [0u8; 64];
    let Stranger::Validated(v) = a.handle_stranger(now, &mut rng, b"addr-of-b", &answer_bytes, &mut out) else {
        panic!("the answer to a probe did not validate");
    };
    assert!(a.accept_stranger(now, &mut rng, LinkId(2), CAPS, v));
    // From another address the same answer does not validate (the cookie is bound to the address).
    assert!(!matches!(a.handle_stranger(now, &mut rng, b"elsewhere", &answer_bytes, &mut out), Stranger::Validated(_)));
    // A's hello on the new link echoes B's cookie: validated at B.
    let mut buf = [0u8; 1300];
    let t = a.poll_transmit(now, &mut buf).expect("A greets B on the new link");
    let Stranger::Validated(vb) = b.handle_stranger(now, &mut rng, b"addr-of-a", &buf[..t.len], &mut out) else {
        panic!("A's hello did not validate at B");
    };
    assert!(b.accept_stranger(now, &mut rng, LinkId(7), CAPS, vb));
    assert!(a.links().all(|l| l.validated) && b.links().all(|l| l.validated));
}

proptest! {
    /// Any number of strangers sending anything: no link is ever made, and
    /// no stranger gets more than one 33-byte answer per frame.
    #[test]
    fn strangers_never_take_a_link(frames in proptest::collection::vec((any::<u16>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..200)) {
        let mut rng = StdRng::seed_from_u64(5);
        let mut r = Box::new(SmallRouter::new(Config::DEFAULT));
        let now = Instant::from_millis(1_000);
        for (addr, bytes) in frames {
            let mut out = [0u8; 64];
            match r.handle_stranger(now, &mut rng, &addr.to_be_bytes(), &bytes, &mut out) {
                Stranger::Answer(n) => prop_assert!(n == HELLO_LEN && bytes.len() >= HELLO_LEN),
                Stranger::Dropped => {}
                Stranger::Validated(_) => prop_assert!(false, "random bytes passed a cookie check"),
            }
        }
        prop_assert_eq!(r.links().count(), 0);
    }
}
