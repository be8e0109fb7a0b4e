//! A client's text frame, as any bytes: parsing never panics, and a parsed
//! message always publishes with the sender's client id.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = domain::Reply::rate_limited(text);
    if let Ok(message) = domain::ClientMessage::parse(text) {
        assert!(!message.action().is_empty());
        let sender = domain::ClientId::parse("fuzz").expect("a valid id");
        let event = message.into_event(&sender);
        let body: serde_json::Value =
            serde_json::from_str(&event.body).expect("the event body is JSON");
        assert_eq!(body["client_id"], "fuzz");
    }
});
