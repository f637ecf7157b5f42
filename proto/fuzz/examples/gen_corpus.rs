//! Writes the seed corpus: `cargo +nightly run --example gen_corpus` in
//! `proto/fuzz` (it overwrites `corpus/<target>/seed-*`).
//!
//! For the structured targets (`router_ops`, `endpoint_ops`) it encodes op
//! sequences in the byte layout `arbitrary` decodes, checks that they decode
//! back to the same ops, and runs them, so every seed is a meaningful
//! scenario (a validated link, a summary exchange, a delivered message...).

use std::fs;
use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};
use ferry_fuzz::{TestRng, endpoint_ops as ep, message_frame, router_ops as ro, segments};
use ferry_proto::Node;
use ferry_proto::envelope::{self, Body, Identity, Path as EnvPath, Payload};
use ferry_proto::wire::{HelloRepr, Kind, MessageId, ReceiptRepr, SizeClass, SummaryRepr};

/// The byte layout of `arbitrary` 1.x: integers little-endian, `bool` as
/// one byte, enum variants as a `u32` scaled onto the variant count, and
/// collections as elements each preceded by a `true` byte.
#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bool(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }
    /// Variant `i` of `n`: the smallest `u32` `x` with `(x * n) >> 32 == i`.
    fn tag(&mut self, i: u32, n: u32) {
        let x = ((u64::from(i) << 32).div_ceil(u64::from(n))) as u32;
        assert_eq!((u64::from(x) * u64::from(n)) >> 32, u64::from(i));
        self.u32(x);
    }
    fn vec(&mut self, items: &[u8]) {
        for &b in items {
            self.bool(true);
            self.u8(b);
        }
        self.bool(false);
    }
    fn opt_u16(&mut self, v: Option<u16>) {
        self.bool(v.is_some());
        if let Some(v) = v {
            self.u16(v);
        }
    }
}

fn router_spec(e: &mut Enc, s: &ro::MsgSpec) {
    e.bool(s.first_contact);
    e.bool(s.large);
    e.u8(s.hops);
    e.u16(s.lifetime_secs);
    e.u8(s.secret);
    e.u64(s.seed);
}

fn router_op(e: &mut Enc, op: &ro::Op) {
    use ro::Op::*;
    const N: u32 = 15;
    match op {
        LinkUp { link, mtu, broadcast, large } => {
            e.tag(0, N);
            e.u8(*link);
            e.u16(*mtu);
            e.bool(*broadcast);
            e.bool(*large);
        }
        LinkDown { link } => {
            e.tag(1, N);
            e.u8(*link);
        }
        Raw { link, bytes } => {
            e.tag(2, N);
            e.u8(*link);
            e.vec(bytes);
        }
        Hello { link, nonce, echo } => {
            e.tag(3, N);
            e.u8(*link);
            e.u8(*nonce);
            match echo {
                ro::Echo::Ours => e.tag(0, 3),
                ro::Echo::Zero => e.tag(1, 3),
                ro::Echo::Other(b) => {
                    e.tag(2, 3);
                    e.u8(*b);
                }
            }
        }
        Summary { link, seq, last, picks, junk } => {
            e.tag(4, N);
            e.u8(*link);
            e.u8(*seq);
            e.bool(*last);
            e.vec(picks);
            e.u8(*junk);
        }
        Message { link, spec, seg_mtu, order } => {
            e.tag(5, N);
            e.u8(*link);
            router_spec(e, spec);
            e.opt_u16(*seg_mtu);
            e.u64(*order);
        }
        Replay { link, pick, flip } => {
            e.tag(6, N);
            e.u8(*link);
            e.u8(*pick);
            e.opt_u16(*flip);
        }
        Receipt { link, pick, forge, level } => {
            e.tag(7, N);
            e.u8(*link);
            e.u8(*pick);
            e.bool(forge.is_some());
            if let Some(f) = forge {
                e.0.extend_from_slice(f);
            }
            e.u8(*level);
        }
        Advance { ms } => {
            e.tag(8, N);
            e.u16(*ms);
        }
        AdvanceSecs { secs } => {
            e.tag(9, N);
            e.u16(*secs);
        }
        Timeout => e.tag(10, N),
        Submit { spec } => {
            e.tag(11, N);
            router_spec(e, spec);
        }
        SubmitRaw { bytes } => {
            e.tag(12, N);
            e.vec(bytes);
        }
        EmitReceipt { pick, delay_ms, forge } => {
            e.tag(13, N);
            e.u8(*pick);
            e.u16(*delay_ms);
            e.bool(*forge);
        }
        PollAll => e.tag(14, N),
    }
}

