//! Property tests of the wire format, link segmentation and the router's
//! store: round trips, exact re-emission, bounded memory, deduplication,
//! id integrity and receipt authentication.

use ferry_proto::Node;
use ferry_proto::hash;
use ferry_proto::node::{DeliveryState, Event};
use ferry_proto::router::{Config, FrameError, LinkCaps, LinkId, Outcome, Router, StoreOutcome};
use ferry_proto::segment::{self, PER_LINK, Reassembly, SegmentError};
use ferry_proto::time::Instant;
use ferry_proto::wire::{
    self, FINGERPRINT_LEN, Frame, HELLO_LEN, HelloRepr, Kind, MAX_FRAME_LEN, MAX_LIFETIME_SECS, MESSAGE_HEADER_LEN,
    MessageFrame, MessageId, RECEIPT_LEN, ReceiptRepr, SEGMENT_HEADER_LEN, SUMMARY_LEN, SUMMARY_MAX_FINGERPRINTS,
    SegmentRepr, SizeClass, SummaryRepr, WireError,
};
use proptest::collection::vec;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

/// The router the store tests drive: 8 small and 4 large slots, 32 seen
/// entries, 4 links, queues of 8, 2 reassembly slots.
type SmallRouter = Router<8, 4, 32, 4, 8, 2>;
const STORE_SLOTS: usize = 8 + 4;
const SEEN: usize = 32;

fn any_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Contact), Just(Kind::FirstContact)]
}

fn any_class() -> impl Strategy<Value = SizeClass> {
    prop_oneof![Just(SizeClass::Small), Just(SizeClass::Large)]
}

fn any_frame_len() -> impl Strategy<Value = usize> {
    prop_oneof![Just(HELLO_LEN), Just(SizeClass::Small.frame_len()), Just(SizeClass::Large.frame_len())]
}

/// A message frame with a correct id: header, `rng`-filled body, `fill_id`.
fn message(
    rng: &mut StdRng,
    kind: Kind,
    class: SizeClass,
    hops: u8,
    lifetime_secs: u32,
    commit: &[u8; wire::COMMIT_LEN],
) -> (MessageId, Vec<u8>) {
    let mut buf = vec![0u8; class.frame_len()];
    let mut m = MessageFrame::new_unchecked(&mut buf[..]);
    m.emit_header(kind, hops, lifetime_secs, commit);
    rng.fill_bytes(m.sealed_mut());
    let id = m.fill_id();
    (id, buf)
}

fn router_with_link(rng: &mut StdRng, links: &[u32]) -> Box<SmallRouter> {
    let mut r = Box::new(SmallRouter::new(Config::DEFAULT));
    for &l in links {
        let caps = LinkCaps { mtu: 1300, broadcast: false, max_class: SizeClass::Large };
        assert!(r.handle_link_up(Instant::ZERO, rng, LinkId(l), caps));
    }
    r
}

/// What the router made of one frame, without the borrow.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    New(MessageId, StoreOutcome),
    Duplicate(MessageId),
    Receipt(MessageId),
    Other,
    Err(FrameError),
}

fn feed(r: &mut SmallRouter, now: Instant, link: u32, bytes: &[u8]) -> Got {
    match r.route_frame(now, LinkId(link), bytes) {
        Ok(Outcome::NewMessage { id, stored, frame }) => {
            assert_eq!(frame, bytes, "a new message is handed out as received");
            Got::New(id, stored)
        }
        Ok(Outcome::Duplicate(id)) => Got::Duplicate(id),
        Ok(Outcome::Receipt(id)) => Got::Receipt(id),
        Ok(_) => Got::Other,
        Err(e) => Got::Err(e),
    }
}

fn receipt(id: MessageId, secret: [u8; wire::RECEIPT_SECRET_LEN]) -> [u8; RECEIPT_LEN] {
    let mut buf = [0u8; RECEIPT_LEN];
    ReceiptRepr { level: 5, lifetime_secs: 60, id, secret }.emit(&mut buf).expect("receipt fits");
    buf
}

