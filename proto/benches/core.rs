//! Benchmarks behind the performance table of the proto core (sizes,
//! seal/open, "not for me" and router rates).
//!
//! Run: `cargo bench -p ferry-proto --bench core -- --warm-up-time 1 --measurement-time 3`.
//! The size report is printed once before criterion starts; every group
//! uses `Throughput::Elements(1)`, so criterion's `thrpt` line is the
//! per-second, per-core rate of the table.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group};
use heapless::index_map::FnvIndexMap;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use x25519_dalek::{PublicKey, StaticSecret};

use ferry_proto::Instant;
use ferry_proto::Node;
use ferry_proto::endpoint::{Endpoint, Event};
use ferry_proto::envelope::{self, Body, Identity, OpenError, Path, Payload, SealError, noise};
use ferry_proto::router::{Config, DongleRouter, HostRouter, LinkCaps, LinkId, Outcome, Router};
use ferry_proto::wire::{HelloRepr, Kind, MAX_FRAME_LEN, MessageFrame, SizeClass, TAG_LEN};

/// A plausible `sent_at` (late 2025): its varint length (5 bytes) is what
/// real messages carry, so the size figures below are the real ones.
const SENT_AT: u64 = 1_760_000_000;
const TEXT_LEN: usize = 100;
const T0: Instant = Instant::from_millis(1_000);

fn rng(seed: u8) -> StdRng {
    StdRng::from_seed([seed; 32])
}

fn text(len: usize) -> String {
    "a".repeat(len)
}

// ----- sizes -----------------------------------------------------------------

/// Seal a `len`-byte text on `path` into a frame of `class`; `None` if it does not fit.
fn try_seal(
    rng: &mut StdRng,
    me: &Identity,
    to: &Identity,
    path: Path,
    class: SizeClass,
    len: usize,
    buf: &mut [u8],
) -> Option<usize> {
    let ss = me.static_static(&to.public()).unwrap();
    let t = text(len);
    let payload = Payload { sent_at: SENT_AT, body: Body::Text(&t) };
    match envelope::seal(rng, me, &to.public(), &ss, path, 8, 3600, class, &payload, buf) {
        Ok(s) => Some(s.len),
        Err(SealError::TooLarge) => None,
        Err(e) => panic!("seal failed: {e:?}"),
    }
}

/// The longest text that fits in one frame of `class` on `path`, checked by
/// opening it again.
fn max_text(path: Path, class: SizeClass) -> usize {
    let mut r = rng(1);
    let (me, to) = (Identity::generate(&mut r), Identity::generate(&mut r));
    let mut buf = [0u8; MAX_FRAME_LEN];
    let mut len = 0;
    while try_seal(&mut r, &me, &to, path, class, len + 1, &mut buf).is_some() {
        len += 1;
    }
    // Round trip at the maximum, so the number is a text that really arrives.
    let n = try_seal(&mut r, &me, &to, path, class, len, &mut buf).unwrap();
    let frame = MessageFrame::new_checked(&buf[..n]).unwrap();
    let ss = to.static_static(&me.public()).unwrap();
    let pk = me.public();
    let contact = matches!(path, Path::Contact { .. }).then_some((&pk, &ss));
    let mut scratch = [0u8; MAX_FRAME_LEN];
    let opened = envelope::open(&to, &frame, contact, &mut scratch).unwrap();
    let payload = envelope::parse_payload(&scratch[opened.plaintext]).unwrap();
    assert_eq!(payload.body, Body::Text(&text(len)));
    len
}

fn print_sizes() {
    let contact = Path::Contact { tag: [7; TAG_LEN] };
    let small = SizeClass::Small.frame_len();
    let fixed_c = envelope::fixed_overhead(Kind::Contact);
    let fixed_f = envelope::fixed_overhead(Kind::FirstContact);
    let max_c = max_text(contact, SizeClass::Small);
    let max_f = max_text(Path::FirstContact, SizeClass::Small);
    let max_c_large = max_text(contact, SizeClass::Large);
    let max_f_large = max_text(Path::FirstContact, SizeClass::Large);
    // Overhead = every frame byte that is not text, for a text that fills
    // the frame (so no padding): outer header, clear tag/key id, Noise
    // handshake and AEAD tag (the fixed part), plus the postcard payload
    // header (sent_at varint, body variant, text length varint).
    let over_c = small - max_c;
    let over_f = small - max_f;
    let ok = |b: bool| if b { "met" } else { "MISSED" };
    println!();
    println!("## ferry-proto sizes (Small class = {small} B frame, sent_at = {SENT_AT})");
    println!();
    println!("| figure | measured | target | |");
    println!("|---|---|---|---|");
    println!(
        "| overhead bytes per message between contacts (fixed {fixed_c} + payload header {}) | {over_c} | <= 100 | {} |",
        over_c - fixed_c,
        ok(over_c <= 100)
    );
    println!(
        "| overhead bytes of a first-contact message (fixed {fixed_f} + payload header {}) | {over_f} | reported | |",
        over_f - fixed_f
    );
    println!("| text bytes in one Small frame, between contacts | {max_c} | >= 140 | {} |", ok(max_c >= 140));
    println!("| text bytes in one Small frame, first contact | {max_f} | reported | |");
    println!(
        "| text bytes in one Large (1200 B) frame, contacts / first contact | {max_c_large} / {max_f_large} | reported | |"
    );
    println!();
}

