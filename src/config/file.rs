//! `voxrelay.toml`: every `serve` flag as a top-level key (the flag's name with `_` for `-`),
//! plus the `[providers.*]` sections. The file sits under flags and environment variables:
//! flag > env > file > default, so an operator can keep one file and still override a value
//! for one run. Unknown keys are errors: a typo must not silently leave a default in place.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use super::{LogFormat, ServeConfig, VadChoice, parse_port_range};
use crate::agent::ProvidersFile;

/// The file as written. Every field is optional: absent means "flag, env or default decides".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub listen: Option<SocketAddr>,
    pub api_key: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub rtc_ip: Option<IpAddr>,
    /// "LOW-HIGH", as the flag.
    pub rtc_ports: Option<String>,
    pub rtc_tcp: Option<bool>,
    pub rtc_loop: Option<bool>,
    pub rtp_ingest: Option<bool>,
    pub rtp_ingest_ip: Option<IpAddr>,
    pub rooms_auto_create: Option<bool>,
    pub vad: Option<VadChoice>,
    pub audio_workers: Option<usize>,
    pub max_calls: Option<usize>,
    /// Seconds: a number, or a string as the flag takes it ("30s", "2m").
    #[serde(default, deserialize_with = "seconds")]
    pub drain_grace: Option<u64>,
    pub web_session: Option<bool>,
    pub rate_limit_per_ip: Option<u32>,
    pub rate_limit_per_credential: Option<u32>,
    pub rate_limit_loopback: Option<bool>,
    pub max_websockets_per_ip: Option<usize>,
    #[serde(default, deserialize_with = "seconds")]
    pub header_read_timeout: Option<u64>,
    pub max_http_connections: Option<usize>,
    pub max_http_connections_per_ip: Option<usize>,
    pub metrics_public: Option<bool>,
    pub turn_config: Option<PathBuf>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
    pub public_url: Option<String>,
    pub twilio_auth_token: Option<String>,
    pub twilio_open: Option<bool>,
    pub max_calls_per_ip: Option<usize>,
    #[serde(default, deserialize_with = "seconds")]
    pub idle_timeout: Option<u64>,
    #[serde(default, deserialize_with = "seconds")]
    pub max_call_duration: Option<u64>,
    pub max_pending_calls_per_ip: Option<usize>,
    /// A path (relative: to the file's directory), `:memory:` or `off`.
    pub database: Option<String>,
    pub retention_days: Option<u64>,
    pub redis_url: Option<String>,
    pub node_url: Option<String>,
    #[serde(default, deserialize_with = "seconds")]
    pub room_claim_ttl: Option<u64>,
    /// dB relative to what was sent (negative).
    pub phone_echo_return_db: Option<f32>,
    #[serde(default)]
    pub providers: ProvidersFile,
}

impl ConfigFile {
    /// Parses and checks a file's text (paths in it as written).
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| e.to_string())?;
        file.check()?;
        Ok(file)
    }

    /// Reads and checks the file; relative paths in it are taken from the file's directory, so
    /// the same file works whatever directory the server starts in.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        let mut file = Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(db) = file.database.as_mut().filter(|d| !matches!(d.as_str(), "off" | ":memory:") && Path::new(d.as_str()).is_relative()) {
            *db = base.join(db.as_str()).to_string_lossy().into_owned();
        }
        for p in [&mut file.data_dir, &mut file.turn_config].into_iter().flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(file)
    }

    /// Values TOML's types cannot check by themselves.
    fn check(&self) -> Result<(), String> {
        if let Some(r) = &self.rtc_ports {
            parse_port_range(r).map_err(|e| format!("rtc_ports: {e}"))?;
        }
        if self.audio_workers == Some(0) {
            return Err("audio_workers: must be at least 1".into());
        }
        if self.max_calls == Some(0) {
            return Err("max_calls: must be at least 1 (stop the server to take no calls)".into());
        }
        if let Some(db) = self.phone_echo_return_db
            && !(-60.0..=0.0).contains(&db)
        {
            return Err(format!("phone_echo_return_db: {db} dB is outside -60..0 (an echo is quieter than what was sent)"));
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(format!("public_url: {url:?} must start with https:// (or http:// behind a TLS proxy)"));
        }
        if let Some(level) = &self.log_level {
            tracing_subscriber::EnvFilter::try_new(level).map_err(|e| format!("log_level {level:?}: {e}"))?;
        }
        Ok(())
    }
}

