//! `voxrelay serve` settings: flags with environment-variable equivalents and defaults that
//! run a useful server with no configuration at all.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::agent::Providers;

mod file;
pub use file::{ConfigFile, check};

/// Default admission limit per core (see `max_calls`).
pub const CALLS_PER_CORE: usize = 80;

/// Which voice activity detector the turn detector listens to (BENCHMARKS.md: VAD quality).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VadChoice {
    /// Neural (earshot): robust in steady noise down to 0 dB SNR; ≈ 40 ms detection latency.
    Earshot,
    /// Level with adaptive noise floor: as good on clean lines, near-zero latency and cost.
    Energy,
    /// Silero (tract): best in 10-20 dB steady noise, 4.7x earshot's cost (build with
    /// `--features silero`).
    #[cfg(feature = "silero")]
    Silero,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Args)]
pub struct ServeConfig {
    /// HTTP listen address.
    #[arg(long, env = "VOXRELAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Server API key; generated and stored in the data directory when unset.
    #[arg(long, env = "VOXRELAY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Where the generated API key (and later, session data) is kept.
    /// Default: $XDG_DATA_HOME/voxrelay, else ~/.local/share/voxrelay.
    #[arg(long, env = "VOXRELAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The call history (calls, room participants, transcripts): an SQLite file, `:memory:`
    /// (kept until the server stops) or `off`. Default: voxrelay.db in the data directory.
    #[arg(long, env = "VOXRELAY_DATABASE")]
    pub database: Option<String>,
    /// Days an ended call stays in the history; older ones are deleted (at start, then
    /// hourly). 0: kept forever.
    #[arg(long, env = "VOXRELAY_RETENTION_DAYS", default_value_t = 30)]
    pub retention_days: u64,
    /// Several nodes: the Redis they share (`redis://host:6379/0`). Off by default (one node).
    #[arg(long, env = "VOXRELAY_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// This node's base URL as the other nodes reach it (room requests are forwarded there).
    /// Default: http:// and the listen address (set it when listening on 0.0.0.0).
    #[arg(long, env = "VOXRELAY_NODE_URL")]
    pub node_url: Option<String>,
    /// Seconds a node's registration and its room claims last without being refreshed (they
    /// are refreshed every third of it): how long a dead node's rooms stay unreachable.
    #[arg(long, env = "VOXRELAY_ROOM_CLAIM_TTL", default_value = "10", value_parser = parse_seconds)]
    pub room_claim_ttl: u64,
    /// IP address media (ICE/DTLS/SRTP) binds to and advertises. Default: the listen address's IP.
    #[arg(long, env = "VOXRELAY_RTC_IP")]
    pub rtc_ip: Option<IpAddr>,
    /// UDP port range for media, e.g. 10000-20000 (one port per call). Default: OS-assigned.
    #[arg(long, env = "VOXRELAY_RTC_PORTS", value_parser = parse_port_range)]
    pub rtc_ports: Option<(u16, u16)>,
    /// Also offer passive ICE-TCP host candidates (RFC 6544) on the media IP, so calls connect
    /// where UDP is blocked even without TURN (peers prefer UDP when both work). Each call then
    /// listens on a TCP port too, with the same number as its UDP port.
    #[arg(long, env = "VOXRELAY_RTC_TCP", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub rtc_tcp: bool,
    /// Run 1:1 WebRTC calls and room participants on shared loops: one UDP socket (and ICE-TCP
    /// listener) and one task per audio worker for all of them, instead of a socket and a
    /// webrtc-rs driver per connection (≈ 1.5× the calls per core at the capacity criterion, ≈ 1.5×
    /// the forwarded packets per core; BENCHMARKS.md).
    /// A wildcard media IP gets one socket per interface address (`::`: IPv4 and IPv6 ones).
    #[arg(long, env = "VOXRELAY_RTC_LOOP", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub rtc_loop: bool,
    /// Enable plain RTP ingest (POST /v1/rtp): unencrypted RTP for load testing and gateways.
    #[arg(long, env = "VOXRELAY_RTP_INGEST")]
    pub rtp_ingest: bool,
    /// IP plain RTP sockets bind to. Loopback by default: unencrypted media should not leave
    /// the host unless the operator says so.
    #[arg(long, env = "VOXRELAY_RTP_INGEST_IP", default_value = "127.0.0.1")]
    pub rtp_ingest_ip: IpAddr,
    /// Rooms are created by the first join that names them (else only by POST /v1/rooms, and a
    /// join of an unknown room is 404).
    #[arg(long, env = "VOXRELAY_ROOMS_AUTO_CREATE", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub rooms_auto_create: bool,
    /// Voice activity detector for server VAD turn detection.
    #[arg(long, env = "VOXRELAY_VAD", value_enum, default_value_t = VadChoice::Earshot)]
    pub vad: VadChoice,
    /// Audio worker threads. Default: one per core.
    #[arg(long, env = "VOXRELAY_AUDIO_WORKERS")]
    pub audio_workers: Option<usize>,
    /// Most concurrent calls; offers beyond it get 503. Default: 80 per core, below what one
    /// core holds in the costliest case measured on this project's reference machine (callers
    /// without DTX bridged to a Realtime provider: 71 % of the core at 100 calls; echo calls
    /// hold ≈ 200; BENCHMARKS.md "The default call limit"); past saturation the real-time audio
    /// threads starve network I/O. A Realtime WebSocket session, a phone call and a room
    /// participant count as half a call.
    #[arg(long, env = "VOXRELAY_MAX_CALLS")]
    pub max_calls: Option<usize>,
    /// On SIGTERM/Ctrl-C: how long live calls may go on before they are ended, in seconds
    /// ("30" or "30s"; "2m" for minutes). A second signal ends at once.
    #[arg(long = "drain-grace", alias = "drain-grace-secs", env = "VOXRELAY_DRAIN_GRACE", default_value = "30",
          value_parser = parse_seconds)]
    pub drain_grace_secs: u64,
    /// The web page's session helper (`POST /web/session`): mints client secrets for the page at
    /// `GET /` without an API key. On by default since the default listen address is loopback;
    /// a warning is logged when it is on beyond loopback. `false`: the page asks for a secret.
    #[arg(long, env = "VOXRELAY_WEB_SESSION", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub web_session: bool,
    // --- Abuse limits (README "Limits") ---
    /// Costly requests (minting secrets and tokens, offers, joins, socket upgrades) per minute
    /// from one IP; over it: 429 with Retry-After. 0: no limit. Loopback clients are exempt
    /// unless --rate-limit-loopback.
    #[arg(long, env = "VOXRELAY_RATE_LIMIT_PER_IP", default_value_t = 120)]
    pub rate_limit_per_ip: u32,
    /// Costly requests per minute with one credential (API key, client secret, room token).
    #[arg(long, env = "VOXRELAY_RATE_LIMIT_PER_CREDENTIAL", default_value_t = 1200)]
    pub rate_limit_per_credential: u32,
    /// Apply the per-IP limits to loopback clients too (off: local tools and a reverse proxy on
    /// the same host are not limited by address; limit at the proxy).
    #[arg(long, env = "VOXRELAY_RATE_LIMIT_LOOPBACK", default_value_t = false, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub rate_limit_loopback: bool,
    /// Open WebSockets (Realtime sessions, event sockets, phone streams) per IP. 0: no limit.
    #[arg(long, env = "VOXRELAY_MAX_WEBSOCKETS_PER_IP", default_value_t = 32)]
    pub max_websockets_per_ip: usize,
    /// Seconds a client gets to send a request's headers (on a new or kept-alive connection):
    /// a slow or silent client is disconnected so it cannot hold connections.
    #[arg(long, env = "VOXRELAY_HEADER_READ_TIMEOUT", default_value = "10", value_parser = parse_seconds)]
    pub header_read_timeout: u64,
    /// Open HTTP connections served at once (upgraded WebSockets not counted: they have
    /// --max-websockets-per-ip); beyond it a new connection gets 503 and is closed. 0: no limit.
    #[arg(long, env = "VOXRELAY_MAX_HTTP_CONNECTIONS", default_value_t = 1024)]
    pub max_http_connections: usize,
    /// The same, from one address (loopback exempt unless --rate-limit-loopback). 0: no limit.
    #[arg(long, env = "VOXRELAY_MAX_HTTP_CONNECTIONS_PER_IP", default_value_t = 128)]
    pub max_http_connections_per_ip: usize,
    /// Seconds with nothing said, by the caller or the agent, before a 1:1 call is ended
    /// (reason idle_timeout; the client gets `session.ending` first). 0: never. A session may
    /// ask for less (`idle_timeout`).
    #[arg(long, env = "VOXRELAY_IDLE_TIMEOUT", default_value = "300", value_parser = parse_seconds)]
    pub idle_timeout: u64,
    /// The longest a 1:1 call may last, in seconds (reason max_call_duration, `session.ending`
    /// a minute before). 0: no limit. A session may ask for less (`max_call_duration`).
    #[arg(long, env = "VOXRELAY_MAX_CALL_DURATION", default_value = "3600", value_parser = parse_seconds)]
    pub max_call_duration: u64,
    /// Calls one IP address may hold at once (WebSocket sessions and phone calls count as in
    /// --max-calls); beyond it 429. Default: a quarter of --max-calls (at least one); 0: no
    /// limit. Loopback is exempt unless --rate-limit-loopback.
    #[arg(long, env = "VOXRELAY_MAX_CALLS_PER_IP")]
    pub max_calls_per_ip: Option<usize>,
    /// Calls from one IP answered but not yet connected (each holds a port and a worker slot for
    /// up to 30 s); beyond it 429. 0: no limit.
    #[arg(long, env = "VOXRELAY_MAX_PENDING_CALLS_PER_IP", default_value_t = 10)]
    pub max_pending_calls_per_ip: usize,
    /// Serve /metrics to any address without the API key (off: the API key, or a loopback client).
    #[arg(long, env = "VOXRELAY_METRICS_PUBLIC", default_value_t = false, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub metrics_public: bool,
    /// Embedded TURN server configuration (turn.conf, coturn's vocabulary); off when unset.
    #[arg(long, env = "VOXRELAY_TURN_CONFIG")]
    pub turn_config: Option<PathBuf>,
    /// Log filter (tracing syntax: `info`, `debug`, `voxrelay=debug,webrtc=warn`).
    #[arg(long, env = "VOXRELAY_LOG", default_value = "info")]
    pub log_level: String,
    #[arg(long, env = "VOXRELAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Config file (TOML; see voxrelay.example.toml): any of these settings (flag name with `_`
    /// for `-`) and the `[providers.*]` sections. Flags and environment variables win over it.
    #[arg(long, env = "VOXRELAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Providers given directly by an embedder (tests); then neither the config file's
    /// providers nor the environment are read.
    #[arg(skip)]
    pub providers: Option<Providers>,
    // --- Telephony (PROTOCOL.md §5) ---
    /// The server's public base URL as carriers reach it (e.g. https://voice.example.com): the
    /// stream URL in the TwiML answer and the URL Twilio signatures are computed over.
    /// Default: the request's Host header, over https/wss.
    #[arg(long, env = "VOXRELAY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Twilio auth token: when set, the TwiML webhook and the Media Streams upgrade require a
    /// valid X-Twilio-Signature (403 otherwise). Set it whenever the server is reachable from
    /// the internet.
    #[arg(long, env = "VOXRELAY_TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<String>,
    /// Without --twilio-auth-token, take the telephony webhook and phone streams from any
    /// address (off: from loopback only, 403 twilio_auth_required otherwise). Unsigned streams
    /// count against --max-calls-per-ip.
    #[arg(long, env = "VOXRELAY_TWILIO_OPEN", default_value_t = false, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub twilio_open: bool,
    /// Phone echo guard: the loudest echo of the agent's own voice a phone line is assumed to
    /// return, in dB relative to what was sent. Inbound audio below that (plus margin) while the
    /// agent speaks is not taken for the caller. Default chosen by tests/twilio_bridge.rs.
    #[arg(long, env = "VOXRELAY_PHONE_ECHO_RETURN_DB", default_value_t = voxrelay_media::EchoGuardConfig::DEFAULT.echo_return_db)]
    pub phone_echo_return_db: f32,
}

