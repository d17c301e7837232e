//! Room tokens (JWT HS256) as a client may send them: decoded and verified, never trusted.
#![no_main]
use libfuzzer_sys::fuzz_target;
use voxrelay_signaling::room_token::RoomTokens;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let tokens = RoomTokens::new("sk_fuzz");
    let _ = tokens.verify(token, 1_800_000_000);
});
