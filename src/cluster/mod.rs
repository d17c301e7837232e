//! Several nodes on one Redis (issue 22, part 3; ARCHITECTURE.md "Scale-out"), off unless
//! `--redis-url` names one. No cluster protocol of our own: Redis holds who is alive and which
//! node each room lives on, with expiries, and the nodes only read and refresh keys.
//!
//! - **Nodes**: `voxrelay:node:<id>` → `{"url", "load", "draining"}`, set every third of the
//!   claim lifetime with that lifetime as its expiry, so a dead node's key is gone within it.
//! - **Rooms** live on one node (LiveKit's `room_node_map`): `voxrelay:room:<name>` → the
//!   owner's node id, claimed with `SET NX PX` by the first node a room request reaches, and
//!   refreshed by the owner while the room lives there (a compare-and-expire script, so a node
//!   never extends another's claim). A claim nobody refreshes expires: a killed owner's rooms
//!   are free again after one lifetime.
//! - A room request reaching another node is **forwarded** to the owner (`forward.rs`): the
//!   client's credential goes along (a redirect would lose `Authorization`: browsers and HTTP
//!   clients drop it on a cross-origin redirect), and the answer's ICE candidates are the
//!   owner's, so media flows to the owner directly.
//!
//! - **Client secrets** minted on one node are published (`voxrelay:secret:<digest>`, expiring
//!   with the secret) before the client gets them; a node that does not know a secret asks.
//! - **1:1 calls** are placed on the least-loaded node (`place`): the loads the nodes registered
//!   at their last upkeep, plus what this node placed on each since. A call's id carries its
//!   node's tag (`node_<tag>` is the node's id), so its requests find it without a lookup table;
//!   a secret's calls go to the node chosen when it was minted.
//!
//! Redis gone: each node keeps serving what it has (its rooms, its calls); a room request that
//! would need Redis to know where the room lives gets 503 `cluster_unavailable` until it is back
//! (the connection manager reconnects by itself).

mod forward;
mod placement;
mod socket;

pub use forward::{forward, rooms_of};
pub use socket::forward_socket;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use tokio::task::JoinHandle;
use tracing::{info, warn};
use voxrelay_signaling::auth::{SecretGrant, SharedSecrets};
use voxrelay_signaling::{ApiError, CallId, RoomName};

use placement::{NodeView, View};

/// Where a room request is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Home {
    /// Here: the room is (or may now be created) on this node.
    Here,
    /// On the node at this base URL.
    There(String),
}

/// What a node tells the others about itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeLoad {
    /// Live 1:1 calls plus room participants.
    pub load: usize,
    pub draining: bool,
}

pub struct Cluster {
    node: String,
    url: String,
    redis: ConnectionManager,
    claim_ttl: Duration,
    /// Every node's registration as of the last upkeep, and the calls placed since.
    view: Mutex<View>,
    /// Whether Redis answered the last upkeep (`/metrics`).
    redis_up: AtomicBool,
}

/// A registered node: its id and base URL.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInfo {
    pub id: String,
    pub url: String,
}

/// The base URL in a node's registration.
fn url_of(registration: Option<String>) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(&registration?).ok()?;
    v["url"].as_str().map(String::from)
}

/// What a node registers about itself.
#[derive(serde::Serialize, serde::Deserialize)]
struct Registration {
    url: String,
    load: usize,
    draining: bool,
}

const NODE_PREFIX: &str = "voxrelay:node:";
const ROOM_PREFIX: &str = "voxrelay:room:";

/// Extends a room's claim only if this node holds it.
const REFRESH: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