// ----- fixed frames: parse/emit -------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn receipt_round_trip(
        level: u8,
        lifetime_secs in 0..=MAX_LIFETIME_SECS,
        id: [u8; 16],
        secret: [u8; 12],
    ) {
        let r = ReceiptRepr { level, lifetime_secs, id: MessageId(id), secret };
        let mut buf = [0u8; 64];
        prop_assert_eq!(r.emit(&mut buf), Ok(RECEIPT_LEN));
        let bytes = &buf[..RECEIPT_LEN];
        prop_assert_eq!(ReceiptRepr::parse(bytes), Ok(r));
        prop_assert!(matches!(Frame::parse(bytes), Ok(Frame::Receipt(x)) if x == r));
        prop_assert_eq!(ReceiptRepr::parse(&buf[..RECEIPT_LEN - 1]), Err(WireError::BadLength));
        prop_assert_eq!(ReceiptRepr::parse(&buf[..RECEIPT_LEN + 1]), Err(WireError::BadLength));
        prop_assert_eq!(r.emit(&mut [0u8; RECEIPT_LEN - 1]), Err(WireError::BadLength));
        prop_assert!(r.matches(&hash::receipt_commit(&secret)));
    }

    /// Any 33 bytes with the receipt's byte 0: parse succeeds exactly when
    /// the lifetime is in range, and emit then gives back the same bytes.
    #[test]
    fn receipt_bytes_re_emit(mut bytes in vec(any::<u8>(), RECEIPT_LEN)) {
        bytes[0] = Kind::Receipt.byte0();
        let lifetime = u32::from_be_bytes([0, bytes[2], bytes[3], bytes[4]]);
        match ReceiptRepr::parse(&bytes) {
            Ok(r) => {
                prop_assert!(lifetime <= MAX_LIFETIME_SECS);
                let mut out = [0u8; RECEIPT_LEN];
                prop_assert_eq!(r.emit(&mut out), Ok(RECEIPT_LEN));
                prop_assert_eq!(&out[..], &bytes[..]);
            }
            Err(e) => {
                prop_assert!(lifetime > MAX_LIFETIME_SECS);
                prop_assert_eq!(e, WireError::BadField);
            }
        }
    }

    #[test]
    fn hello_round_trip(nonce: [u8; 16], echo: [u8; 16]) {
        let h = HelloRepr { nonce, echo };
        let mut buf = [0u8; 64];
        prop_assert_eq!(h.emit(&mut buf), Ok(HELLO_LEN));
        prop_assert_eq!(buf[0], Kind::Hello.byte0());
        prop_assert_eq!(&buf[1..17], &nonce[..]);
        prop_assert_eq!(&buf[17..33], &echo[..]);
        prop_assert_eq!(HelloRepr::parse(&buf[..HELLO_LEN]), Ok(h));
        prop_assert!(matches!(Frame::parse(&buf[..HELLO_LEN]), Ok(Frame::Hello(x)) if x == h));
        prop_assert_eq!(HelloRepr::parse(&buf[..HELLO_LEN + 1]), Err(WireError::BadLength));
        // A hello is not a receipt, though both are 33 bytes.
        prop_assert!(ReceiptRepr::parse(&buf[..HELLO_LEN]).is_err());
    }

    #[test]
    fn summary_round_trip(
        seq: u8,
        last: bool,
        fps in vec(any::<[u8; FINGERPRINT_LEN]>(), 0..=SUMMARY_MAX_FINGERPRINTS),
        pad_at: prop::sample::Index,
        pad_byte in 1u8..,
    ) {
        let flat: Vec<u8> = fps.concat();
        let s = SummaryRepr { seq, last, fingerprints: &flat };
        let mut buf = [0xa5u8; SUMMARY_LEN];
        prop_assert_eq!(s.emit(&mut buf), Ok(SUMMARY_LEN));
        let end = 4 + flat.len();
        prop_assert_eq!(buf[0], Kind::Summary.byte0());
        prop_assert_eq!(usize::from(buf[3]), fps.len());
        prop_assert!(buf[end..].iter().all(|&b| b == 0), "padding is zero");
        let back = SummaryRepr::parse(&buf);
        prop_assert_eq!(back, Ok(s));
        let got: Vec<[u8; FINGERPRINT_LEN]> = back.expect("parsed").iter().collect();
        prop_assert_eq!(got, fps.clone());
        // Non-zero padding, stray flag bits and too large a count are refused.
        if end < SUMMARY_LEN {
            let mut bad = buf;
            bad[end + pad_at.index(SUMMARY_LEN - end)] = pad_byte;
            prop_assert_eq!(SummaryRepr::parse(&bad), Err(WireError::BadField));
        }
        let mut bad = buf;
        bad[2] |= 2;
        prop_assert_eq!(SummaryRepr::parse(&bad), Err(WireError::BadField));
        let mut bad = buf;
        bad[3] = SUMMARY_MAX_FINGERPRINTS as u8 + 1 + (pad_byte % 100);
        prop_assert_eq!(SummaryRepr::parse(&bad), Err(WireError::BadField));
        // Emit refuses what the format cannot carry.
        if !flat.is_empty() {
            let ragged = SummaryRepr { seq, last, fingerprints: &flat[1..] };
            prop_assert_eq!(ragged.emit(&mut buf), Err(WireError::BadField));
        }
        let too_many = vec![0u8; (SUMMARY_MAX_FINGERPRINTS + 1) * FINGERPRINT_LEN];
        let big = SummaryRepr { seq, last, fingerprints: &too_many };
        prop_assert_eq!(big.emit(&mut buf), Err(WireError::BadField));
    }

    #[test]
    fn segment_round_trip(
        frag: u8,
        count in 2u8..,
        index: prop::sample::Index,
        data in vec(any::<u8>(), 1..=MAX_FRAME_LEN - SEGMENT_HEADER_LEN),
    ) {
        let index = index.index(usize::from(count)) as u8;
        let s = SegmentRepr { frag, index, count, data: &data };
        let mut buf = [0u8; MAX_FRAME_LEN + 8];
        let n = s.emit(&mut buf);
        prop_assert_eq!(n, Ok(SEGMENT_HEADER_LEN + data.len()));
        let bytes = &buf[..SEGMENT_HEADER_LEN + data.len()];
        prop_assert_eq!(SegmentRepr::parse(bytes), Ok(s));
        prop_assert!(matches!(Frame::parse(bytes), Ok(Frame::Segment(x)) if x == s));
        // Out-of-range numbers and an empty body are refused.
        let mut bad = bytes.to_vec();
        bad[2] = count; // index == count
        prop_assert_eq!(SegmentRepr::parse(&bad), Err(WireError::BadField));
        bad[2] = 0;
        bad[3] = 1; // a single segment is not a segmented frame
        prop_assert_eq!(SegmentRepr::parse(&bad), Err(WireError::BadField));
        prop_assert_eq!(SegmentRepr::parse(&bytes[..SEGMENT_HEADER_LEN]), Err(WireError::BadLength));
        let mut long = bytes.to_vec();
        long.resize(MAX_FRAME_LEN + 1, 0);
        prop_assert_eq!(SegmentRepr::parse(&long), Err(WireError::BadLength));
    }

    /// emit_header/fill_id make a frame that new_checked and check_id
    /// accept; the relay-writable fields do not touch the id; any flipped
    /// bit in the id or the hashed contents is caught.
    #[test]
    fn message_header_setters(
        kind in any_kind(),
        class in any_class(),
        hops: u8,
        lifetime_secs: u32,
        commit: [u8; 12],
        seed: u64,
        new_hops: u8,
        new_lifetime in 0..=MAX_LIFETIME_SECS,
        flip: prop::sample::Index,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let (id, mut buf) = message(&mut rng, kind, class, hops, lifetime_secs, &commit);
        {
            let m = MessageFrame::new_checked(&buf[..]).expect("a fresh frame is valid");
            prop_assert_eq!(m.check_id(), Ok(id));
            prop_assert_eq!(m.id(), id);
            prop_assert_eq!(m.kind(), kind);
            prop_assert_eq!(m.class(), class);
            prop_assert_eq!(m.hops(), hops);
            prop_assert_eq!(m.lifetime_secs(), lifetime_secs.min(MAX_LIFETIME_SECS));
            prop_assert_eq!(m.commit(), commit);
            prop_assert_eq!(m.sealed().len(), class.frame_len() - MESSAGE_HEADER_LEN);
            prop_assert!(matches!(Frame::parse(&buf), Ok(Frame::Message(_))));
        }
        {
            let mut m = MessageFrame::new_checked(&mut buf[..]).expect("valid");
            m.set_hops(new_hops);
            m.set_lifetime_secs(new_lifetime);
            prop_assert_eq!(m.hops(), new_hops);
            prop_assert_eq!(m.lifetime_secs(), new_lifetime);
            prop_assert_eq!(m.check_id(), Ok(id), "hops and lifetime are not part of the id");
        }
        // A lifetime above 7 days (the field holds up to 2^24 - 1) is refused.
        let mut over = buf.clone();
        MessageFrame::new_unchecked(&mut over[..]).set_lifetime_secs(MAX_LIFETIME_SECS + 1 + (seed as u32 % 1000));
        prop_assert_eq!(MessageFrame::new_checked(&over[..]).err(), Some(WireError::BadField));
        // Wrong lengths are refused.
        prop_assert_eq!(MessageFrame::new_checked(&buf[..buf.len() - 1]).err(), Some(WireError::BadLength));
        // One flipped bit in the id, commitment or body: the id check fails.
        let bit = 5 * 8 + flip.index((buf.len() - 5) * 8);
        let mut bad = buf.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let m = MessageFrame::new_checked(&bad[..]).expect("still well formed");
        prop_assert_eq!(m.check_id(), Err(WireError::BadId));
        // Flipping the kind changes the id too.
        let mut other = buf.clone();
        other[0] = if kind == Kind::Contact { Kind::FirstContact.byte0() } else { Kind::Contact.byte0() };
        prop_assert_eq!(MessageFrame::new_checked(&other[..]).expect("valid").check_id(), Err(WireError::BadId));
    }
}

