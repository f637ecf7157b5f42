//! Conformance (issue 12): SPEC §4.3's payload encoding, as a second
//! implementation would write it from the SPEC text alone. The hand-written
//! encoder and decoder below use neither postcard nor `envelope::Payload`;
//! the tests check them against the code:
//!
//! * the §9 payload bytes (and the worked example of §4.3) decode to what §9
//!   says, and the §9 frames open to exactly those bytes and zero padding of
//!   the stated plaintext size;
//! * for random payloads, what `envelope::seal` puts in a frame (read back
//!   with `envelope::open`) is the hand encoding followed by zeros;
//! * the hand decoder accepts exactly the plaintexts `envelope::parse_payload`
//!   accepts (the decoding the endpoint applies to every opened plaintext),
//!   with the same values: edge cases by name, then random mutations;
//! * the endpoint drops the parts SPEC §4.3 says it drops, and makes the
//!   text of the others.
//!
//! Plaintexts that no `Payload` can produce (an overlong varint, bad UTF-8,
//! non-zero padding) cannot be sealed through the public API, so those cases
//! are checked against `envelope::parse_payload` directly.

mod common;
use common::vector;
use ferry_proto::envelope::{self, Body, Identity, Path, Payload};
use ferry_proto::testing::Net;
use ferry_proto::time::Duration;
use ferry_proto::wire::{Kind, MessageFrame, SizeClass};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

// ----- SPEC §4.3, by hand -------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum HandBody {
    Text(String),
    Part { group: u32, index: u8, count: u8, text: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct HandPayload {
    sent_at: u64,
    body: HandBody,
}

/// Unsigned LEB128, shortest form: 7 bits a byte, low group first, 0x80 on
/// every byte but the last.
fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v & 0x7f) as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(s: &str, out: &mut Vec<u8>) {
    put_varint(s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

/// The payload, unpadded.
fn hand_encode(p: &HandPayload) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(p.sent_at, &mut out);
    match &p.body {
        HandBody::Text(t) => {
            put_varint(0, &mut out);
            put_str(t, &mut out);
        }
        HandBody::Part { group, index, count, text } => {
            put_varint(1, &mut out);
            put_varint(u64::from(*group), &mut out);
            out.push(*index);
            out.push(*count);
            put_str(text, &mut out);
        }
    }
    out
}

/// A varint of at most `max` bytes; if it takes all `max`, the last byte is
/// at most `last_max` (no bits beyond the type). Longer forms than needed
/// are accepted (SPEC §4.3).
fn take_varint(b: &[u8], at: &mut usize, max: usize, last_max: u8) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..max {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (i + 1 < max || byte <= last_max).then_some(v);
        }
    }
    None
}

fn take_u64(b: &[u8], at: &mut usize) -> Option<u64> {
    take_varint(b, at, 10, 0x01)
}

fn take_u32(b: &[u8], at: &mut usize) -> Option<u32> {
    take_varint(b, at, 5, 0x0f).map(|v| v as u32)
}

fn take_byte(b: &[u8], at: &mut usize) -> Option<u8> {
    let byte = *b.get(*at)?;
    *at += 1;
    Some(byte)
}

/// Length (a u64 varint), then that many bytes of well-formed UTF-8.
fn take_str(b: &[u8], at: &mut usize) -> Option<String> {
    let len = usize::try_from(take_u64(b, at)?).ok()?;
    let end = at.checked_add(len).filter(|&e| e <= b.len())?;
    let s = std::str::from_utf8(&b[*at..end]).ok()?;
    *at = end;
    Some(s.to_owned())
}

/// A whole plaintext: the payload, then only zero bytes.
fn hand_decode(b: &[u8]) -> Option<HandPayload> {
    let mut at = 0;
    let sent_at = take_u64(b, &mut at)?;
    let body = match take_u32(b, &mut at)? {
        0 => HandBody::Text(take_str(b, &mut at)?),
        1 => {
            let group = take_u32(b, &mut at)?;
            let index = take_byte(b, &mut at)?;
            let count = take_byte(b, &mut at)?;
            HandBody::Part { group, index, count, text: take_str(b, &mut at)? }
        }
        _ => return None,
    };
    b[at..].iter().all(|&z| z == 0).then_some(HandPayload { sent_at, body })
}