impl Cluster {
    /// Connects (the first connection must succeed: a node that cannot reach its Redis at start
    /// is misconfigured) and names this node. `url`: this node's base URL as the other nodes
    /// reach it.
    pub async fn connect(redis_url: &str, url: String, claim_ttl: Duration) -> anyhow::Result<Arc<Self>> {
        let client = redis::Client::open(redis_url)?;
        let redis = tokio::time::timeout(Duration::from_secs(5), ConnectionManager::new(client))
            .await
            .map_err(|_| anyhow::anyhow!("no answer from Redis at {redis_url} in 5 s"))??;
        let node = register_new(&mut redis.clone(), &url, claim_ttl).await?;
        info!(node = %node, %url, "cluster: joined through Redis");
        Ok(Arc::new(Cluster { node, url, redis, claim_ttl, view: Mutex::new(View::default()), redis_up: AtomicBool::new(true) }))
    }

    /// The tag this node puts in the ids it makes (its id is `node_<tag>`).
    pub fn tag(&self) -> &str {
        self.node.trim_start_matches("node_")
    }

    pub fn node_id(&self) -> &str {
        &self.node
    }

    /// This node's base URL, as the others reach it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The registration keys of every live node (this one included).
    async fn node_keys(&self) -> Result<Vec<String>, redis::RedisError> {
        let mut redis = self.redis.clone();
        let mut iter: redis::AsyncIter<String> = redis.scan_match(format!("{NODE_PREFIX}*")).await?;
        let mut keys = Vec::new();
        while let Some(key) = iter.next_item().await {
            keys.push(key?);
        }
        Ok(keys)
    }

    /// Every registered node (this one included), by id.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, redis::RedisError> {
        let mut redis = self.redis.clone();
        let mut nodes = Vec::new();
        for key in self.node_keys().await? {
            if let Some(url) = url_of(redis.get(&key).await?) {
                nodes.push(NodeInfo { id: key.trim_start_matches(NODE_PREFIX).to_string(), url });
            }
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    /// Prometheus lines: nodes registered and whether Redis answers, as of the last upkeep.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write;
        let view = self.view();
        let up = u8::from(self.redis_up.load(Ordering::Relaxed));
        let mut text = format!(
            "# HELP voxrelay_cluster_nodes Nodes registered in the cluster's Redis.\n# TYPE voxrelay_cluster_nodes gauge\nvoxrelay_cluster_nodes {}\n\
             # HELP voxrelay_cluster_redis_up Whether the cluster's Redis answered the last upkeep.\n# TYPE voxrelay_cluster_redis_up gauge\nvoxrelay_cluster_redis_up {up}\n\
             # HELP voxrelay_cluster_node_load Each node's calls and room participants, as it registered them (what placement reads).\n# TYPE voxrelay_cluster_node_load gauge\n",
            view.nodes.len()
        );
        for n in &view.nodes {
            let _ = writeln!(text, "voxrelay_cluster_node_load{{node=\"{}\",draining=\"{}\"}} {}", n.id, n.draining, n.load);
        }
        text
    }

    /// Where `room` lives: here when this node owns it (or just claimed it, nobody having it);
    /// `local`: the room is on this node now (served here even if Redis cannot say).
    /// `claim`: take the room when nobody has it (a request that may create it).
    pub async fn room_home(&self, room: &RoomName, local: bool, claim: bool) -> Result<Home, ApiError> {
        match self.locate(room, claim).await {
            Ok(home) => Ok(home),
            Err(Miss::OwnerGone) => Err(ApiError::overloaded(format!(
                "the node holding room {:?} stopped answering; the room is free again within {} s",
                room.as_str(),
                self.claim_ttl.as_secs().max(1)
            ))
            .with_code("room_node_gone")),
            Err(Miss::Redis(e)) if local => {
                warn!(room = %room, "cluster: Redis unreachable ({e}); the room is served where it is");
                Ok(Home::Here)
            }
            Err(Miss::Redis(e)) => {
                warn!(room = %room, "cluster: Redis unreachable: {e}");
                Err(ApiError::cluster_unavailable("where this room lives is unknown"))
            }
        }
    }

