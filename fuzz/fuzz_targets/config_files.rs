//! The operator's files: `voxrelay.toml` and `turn.conf` (the first byte picks which).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    if which % 2 == 0 {
        let _ = voxrelay::config::ConfigFile::parse(text);
    } else {
        let _ = voxrelay::relay::config::RelayConfig::parse("turn.conf", text);
    }
});
