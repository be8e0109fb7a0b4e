//! An SQS message body, as any bytes: decoding never panics, and a decoded
//! Command is always a JSON object naming a valid client id.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(decoded) = domain::decode_sqs_body(body) {
        let value: serde_json::Value =
            serde_json::from_str(&decoded.json).expect("a decoded Command is JSON");
        assert!(value.is_object());
        assert_eq!(value["client_id"].as_str(), Some(decoded.client_id.as_str()));
    }
});