/// What the endpoint does with a part once it decoded (SPEC §4.3).
fn part_is_valid(index: u8, count: u8) -> bool {
    (2..=4).contains(&count) && index < count
}

// ----- the code's side ------------------------------------------------------

fn from_real(p: &Payload<'_>) -> HandPayload {
    let body = match p.body {
        Body::Text(t) => HandBody::Text(t.to_owned()),
        Body::Part { group, index, count, text } => HandBody::Part { group, index, count, text: text.to_owned() },
    };
    HandPayload { sent_at: p.sent_at, body }
}

fn with_real<T>(p: &HandPayload, f: impl FnOnce(&Payload<'_>) -> T) -> T {
    let body = match &p.body {
        HandBody::Text(t) => Body::Text(t),
        HandBody::Part { group, index, count, text } => {
            Body::Part { group: *group, index: *index, count: *count, text }
        }
    };
    f(&Payload { sent_at: p.sent_at, body })
}

fn real_decode(b: &[u8]) -> Option<HandPayload> {
    envelope::parse_payload(b).ok().map(|p| from_real(&p))
}

fn alice() -> Identity {
    Identity::from_secret_bytes([0x11; 32])
}

fn bob() -> Identity {
    Identity::from_secret_bytes([0x22; 32])
}

/// `p` sealed by Alice for Bob and opened by Bob: the plaintext, padding
/// included.
fn sealed_plaintext(rng: &mut StdRng, p: &HandPayload, path: Path, class: SizeClass) -> Vec<u8> {
    let (a, b) = (alice(), bob());
    let ss = a.static_static(&b.public()).unwrap();
    let mut buf = [0u8; 1200];
    let sealed = with_real(p, |real| {
        envelope::seal(rng, &a, &b.public(), &ss, path, 9, 3_600, class, real, &mut buf).expect("fits")
    });
    let m = MessageFrame::new_checked(&buf[..sealed.len]).unwrap();
    let pa = a.public();
    let sender = matches!(path, Path::Contact { .. }).then_some((&pa, &ss));
    let mut scratch = [0u8; 1200];
    let opened = envelope::open(&b, &m, sender, &mut scratch).unwrap();
    scratch[opened.plaintext].to_vec()
}

// ----- the SPEC's own bytes ---------------------------------------------------

fn pinned() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/ferry-v1.txt")).unwrap()
}

#[test]
fn the_section_9_payloads_decode_by_hand_and_are_what_the_frames_carry() {
    let v = pinned();
    let first = vector(&v, "first-contact message", "payload bytes");
    let tagged = vector(&v, "contact message", "payload bytes");
    let part = vector(&v, "payload of a part", "payload bytes");
    let want = [
        (&first, HandPayload { sent_at: 1_800_000_000, body: HandBody::Text("hello, bob".into()) }),
        (&tagged, HandPayload { sent_at: 1_800_000_060, body: HandBody::Text("tagged hello".into()) }),
        (
            &part,
            HandPayload {
                sent_at: 1_800_000_120,
                body: HandBody::Part { group: 0x0102_0304, index: 1, count: 3, text: "abc".into() },
            },
        ),
    ];
    for (bytes, p) in want {
        assert_eq!(hand_decode(bytes).as_ref(), Some(&p));
        assert_eq!(&hand_encode(&p), bytes);
        assert_eq!(real_decode(bytes).as_ref(), Some(&p));
    }
    // The frames open to those bytes, then zeros up to the plaintext size
    // of their path and class (§4.3: 110 first contact, 150 between
    // contacts, in a 240-byte frame).
    let (a, b) = (alice(), bob());
    let (pa, ss) = (a.public(), b.static_static(&a.public()).unwrap());
    for (section, payload, sender, size) in
        [("first-contact message", &first, None, 110), ("contact message", &tagged, Some((&pa, &ss)), 150)]
    {
        let frame = vector(&v, section, "frame");
        let m = MessageFrame::new_checked(&frame[..]).unwrap();
        let mut scratch = [0u8; 1200];
        let opened = envelope::open(&b, &m, sender, &mut scratch).unwrap();
        let plaintext = &scratch[opened.plaintext];
        assert_eq!(plaintext.len(), size, "{section}");
        assert_eq!(&plaintext[..payload.len()], &payload[..], "{section}");
        assert!(plaintext[payload.len()..].iter().all(|&z| z == 0), "{section}");
    }
}