// ----- x25519 ---------------------------------------------------------------

fn bench_x25519(c: &mut Criterion) {
    let mut r = rng(2);
    let mut a = [0u8; 32];
    let mut b = [0u8; 32];
    r.fill_bytes(&mut a);
    r.fill_bytes(&mut b);
    let sk = StaticSecret::from(a);
    let pk = PublicKey::from(&StaticSecret::from(b));
    let mut g = c.benchmark_group("x25519");
    g.throughput(Throughput::Elements(1));
    g.bench_function("dh", |bench| bench.iter(|| noise::dh(black_box(&sk), black_box(&pk)).unwrap()));
    g.finish();
}

// ----- seal + open ------------------------------------------------------------

fn bench_seal_open(c: &mut Criterion) {
    let mut r = rng(3);
    let sender = Identity::generate(&mut r);
    let recipient = Identity::generate(&mut r);
    let (spk, rpk) = (sender.public(), recipient.public());
    let ss_send = sender.static_static(&rpk).unwrap();
    let ss_recv = recipient.static_static(&spk).unwrap();
    let tag = envelope::tag(&envelope::tag_key(&ss_send, &spk, &rpk), 0);
    let t = text(TEXT_LEN);
    let payload = Payload { sent_at: SENT_AT, body: Body::Text(&t) };

    let mut g = c.benchmark_group("seal_open");
    g.throughput(Throughput::Elements(1));
    for (name, path) in [("contact", Path::Contact { tag }), ("first_contact", Path::FirstContact)] {
        let contact = matches!(path, Path::Contact { .. }).then_some((&spk, &ss_recv));
        let mut buf = [0u8; MAX_FRAME_LEN];
        let mut scratch = [0u8; MAX_FRAME_LEN];
        g.bench_function(name, |bench| {
            bench.iter(|| {
                let s = envelope::seal(
                    &mut r,
                    &sender,
                    &rpk,
                    &ss_send,
                    path,
                    8,
                    3600,
                    SizeClass::Small,
                    black_box(&payload),
                    &mut buf,
                )
                .unwrap();
                let frame = MessageFrame::new_checked(&buf[..s.len]).unwrap();
                let opened = envelope::open(&recipient, &frame, contact, &mut scratch).unwrap();
                black_box(opened.secret)
            })
        });
    }
    g.finish();
}

// ----- "not for me" ---------------------------------------------------------

/// A valid Small frame of `kind` with random contents (what a foreign
/// sealed message looks like to anyone but its recipient).
fn random_frame(r: &mut StdRng, kind: Kind, hops: u8) -> [u8; 240] {
    let mut buf = [0u8; 240];
    let mut commit = [0u8; 12];
    r.fill_bytes(&mut commit);
    let mut f = MessageFrame::new_unchecked(&mut buf[..]);
    f.emit_header(kind, hops, 3600, &commit);
    r.fill_bytes(f.sealed_mut());
    f.fill_id();
    buf
}

type TagMap<const N: usize> = FnvIndexMap<[u8; TAG_LEN], (u16, u32), N>;