// ----- segmentation --------------------------------------------------------

fn segment_bytes(frame: &[u8], count: u8, unit: usize, frag: u8, index: u8) -> Vec<u8> {
    let code = segment::length_code(frame.len()).expect("a Ferry frame length");
    let r = segment::range(frame.len(), count, unit, index);
    let s = SegmentRepr { frag: (frag & 0x3f) | (code << 6), index, count, data: &frame[r] };
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    let n = s.emit(&mut buf).expect("segment fits");
    buf.truncate(n);
    buf
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A frame cut for any MTU reassembles exactly, whatever the order and
    /// with duplicates.
    #[test]
    fn segmentation_round_trip(
        total in any_frame_len(),
        mtu in 20usize..1300,
        frag in 0u8..64,
        seed: u64,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut frame = vec![0u8; total];
        rng.fill_bytes(&mut frame);
        let Some((count, unit)) = segment::plan(total, mtu) else {
            prop_assert!(total <= mtu, "a {total}-byte frame cannot be cut for MTU {mtu}");
            return Ok(());
        };
        prop_assert!(total > mtu);
        prop_assert!(count >= 2);
        // The pieces tile the frame, none is empty, each segment fits.
        let mut next = 0;
        let mut segs = Vec::new();
        for i in 0..count {
            let r = segment::range(total, count, unit, i);
            prop_assert_eq!(r.start, next);
            prop_assert!(!r.is_empty());
            next = r.end;
            let s = segment_bytes(&frame, count, unit, frag, i);
            prop_assert!(s.len() <= mtu, "segment of {} bytes for MTU {}", s.len(), mtu);
            segs.push(s);
        }
        prop_assert_eq!(next, total);
        // A random order, with duplicates of already-sent segments mixed in.
        let mut order: Vec<u8> = (0..count).collect();
        order.shuffle(&mut rng);
        let mut feed_order = Vec::new();
        for (j, &i) in order.iter().enumerate() {
            feed_order.push(i);
            if j + 1 < order.len() && rng.random_bool(0.3) {
                feed_order.push(order[rng.random_range(0..=j)]);
            }
        }
        let mut re = Reassembly::<4>::new();
        let link = LinkId(7);
        let now = Instant::from_millis(1000);
        for (k, &i) in feed_order.iter().enumerate() {
            let seg = SegmentRepr::parse(&segs[usize::from(i)]).expect("valid segment");
            let got = re.add(now, link, &seg);
            if k + 1 == feed_order.len() {
                prop_assert_eq!(got, Ok(Some(total)));
                prop_assert_eq!(re.frame(total), &frame[..]);
            } else {
                prop_assert_eq!(got, Ok(None));
                prop_assert_eq!(re.len(), 1);
            }
        }
        prop_assert_eq!(re.len(), 0, "a completed frame releases its slot");
    }

    /// A segment whose data length disagrees with the layout its frame
    /// length implies is refused, and takes no slot.
    #[test]
    fn inconsistent_segment_refused(
        total in any_frame_len(),
        count in 2u8..,
        index: prop::sample::Index,
        delta in prop_oneof![-64isize..0, 1isize..64],
        frag in 0u8..64,
    ) {
        let index = index.index(usize::from(count)) as u8;
        let unit = total.div_ceil(usize::from(count));
        let want = segment::range(total, count, unit, index);
        let len = (want.len() as isize + delta).clamp(1, (MAX_FRAME_LEN - SEGMENT_HEADER_LEN) as isize) as usize;
        prop_assume!(len != want.len() || want.is_empty());
        let data = vec![0x5a; len];
        let code = segment::length_code(total).expect("code");
        let seg = SegmentRepr { frag: frag | (code << 6), index, count, data: &data };
        let mut re = Reassembly::<2>::new();
        prop_assert_eq!(re.add(Instant::ZERO, LinkId(1), &seg), Err(SegmentError::Inconsistent));
        prop_assert_eq!(re.len(), 0);
        // Length code 3 names no frame length.
        let seg = SegmentRepr { frag: frag | (3 << 6), index, count, data: &data };
        prop_assert_eq!(re.add(Instant::ZERO, LinkId(1), &seg), Err(SegmentError::Wire(WireError::BadField)));
        prop_assert_eq!(re.len(), 0);
    }
}

