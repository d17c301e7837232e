//! Everything a `POST` with `application/sdp` reaches before ICE: the offer check, and the
//! attribute lookups of the answer path.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(sdp) = std::str::from_utf8(data) else { return };
    let _ = voxrelay_signaling::sdp::inspect_offer(sdp);
    let _ = voxrelay_signaling::sdpfrag::sdp_attribute(sdp, "ice-ufrag");
});
