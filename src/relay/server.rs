//! The TURN server's I/O: UDP listeners, TCP listeners (RFC 5766 §2.1 framing over a stream:
//! STUN messages and 4-byte-padded ChannelData back to back, see [`super::framing`]), one UDP
//! relay socket per allocation, and a 1 s tick for expiry. All protocol decisions are the
//! sans-IO [`TurnCore`]'s; this file only moves bytes. Sends never wait: a full socket buffer or
//! stream queue drops the packet, as a congested network would.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::core::{ClientKey, Now, RelayId, RelayIo, TurnCore, TurnStats, Via};
use super::framing::{Frame, next_frame};
use super::{RelayConfig, auth};

/// How long the REST credentials handed to a session stay valid. An allocation never outlives
/// its credential, so this bounds how long a relayed call can last without new credentials.
pub const SESSION_CREDENTIAL_TTL: Duration = Duration::from_secs(6 * 3600);
/// Frames queued towards one TCP client before new ones are dropped.
const STREAM_QUEUE: usize = 1024;
/// Random tries to find a free relay port in `min-port..=max-port`.
const RELAY_PORT_TRIES: usize = 64;

struct Io {
    udp: Vec<Arc<UdpSocket>>,
    streams: HashMap<u64, mpsc::Sender<Vec<u8>>>,
    relays: HashMap<RelayId, (Arc<UdpSocket>, JoinHandle<()>)>,
    next_relay: u64,
    ports: (u16, u16),
    state: Weak<Mutex<State>>,
}

struct State {
    core: TurnCore,
    io: Io,
}

impl RelayIo for Io {
    fn bind_relay(&mut self, ip: IpAddr) -> io::Result<(RelayId, SocketAddr)> {
        let std_sock = bind_in_range(ip, self.ports)?;
        std_sock.set_nonblocking(true)?;
        let sock = Arc::new(UdpSocket::from_std(std_sock)?);
        let addr = sock.local_addr()?;
        self.next_relay += 1;
        let id = RelayId(self.next_relay);
        let task = tokio::spawn(relay_reader(id, sock.clone(), self.state.clone()));
        self.relays.insert(id, (sock, task));
        Ok((id, addr))
    }

    fn close_relay(&mut self, relay: RelayId) {
        if let Some((_, task)) = self.relays.remove(&relay) {
            task.abort();
        }
    }

    fn send_to_peer(&mut self, relay: RelayId, peer: SocketAddr, data: &[u8]) {
        if let Some((sock, _)) = self.relays.get(&relay) {
            let _ = sock.try_send_to(data, peer);
        }
    }

    fn send_to_client(&mut self, client: ClientKey, data: &[u8]) {
        match client.via {
            Via::Udp(i) => {
                if let Some(sock) = self.udp.get(i as usize) {
                    let _ = sock.try_send_to(data, client.addr);
                }
            }
            Via::Stream(id) => {
                if let Some(tx) = self.streams.get(&id) {
                    let _ = tx.try_send(data.to_vec());
                }
            }
        }
    }
}

