//! Call history (issue 22, PROTOCOL.md §5): every call and room participant, with its
//! transcript, in an embedded SQLite database (`<data dir>/voxrelay.db` by default).
//!
//! Nothing here runs on a call's path: calls hand [`StoreEvent`]s to a bounded queue
//! ([`Store::record`] never blocks; a full queue drops the event and counts it) and one writer
//! thread owns the database. Reads for the API go through the same queue, after the writes
//! before them.

mod note;
mod read;
mod schema;
mod writer;

pub use note::{Note, Opened, RecordId, StoreEvent, UnixMs};
pub use writer::{MAX_ENTRIES_PER_CALL, MAX_TEXT_BYTES};

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;
use tracing::{info, warn};
use voxrelay_signaling::ApiError;
use voxrelay_signaling::ConversationId;
use voxrelay_signaling::call_history::{CallDetail, CallList, CallQuery, TranscriptRole, history_disabled};

use self::writer::{Job, Read, Writer};

/// Events (and reads) waiting for the writer. At ≈ 10 events per call-minute this is minutes
/// of a thousand calls' history; it fills only when the disk stalls.
pub const QUEUE: usize = 8192;

/// Where the history lives (`--database`).
#[derive(Clone, Debug, PartialEq)]
pub enum Database {
    File(PathBuf),
    /// Kept in memory until the server stops (tests; `--database :memory:`).
    Memory,
    /// No history (`--database off`): the history API answers 404 `history_disabled`.
    Off,
}

impl Database {
    pub fn parse(s: &str) -> Self {
        match s {
            "off" => Database::Off,
            ":memory:" => Database::Memory,
            path => Database::File(PathBuf::from(path)),
        }
    }
}

/// What the store has done, for `/metrics`.
#[derive(Default)]
pub struct Counters {
    pub written: AtomicU64,
    /// Dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Not stored because their call had [`MAX_ENTRIES_PER_CALL`] lines.
    pub capped: AtomicU64,
    /// In a batch the database refused (disk full, I/O error).
    pub failed: AtomicU64,
}

pub struct Store {
    jobs: Option<SyncSender<Job>>,
    counters: Arc<Counters>,
}

impl Store {
    /// Opens (creating, migrating) the database and starts its writer. Calls a previous run
    /// left open are closed as `interrupted`. `retention`: ended calls older than this are
    /// deleted (at start, then hourly); `None` keeps them.
    pub fn open(db: &Database, retention: Option<Duration>) -> anyhow::Result<Self> {
        let mut conn = match db {
            Database::Off => return Ok(Store::off()),
            Database::Memory => rusqlite::Connection::open_in_memory()?,
            Database::File(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                }
                rusqlite::Connection::open(path).with_context(|| format!("opening {}", path.display()))?
            }
        };
        schema::prepare(&mut conn).context("preparing the call history database")?;
        let closed = schema::close_interrupted(&conn)?;
        if closed > 0 {
            warn!(calls = closed, "call history: calls the previous run never ended are closed as interrupted");
        }
        let counters = Arc::new(Counters::default());
        let (jobs, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let writer = Writer { conn, retention, counters: counters.clone(), lines: Default::default() };
        std::thread::Builder::new().name("voxrelay-store".into()).spawn(move || writer.run(rx))?;
        if let Database::File(path) = db {
            info!(path = %path.display(), "call history in {}", path.display());
        }
        Ok(Store { jobs: Some(jobs), counters })
    }

    pub fn off() -> Self {
        Store { jobs: None, counters: Arc::default() }
    }

    /// Hands an event to the writer; never blocks. A full queue drops it (counted, logged on
    /// the first and every thousandth).
    pub fn record(&self, event: StoreEvent) {
        let Some(jobs) = &self.jobs else { return };
        match jobs.try_send(Job::Event(event)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let n = self.counters.dropped.fetch_add(1, Relaxed);
                if n.is_multiple_of(1000) {
                    warn!(dropped = n + 1, "call history: the writer is behind; events dropped");
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.counters.failed.fetch_add(1, Relaxed);
            }
        }
    }

    pub async fn list(&self, query: CallQuery) -> Result<CallList, ApiError> {
        self.ask(|reply| Read::List(query, reply)).await
    }

    pub async fn get(&self, id: &str) -> Result<CallDetail, ApiError> {
        let id = id.to_string();
        self.ask(|reply| Read::Get(id, reply)).await
    }

    /// The dialogue so far of `conversation` (oldest first, within `budget_chars`), for the
    /// call that continues it; empty when the history is off or has none.
    pub async fn dialogue(&self, conversation: &ConversationId, budget_chars: usize) -> Result<Vec<(TranscriptRole, String)>, ApiError> {
        if self.jobs.is_none() {
            return Ok(Vec::new());
        }
        let id = conversation.to_string();
        self.ask(|reply| Read::Dialogue(id, budget_chars, reply)).await
    }

    async fn ask<T>(&self, read: impl FnOnce(oneshot::Sender<Result<T, ApiError>>) -> Read) -> Result<T, ApiError> {
        let jobs = self.jobs.as_ref().ok_or_else(history_disabled)?;
        let (reply, answer) = oneshot::channel();
        match jobs.try_send(Job::Read(read(reply))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(ApiError::overloaded("the call history is busy; try again")),
            Err(TrySendError::Disconnected(_)) => return Err(ApiError::internal("the call history is not running")),
        }
        answer.await.map_err(|_| ApiError::internal("the call history is not running"))?
    }

    /// Prometheus lines.
    pub fn render_metrics(&self) -> String {
        let c = &self.counters;
        let mut out = String::new();
        let name = "voxrelay_history_events_written_total";
        out.push_str(&format!("# HELP {name} Call history events stored.\n# TYPE {name} counter\n{name} {}\n", c.written.load(Relaxed)));
        let name = "voxrelay_history_events_lost_total";
        out.push_str(&format!("# HELP {name} Call history events not stored, by why.\n# TYPE {name} counter\n"));
        for (why, n) in [("queue_full", &c.dropped), ("call_line_limit", &c.capped), ("database_error", &c.failed)] {
            out.push_str(&format!("{name}{{why=\"{why}\"}} {}\n", n.load(Relaxed)));
        }
        out
    }
}

/// A call's media counters as its record keeps them.
pub fn counters_json(media: &voxrelay_media::StatsSnapshot) -> serde_json::Map<String, serde_json::Value> {
    media.fields().into_iter().map(|(name, n)| (name.to_string(), n.into())).collect()
}

/// One call's (or room participant's) way into the history: its lines, then its end.
pub struct Recorder {
    store: Arc<Store>,
    id: RecordId,
}

impl Recorder {
    pub fn new(store: Arc<Store>, id: RecordId) -> Self {
        Recorder { store, id }
    }

    /// Stores the conversation's new lines, stamped now; `identity_of` says who spoke each (in
    /// a room).
    pub fn take(&self, notes: &mut Vec<Note>, identity_of: impl Fn(&Note) -> Option<String>) {
        if notes.is_empty() {
            return;
        }
        let at = UnixMs::now();
        for note in notes.drain(..) {
            let identity = identity_of(&note);
            self.store.record(StoreEvent::Note { id: self.id.clone(), at, identity, note });
        }
    }

    pub fn closed(&self, reason: &'static str, counters: Option<serde_json::Map<String, serde_json::Value>>) {
        self.store.record(StoreEvent::Closed { id: self.id.clone(), at: UnixMs::now(), reason, counters });
    }
}

#[cfg(test)]
mod tests;