/// The worked example of SPEC §4.3 (a table whose first column is the
/// bytes) is the first §9 payload.
#[test]
fn the_worked_example_in_section_4_3_is_the_vector() {
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/SPEC.md")).unwrap();
    let start = spec.find("Worked example").expect("a worked example in §4.3");
    let mut hexs = String::new();
    for line in spec[start..].lines().skip_while(|l| !l.starts_with("| `")).take_while(|l| l.starts_with('|')) {
        let cell = line.split('|').nth(1).unwrap().trim().trim_matches('`');
        hexs.extend(cell.split_whitespace());
    }
    assert_eq!(hex::decode(hexs).unwrap(), vector(&pinned(), "first-contact message", "payload bytes"));
}

// ----- edge cases -------------------------------------------------------------

/// Both decoders give the same answer, and it is `ok`.
fn agree(name: &str, bytes: &[u8], ok: bool) {
    let hand = hand_decode(bytes);
    assert_eq!(hand, real_decode(bytes), "{name}: {bytes:02x?}");
    assert_eq!(hand.is_some(), ok, "{name}: {bytes:02x?}");
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn edge_cases_decode_alike() {
    let t0: &[u8] = &[0x00, 0x00]; // Text, length 0
    // Varints: longer forms than needed are accepted, up to the type's
    // length; one byte more, or bits beyond the type, are refused.
    agree("smallest payload", &[0x00, 0x00, 0x00], true);
    agree("sent_at in two bytes for 0", &cat(&[&[0x80, 0x00], t0]), true);
    agree("sent_at in ten bytes for 0", &cat(&[&[0x80; 9], &[0x00], t0]), true);
    agree("sent_at in eleven bytes", &cat(&[&[0x80; 10], &[0x00], t0]), false);
    agree("sent_at u64::MAX", &cat(&[&[0xff; 9], &[0x01], t0]), true);
    agree("sent_at over u64", &cat(&[&[0xff; 9], &[0x02], t0]), false);
    agree("sent_at unterminated", &[0xff; 10], false);
    agree("variant in two bytes", &[0x00, 0x80, 0x00, 0x00], true);
    agree("variant in five bytes", &[0x00, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00], true);
    agree("variant in six bytes", &[0x00, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00], false);
    agree("variant over u32", &[0x00, 0x80, 0x80, 0x80, 0x80, 0x10, 0x00], false);
    agree("variant 2", &[0x00, 0x02, 0x00], false);
    agree("variant 1 + 2^32 (bits beyond u32)", &[0x00, 0x81, 0x80, 0x80, 0x80, 0x10, 0x00], false);
    let part = |group: &[u8], rest: &[u8]| cat(&[&[0x00, 0x01], group, rest]);
    agree("group u32::MAX", &part(&[0xff, 0xff, 0xff, 0xff, 0x0f], &[1, 3, 0]), true);
    agree("group over u32", &part(&[0xff, 0xff, 0xff, 0xff, 0x1f], &[1, 3, 0]), false);
    agree("group in six bytes", &part(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00], &[1, 3, 0]), false);
    agree("length in two bytes", &[0x00, 0x00, 0x80, 0x00], true);
    agree("length in ten bytes (64-bit hosts)", &cat(&[&[0x00, 0x00], &[0x80; 9], &[0x00]]), true);
    agree("length in eleven bytes", &cat(&[&[0x00, 0x00], &[0x80; 10], &[0x00]]), false);
    agree("length past the end", &[0x00, 0x00, 0x05, b'a', b'b'], false);
    agree("length 2^63", &cat(&[&[0x00, 0x00], &[0x80; 9], &[0x01]]), false);
    // Index and count are raw bytes: 0x80 is 128, not a varint.
    agree("index 0x80 raw", &part(&[0x00], &[0x80, 0x80, 0x00]), true);
    agree("truncated part", &part(&[0x00], &[0x01]), false);
    // Index >= count, count outside 2..=4: the decoding accepts them (the
    // endpoint refuses them, below).
    agree("index >= count", &part(&[0x07], &[3, 3, 0]), true);
    agree("count 0", &part(&[0x07], &[0, 0, 0]), true);
    // UTF-8: well-formed only.
    let text = |t: &[u8]| cat(&[&[0x00, 0x00, t.len() as u8], t]);
    agree("ascii", &text(b"hi"), true);
    agree("NUL inside a text", &text(&[b'a', 0, b'b']), true);
    agree("4-byte character", &text("\u{1f600}".as_bytes()), true);
    agree("stray continuation byte", &text(&[0x80]), false);
    agree("0xff", &text(&[0xff]), false);
    agree("overlong NUL", &text(&[0xc0, 0x80]), false);
    agree("surrogate U+D800", &text(&[0xed, 0xa0, 0x80]), false);
    agree("above U+10FFFF", &text(&[0xf4, 0x90, 0x80, 0x80]), false);
    agree("cut character", &text(&[0xe2, 0x82]), false);
    // Padding: zeros only, of any length.
    agree("zero padding", &cat(&[&text(b"hi"), &[0; 100]]), true);
    agree("non-zero padding", &cat(&[&text(b"hi"), &[0; 99], &[1]]), false);
    agree("non-zero byte right after", &cat(&[&text(b"hi"), &[0x80]]), false);
    agree("empty", &[], false);
    agree("only zeros, one short", &[0x00, 0x00], false);
}