impl ServeConfig {
    /// Fills every setting that `explicit` says was not given on the command line or in the
    /// environment from the file. `explicit` takes clap's argument id (the field name).
    pub fn layer_file(&mut self, file: &ConfigFile, explicit: &dyn Fn(&str) -> bool) {
        macro_rules! take {
            ($field:ident) => {
                if !explicit(stringify!($field)) {
                    if let Some(v) = &file.$field {
                        self.$field = v.clone();
                    }
                }
            };
            ($field:ident, Some) => {
                if !explicit(stringify!($field)) {
                    if let Some(v) = &file.$field {
                        self.$field = Some(v.clone());
                    }
                }
            };
        }
        take!(listen);
        take!(api_key, Some);
        take!(data_dir, Some);
        take!(rtc_ip, Some);
        if !explicit("rtc_ports") {
            if let Some(r) = &file.rtc_ports {
                // Checked when the file was loaded.
                self.rtc_ports = parse_port_range(r).ok();
            }
        }
        take!(rtc_tcp);
        take!(rtc_loop);
        take!(rtp_ingest);
        take!(rtp_ingest_ip);
        take!(rooms_auto_create);
        take!(vad);
        take!(audio_workers, Some);
        take!(max_calls, Some);
        if !explicit("drain_grace_secs") {
            if let Some(v) = file.drain_grace {
                self.drain_grace_secs = v;
            }
        }
        take!(web_session);
        take!(rate_limit_per_ip);
        take!(rate_limit_per_credential);
        take!(rate_limit_loopback);
        take!(max_websockets_per_ip);
        take!(header_read_timeout);
        take!(max_http_connections);
        take!(max_http_connections_per_ip);
        take!(metrics_public);
        take!(turn_config, Some);
        take!(log_level);
        take!(log_format);
        take!(public_url, Some);
        take!(twilio_auth_token, Some);
        take!(twilio_open);
        take!(max_calls_per_ip, Some);
        take!(idle_timeout);
        take!(max_call_duration);
        take!(max_pending_calls_per_ip);
        take!(phone_echo_return_db);
        take!(database, Some);
        take!(retention_days);
        take!(redis_url, Some);
        take!(node_url, Some);
        take!(room_claim_ttl);
    }

    /// Settings from flags and environment as clap parsed them, then the config file (when one
    /// is named) under them.
    pub fn from_matches(matches: &clap::ArgMatches) -> anyhow::Result<Self> {
        use clap::FromArgMatches;
        use clap::parser::ValueSource;
        let mut cfg = Self::from_arg_matches(matches)?;
        if let Some(path) = cfg.config.clone() {
            let file = ConfigFile::load(&path)?;
            let explicit = |id: &str| matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable));
            cfg.layer_file(&file, &explicit);
        }
        Ok(cfg)
    }
}

/// `voxrelay config check FILE`: everything `serve` would refuse, found without starting.
/// Returns a summary for the operator; missing provider keys are reported, not errors (those
/// agents are simply unavailable).
pub fn check(path: &Path) -> anyhow::Result<String> {
    let file = ConfigFile::load(path)?;
    let mut cfg = ServeConfig::defaults();
    cfg.layer_file(&file, &|_| false);
    let providers = crate::agent::Providers::resolve(&file.providers).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut out = format!("{}: OK\n", path.display());
    out.push_str(&format!("  listen        {}\n", cfg.listen));
    out.push_str(&format!(
        "  media         {} ports {}\n",
        cfg.rtc_ip(),
        cfg.rtc_ports.map_or("OS-assigned".into(), |(a, b)| format!("{a}-{b}"))
    ));
    out.push_str(&format!("  max_calls     {}\n", cfg.max_calls()));
    out.push_str(&format!("  drain_grace   {} s\n", cfg.drain_grace_secs));
    out.push_str(&format!("  agents        {}\n", providers.available().join(", ")));
    for agent in ["openai-realtime", "gemini-live", "cascade"] {
        if let Some(why) = providers.why_missing(agent) {
            out.push_str(&format!("  unavailable   {agent}: {why}\n"));
        }
    }
    if let Some(turn) = &cfg.turn_config {
        let text = std::fs::read_to_string(turn).with_context(|| format!("turn_config: reading {}", turn.display()))?;
        let name = turn.display().to_string();
        let parsed = crate::relay::config::RelayConfig::parse(&name, &text).map_err(|e| anyhow::anyhow!("{e}"))?;
        for w in &parsed.warnings {
            out.push_str(&format!("  warning       {w}\n"));
        }
        out.push_str(&format!("  turn          {name} OK\n"));
    }
    Ok(out)
}

/// A duration in seconds as a TOML integer (`30`) or as the `--drain-grace` flag writes it
/// (`"30s"`, `"2m"`).
fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Seconds {
        Number(u64),
        Text(String),
    }
    match <Option<Seconds> as serde::Deserialize>::deserialize(d)? {
        None => Ok(None),
        Some(Seconds::Number(n)) => Ok(Some(n)),
        Some(Seconds::Text(t)) => super::parse_seconds(&t).map(Some).map_err(serde::de::Error::custom),
    }
}