fn dest(e: &mut Enc, d: &ep::Dest) {
    match d {
        ep::Dest::Peer => e.tag(0, 4),
        ep::Dest::Me => e.tag(1, 4),
        ep::Dest::Third => e.tag(2, 4),
        ep::Dest::Raw(k) => {
            e.tag(3, 4);
            e.0.extend_from_slice(k);
        }
    }
}

fn endpoint_op(e: &mut Enc, op: &ep::Op) {
    use ep::Op::*;
    const N: u32 = 13;
    match op {
        Wire { up, mtu, broadcast, large } => {
            e.tag(0, N);
            e.bool(*up);
            e.u16(*mtu);
            e.bool(*broadcast);
            e.bool(*large);
        }
        Side { b, up, mtu } => {
            e.tag(1, N);
            e.bool(*b);
            e.bool(*up);
            e.u16(*mtu);
        }
        Garbage { b, wire, bytes } => {
            e.tag(2, N);
            e.bool(*b);
            e.bool(*wire);
            e.vec(bytes);
        }
        Send { .. } => panic!("Send takes its text's length from the input's end: use SendLong in seeds"),
        SendLong { b, to, len, fill } => {
            e.tag(4, N);
            e.bool(*b);
            dest(e, to);
            e.u16(*len);
            e.u32(u32::from(*fill));
        }
        AddContact { b, who } => {
            e.tag(5, N);
            e.bool(*b);
            dest(e, who);
        }
        RemoveContact { b, who } => {
            e.tag(6, N);
            e.bool(*b);
            dest(e, who);
        }
        SetLifetime { b, secs } => {
            e.tag(7, N);
            e.bool(*b);
            e.u16(*secs);
        }
        Pump { loss, rounds } => {
            e.tag(8, N);
            e.u64(*loss);
            e.u8(*rounds);
        }
        Replay { b, pick, flip } => {
            e.tag(9, N);
            e.bool(*b);
            e.u8(*pick);
            e.opt_u16(*flip);
        }
        Advance { ms } => {
            e.tag(10, N);
            e.u16(*ms);
        }
        AdvanceSecs { secs } => {
            e.tag(11, N);
            e.u16(*secs);
        }
        Timeout => e.tag(12, N),
    }
}

fn encode<T>(seed: u64, ops: &[T], op: fn(&mut Enc, &T)) -> Vec<u8> {
    let mut e = Enc::default();
    e.u64(seed);
    for o in ops {
        e.bool(true);
        op(&mut e, o);
    }
    e.0
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    fs::create_dir_all(&d).expect("corpus dir");
    assert!(bytes.len() < 2048, "{target}/{name} is {} bytes", bytes.len());
    fs::write(d.join(format!("seed-{name}")), bytes).expect("write seed");
}