fn bind_in_range(ip: IpAddr, (lo, hi): (u16, u16)) -> io::Result<std::net::UdpSocket> {
    if lo == 0 {
        return std::net::UdpSocket::bind(SocketAddr::new(ip, 0));
    }
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free relay port");
    for _ in 0..RELAY_PORT_TRIES {
        let port = rand::random_range(lo..=hi);
        match std::net::UdpSocket::bind(SocketAddr::new(ip, port)) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

async fn relay_reader(id: RelayId, sock: Arc<UdpSocket>, state: Weak<Mutex<State>>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else { continue };
        let Some(state) = state.upgrade() else { return };
        let mut guard = lock(&state);
        let State { core, io } = &mut *guard;
        core.on_peer(id, peer, &buf[..n], Now::system(), io);
    }
}

/// A running TURN server. Dropping it does not stop it; call [`RelayServer::shutdown`].
pub struct RelayServer {
    state: Arc<Mutex<State>>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    pub udp_addrs: Vec<SocketAddr>,
    pub tcp_addrs: Vec<SocketAddr>,
    pub tls_addrs: Vec<SocketAddr>,
    pub stats: Arc<TurnStats>,
    advert: IceAdvert,
}

/// What sessions are told about this TURN server.
#[derive(Clone, Debug)]
pub struct IceAdvert {
    host: Option<IpAddr>,
    port: Option<u16>,
    udp: bool,
    tcp: bool,
    tls_port: Option<u16>,
    secret: Option<String>,
    /// The server's counters, for `/metrics`.
    pub stats: Arc<TurnStats>,
}

/// A port the OS picks (`listening-port` 0) is picked for UDP; TCP must then get the same one,
/// which another socket may hold: the pair is picked again, a few times, before giving up.
const PORT_PICKS: usize = 8;

/// UDP and/or TCP listeners on `ip`, on the same port.
async fn bind_listeners(ip: IpAddr, port: u16, udp: bool, tcp: bool) -> anyhow::Result<(Option<UdpSocket>, Option<TcpListener>)> {
    let mut pick = 0;
    loop {
        pick += 1;
        let u = match udp {
            true => Some(UdpSocket::bind((ip, port)).await.with_context(|| format!("TURN UDP on {ip}:{port}"))?),
            false => None,
        };
        let chosen = match &u {
            Some(s) => s.local_addr()?.port(),
            None => port,
        };
        if !tcp {
            return Ok((u, None));
        }
        match TcpListener::bind((ip, chosen)).await {
            Ok(l) => return Ok((u, Some(l))),
            Err(e) if port == 0 && u.is_some() && e.kind() == std::io::ErrorKind::AddrInUse && pick < PORT_PICKS => continue,
            Err(e) => return Err(e).with_context(|| format!("TURN TCP on {ip}:{chosen}")),
        }
    }
}

impl RelayServer {
    /// Binds every listener and starts serving. `fallback_host`: the address to advertise when
    /// neither `external-ip` nor a specific `listening-ip` names one.
    pub async fn start(cfg: &RelayConfig, fallback_host: Option<IpAddr>) -> anyhow::Result<RelayServer> {
        let ips: Vec<IpAddr> = if cfg.listening_ips.is_empty() { vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)] } else { cfg.listening_ips.clone() };
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for ip in &ips {
            let (u, t) = bind_listeners(*ip, cfg.listening_port, !cfg.no_udp, !cfg.no_tcp).await?;
            udp.extend(u.map(Arc::new));
            tcp.extend(t);
        }
        let mut tls = Vec::new();
        let tls_config = match (&cfg.cert, &cfg.pkey, cfg.no_tls) {
            (Some(cert), Some(pkey), false) => Some(super::tls::server_config(cert, pkey)?),
            _ => None,
        };
        if tls_config.is_some() {
            for ip in &ips {
                let port = cfg.tls_listening_port;
                tls.push(TcpListener::bind((*ip, port)).await.with_context(|| format!("TURN TLS on {ip}:{port}"))?);
            }
        }
        let relay_ip = cfg.relay_ips.first().copied().or_else(|| ips.iter().copied().find(|ip| !ip.is_unspecified())).or(fallback_host).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let core = TurnCore::new(cfg, relay_ip);
        let stats = core.stats.clone();
        let udp_addrs: Vec<SocketAddr> = udp.iter().filter_map(|s| s.local_addr().ok()).collect();
        let tcp_addrs: Vec<SocketAddr> = tcp.iter().filter_map(|l| l.local_addr().ok()).collect();
        let tls_addrs: Vec<SocketAddr> = tls.iter().filter_map(|l| l.local_addr().ok()).collect();
        let state = Arc::new_cyclic(|weak| {
            Mutex::new(State {
                core,
                io: Io { udp: udp.clone(), streams: HashMap::new(), relays: HashMap::new(), next_relay: 0, ports: (cfg.min_port, cfg.max_port), state: weak.clone() },
            })
        });
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        for (i, sock) in udp.into_iter().enumerate() {
            tasks.push(tokio::spawn(udp_loop(i as u32, sock, state.clone())));
        }
        let streams = StreamLimits {
            next_id: Arc::new(std::sync::atomic::AtomicU64::new(1)),
            slots: Arc::new(tokio::sync::Semaphore::new(cfg.max_tcp_connections)),
            hello_timeout: cfg.tcp_hello_timeout,
            stats: stats.clone(),
        };
        for l in tcp {
            tasks.push(tokio::spawn(accept_loop(l, None, state.clone(), streams.clone(), stopped.clone())));
        }
        for l in tls {
            tasks.push(tokio::spawn(accept_loop(l, tls_config.clone(), state.clone(), streams.clone(), stopped.clone())));
        }
        tasks.push(tokio::spawn(tick_loop(state.clone())));
        let advertised_ip = cfg.external_ips.first().map(|(public, _)| *public).or_else(|| ips.iter().copied().find(|ip| !ip.is_unspecified())).or(fallback_host);
        let advert = IceAdvert {
            host: advertised_ip,
            port: udp_addrs.first().or(tcp_addrs.first()).map(|a| a.port()),
            udp: !udp_addrs.is_empty(),
            tcp: !tcp_addrs.is_empty(),
            tls_port: tls_addrs.first().map(|a| a.port()),
            secret: cfg.use_auth_secret.then(|| cfg.static_auth_secrets.first().cloned()).flatten(),
            stats: stats.clone(),
        };
        info!(udp = ?udp_addrs, tcp = ?tcp_addrs, tls = ?tls_addrs, %relay_ip, realm = %cfg.realm, "TURN listening");
        Ok(RelayServer { state, tasks, stop, udp_addrs, tcp_addrs, tls_addrs, stats, advert })
    }

    pub fn advert(&self) -> IceAdvert {
        self.advert.clone()
    }

    pub fn allocations(&self) -> usize {
        lock(&self.state).core.allocation_count()
    }

    /// Stops listening, ends every allocation and closes TCP connections.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        {
            let mut guard = lock(&self.state);
            let State { core, io } = &mut *guard;
            core.close_all(io);
            io.streams.clear();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        info!("TURN stopped");
    }
}

