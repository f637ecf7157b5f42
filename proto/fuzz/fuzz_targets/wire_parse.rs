//! `Frame::parse` on arbitrary bytes: never panics; every parsed kind that
//! has `emit` round-trips, and fixed-layout kinds re-emit the input exactly.
#![no_main]

use std::fmt::Write as _;

use ferry_proto::wire::{
    self, Frame, HELLO_LEN, HelloRepr, MAX_FRAME_LEN, MessageFrame, PrettyPrinter, RECEIPT_LEN, ReceiptRepr,
    SUMMARY_LEN, SegmentRepr, SummaryRepr,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut text = String::new();
    write!(text, "{}", PrettyPrinter(data)).expect("formatting into a String cannot fail");
    assert!(!text.is_empty());

    let kind = wire::classify(data);
    let parsed = Frame::parse(data);
    if parsed.is_ok() {
        assert!(kind.is_ok(), "parsed a frame that does not classify");
    }
    // The per-kind parsers agree with Frame::parse.
    assert_eq!(ReceiptRepr::parse(data).is_ok(), matches!(parsed, Ok(Frame::Receipt(_))));
    assert_eq!(HelloRepr::parse(data).is_ok(), matches!(parsed, Ok(Frame::Hello(_))));
    assert_eq!(SummaryRepr::parse(data).is_ok(), matches!(parsed, Ok(Frame::Summary(_))));
    assert_eq!(SegmentRepr::parse(data).is_ok(), matches!(parsed, Ok(Frame::Segment(_))));
    assert_eq!(MessageFrame::new_checked(data).is_ok(), matches!(parsed, Ok(Frame::Message(_))));

    // Accessors of an unchecked view never panic, whatever the length.
    let u = MessageFrame::new_unchecked(data);
    let _ = (u.kind(), u.byte0(), u.class(), u.hops(), u.lifetime_secs(), u.id(), u.commit(), u.sealed());
    let _ = u.check_id();

    let mut buf = [0u8; MAX_FRAME_LEN];
    match parsed {
        Err(_) => {}
        Ok(Frame::Message(m)) => {
            let _ = (m.kind(), m.byte0(), m.class(), m.hops(), m.lifetime_secs(), m.commit(), m.sealed());
            assert_eq!(m.as_bytes(), data);
            assert_eq!(m.class().frame_len(), data.len());
            assert!(m.lifetime_secs() <= wire::MAX_LIFETIME_SECS);
            assert_eq!(m.sealed().len(), data.len() - wire::MESSAGE_HEADER_LEN);
            let checked = m.check_id();
            assert_eq!(checked.is_ok(), m.compute_id() == m.id());
            // A relay rewrites hops and lifetime: the id must not change.
            let mut copy = data.to_vec();
            let mut w = MessageFrame::new_checked(&mut copy[..]).expect("same bytes parse");
            w.set_hops(m.hops().wrapping_add(1));
            w.set_lifetime_secs(m.lifetime_secs() / 2);
            assert_eq!(w.check_id().is_ok(), checked.is_ok());
            assert_eq!(w.compute_id(), m.compute_id());
            // fill_id makes any frame's id valid.
            w.fill_id();
            assert_eq!(w.check_id(), Ok(m.compute_id()));
        }
        Ok(Frame::Receipt(r)) => {
            assert_eq!(r.emit(&mut buf), Ok(RECEIPT_LEN));
            assert_eq!(&buf[..RECEIPT_LEN], data, "receipt did not re-emit its input");
            assert_eq!(ReceiptRepr::parse(&buf[..RECEIPT_LEN]), Ok(r));
        }
        Ok(Frame::Hello(h)) => {
            assert_eq!(h.emit(&mut buf), Ok(HELLO_LEN));
            assert_eq!(&buf[..HELLO_LEN], data, "hello did not re-emit its input");
            assert_eq!(HelloRepr::parse(&buf[..HELLO_LEN]), Ok(h));
        }
        Ok(Frame::Summary(s)) => {
            buf.fill(0xa5); // emit must write the zero padding itself
            assert_eq!(s.emit(&mut buf), Ok(SUMMARY_LEN));
            assert_eq!(&buf[..SUMMARY_LEN], data, "summary did not re-emit its input");
            assert_eq!(SummaryRepr::parse(&buf[..SUMMARY_LEN]), Ok(s));
            assert_eq!(s.iter().count() * wire::FINGERPRINT_LEN, s.fingerprints.len());
        }
        Ok(Frame::Segment(s)) => {
            assert_eq!(s.emit(&mut buf), Ok(data.len()));
            assert_eq!(&buf[..data.len()], data, "segment did not re-emit its input");
            assert_eq!(SegmentRepr::parse(&buf[..data.len()]), Ok(s));
        }
    }
});