fn router_seeds(dir: &Path) {
    use ro::Op::*;
    let spec =
        |large, hops, secret, seed| ro::MsgSpec { first_contact: false, large, hops, lifetime_secs: 600, secret, seed };
    let up = |link, mtu: u16, broadcast| LinkUp { link, mtu: mtu - 20, broadcast, large: true };
    // A validated link: hellos both ways, summaries, a message each way, a
    // receipt that clears it, then expiry.
    let handshake = vec![
        up(0, 1300, false),
        PollAll,
        Hello { link: 0, nonce: 7, echo: ro::Echo::Ours },
        PollAll,
        Summary { link: 0, seq: 0, last: true, picks: vec![], junk: 2 },
        Submit { spec: spec(false, 9, 1, 11) },
        Message { link: 0, spec: spec(true, 5, 2, 22), seg_mtu: None, order: 0 },
        PollAll,
        Receipt { link: 0, pick: 0, forge: None, level: 3 },
        Receipt { link: 0, pick: 1, forge: Some([9; 12]), level: 3 },
        PollAll,
        AdvanceSecs { secs: 700 },
        Timeout,
    ];
    // Two links, one with a tiny MTU (segments both ways) and one broadcast.
    let segmented = vec![
        up(0, 20, false),
        up(1, 1300, true),
        PollAll,
        Hello { link: 0, nonce: 3, echo: ro::Echo::Ours },
        Message { link: 1, spec: spec(true, 8, 3, 33), seg_mtu: Some(100 - 20), order: 5 },
        Message { link: 0, spec: spec(false, 8, 4, 44), seg_mtu: Some(0), order: 6 },
        PollAll,
        Replay { link: 0, pick: 0, flip: Some(300) },
        Replay { link: 1, pick: 1, flip: None },
        Advance { ms: 6000 },
        Timeout,
    ];
    // A flood that fills the store and the seen table, from two links.
    let mut flood = vec![up(2, 1300, false), up(3, 600, false)];
    for i in 0..24u8 {
        flood.push(Message { link: 2 + (i & 1), spec: spec(i % 3 == 0, 8, i, u64::from(i)), seg_mtu: None, order: 0 });
    }
    flood.extend([Submit { spec: spec(false, 8, 0, 999) }, EmitReceipt { pick: 3, delay_ms: 10, forge: false }]);
    flood.extend([Advance { ms: 20 }, Timeout, PollAll, LinkDown { link: 2 }, PollAll]);
    // Garbage on links that are up and down.
    let garbage = vec![
        up(4, 64, false),
        Raw { link: 4, bytes: vec![0x26, 0x81, 0, 2, 1, 2, 3] },
        Raw { link: 5, bytes: vec![0x24; 33] },
        SubmitRaw { bytes: vec![0x21; 40] },
        PollAll,
    ];
    for (name, ops) in [("handshake", handshake), ("segmented", segmented), ("flood", flood), ("garbage", garbage)] {
        let bytes = encode(1, &ops, router_op);
        let decoded = ro::Input::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decodes");
        assert_eq!(decoded.ops, ops, "router_ops/{name} does not decode to its ops");
        let h = ro::run(decoded);
        let st = h.router.stats();
        println!("router_ops/{name}: {} bytes, {st:?}", bytes.len());
        write(dir, "router_ops", name, &bytes);
    }
}

fn endpoint_seeds(dir: &Path) {
    use ep::Op::*;
    let wire = |mtu: u16, broadcast| Wire { up: true, mtu: mtu - 20, broadcast, large: true };
    let text = |b, len| SendLong { b, to: ep::Dest::Peer, len, fill: 'f' };
    let settle = [Pump { loss: 0, rounds: 7 }, Advance { ms: 2500 }, Timeout, Pump { loss: 0, rounds: 7 }];
    // First contact, a reply on the tagged path, and receipts both ways.
    let mut chat = vec![wire(1300, false), Pump { loss: 0, rounds: 3 }, text(false, 12)];
    chat.extend(settle.clone());
    chat.extend([AddContact { b: true, who: ep::Dest::Peer }, text(true, 30)]);
    chat.extend(settle.clone());
    chat.extend([text(false, 5)]);
    chat.extend(settle.clone());
    // A long text in parts over a small-MTU link, with loss, then replays.
    let mut long = vec![wire(64, false), text(false, 1500)];
    long.extend([Pump { loss: 0x0101_0101, rounds: 7 }, Advance { ms: 3000 }, Timeout]);
    // The link drops and comes back: the summaries resend what was lost.
    long.extend([Wire { up: false, mtu: 0, broadcast: false, large: false }, Advance { ms: 1000 }, wire(64, false)]);
    long.extend(settle.clone());
    long.extend([Side { b: true, up: true, mtu: 1280 }, Replay { b: true, pick: 0x81, flip: None }]);
    long.extend([Replay { b: true, pick: 2, flip: Some(999) }]);
    // Broadcast link, short lifetimes, a send to someone absent, expiry.
    let mut expiry = vec![
        wire(300, true),
        SetLifetime { b: false, secs: 5 },
        SendLong { b: false, to: ep::Dest::Third, len: 3, fill: 'x' },
        text(false, 40),
    ];
    expiry.extend(settle.clone());
    expiry.extend([AdvanceSecs { secs: 30 }, Timeout, Garbage { b: false, wire: true, bytes: vec![0x22; 12] }]);
    for (name, ops) in [("chat", chat), ("long", long), ("expiry", expiry)] {
        let bytes = encode(2, &ops, endpoint_op);
        let decoded = ep::Input::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decodes");
        assert_eq!(decoded.ops, ops, "endpoint_ops/{name} does not decode to its ops");
        let h = ep::run(decoded);
        let shown: Vec<usize> = h.sides.iter().map(|s| s.shown.len()).collect();
        let states: Vec<Vec<_>> = h.sides.iter().map(|s| s.sent.values().map(|v| v.1).collect()).collect();
        println!("endpoint_ops/{name}: {} bytes, shown {shown:?}, sent states {states:?}", bytes.len());
        write(dir, "endpoint_ops", name, &bytes);
    }
}