/// Open partial frames (first of two segments of a 240-byte frame) from
/// links 0..3 and check the per-link quota after every step.
fn quota<const N: usize>(opens: &[(u8, u8)]) -> Result<(), TestCaseError> {
    let mut re = Reassembly::<N>::new();
    let code = segment::length_code(240).expect("code");
    let data = [0u8; 120];
    for (t, &(link, frag)) in opens.iter().enumerate() {
        let seg = SegmentRepr { frag: (frag & 0x3f) | (code << 6), index: 0, count: 2, data: &data };
        let got = re.add(Instant::from_millis(t as u64), LinkId(u32::from(link)), &seg);
        prop_assert!(matches!(got, Ok(None) | Err(SegmentError::NoSlot)), "{:?}", got);
        prop_assert!(re.len() <= N.min(3 * PER_LINK), "{} partial frames in {} slots", re.len(), N);
    }
    for link in 0..3 {
        let before = re.len();
        re.link_down(LinkId(link));
        prop_assert!(before - re.len() <= PER_LINK, "link {} held {} slots", link, before - re.len());
    }
    prop_assert_eq!(re.len(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn reassembly_per_link_quota(opens in vec((0u8..3, 0u8..64), 1..120)) {
        quota::<1>(&opens)?;
        quota::<2>(&opens)?;
        quota::<4>(&opens)?;
        quota::<6>(&opens)?;
        quota::<8>(&opens)?;
    }

    /// A link flooding partial frames never evicts another link's partial
    /// frame when there is a slot beyond its quota.
    #[test]
    fn flooding_link_cannot_evict_others(flood in vec(0u8..64, 0..100), seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut frame = vec![0u8; 240];
        rng.fill_bytes(&mut frame);
        let (count, unit) = segment::plan(240, 200).expect("cut");
        prop_assert_eq!(count, 2);
        let mut re = Reassembly::<{ PER_LINK + 1 }>::new();
        let first = segment_bytes(&frame, count, unit, 9, 0);
        let second = segment_bytes(&frame, count, unit, 9, 1);
        let victim = LinkId(1);
        prop_assert_eq!(re.add(Instant::ZERO, victim, &SegmentRepr::parse(&first).expect("seg")), Ok(None));
        let junk = [0u8; 120];
        for f in flood {
            let seg = SegmentRepr { frag: f | (1 << 6), index: 0, count: 2, data: &junk };
            let _ = re.add(Instant::from_millis(1), LinkId(2), &seg);
        }
        let done = re.add(Instant::from_millis(2), victim, &SegmentRepr::parse(&second).expect("seg"));
        prop_assert_eq!(done, Ok(Some(240)));
        prop_assert_eq!(re.frame(240), &frame[..]);
    }
}

// ----- the router's store --------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    /// Thousands of distinct valid messages from two links: the store and
    /// the seen table stay within their bounds, a repeat is a duplicate, and
    /// a frame with a flipped bit is never a new message.
    #[test]
    fn store_bounds(seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut r = router_with_link(&mut rng, &[1, 2]);
        let mut ids = Vec::new();
        let mut now = Instant::ZERO;
        for i in 0..3000u64 {
            now = Instant::from_millis(i);
            let link = 1 + (i as u32 & 1);
            // Mostly small frames (the cheap ones), some large.
            let class = if rng.random_ratio(1, 4) { SizeClass::Large } else { SizeClass::Small };
            let kind = if rng.random_bool(0.5) { Kind::Contact } else { Kind::FirstContact };
            let hops = rng.random_range(0..=12u8);
            let lifetime = rng.random_range(0..=MAX_LIFETIME_SECS);
            let commit: [u8; 12] = rng.random();
            let (id, frame) = message(&mut rng, kind, class, hops, lifetime, &commit);
            let got = feed(&mut r, now, link, &frame);
            let Got::New(got_id, stored) = got else {
                panic!("frame {i}: a fresh valid message was {got:?}");
            };
            prop_assert_eq!(got_id, id);
            let carried = hops > 0 && lifetime > 0;
            prop_assert_eq!(stored == StoreOutcome::NotCarried, !carried, "frame {}: {:?}", i, stored);
            if matches!(stored, StoreOutcome::Stored | StoreOutcome::Evicted(_)) {
                prop_assert!(r.holds(&id));
                prop_assert_eq!(r.message_bytes(&id), Some(&frame[..]));
            }
            if let StoreOutcome::Evicted(old) = stored {
                prop_assert!(!r.holds(&old), "evicted {:?} is still held", old);
            }
            prop_assert!(r.held() <= STORE_SLOTS, "held {}", r.held());
            prop_assert!(r.seen_len() <= SEEN, "seen {}", r.seen_len());
            prop_assert_eq!(r.check_invariants(), Ok(()));
            ids.push(id);

            // The same frame again, on either link: a duplicate.
            let again = feed(&mut r, now, 3 - link, &frame);
            prop_assert_eq!(again, Got::Duplicate(id));

            // One flipped bit in the id or the hashed contents.
            if i % 5 == 0 {
                let bit = rng.random_range(5 * 8..frame.len() * 8);
                let mut bad = frame.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                let held_before = r.held();
                let got = feed(&mut r, now, link, &bad);
                if bit / 8 < 21 {
                    // In the id: an unknown id that does not match.
                    prop_assert_eq!(got, Got::Err(FrameError::Wire(WireError::BadId)));
                } else {
                    // In the body of a known id: dropped as that id's duplicate.
                    prop_assert_eq!(got, Got::Duplicate(id));
                }
                prop_assert_eq!(r.held(), held_before);
                if r.holds(&id) {
                    prop_assert_eq!(r.message_bytes(&id), Some(&frame[..]), "the stored copy changed");
                }
            }
            // A message still held is still a duplicate.
            if i % 7 == 0
                && let Some(old) = ids.iter().rev().skip(1).take(40).find(|id| r.holds(id)).copied()
            {
                let bytes = r.message_bytes(&old).expect("held").to_vec();
                prop_assert_eq!(feed(&mut r, now, link, &bytes), Got::Duplicate(old));
            }
        }
        // The seen table and the store agree on what is held.
        let holding = ids.iter().filter(|id| r.holds(id)).count();
        prop_assert_eq!(holding, r.held());
        prop_assert!(r.held() > 0);
        prop_assert!(r.stats().evictions > 0);
        let _ = now;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Forged receipts never erase a held message; the right secret does,
    /// and the message is then never taken again.
    #[test]
    fn receipts_need_the_secret(
        secret: [u8; 12],
        forged in vec(any::<[u8; 12]>(), 1..24),
        class in any_class(),
        kind in any_kind(),
        hops in 1u8..=12,
        seed: u64,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut r = router_with_link(&mut rng, &[1]);
        let commit = hash::receipt_commit(&secret);
        let (id, frame) = message(&mut rng, kind, class, hops, 3600, &commit);
        let now = Instant::from_millis(10);
        prop_assert_eq!(feed(&mut r, now, 1, &frame), Got::New(id, StoreOutcome::Stored));
        prop_assert!(r.holds(&id));
        for f in forged.iter().filter(|f| **f != secret) {
            let got = feed(&mut r, now, 1, &receipt(id, *f));
            prop_assert_eq!(got, Got::Err(FrameError::UnverifiedReceipt));
            prop_assert!(r.holds(&id), "a forged receipt erased the message");
            prop_assert_eq!(r.check_invariants(), Ok(()));
            prop_assert_eq!(r.message_bytes(&id), Some(&frame[..]));
        }
        // The right secret for an id nobody has: refused.
        let mut other = id;
        other.0[0] ^= 1;
        prop_assert_eq!(feed(&mut r, now, 1, &receipt(other, secret)), Got::Err(FrameError::UnverifiedReceipt));
        prop_assert!(r.holds(&id));
        // The right secret: erased, and a tombstone keeps it out.
        prop_assert_eq!(feed(&mut r, now, 1, &receipt(id, secret)), Got::Receipt(id));
        prop_assert!(!r.holds(&id));
        prop_assert_eq!(r.message_bytes(&id), None);
        prop_assert_eq!(r.held(), 0);
        prop_assert_eq!(r.check_invariants(), Ok(()));
        prop_assert_eq!(feed(&mut r, now, 1, &frame), Got::Duplicate(id));
        prop_assert!(!r.holds(&id));

        // The same for an own message, which also reports Delivered.
        let secret2: [u8; 12] = rng.random();
        let (id2, frame2) = message(&mut rng, kind, class, hops, 3600, &hash::receipt_commit(&secret2));
        prop_assert_eq!(r.submit(now, &frame2), Ok(id2));
        for f in forged.iter().filter(|f| **f != secret2) {
            prop_assert_eq!(feed(&mut r, now, 1, &receipt(id2, *f)), Got::Err(FrameError::UnverifiedReceipt));
            prop_assert!(r.holds(&id2));
        }
        let delivered = Event::Status { id: id2, state: DeliveryState::Delivered };
        prop_assert!(std::iter::from_fn(|| r.poll_event()).all(|e| e != delivered), "delivered before its receipt");
        prop_assert_eq!(feed(&mut r, now, 1, &receipt(id2, secret2)), Got::Receipt(id2));
        prop_assert!(!r.holds(&id2));
        prop_assert!(std::iter::from_fn(|| r.poll_event()).any(|e| e == delivered), "not delivered after its receipt");
    }
}

/// One neighbour that keeps opening partial frames cannot keep every
/// reassembly slot busy, even when there are no more slots than the
/// per-link quota (the dongle's case).
#[test]
fn one_link_cannot_hold_every_reassembly_slot() {
    use ferry_proto::router::LinkId;
    use ferry_proto::segment::{self, Reassembly};
    use ferry_proto::wire::SegmentRepr;
    let mut r: Reassembly<2> = Reassembly::new();
    let now = ferry_proto::Instant::from_millis(0);
    let frame = [7u8; 240];
    let (count, unit) = segment::plan(240, 20).unwrap();
    let code = segment::length_code(240).unwrap();
    let seg = |frag: u8, i: u8| SegmentRepr {
        frag: frag | (code << 6),
        index: i,
        count,
        data: &frame[segment::range(240, count, unit, i)],
    };
    // The attacker opens two partial frames: both slots.
    r.add(now, LinkId(1), &seg(1, 0)).unwrap();
    r.add(now, LinkId(1), &seg(2, 0)).unwrap();
    // An honest link still gets its whole frame through.
    let mut done = None;
    for i in 0..count {
        if let Some(len) = r.add(now, LinkId(2), &seg(9, i)).unwrap() {
            done = Some(r.frame(len).to_vec());
        }
    }
    assert_eq!(done.as_deref(), Some(&frame[..]));
}
