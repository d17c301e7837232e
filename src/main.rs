use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use voxrelay::config::{LogFormat, ServeConfig};

#[derive(Parser)]
#[command(name = "voxrelay", version, about = "A native WebRTC media server with an AI voice pipeline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start; its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the server (defaults: HTTP on 127.0.0.1:8080, the built-in echo agent).
    Serve(ServeConfig),
    /// Load a running server with N concurrent WebRTC calls and measure turn latency, loss, jitter.
    Loadgen(voxrelay::loadgen::LoadgenConfig),
    /// Mint a room token (PROTOCOL.md §4) with this server's API key; prints the token.
    Token(voxrelay::room::token_cli::TokenArgs),
    /// Talk to an agent or join a room from this terminal, with WAV files (sound devices: the voxrelay-talk binary).
    Talk(voxrelay::talk::TalkArgs),
    /// Configuration file tools.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Run only the embedded TURN server from a turn.conf (coturn's vocabulary).
    Turn {
        /// turn.conf path.
        #[arg(long, env = "VOXRELAY_TURN_CONFIG", default_value = "turn.conf")]
        config: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate a voxrelay.toml (and the turn.conf it names) without starting; exit 1 on error.
    Check {
        /// The config file.
        file: std::path::PathBuf,
    },
}

/// webrtc-rs's per-call noise, quieted unless the log level names `rtc` targets itself (the
/// transport knows its library's targets).
const QUIET_WEBRTC: &str = voxrelay::transport::webrtc::QUIET_LOG_TARGETS;

/// The load generator's log: warnings on stderr, without webrtc-rs's per-connection noise (its
/// own client peers print the same warnings as the server's), plain text unless stderr is a
/// terminal.
fn init_client_logging() {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let filter = EnvFilter::new("warn,rtc=error,webrtc=error");
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

fn init_logging(cfg: &ServeConfig) {
    let level = if cfg.log_level.contains("rtc") { cfg.log_level.clone() } else { format!("{},{QUIET_WEBRTC}", cfg.log_level) };
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|e| {
        eprintln!("bad --log-level {:?} ({e}); using info", cfg.log_level);
        EnvFilter::new(format!("info,{QUIET_WEBRTC}"))
    });
    // Colours only for a terminal (and never with NO_COLOR): redirected logs stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout()) && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    match cfg.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    voxrelay::install_tls_provider();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Serve(_) => {
            let sub = matches.subcommand_matches("serve").expect("the serve subcommand matched");
            let cfg = ServeConfig::from_matches(sub)?;
            init_logging(&cfg);
            let server = voxrelay::start(cfg).await?;
            let stop = async {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                Ok::<_, std::io::Error>(())
            };
            stop.await?;
            // A second signal during the drain ends at once (exit status as if killed by it).
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => {
                        tracing::warn!("second SIGTERM: exiting without waiting for live calls");
                        std::process::exit(143);
                    }
                    _ = tokio::signal::ctrl_c() => {
                        tracing::warn!("second interrupt: exiting without waiting for live calls");
                        std::process::exit(130);
                    }
                }
            });
            server.shutdown().await;
        }
        Command::Config { action: ConfigAction::Check { file } } => match voxrelay::config::check(&file) {
            Ok(summary) => print!("{summary}"),
            Err(e) => {
                eprintln!("{e:#}");
                std::process::exit(1);
            }
        },
        Command::Turn { config } => {
            tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::try_from_env("VOXRELAY_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
                .init();
            let turn = voxrelay::relay::start_from_file(&config, None).await?;
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            turn.shutdown().await;
        }
        Command::Token(args) => match voxrelay::room::token_cli::mint(&args) {
            Ok(token) => println!("{token}"),
            Err(e) => {
                eprintln!("{e:#}");
                std::process::exit(1);
            }
        },
        Command::Talk(args) => {
            init_client_logging();
            if let Err(e) = voxrelay::talk::run(args).await {
                eprintln!("{e:#}");
                std::process::exit(1);
            }
        }
        Command::Loadgen(cfg) if cfg.churn.is_some() => {
            init_client_logging();
            let total = cfg.churn.unwrap_or_default();
            let report = voxrelay::loadgen::run_churn(cfg, total).await?;
            print!("{}", report.summary());
            if report.failed > 0 {
                std::process::exit(1);
            }
        }
        Command::Loadgen(cfg) if cfg.room.is_some() => {
            init_client_logging();
            let report = voxrelay::loadgen::run_room(cfg).await?;
            print!("{}", report.summary());
            if report.failed > 0 {
                std::process::exit(1);
            }
        }
        Command::Loadgen(cfg) => {
            init_client_logging();
            let report = voxrelay::loadgen::run(cfg).await?;
            print!("{}", report.summary());
            if report.sessions_failed > 0 {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
