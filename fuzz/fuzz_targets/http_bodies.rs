//! HTTP bodies parsed by hand: the SDKs' multipart form (boundary from the content type, then
//! the fields) and trickle-ICE SDP fragments (WHIP/WHEP and call `PATCH`). The first byte picks
//! which.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    if which % 2 == 0 {
        // content-type line, newline, body
        let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let Ok(content_type) = std::str::from_utf8(&rest[..split]) else { return };
        if let Some(boundary) = voxrelay_signaling::multipart::boundary(content_type) {
            let _ = voxrelay_signaling::multipart::fields(rest.get(split + 1..).unwrap_or_default(), &boundary);
        }
    } else if let Ok(text) = std::str::from_utf8(rest) {
        if let Ok(fragment) = voxrelay_signaling::sdpfrag::IceFragment::parse(text) {
            let _ = fragment.to_text();
        }
    }
});
