//! Twilio Media Streams messages as a carrier (or anyone reaching the socket) sends them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = voxrelay::transport::phone::twilio::parse(text);
});
