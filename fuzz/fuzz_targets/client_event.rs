//! Realtime client events, every type in both naming schemes: the parser, the append fast path
//! (base64 audio), and a parsed `session.update` applied to a live session's settings.
#![no_main]
use libfuzzer_sys::fuzz_target;
use voxrelay_signaling::SessionConfig;
use voxrelay_signaling::events::{ClientEvent, parse_append, parse_client_event};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = parse_append(text);
    if let Ok(parsed) = parse_client_event(text)
        && let ClientEvent::SessionUpdate(update) = parsed.event
        && let Ok(next) = update.applied_to(&SessionConfig::default())
    {
        let _ = next.beta_json("sess_fuzz");
        let _ = next.ga_json("sess_fuzz");
    }
});