/// SPEC §4.3: a part whose count is not 2 to 4, or whose index is not below
/// its count, decodes but is dropped; the others make the text.
#[test]
fn the_endpoint_drops_the_parts_the_spec_says() {
    let mut net = Net::new(7);
    let a = net.endpoint();
    let b = net.endpoint();
    net.connect(a, b);
    net.run_for(Duration::from_secs(2));
    let pb = net.pk(b);
    let me = Identity::from_secret_bytes(net.ep(a).identity().secret_bytes());
    let ss = me.static_static(&pb).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    // (group, count, parts in the order sent). Without the checks, count 0
    // and 1 would be whole at once, count 5 with four parts, and group 4
    // would read "abYX".
    type Case<'a> = (u32, u8, &'a [(u8, &'a str)]);
    let cases: [Case<'_>; 4] = [
        (1, 1, &[(0, "a")]),
        (2, 0, &[(0, "a")]),
        (3, 5, &[(0, "a"), (1, "b"), (2, "c"), (3, "d")]),
        (4, 2, &[(0, "a"), (2, "Y"), (3, "X"), (1, "b")]),
    ];
    for (group, count, parts) in cases {
        let before = net.received(b).len();
        for &(index, text) in parts {
            let p = Payload { sent_at: 1_800_000_000, body: Body::Part { group, index, count, text } };
            let mut buf = [0u8; 1200];
            let s =
                envelope::seal(&mut rng, &me, &pb, &ss, Path::FirstContact, 9, 3_600, SizeClass::Small, &p, &mut buf)
                    .unwrap();
            net.inject(b, a, &buf[..s.len]).unwrap();
            net.run_for(Duration::from_secs(1));
        }
        // What SPEC §4.3 says the recipient shows.
        let mut kept: Vec<(u8, &str)> = parts.iter().copied().filter(|&(i, _)| part_is_valid(i, count)).collect();
        kept.sort();
        let whole = !kept.is_empty() && kept.iter().map(|k| k.0).eq(0..count);
        let want: Vec<String> = whole.then(|| kept.iter().map(|k| k.1).collect()).into_iter().collect();
        let shown: Vec<String> = net.received(b)[before..].iter().map(|r| r.2.clone()).collect();
        assert_eq!(shown, want, "group {group}");
    }
    assert_eq!(net.received(b).last().map(|r| r.2.as_str()), Some("ab"));
}

// ----- random payloads ------------------------------------------------------

fn any_payload() -> impl Strategy<Value = HandPayload> {
    let sent_at = prop_oneof![any::<u64>(), 0u64..300, 1_700_000_000u64..1_900_000_000];
    let text = prop_oneof![".{0,40}", "[a-z]{100,300}"];
    let body = prop_oneof![
        text.clone().prop_map(HandBody::Text),
        (any::<u32>(), any::<u8>(), any::<u8>(), text).prop_map(|(group, index, count, text)| HandBody::Part {
            group,
            index,
            count,
            text
        }),
    ];
    (sent_at, body).prop_map(|(sent_at, body)| HandPayload { sent_at, body })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// What `seal` writes is the hand encoding, then zeros up to the
    /// plaintext size of the path and class.
    #[test]
    fn sealing_writes_the_hand_encoding(p in any_payload(), first in any::<bool>(), seed in any::<u64>()) {
        let enc = hand_encode(&p);
        let (path, kind) = if first {
            (Path::FirstContact, Kind::FirstContact)
        } else {
            (Path::Contact { tag: [7; 8] }, Kind::Contact)
        };
        let class = if enc.len() <= envelope::plaintext_capacity(kind, SizeClass::Small) {
            SizeClass::Small
        } else {
            SizeClass::Large
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let plaintext = sealed_plaintext(&mut rng, &p, path, class);
        prop_assert_eq!(plaintext.len(), envelope::plaintext_capacity(kind, class));
        prop_assert_eq!(&plaintext[..enc.len()], &enc[..]);
        prop_assert!(plaintext[enc.len()..].iter().all(|&z| z == 0));
        prop_assert_eq!(hand_decode(&plaintext), Some(p.clone()));
        prop_assert_eq!(real_decode(&plaintext), Some(p));
    }
}

/// One change to a good plaintext.
#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
    Append(Vec<u8>),
}

fn mutate(mut b: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        match m {
            Mutation::Set(i, v) if !b.is_empty() => {
                let n = b.len();
                b[i % n] = *v;
            }
            Mutation::Insert(i, v) => b.insert(i % (b.len() + 1), *v),
            Mutation::Remove(i) if !b.is_empty() => {
                let n = b.len();
                b.remove(i % n);
            }
            Mutation::Truncate(i) => b.truncate(i % (b.len() + 1)),
            Mutation::Append(tail) => b.extend_from_slice(tail),
            _ => {}
        }
    }
    b
}

fn any_mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![any::<u8>(), Just(0x00u8), Just(0x80), Just(0x7f), Just(0xff), Just(0x01), Just(0x0f)];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(i, v)| Mutation::Set(i, v)),
        (any::<usize>(), byte.clone()).prop_map(|(i, v)| Mutation::Insert(i, v)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
        prop::collection::vec(prop_oneof![3 => Just(0u8), 1 => any::<u8>()], 0..8).prop_map(Mutation::Append),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    /// The hand decoder accepts exactly what `parse_payload` accepts, with
    /// the same values.
    #[test]
    fn the_hand_decoder_accepts_what_the_code_accepts(
        p in any_payload(),
        pad in 0usize..4,
        ms in prop::collection::vec(any_mutation(), 0..4),
    ) {
        let mut b = hand_encode(&p);
        b.resize(b.len() + pad, 0);
        let b = mutate(b, &ms);
        prop_assert_eq!(hand_decode(&b), real_decode(&b), "{:02x?}", b);
    }
}
