use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use voxrelay::config::{LogFormat, ServeConfig};

#[derive(Parser)]
#[command(name = "voxrelay", version, about = "A native WebRTC media server with an AI voice pipeline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (defaults: HTTP on 127.0.0.1:8080, the built-in echo agent).
    Serve(ServeConfig),
    /// Load a running server with N concurrent WebRTC calls and measure turn latency, loss, jitter.
    Loadgen(voxrelay::loadgen::LoadgenConfig),
    /// Run only the embedded TURN server from a turn.conf (coturn's vocabulary).
    Turn {
        /// turn.conf path.
        #[arg(long, env = "VOXRELAY_TURN_CONFIG", default_value = "turn.conf")]
        config: std::path::PathBuf,
    },
}

fn init_logging(cfg: &ServeConfig) {
    let filter = EnvFilter::try_new(&cfg.log_level).unwrap_or_else(|e| {
        eprintln!("bad --log-level {:?} ({e}); using info", cfg.log_level);
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match cfg.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    voxrelay::install_tls_provider();
    match Cli::parse().command {
        Command::Serve(cfg) => {
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
            // A second signal during the drain exits at once.
            tokio::spawn(async {
                let _ = tokio::signal::ctrl_c().await;
                std::process::exit(130);
            });
            server.shutdown().await;
        }
        Command::Turn { config } => {
            tracing_subscriber::fmt().with_env_filter(EnvFilter::try_from_env("VOXRELAY_LOG").unwrap_or_else(|_| EnvFilter::new("info"))).init();
            let turn = voxrelay::turn::start_from_file(&config, None).await?;
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            turn.shutdown().await;
        }
        Command::Loadgen(cfg) => {
            tracing_subscriber::fmt().with_env_filter(EnvFilter::new("warn")).with_writer(std::io::stderr).init();
            let report = voxrelay::loadgen::run(cfg).await?;
            print!("{}", report.summary());
            if report.sessions_failed > 0 {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
