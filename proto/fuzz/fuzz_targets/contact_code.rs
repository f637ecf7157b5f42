//! `code::decode` on arbitrary text: never panics, and what it accepts is
//! exactly what `encode` writes (up to case and surrounding whitespace).
#![no_main]

use ferry_proto::code;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(key) = code::decode(s) {
            assert!(code::check_public_key(&key).is_ok(), "decode returned an unusable key");
            let canonical = s.trim_ascii().to_ascii_lowercase();
            assert_eq!(code::encode(&key).as_str(), canonical, "decode accepted a non-canonical code");
        }
        // Display of any error never panics.
        if let Err(e) = code::decode(s) {
            let _ = e.to_string();
        }
    }
    // Any 32 bytes: encode always gives CODE_LEN characters, and decode
    // takes it back exactly when the key is acceptable (also in upper case).
    if let Some(bytes) = data.get(..32) {
        let key: [u8; 32] = bytes.try_into().expect("32 bytes");
        let c = code::encode(&key);
        assert_eq!(c.len(), code::CODE_LEN);
        let ok = code::check_public_key(&key).is_ok();
        if ok {
            assert_eq!(code::decode(&c), Ok(key));
        } else {
            assert!(code::decode(&c).is_err(), "decode accepted an unusable key");
        }
        assert_eq!(code::decode(&c.to_ascii_uppercase()).is_ok(), ok);
    }
});