fn wire_seeds(dir: &Path) {
    let mut buf = [0u8; 1200];
    let id = MessageId([0x42; 16]);
    let n = ReceiptRepr { level: 12, lifetime_secs: 3600, id, secret: [7; 12] }.emit(&mut buf).expect("receipt");
    write(dir, "wire_parse", "receipt", &buf[..n]);
    let n = HelloRepr { nonce: [1; 16], echo: [2; 16] }.emit(&mut buf).expect("hello");
    write(dir, "wire_parse", "hello", &buf[..n]);
    let fps = [0xab; 12];
    let n = SummaryRepr { seq: 1, last: true, fingerprints: &fps }.emit(&mut buf).expect("summary");
    write(dir, "wire_parse", "summary", &buf[..n]);
    let (_, small) = message_frame(Kind::Contact, SizeClass::Small, 9, 86_400, &[3; 12], 5);
    write(dir, "wire_parse", "message-small", &small);
    let segs = segments(&small, 100, 1).expect("a 240-byte frame is cut for MTU 100");
    write(dir, "wire_parse", "segment", &segs[1]);

    // A real sealed first-contact message (what the endpoint sends).
    let mut rng = TestRng::new(7);
    let alice = Identity::from_secret_bytes([0x11; 32]);
    let bob = Identity::from_secret_bytes([0x22; 32]).public();
    let ss = alice.static_static(&bob).expect("bob's key is fine");
    let payload = Payload { sent_at: 1_700_000_000, body: Body::Text("hello bob") };
    let sealed = envelope::seal(
        &mut rng,
        &alice,
        &bob,
        &ss,
        EnvPath::FirstContact,
        10,
        86_400,
        SizeClass::Small,
        &payload,
        &mut buf,
    )
    .expect("seal");
    write(dir, "wire_parse", "sealed-first-contact", &buf[..sealed.len]);

    // Payloads: a text and a part, each zero padded as inside a frame.
    for (name, p) in [
        ("text", payload),
        ("part", Payload { sent_at: 1, body: Body::Part { group: 77, index: 1, count: 3, text: "part two" } }),
    ] {
        let mut pbuf = [0u8; 64];
        let used = postcard::to_slice(&p, &mut pbuf).expect("fits").len();
        assert!(used < 48);
        write(dir, "payload", name, &pbuf[..48]);
    }

    // Contact codes: RFC 7748's Alice as written, in upper case with
    // whitespace, and with one typo.
    let code = ferry_proto::code::encode(&hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"));
    write(dir, "contact_code", "alice", code.as_bytes());
    write(dir, "contact_code", "alice-upper", format!("  {}\n", code.to_ascii_uppercase()).as_bytes());
    let mut typo = code.as_bytes().to_vec();
    typo[20] = if typo[20] == b'q' { b'p' } else { b'q' };
    write(dir, "contact_code", "typo", &typo);
}

fn hex32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex");
    }
    out
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    wire_seeds(&dir);
    router_seeds(&dir);
    endpoint_seeds(&dir);
}