/// Build an endpoint with `C` contacts (the real one, to check that the
/// mirror below installs exactly its tags), and the mirror tag map.
fn tagged_setup<const C: usize, const TAGS: usize>(r: &mut StdRng) -> TagMap<TAGS> {
    const WINDOW: u32 = ferry_proto::endpoint::TAG_WINDOW;
    let me = Identity::generate(r);
    let me_pk = me.public();
    let me_secret = me.secret_bytes();
    let mut ep: Box<Endpoint<Box<DongleRouter>, C, TAGS, 16, 64>> =
        Box::new(Endpoint::new(Identity::from_secret_bytes(me_secret), Box::new(Router::new(Config::DEFAULT))));
    let mut map = TagMap::<TAGS>::new();
    let mut first: Option<Identity> = None;
    for ci in 0..C {
        let peer = Identity::generate(r);
        let pk = peer.public();
        ep.add_contact(T0, pk).unwrap();
        // The tags `Endpoint::install_tags` puts in its map for a new
        // contact: numbers 0..TAG_WINDOW of `tag_key(ss, them, me)`.
        let ss = me.static_static(&pk).unwrap();
        let rx_key = envelope::tag_key(&ss, &pk, &me_pk);
        for n in 0..WINDOW {
            map.insert(envelope::tag(&rx_key, n), (ci as u16, n)).unwrap();
        }
        if first.is_none() {
            first = Some(peer);
        }
    }
    assert_eq!(map.len(), C * WINDOW as usize);

    // Check the mirror against the endpoint: a frame from contact 0 with
    // its tag 0 opens; a foreign tagged frame does not.
    let caps = LinkCaps { mtu: 1500, broadcast: false, max_class: SizeClass::Large };
    assert!(ep.handle_link_up(T0, r, LinkId(1), caps));
    let peer = first.unwrap();
    let ss = peer.static_static(&me_pk).unwrap();
    let tag = envelope::tag(&envelope::tag_key(&ss, &peer.public(), &me_pk), 0);
    assert!(map.contains_key(&tag));
    let t = text(TEXT_LEN);
    let payload = Payload { sent_at: SENT_AT, body: Body::Text(&t) };
    let mut buf = [0u8; MAX_FRAME_LEN];
    let s = envelope::seal(r, &peer, &me_pk, &ss, Path::Contact { tag }, 8, 3600, SizeClass::Small, &payload, &mut buf)
        .unwrap();
    ep.handle_frame(T0, r, LinkId(1), &buf[..s.len]).unwrap();
    let mut received = false;
    while let Some(ev) = ep.poll_event() {
        received |= matches!(ev, Event::Received(_));
    }
    assert!(received, "the endpoint did not open a frame with a tag the mirror holds");
    let foreign = random_frame(r, Kind::Contact, 8);
    ep.handle_frame(T0, r, LinkId(1), &foreign).unwrap();
    while let Some(ev) = ep.poll_event() {
        assert!(!matches!(ev, Event::Received(_)));
    }
    map
}

/// Mirrors the first step of `Endpoint::try_open` (private) for a Contact
/// frame: check the frame, take the 8-byte tag from the front of the sealed
/// body, look it up in the tag map. A miss ends `try_open` there ("not for
/// me: one hash lookup, no DH"). What the endpoint does before it (the
/// router's relaying of a new frame, copying it out) is relay work every
/// node does and is measured by `router/forward`.
fn lookup<const N: usize>(map: &TagMap<N>, bytes: &[u8]) -> Option<(u16, u32)> {
    let m = MessageFrame::new_checked(bytes).ok()?;
    match m.kind() {
        Kind::Contact => {
            let mut tag = [0u8; TAG_LEN];
            for (d, s) in tag.iter_mut().zip(m.sealed()) {
                *d = *s;
            }
            map.get(&tag).copied()
        }
        _ => None,
    }
}

fn bench_not_for_me(c: &mut Criterion) {
    let mut r = rng(4);
    let map10 = tagged_setup::<10, 256>(&mut r);
    let map1000 = tagged_setup::<1000, 16384>(&mut r);
    // Many distinct foreign frames, so the lookups do not all hit the same
    // bucket (a relay sees unrelated tags one after another).
    let foreign: Vec<[u8; 240]> = (0..256).map(|_| random_frame(&mut r, Kind::Contact, 8)).collect();
    assert!(foreign.iter().all(|f| lookup(&map1000, f).is_none() && lookup(&map10, f).is_none()));

    let mut g = c.benchmark_group("not_for_me");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("tagged_10", |bench| {
        bench.iter(|| {
            i = (i + 1) & 255;
            lookup(&map10, black_box(&foreign[i][..]))
        })
    });
    g.bench_function("tagged_1000", |bench| {
        bench.iter(|| {
            i = (i + 1) & 255;
            lookup(&map1000, black_box(&foreign[i][..]))
        })
    });

    // First contact: every node tries the one DH of Noise X and fails to
    // open the sender key.
    let sender = Identity::generate(&mut r);
    let recipient = Identity::generate(&mut r);
    let bystander = Identity::generate(&mut r);
    let ss = sender.static_static(&recipient.public()).unwrap();
    let t = text(TEXT_LEN);
    let payload = Payload { sent_at: SENT_AT, body: Body::Text(&t) };
    let mut buf = [0u8; MAX_FRAME_LEN];
    let s = envelope::seal(
        &mut r,
        &sender,
        &recipient.public(),
        &ss,
        Path::FirstContact,
        8,
        3600,
        SizeClass::Small,
        &payload,
        &mut buf,
    )
    .unwrap();
    let frame = MessageFrame::new_checked(&buf[..s.len]).unwrap();
    let mut scratch = [0u8; MAX_FRAME_LEN];
    assert_eq!(envelope::open(&bystander, &frame, None, &mut scratch).unwrap_err(), OpenError::NotForUs);
    g.bench_function("first_contact", |bench| {
        bench.iter(|| {
            let e = envelope::open(&bystander, black_box(&frame), None, &mut scratch);
            matches!(e, Err(OpenError::NotForUs))
        })
    });
    g.finish();
}

