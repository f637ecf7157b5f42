//! A serial link's receive path on arbitrary bytes: the deframer (with the
//! largest buffer and with a small one), the link-frame parser and a
//! [`Session`] that is fed whatever parses, with timers run between chunks.
//! Nothing panics; every link frame that parses re-emits to the same bytes;
//! any input of a link frame's length round-trips through the serial encoding; the
//! session's counts stay within its window.
#![no_main]

use ferry_fuzz::TestRng;
use ferry_proto::link::serial::{self, Deframer, MaxDeframer};
use ferry_proto::link::{CONTROL_LEN, HEADER_LEN, LinkFrame, MAX_LINK_FRAME, Session, SessionConfig};
use ferry_proto::time::Instant;
use libfuzzer_sys::fuzz_target;

const WINDOW: u16 = 3;

fuzz_target!(|data: &[u8]| {
    // Round trip: whatever fits is encoded and read back unchanged, and the
    // encoding has no zero byte inside.
    // (A link frame has at least its 2-byte header: shorter runs are refused
    // as `Short` by design.)
    if data.len() >= HEADER_LEN && data.len() <= MAX_LINK_FRAME {
        let mut wire = [0u8; serial::encoded_len(MAX_LINK_FRAME)];
        let n = serial::encode(data, &mut wire).expect("the buffer is sized for the largest frame");
        assert!(n <= serial::encoded_len(data.len()));
        assert!(wire[1..n - 1].iter().all(|&b| b != 0));
        let mut d = MaxDeframer::new();
        let mut input = &wire[..n];
        assert_eq!(d.feed(&mut input), Some(Ok(data)));
        assert_eq!(d.feed(&mut input), None);
    }

    let mut rng = TestRng::new(u64::from(data.first().copied().unwrap_or(0)));
    let mut now = Instant::from_millis(0);
    let mut session = Session::new(now, &mut rng, SessionConfig { mtu: 240, window: WINDOW });
    let mut big = MaxDeframer::new();
    let mut small = Deframer::<40>::new();
    let mut out = [0u8; MAX_LINK_FRAME];
    let mut held: u16 = 0;
    // A new session on either side starts the count again.
    let epoch = |s: &Session| (s.stats().peer_sessions, s.stats().restarts);
    let mut at = epoch(&session);
    // Chunks of 1 to 64 bytes, as a UART hands them over.
    let mut rest = data;
    while !rest.is_empty() {
        let take = usize::from(rest[0] % 64) + 1;
        let (chunk, tail) = rest.split_at(take.min(rest.len()));
        rest = tail;
        let mut input = chunk;
        while let Some(r) = big.feed(&mut input) {
            let Ok(bytes) = r else { continue };
            if let Ok(frame) = LinkFrame::parse(bytes) {
                let n = frame.emit(&mut out).expect("a parsed frame emits");
                assert_eq!(&out[..n], bytes);
                let delivered = session.handle(now, frame).is_some();
                if epoch(&session) != at {
                    at = epoch(&session);
                    held = 0;
                }
                if delivered {
                    held += 1;
                    assert!(held <= WINDOW, "the session let more frames in than it granted");
                }
            }
        }
        let mut input = chunk;
        while let Some(r) = small.feed(&mut input) {
            if let Ok(bytes) = r {
                assert!(bytes.len() <= 40);
                let _ = LinkFrame::parse(bytes);
            }
        }
        // The driver's turn: control frames, a send if allowed, releases, timers.
        let mut ctl = [0u8; CONTROL_LEN];
        while let Ok(Some(n)) = session.poll_transmit(&mut ctl) {
            assert!(LinkFrame::parse(&ctl[..n]).is_ok(), "the session emits only valid frames");
        }
        if session.may_send() {
            let _ = session.send_frame(now, &[0x23; 33], &mut out);
        }
        while session.poll_event().is_some() {}
        if chunk[0] & 1 == 1 {
            session.release(held);
            held = 0;
        }
        now = now.saturating_add(ferry_proto::time::Duration::from_millis(u64::from(chunk[0]) * 40));
        session.handle_timeout(now, &mut rng);
        if epoch(&session) != at {
            at = epoch(&session);
            held = 0;
        }
    }
    let s = session.stats();
    assert!(
        s.hellos_out <= s.hellos_in + 2 + s.restarts + now.millis() / 1000,
        "one answer per hello, plus a hello per session and its retries"
    );
});
