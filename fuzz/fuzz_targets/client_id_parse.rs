//! A client id, as any bytes: parsing never panics and accepts exactly the
//! ids of 1..=256 bytes without control characters.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let valid = !raw.is_empty() && raw.len() <= 256 && !raw.chars().any(char::is_control);
    assert_eq!(domain::ClientId::parse(raw).is_ok(), valid, "{raw:?}");
});
