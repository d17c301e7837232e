//! `voxrelay token --room R --identity I [--ttl 1h] [--no-publish]`: mints a room token with
//! the server's API key (the key file in the data directory, or `--api-key`), offline, the same
//! way `POST /v1/rooms/<room>/tokens` does.

use std::path::PathBuf;

use anyhow::{Context, bail};
use voxrelay_signaling::auth::unix_now;
use voxrelay_signaling::room_token::{MAX_TTL_S, RoomClaims, RoomGrant, RoomTokens};
use voxrelay_signaling::{ParticipantId, RoomName};

#[derive(clap::Args, Clone, Debug)]
pub struct TokenArgs {
    /// The room the token is for.
    #[arg(long)]
    pub room: String,
    /// The participant's identity.
    #[arg(long)]
    pub identity: String,
    /// Display name (default: the identity).
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime, e.g. 3600, 90s, 30m, 1h (at most 24h).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: u64,
    /// Listen only: the participant's audio is never forwarded.
    #[arg(long)]
    pub no_publish: bool,
    /// Send only: no slots.
    #[arg(long)]
    pub no_subscribe: bool,
    /// No `data.send`.
    #[arg(long)]
    pub no_publish_data: bool,
    /// May remove and mute others.
    #[arg(long)]
    pub admin: bool,
    /// The server's API key. Default: the key file in the data directory.
    #[arg(long, env = "VOXRELAY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The server's data directory (where its key file is).
    #[arg(long, env = "VOXRELAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Seconds as "3600", "90s", "30m" or "1h".
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last() {
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 's')) => (&s[..i], 1),
        _ => (s, 1),
    };
    let secs = num.trim().parse::<u64>().map_err(|_| format!("expected a duration like 3600, 90s, 30m or 1h, got {s:?}"))? * mul;
    if secs == 0 || secs > MAX_TTL_S {
        return Err(format!("a token lives 1 s to {} h", MAX_TTL_S / 3600));
    }
    Ok(secs)
}

/// The server's API key: `--api-key`, else the key file the server wrote in its data directory.
pub fn api_key(given: Option<&str>, data_dir: Option<PathBuf>) -> anyhow::Result<String> {
    if let Some(k) = given.map(str::trim).filter(|k| !k.is_empty()) {
        return Ok(k.to_string());
    }
    let mut cfg = crate::config::ServeConfig::defaults();
    cfg.data_dir = data_dir;
    let path = cfg.data_dir().join(crate::api_key::KEY_FILE);
    let key = std::fs::read_to_string(&path)
        .with_context(|| format!("no API key: pass --api-key, or start the server once so it writes {}", path.display()))?;
    let key = key.trim().to_string();
    if key.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(key)
}

/// The signed token.
pub fn mint(args: &TokenArgs) -> anyhow::Result<String> {
    let key = api_key(args.api_key.as_deref(), args.data_dir.clone())?;
    let room = RoomName::parse(&args.room).map_err(|e| anyhow::anyhow!("--room: {}", e.message))?;
    let identity = ParticipantId::parse(&args.identity).map_err(|e| anyhow::anyhow!("--identity: {}", e.message))?;
    let name = args.name.clone().unwrap_or_else(|| identity.to_string());
    let grant = RoomGrant {
        publish: !args.no_publish,
        subscribe: !args.no_subscribe,
        publish_data: !args.no_publish_data,
        admin: args.admin,
        ..RoomGrant::default_for(room)
    };
    let claims = RoomClaims::new(identity, name, grant, unix_now(), args.ttl);
    RoomTokens::new(&key).mint(&claims).map_err(|e| anyhow::anyhow!("{}", e.message))
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttls_read_like_durations() {
        assert_eq!(parse_ttl("3600"), Ok(3600));
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("30m"), Ok(1800));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("25h").is_err());
        assert!(parse_ttl("soon").is_err());
    }
}
