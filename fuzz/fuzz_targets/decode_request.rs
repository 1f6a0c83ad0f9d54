//! Arbitrary bytes as the body of every action route: decoding never panics, and whatever it
//! accepts is an action of the route's kind.
#![no_main]

use hark_core::protocol::ActionKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, &[u8])| {
    let (which, body) = input;
    let kind = ActionKind::ALL[which as usize % ActionKind::ALL.len()];
    if let Ok(action) = hark_server::decode_action_request(kind.as_str(), body) {
        assert_eq!(action.kind(), kind);
    }
    let _ = hark_server::decode_action_request(&String::from_utf8_lossy(body), b"{}");
});