    async fn locate(&self, room: &RoomName, claim: bool) -> Result<Home, Miss> {
        let mut redis = self.redis.clone();
        let key = format!("{ROOM_PREFIX}{room}");
        for _ in 0..2 {
            let owner: Option<String> = redis.get(&key).await?;
            let owner = match owner {
                Some(owner) => owner,
                // Nobody has it and this request would not create it: answered here (404).
                None if !claim => return Ok(Home::Here),
                None => {
                    let opts = redis::SetOptions::default()
                        .conditional_set(redis::ExistenceCheck::NX)
                        .with_expiration(redis::SetExpiry::PX(self.claim_ttl.as_millis() as u64));
                    let claimed: bool = redis.set_options(&key, &self.node, opts).await?;
                    if claimed {
                        info!(room = %room, node = %self.node, "cluster: room claimed");
                        return Ok(Home::Here);
                    }
                    // Another node claimed it between the two calls: ask again.
                    continue;
                }
            };
            if owner == self.node {
                return Ok(Home::Here);
            }
            let info: Option<String> = redis.get(format!("{NODE_PREFIX}{owner}")).await?;
            // No key: the owner stopped refreshing itself (dead or cut off); its claims expire soon.
            return url_of(info).map(Home::There).ok_or(Miss::OwnerGone);
        }
        Err(Miss::OwnerGone)
    }

    /// Keeps this node registered and its rooms claimed, every third of the claim lifetime,
    /// until the server stops (the task is aborted).
    pub fn spawn_upkeep(self: &Arc<Self>, status: impl Fn() -> (NodeLoad, Vec<RoomName>) + Send + 'static) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.claim_ttl / 3);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut healthy = true;
            loop {
                tick.tick().await;
                let (load, rooms) = status();
                let result = me.upkeep(load, &rooms).await;
                me.redis_up.store(result.is_ok(), Ordering::Relaxed);
                match result {
                    Ok(()) if !healthy => {
                        info!("cluster: Redis is back");
                        healthy = true;
                    }
                    Ok(()) => {}
                    Err(e) if healthy => {
                        warn!("cluster: Redis unreachable, serving what this node has: {e}");
                        healthy = false;
                    }
                    Err(_) => {}
                }
            }
        })
    }

    async fn upkeep(&self, load: NodeLoad, rooms: &[RoomName]) -> Result<(), redis::RedisError> {
        let mut redis = self.redis.clone();
        let ttl = self.claim_ttl.as_millis() as u64;
        let info = serde_json::to_string(&Registration { url: self.url.clone(), load: load.load, draining: load.draining })
            .map_err(|e| redis::RedisError::from((redis::ErrorKind::Client, "registration", e.to_string())))?;
        let _: () = redis.pset_ex(format!("{NODE_PREFIX}{}", self.node), info, ttl).await?;
        let refresh = Script::new(REFRESH);
        for room in rooms {
            let key = format!("{ROOM_PREFIX}{room}");
            let kept: i64 = refresh.key(&key).arg(&self.node).arg(ttl).invoke_async(&mut redis).await?;
            if kept == 0 {
                // Lost (Redis restarted empty, or the claim lapsed): the room is still here.
                let opts =
                    redis::SetOptions::default().conditional_set(redis::ExistenceCheck::NX).with_expiration(redis::SetExpiry::PX(ttl));
                let _: bool = redis.set_options(&key, &self.node, opts).await?;
            }
        }
        let keys = self.node_keys().await?;
        let registrations: Vec<Option<String>> = if keys.is_empty() { Vec::new() } else { redis.mget(&keys).await? };
        let nodes = keys
            .iter()
            .zip(registrations)
            .filter_map(|(key, json)| {
                let r: Registration = serde_json::from_str(&json?).ok()?;
                Some(NodeView { id: key.trim_start_matches(NODE_PREFIX).to_string(), url: r.url, load: r.load, draining: r.draining })
            })
            .collect();
        *self.view() = View::new(nodes);
        Ok(())
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node a new call goes to (`None`: this one), by the loads seen and this node's own
    /// now; counted as placed there until the next upkeep's fresh loads.
    pub fn place(&self, me: NodeLoad) -> Option<NodeView> {
        self.view().place(&self.node, me)
    }

    /// The node a client secret minted now places its calls on (this one's id included).
    pub fn place_secret(&self, me: NodeLoad) -> String {
        self.place(me).map_or_else(|| self.node.clone(), |n| n.id)
    }

    /// The base URL of the node with this id, `None` when it is not registered (dead or cut
    /// off from Redis).
    async fn url_of_node(&self, id: &str) -> Result<Option<String>, redis::RedisError> {
        if let Some(url) = self.view().url_of(id) {
            return Ok(Some(url));
        }
        let mut redis = self.redis.clone();
        Ok(url_of(redis.get(format!("{NODE_PREFIX}{id}")).await?))
    }

    /// Where a new call by a client secret goes: the node chosen when it was minted while that
    /// node lives (so the secret's calls meet in one place), else placed anew.
    pub async fn pinned_home(&self, pinned: Option<&str>, me: NodeLoad) -> Option<String> {
        let id = pinned?;
        if id == self.node {
            return None;
        }
        match self.url_of_node(id).await {
            Ok(Some(url)) => Some(url),
            Ok(None) => self.place(me).map(|n| n.url),
            Err(e) => {
                warn!("cluster: Redis unreachable, a secret's call is served here: {e}");
                None
            }
        }
    }

    /// Where a live call (or its record) is: the node whose tag its id carries.
    pub async fn call_home(&self, id: &CallId) -> Result<Option<String>, ApiError> {
        let Some(tag) = id.node_tag() else { return Ok(None) };
        if tag == self.tag() {
            return Ok(None);
        }
        match self.url_of_node(&format!("node_{tag}")).await {
            Ok(Some(url)) => Ok(Some(url)),
            Ok(None) => Err(ApiError::not_found("call_not_found", format!("no such call: the node that held {id} is gone"))),
            Err(e) => {
                warn!(call = %id, "cluster: Redis unreachable: {e}");
                Err(ApiError::cluster_unavailable("the node holding this call cannot be found"))
            }
        }
    }
}

