//! The server API key: configured, or generated once and kept in the data directory (mode
//! 0600) so restarts, the CLI and the README's examples all use the same key.

use std::io::Write;
use std::path::Path;

use voxrelay_signaling::auth::random_id;

pub const KEY_FILE: &str = "api_key";

/// Returns the key and whether it was generated just now (then it is printed once).
pub fn load_or_create(configured: Option<&str>, data_dir: &Path) -> std::io::Result<(String, bool)> {
    if let Some(k) = configured.filter(|k| !k.trim().is_empty()) {
        return Ok((k.trim().to_string(), false));
    }
    let path = data_dir.join(KEY_FILE);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let key = existing.trim().to_string();
        if !key.is_empty() {
            return Ok((key, false));
        }
    }
    std::fs::create_dir_all(data_dir)?;
    let key = format!("vr_{}{}", random_id(""), random_id(""));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&path)?;
    writeln!(f, "{key}")?;
    Ok((key, true))
}