impl IceAdvert {
    /// PROTOCOL.md §1 `ice_servers` for one session: a REST credential for user `session_id`,
    /// valid for [`SESSION_CREDENTIAL_TTL`]. Empty when REST credentials are not configured or
    /// no address is known to advertise.
    pub fn ice_servers(&self, session_id: &str, unix_now: u64) -> Vec<serde_json::Value> {
        let (Some(secret), Some(host), Some(port)) = (&self.secret, self.host, self.port) else { return Vec::new() };
        let host = match host {
            IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        let mut urls = Vec::new();
        if self.udp {
            urls.push(format!("turn:{host}:{port}?transport=udp"));
        }
        if self.tcp {
            urls.push(format!("turn:{host}:{port}?transport=tcp"));
        }
        if let Some(tls) = self.tls_port {
            urls.push(format!("turns:{host}:{tls}?transport=tcp"));
        }
        let ttl = SESSION_CREDENTIAL_TTL.as_secs();
        let (username, credential) = auth::mint_rest(secret, session_id, unix_now + ttl);
        vec![json!({"urls": urls, "username": username, "credential": credential, "ttl": ttl})]
    }
}

async fn udp_loop(index: u32, sock: Arc<UdpSocket>, state: Arc<Mutex<State>>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            // ICMP errors surface here on some systems (ECONNREFUSED); keep serving.
            Err(e) => {
                debug!("TURN UDP recv: {e}");
                continue;
            }
        };
        let mut guard = lock(&state);
        let State { core, io } = &mut *guard;
        core.on_client(ClientKey { via: Via::Udp(index), addr: from }, &buf[..n], Now::system(), io);
    }
}

