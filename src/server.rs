//! Starting and stopping the server: binds HTTP, starts the audio workers and the engine, and
//! drains on shutdown (no new calls, live calls get the grace period, then end cleanly).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::info;
use voxrelay_media::{VadKind, WorkerPool};
use voxrelay_signaling::telephony::TelephonySettings;
use voxrelay_signaling::web::WebSettings;
use voxrelay_signaling::{Api, Auth, router};

use crate::config::ServeConfig;
use crate::engine::{EngineHandle, VoxEngine};
use crate::transport::webrtc::{PortAllocator, RtcLoops};

pub struct RunningServer {
    pub addr: SocketAddr,
    pub api_key: String,
    pub engine: Arc<VoxEngine>,
    shutdown: Arc<Notify>,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// Drains and stops, as SIGTERM does; returns when the HTTP server has stopped.
    pub async fn shutdown(self) {
        self.shutdown.notify_one();
        let _ = self.task.await;
    }

    /// Waits until the server stops by itself (after a shutdown signal).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

pub async fn start(cfg: ServeConfig) -> anyhow::Result<RunningServer> {
    crate::install_tls_provider();
    let data_dir = cfg.data_dir();
    let (api_key, generated) = crate::api_key::load_or_create(cfg.api_key.as_deref(), &data_dir)
        .with_context(|| format!("API key in data directory {}", data_dir.display()))?;
    if generated {
        // Printed once, on purpose not through the log pipeline (which may be shipped elsewhere).
        println!("Generated API key (stored in {}): {api_key}", data_dir.join(crate::api_key::KEY_FILE).display());
    }
    let workers = cfg.audio_workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let workers = workers.max(1);
    let bells = crate::engine::WorkerBells::start(workers);
    let pool = WorkerPool::with_bell(workers, voxrelay_media::DEFAULT_SESSIONS_PER_WORKER, bells.bell());
    let rtp_ingest = cfg.rtp_ingest.then_some(cfg.rtp_ingest_ip);
    let vad = match cfg.vad {
        crate::config::VadChoice::Earshot => VadKind::Earshot,
        crate::config::VadChoice::Energy => VadKind::Energy,
        #[cfg(feature = "silero")]
        crate::config::VadChoice::Silero => VadKind::Silero,
    };
    let providers = cfg.providers()?;
    info!(agents = %providers.available().join(","), "agents available");
    let phone_echo_guard =
        voxrelay_media::EchoGuardConfig { echo_return_db: cfg.phone_echo_return_db, ..voxrelay_media::EchoGuardConfig::DEFAULT };
    let ports = PortAllocator::new(cfg.rtc_ip(), cfg.rtc_ports).with_tcp(cfg.rtc_tcp);
    let rtc_loops = match cfg.rtc_loop {
        true => match RtcLoops::start(&ports, workers).await {
            Ok(loops) => Some(loops),
            Err(e) => {
                tracing::warn!("1:1 calls keep a peer connection driver each: {e}");
                None
            }
        },
        false => None,
    };
    let rooms = crate::room::RoomSettings { auto_create: cfg.rooms_auto_create, ..Default::default() };
    let shares = crate::admission::Shares {
        per_ip_quarters: cfg
            .max_calls_per_ip
            .map_or_else(|| crate::admission::Shares::default_for(cfg.max_calls()).per_ip_quarters, |n| n * 4),
        pending_per_ip: cfg.max_pending_calls_per_ip,
    };
    let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
    let call_limits = crate::call::lifetime::CallLimits { idle: secs(cfg.idle_timeout), max: secs(cfg.max_call_duration) };
    let retention = (cfg.retention_days > 0).then(|| Duration::from_secs(cfg.retention_days * 86_400));
    let store = Arc::new(crate::store::Store::open(&cfg.database(), retention).context("call history")?);
    let settings = crate::engine::EngineSettings {
        rtp_ingest,
        vad,
        max_calls: cfg.max_calls(),
        shares,
        call_limits,
        phone_echo_guard,
        rooms,
        store,
        bells,
        rtc_loops,
    };
    let engine = VoxEngine::new(pool, ports, providers, settings);
    let turn = match &cfg.turn_config {
        Some(path) => {
            let turn = crate::relay::start_from_file(path, Some(cfg.rtc_ip())).await.context("embedded TURN")?;
            let _ = engine.relay.set(turn.advert());
            Some(turn)
        }
        None => None,
    };
    let web = WebSettings { session_helper: cfg.web_session, max_pending: cfg.max_calls(), loopback_only: cfg.listen.ip().is_loopback() };
    let telephony =
        TelephonySettings { public_url: cfg.public_url.clone(), twilio_auth_token: cfg.twilio_auth_token.clone(), open: cfg.twilio_open };
    let limits = voxrelay_signaling::limits::LimitSettings {
        per_ip_per_minute: cfg.rate_limit_per_ip,
        per_credential_per_minute: cfg.rate_limit_per_credential,
        websockets_per_ip: cfg.max_websockets_per_ip,
        limit_loopback: cfg.rate_limit_loopback,
        max_connections: cfg.max_http_connections,
        max_connections_per_ip: cfg.max_http_connections_per_ip,
    };
    let api = Arc::new(
        Api::new(Auth::new(api_key.clone()).with_call_rights(cfg.max_call_duration), Arc::new(EngineHandle(engine.clone())))
            .with_web(web)
            .with_telephony(telephony)
            .with_limits(limits)
            .with_public_metrics(cfg.metrics_public),
    );
    let connections = api.limits.connections.clone();
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    info!(
        %addr,
        rtc_ip = %cfg.rtc_ip(),
        audio_workers = workers,
        max_calls = cfg.max_calls(),
        codec = voxrelay_media::opus_version(),
        "voxrelay listening on http://{addr}"
    );

    let upkeep = match &cfg.redis_url {
        Some(redis_url) => {
            let url = cfg.node_url.clone().unwrap_or_else(|| format!("http://{addr}"));
            let ttl = Duration::from_secs(cfg.room_claim_ttl.max(1));
            let cluster = crate::cluster::Cluster::connect(redis_url, url, ttl).await.context("cluster (--redis-url)")?;
            let _ = engine.cluster.set(cluster.clone());
            api.auth.share_secrets(cluster.clone());
            let weak = Arc::downgrade(&engine);
            Some(cluster.spawn_upkeep(move || match weak.upgrade() {
                Some(e) => (e.node_load(), e.rooms.names()),
                None => (Default::default(), Vec::new()),
            }))
        }
        None => None,
    };
    let shutdown = Arc::new(Notify::new());
    let http_stop = Arc::new(Notify::new());
    let grace = Duration::from_secs(cfg.drain_grace_secs);
    {
        let (shutdown, http_stop, engine) = (shutdown.clone(), http_stop.clone(), engine.clone());
        tokio::spawn(async move {
            shutdown.notified().await;
            info!(calls = engine.live_calls(), "draining: no new calls, {}s grace", grace.as_secs());
            engine.drain(grace).await;
            // TURN goes last: relayed calls keep their relay through the drain.
            if let Some(turn) = turn {
                turn.shutdown().await;
            }
            // Its registration and room claims lapse within their lifetime.
            if let Some(upkeep) = upkeep {
                upkeep.abort();
            }
            http_stop.notify_one();
        });
    }
    let app = router(api);
    let header_read_timeout = Duration::from_secs(cfg.header_read_timeout.max(1));
    let task = tokio::spawn(async move {
        crate::listener::serve(listener, app, header_read_timeout, connections, http_stop).await;
        info!("voxrelay stopped");
    });
    Ok(RunningServer { addr, api_key, engine, shutdown, task })
}