// ----- router ---------------------------------------------------------------

const A: LinkId = LinkId(1);
const B: LinkId = LinkId(2);

fn drain<const S: usize, const L: usize, const D: usize, const LINKS: usize, const Q: usize, const R: usize>(
    router: &mut Router<S, L, D, LINKS, Q, R>,
    buf: &mut [u8],
) -> usize {
    let mut n = 0;
    while let Some(t) = router.poll_transmit(T0, buf) {
        black_box(t);
        n += 1;
    }
    n
}

/// A router with links A and B up and validated (hellos exchanged by hand)
/// and no rate limit: the per-link token bucket counts *virtual* time,
/// which stands still here, so the default 5,000/s would cap the benchmark
/// at the burst size.
fn linked_router<const S: usize, const L: usize, const D: usize, const LINKS: usize, const Q: usize, const R: usize>(
    r: &mut StdRng,
) -> Box<Router<S, L, D, LINKS, Q, R>> {
    let config = Config { link_rate: u32::MAX, link_burst: u32::MAX, ..Config::DEFAULT };
    let mut router = Box::new(Router::new(config));
    let caps = LinkCaps { mtu: 1500, broadcast: false, max_class: SizeClass::Large };
    for link in [A, B] {
        assert!(router.handle_link_up(T0, r, link, caps));
    }
    let mut buf = [0u8; MAX_FRAME_LEN];
    let mut hellos = Vec::new();
    while let Some(t) = router.poll_transmit(T0, &mut buf) {
        let h = HelloRepr::parse(&buf[..t.len]).unwrap();
        hellos.push((t.link, h.nonce));
    }
    assert_eq!(hellos.len(), 2);
    for (link, ours) in hellos {
        let mut nonce = [0u8; 16];
        r.fill_bytes(&mut nonce);
        let n = HelloRepr { nonce, echo: ours }.emit(&mut buf).unwrap();
        let out = router.route_frame(T0, link, &buf[..n]).unwrap();
        assert!(matches!(out, Outcome::Control));
    }
    // The (empty) summaries each validated link sends.
    drain(&mut router, &mut buf);
    assert!(router.links().all(|l| l.validated));
    router
}

/// Forward `frames` (cycled, from `*i` on) from A to B, one per iteration.
///
/// The frames are distinct and far more numerous than the seen table, so
/// when one comes round again its id has long been forgotten and it is new.
/// After the first `S - own_quota` frames the store is full: from then on
/// every frame evicts the oldest relayed one, and the full seen table
/// evicts an entry too. That steady state (reached before measuring) is
/// what is measured.
fn bench_forward<const S: usize, const L: usize, const D: usize, const LINKS: usize, const Q: usize, const R: usize>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    router: &mut Router<S, L, D, LINKS, Q, R>,
    frames: &[[u8; 240]],
    i: &mut usize,
) {
    let mut buf = [0u8; MAX_FRAME_LEN];
    let before = router.stats();
    g.bench_function(name, |bench| {
        bench.iter(|| {
            *i += 1;
            if *i == frames.len() {
                *i = 0;
            }
            let new = matches!(router.route_frame(T0, A, black_box(&frames[*i])), Ok(Outcome::NewMessage { .. }));
            let out = drain(router, &mut buf);
            (new, out)
        })
    });
    let st = router.stats();
    let n = st.frames_in - before.frames_in;
    eprintln!(
        "{name} steady state: {n} frames in, {} out, {} duplicates, {} evictions; {} held, {} seen (capacity {D})",
        st.frames_out - before.frames_out,
        st.duplicates - before.duplicates,
        st.evictions - before.evictions,
        router.held(),
        router.seen_len()
    );
    assert_eq!(st.duplicates, before.duplicates, "forwarded frames must all be new");
    assert_eq!(st.frames_out - before.frames_out, n, "every new frame must go out once, on B");
}