async fn tick_loop(state: Arc<Mutex<State>>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        let mut guard = lock(&state);
        let State { core, io } = &mut *guard;
        core.on_tick(Now::system(), io);
    }
}

/// What every TCP/TLS listener shares: connection ids and the connection cap.
#[derive(Clone)]
struct StreamLimits {
    next_id: Arc<std::sync::atomic::AtomicU64>,
    slots: Arc<tokio::sync::Semaphore>,
    hello_timeout: Duration,
    stats: Arc<TurnStats>,
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: Arc<Mutex<State>>,
    limits: StreamLimits,
    stopped: watch::Receiver<bool>,
) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!("TURN TCP accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = limits.slots.clone().try_acquire_owned() else {
            // Dropping the stream closes it: cheaper than any answer, and a TURN client
            // treats it like an unreachable server and tries its next URL.
            TurnStats::bump(&limits.stats.tcp_refused);
            debug!(%addr, "TURN TCP connection refused: max-tcp-connections reached");
            continue;
        };
        let id = limits.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let conn = Conn { id, addr, slot, hello_timeout: limits.hello_timeout, stats: limits.stats.clone() };
        match &tls {
            None => drop(tokio::spawn(serve_stream(conn, stream, state.clone(), stopped.clone()))),
            Some(config) => match super::tls::accept(stream, config.clone()) {
                Ok(plain) => drop(tokio::spawn(serve_stream(conn, plain, state.clone(), stopped.clone()))),
                Err(e) => debug!("TURN TLS accept: {e}"),
            },
        }
    }
}

/// One accepted connection and the slot it holds until it closes.
struct Conn {
    id: u64,
    addr: SocketAddr,
    slot: tokio::sync::OwnedSemaphorePermit,
    hello_timeout: Duration,
    stats: Arc<TurnStats>,
}

/// One TCP or TLS (already decrypted) client connection.
async fn serve_stream<S>(conn: Conn, stream: S, state: Arc<Mutex<State>>, mut stopped: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let Conn { id, addr, slot: _slot, hello_timeout, stats } = conn;
    stats.tcp_connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let hello_deadline = tokio::time::Instant::now() + hello_timeout;
    let mut greeted = false;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
    lock(&state).io.streams.insert(id, tx);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 65536];
    let key = ClientKey { via: Via::Stream(id), addr };
    'read: loop {
        let n = tokio::select! {
            r = rd.read(&mut chunk) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
            _ = stopped.changed() => break,
            _ = tokio::time::sleep_until(hello_deadline), if !greeted => {
                TurnStats::bump(&stats.tcp_silent_closed);
                debug!(%addr, "TURN TCP connection closed: no STUN message within {hello_timeout:?}");
                break;
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut used = 0;
        loop {
            match next_frame(&buf[used..]) {
                Frame::Complete { message, consumed } => {
                    greeted = true;
                    let mut guard = lock(&state);
                    let State { core, io } = &mut *guard;
                    core.on_client(key, &buf[used..used + message], Now::system(), io);
                    used += consumed;
                }
                Frame::Partial => break,
                // Not STUN, not ChannelData: the stream has lost its framing; close it.
                Frame::Invalid => break 'read,
            }
        }
        buf.drain(..used);
    }
    {
        let mut guard = lock(&state);
        let State { core, io } = &mut *guard;
        io.streams.remove(&id);
        core.on_stream_closed(id, io);
    }
    stats.tcp_connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    let _ = writer.await;
}

/// Reads and validates a turn.conf (warnings are logged, errors name the line) and starts.
pub async fn start_from_file(path: &std::path::Path, fallback_host: Option<IpAddr>) -> anyhow::Result<RelayServer> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.display().to_string();
    let parsed = RelayConfig::parse(&name, &text).map_err(|e| anyhow::anyhow!(e))?;
    for w in &parsed.warnings {
        warn!("{w}");
    }
    RelayServer::start(&parsed.config, fallback_host).await
}
