//! `envelope::parse_payload` on arbitrary plaintext: never panics, and what
//! it accepts re-serializes to something that parses to the same value.
#![no_main]

use ferry_proto::envelope::{self, Body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = envelope::parse_payload(data) else { return };
    let (Body::Part { text, .. } | Body::Text(text)) = p.body;
    assert!(text.len() < data.len());
    let mut buf = vec![0u8; data.len()];
    let used = postcard::to_slice(&p, &mut buf).expect("a parsed payload fits where it came from").len();
    assert!(used <= data.len());
    // Zero padding after the payload is what parse_payload expects.
    assert_eq!(envelope::parse_payload(&buf), Ok(p));
    // Anything non-zero after it is refused.
    if used < buf.len() {
        let last = buf.len() - 1;
        buf[last] = 1;
        assert!(envelope::parse_payload(&buf).is_err());
    }
});