/// Forward `frames[..n]` untimed, to fill store and seen table.
fn fill<const S: usize, const L: usize, const D: usize, const LINKS: usize, const Q: usize, const R: usize>(
    router: &mut Router<S, L, D, LINKS, Q, R>,
    frames: &[[u8; 240]],
) {
    let mut buf = [0u8; MAX_FRAME_LEN];
    let (last, rest) = frames.split_last().unwrap();
    for f in rest {
        assert!(matches!(router.route_frame(T0, A, f).unwrap(), Outcome::NewMessage { .. }));
        assert_eq!(drain(router, &mut buf), 1);
    }
    // Steady state: the store is full and the seen table no longer grows.
    assert_eq!(router.held(), S, "the store must be full");
    let seen = router.seen_len();
    assert!(matches!(router.route_frame(T0, A, last).unwrap(), Outcome::NewMessage { .. }));
    assert_eq!(drain(router, &mut buf), 1);
    assert_eq!(router.seen_len(), seen, "the seen table must be at its limit");
}

fn bench_router(c: &mut Criterion) {
    let mut r = rng(5);
    let frames: Vec<[u8; 240]> = (0..100_000).map(|_| random_frame(&mut r, Kind::Contact, 8)).collect();
    let mut g = c.benchmark_group("router");
    g.throughput(Throughput::Elements(1));

    // The host daemon's router, in its steady state: store and seen table full.
    let mut router: Box<HostRouter> = linked_router(&mut r);
    fill(&mut router, &frames[..20_000]);

    // Duplicate: a frame already seen (and still held) comes in again and
    // is dropped on its id, with the seen table full.
    let dup = frames[19_999];
    let before = router.stats();
    g.bench_function("duplicate", |bench| {
        bench.iter(|| matches!(router.route_frame(T0, A, black_box(&dup)), Ok(Outcome::Duplicate(_))))
    });
    let st = router.stats();
    assert_eq!(st.duplicates - before.duplicates, st.frames_in - before.frames_in, "all must be duplicates");

    let mut i = 20_000;
    bench_forward(&mut g, "forward", &mut router, &frames, &mut i);
    drop(router);

    // For comparison: the same on the dongle-sized router (`DongleRouter`,
    // a few dozen small slots and 256 seen entries), run on this host CPU.
    let mut dongle: Box<DongleRouter> = linked_router(&mut r);
    fill(&mut dongle, &frames[..1_000]);
    let mut i = 1_000;
    bench_forward(&mut g, "forward_dongle", &mut dongle, &frames, &mut i);
    g.finish();
}

/// The strangers' rate limiter (issue 12): the time of one verdict for a
/// text from a new stranger, after 1,000, 10,000 and 100,000 strangers were
/// seen. It must stay flat (a fixed table with two places per sender), where
/// the old limiter's `retain` over every stranger grew with them.
fn bench_policy(c: &mut Criterion) {
    use ferry_proto::endpoint::policy::Policy;
    let mut g = c.benchmark_group("policy");
    // Distinct keys: public keys of consecutive secrets.
    let keys: Vec<_> = (0u32..101_000)
        .map(|i| {
            let mut s = [7u8; 32];
            s[..4].copy_from_slice(&i.to_le_bytes());
            Identity::from_secret_bytes(s).public()
        })
        .collect();
    for seen in [1_000usize, 10_000, 100_000] {
        let mut p = Policy::new();
        // No cap on all strangers together: every text goes through the
        // per-sender table (the cap would refuse them before it, in O(1)).
        p.set_stranger_rate(5, u32::MAX);
        let mut now = Instant::from_millis(1);
        for k in &keys[..seen] {
            black_box(p.verdict(now, k, false));
        }
        let fresh = &keys[100_000..];
        let mut i = 0usize;
        g.bench_function(format!("stranger_after_{seen}"), |bench| {
            bench.iter(|| {
                i = (i + 1) % fresh.len();
                now = now.saturating_add(ferry_proto::Duration::from_millis(1));
                black_box(p.verdict(now, &fresh[i], false))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_x25519, bench_seal_open, bench_not_for_me, bench_router, bench_policy);

fn main() {
    // `--list` (test runners enumerating benchmarks) must print only the list.
    if !std::env::args().any(|a| a == "--list") {
        print_sizes();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