impl ServeConfig {
    /// The defaults, as `voxrelay serve` with no flags would have them (for tests and embedding).
    pub fn defaults() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("literal address"),
            api_key: None,
            data_dir: None,
            database: None,
            retention_days: 30,
            redis_url: None,
            node_url: None,
            room_claim_ttl: 10,
            rtc_ip: None,
            rtc_ports: None,
            rtc_tcp: true,
            rtc_loop: true,
            rtp_ingest: false,
            rooms_auto_create: true,
            rtp_ingest_ip: IpAddr::from([127, 0, 0, 1]),
            vad: VadChoice::Earshot,
            audio_workers: None,
            max_calls: None,
            drain_grace_secs: 30,
            web_session: true,
            rate_limit_per_ip: 120,
            rate_limit_per_credential: 1200,
            rate_limit_loopback: false,
            max_websockets_per_ip: 32,
            header_read_timeout: 10,
            max_http_connections: 1024,
            max_http_connections_per_ip: 128,
            max_calls_per_ip: None,
            idle_timeout: 300,
            max_call_duration: 3600,
            max_pending_calls_per_ip: 10,
            twilio_open: false,
            metrics_public: false,
            turn_config: None,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            config: None,
            providers: None,
            public_url: None,
            twilio_auth_token: None,
            phone_echo_return_db: voxrelay_media::EchoGuardConfig::DEFAULT.echo_return_db,
        }
    }

    /// Where the call history lives.
    pub fn database(&self) -> crate::store::Database {
        match &self.database {
            Some(d) => crate::store::Database::parse(d),
            None => crate::store::Database::File(self.data_dir().join("voxrelay.db")),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        if let Some(d) = &self.data_dir {
            return d.clone();
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(x).join("voxrelay");
        }
        match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".local/share/voxrelay"),
            None => PathBuf::from(".voxrelay"),
        }
    }

    pub fn max_calls(&self) -> usize {
        self.max_calls.unwrap_or_else(|| CALLS_PER_CORE * std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// The AI providers: given, or from the config file's sections and the environment.
    pub fn providers(&self) -> anyhow::Result<Providers> {
        if let Some(p) = &self.providers {
            return Ok(p.clone());
        }
        let file = match &self.config {
            Some(path) => ConfigFile::load(path)?,
            None => ConfigFile::default(),
        };
        Providers::resolve(&file.providers)
    }

    pub fn rtc_ip(&self) -> IpAddr {
        self.rtc_ip.unwrap_or(self.listen.ip())
    }
}

/// Seconds as "30", "30s" or "2m".
pub fn parse_seconds(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mul) = match (s.strip_suffix('h'), s.strip_suffix('m')) {
        (Some(n), _) => (n, 3600),
        (_, Some(n)) => (n, 60),
        _ => (s.strip_suffix('s').unwrap_or(s), 1),
    };
    num.trim().parse::<u64>().map(|n| n * mul).map_err(|_| format!("expected seconds like 30, 30s, 2m or 1h, got {s:?}"))
}

pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s.split_once('-').ok_or("expected LOW-HIGH, e.g. 10000-20000")?;
    let lo: u16 = lo.trim().parse().map_err(|_| format!("bad port {lo:?}"))?;
    let hi: u16 = hi.trim().parse().map_err(|_| format!("bad port {hi:?}"))?;
    if lo == 0 || lo > hi {
        return Err(format!("port range {lo}-{hi} must be non-empty and start above 0"));
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A file in a directory of its own, both removed when the test is done with it.
    struct TempFile(PathBuf);

    impl std::ops::Deref for TempFile {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn temp_file(name: &str, text: &str) -> TempFile {
        let dir = std::env::temp_dir().join(format!("voxrelay-cfg-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    /// `voxrelay serve ARGS` as clap parses it, the file layered under it. The environment
    /// cannot be set safely from a multi-threaded test; tests/config_file.rs covers env > file.
    fn serve(args: &[&str]) -> anyhow::Result<ServeConfig> {
        use clap::Args as _;
        let cmd = ServeConfig::augment_args(clap::Command::new("serve").no_binary_name(true));
        let matches = cmd.try_get_matches_from(args)?;
        ServeConfig::from_matches(&matches)
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let path = temp_file(
            "layer.toml",
            "listen = \"127.0.0.1:9000\"\nmax_calls = 7\ndrain_grace = 5\nvad = \"energy\"\nrtc_ports = \"20000-20100\"\n\
             turn_config = \"turn.conf\"\nlog_format = \"json\"\nweb_session = false\n",
        );
        let p = path.to_str().unwrap();
        let cfg = serve(&["--config", p, "--max-calls", "3", "--drain-grace", "2m"]).unwrap();
        assert_eq!(cfg.max_calls, Some(3), "flag beats file");
        assert_eq!(cfg.drain_grace_secs, 120, "flag beats file");
        assert_eq!(cfg.listen, "127.0.0.1:9000".parse::<SocketAddr>().unwrap(), "file beats default");
        assert_eq!(cfg.vad, VadChoice::Energy);
        assert_eq!(cfg.rtc_ports, Some((20000, 20100)));
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert!(!cfg.web_session);
        assert_eq!(cfg.turn_config.as_deref(), Some(path.parent().unwrap().join("turn.conf").as_path()), "relative to the file");
        let plain = serve(&[]).unwrap();
        assert_eq!((plain.listen.port(), plain.drain_grace_secs, plain.max_calls), (8080, 30, None), "defaults without a file");
    }

    #[test]
    fn bad_values_in_the_file_name_the_key() {
        for (text, needle) in [
            ("rtc_ports = \"9-1\"\n", "rtc_ports"),
            ("max_calls = 0\n", "max_calls"),
            ("listen = \"nowhere\"\n", "listen"),
            ("vad = \"loud\"\n", "vad"),
            ("drain_grace = \"soon\"\n", "drain_grace"),
            ("lisen = \"127.0.0.1:1\"\n", "lisen"),
        ] {
            let path = temp_file("bad-value.toml", text);
            let err = format!("{:#}", serve(&["--config", path.to_str().unwrap()]).unwrap_err());
            assert!(err.contains("bad-value.toml") && err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn config_check_reports_agents_and_the_turn_file() {
        let file = temp_file("check.toml", "");
        let dir = file.parent().unwrap();
        std::fs::write(dir.join("turn.conf"), "realm=example.org\nuse-auth-secret\nstatic-auth-secret=s3cret\nfrobnicate=1\n").unwrap();
        std::fs::write(dir.join("check.toml"), "turn_config = \"turn.conf\"\n").unwrap();
        let out = check(&dir.join("check.toml")).unwrap();
        assert!(out.contains("OK") && out.contains("echo") && out.contains("frobnicate"), "{out}");
        std::fs::write(dir.join("turn.conf"), "listening-port=none\n").unwrap();
        let err = format!("{:#}", check(&dir.join("check.toml")).unwrap_err());
        assert!(err.contains("turn.conf:1"), "{err}");
    }

    #[test]
    fn the_example_config_file_is_valid() {
        let file = ConfigFile::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/voxrelay.example.toml"))).unwrap();
        let none = Providers::resolve_with(&file.providers, &|_| None).unwrap();
        assert_eq!(none.available(), ["echo"]);
        let all = Providers::resolve_with(&file.providers, &|_| Some("k".into())).unwrap();
        assert_eq!(all.available(), ["echo", "openai-realtime", "gemini-live", "cascade"]);
    }

    #[test]
    fn every_setting_documented_in_the_example_is_a_valid_key() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/voxrelay.example.toml")).unwrap();
        let head = &text[..text.find("[providers").unwrap()];
        let uncommented: String = head
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.split_once(" = ").is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_')))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(uncommented.lines().count() >= 16, "{uncommented}");
        let path = temp_file("example-head.toml", &uncommented);
        let file = ConfigFile::load(&path).unwrap();
        assert_eq!(file.drain_grace, Some(30));
        // As the flag writes it, too.
        for (text, secs) in [("drain_grace = \"30s\"\n", 30), ("drain_grace = \"2m\"\n", 120), ("drain_grace = 45\n", 45)] {
            let file = ConfigFile::load(&temp_file("grace.toml", text)).unwrap();
            assert_eq!(file.drain_grace, Some(secs), "{text}");
        }
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        let path = temp_file("bad.toml", "[providers.openai]\nmodle = \"x\"\n");
        let err = ConfigFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("modle"), "{err}");
    }
}