/// Client secrets minted on any node, under a digest of their value (a key listing shows no
/// usable secret), for as long as they are valid and may manage their calls.
#[async_trait::async_trait]
impl SharedSecrets for Cluster {
    async fn put(&self, value: &str, grant: &SecretGrant, keep_s: u64) -> Result<(), String> {
        let json = serde_json::to_string(grant).map_err(|e| e.to_string())?;
        let mut redis = self.redis.clone();
        redis.set_ex::<_, _, ()>(secret_key(value), json, keep_s.max(1)).await.map_err(|e| e.to_string())
    }

    async fn get(&self, value: &str) -> Result<Option<SecretGrant>, String> {
        let mut redis = self.redis.clone();
        let json: Option<String> = redis.get(secret_key(value)).await.map_err(|e| e.to_string())?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }
}

fn secret_key(value: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, value.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("voxrelay:secret:{hex}")
}

/// Registers under a fresh id, retrying on the (unlikely) clash with a live node's: ids are short
/// because every call id carries one.
async fn register_new(redis: &mut ConnectionManager, url: &str, ttl: Duration) -> anyhow::Result<String> {
    let info = serde_json::to_string(&Registration { url: url.to_string(), load: 0, draining: false })?;
    for _ in 0..8 {
        let tag = voxrelay_signaling::auth::random_id("");
        let node = format!("node_{}", &tag[..voxrelay_signaling::ids::NODE_TAG_LEN]);
        let opts = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(ttl.as_millis() as u64));
        let fresh: bool = redis.set_options(format!("{NODE_PREFIX}{node}"), &info, opts).await?;
        if fresh {
            return Ok(node);
        }
    }
    anyhow::bail!("no free node id after 8 tries (is something else writing {NODE_PREFIX}* keys?)")
}

/// Why a room's node is not known.
enum Miss {
    Redis(redis::RedisError),
    /// Its owner's node key expired: it died or lost Redis.
    OwnerGone,
}

impl From<redis::RedisError> for Miss {
    fn from(e: redis::RedisError) -> Self {
        Miss::Redis(e)
    }
}
