//! The one thread that owns the database: it writes what calls report in batches (one
//! transaction per batch, committed before it answers the reads that arrived with it, so a read
//! sees everything recorded before it), and deletes what is past its retention.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction, params};
use tokio::sync::oneshot;
use tracing::{info, warn};
use voxrelay_signaling::ApiError;
use voxrelay_signaling::call_history::{CallDetail, CallList, CallQuery, EntryDetail, ToolOutput, TranscriptRole};

use super::Counters;
use super::note::{Note, RecordId, StoreEvent, UnixMs};
use super::{read, schema};

/// Jobs taken into one transaction at most: enough to keep up with hundreds of calls' events
/// in one commit, few enough that a read waits milliseconds.
const MAX_BATCH: usize = 512;
/// Lines kept per call; beyond, a call's transcript stops growing (counted as dropped).
pub const MAX_ENTRIES_PER_CALL: u32 = 10_000;
/// Text kept per line (a typed message, a transcript, a tool's output); longer is cut.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;
/// How often retention runs (and once at start).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

pub enum Job {
    Event(StoreEvent),
    Read(Read),
}

/// A read, answered after the writes queued before it.
pub enum Read {
    List(CallQuery, oneshot::Sender<Result<CallList, ApiError>>),
    Get(String, oneshot::Sender<Result<CallDetail, ApiError>>),
    /// A conversation's dialogue within a character budget.
    Dialogue(String, usize, oneshot::Sender<Result<Vec<(TranscriptRole, String)>, ApiError>>),
}

pub struct Writer {
    pub conn: Connection,
    pub retention: Option<Duration>,
    pub counters: Arc<Counters>,
    /// Lines stored per open call (for [`MAX_ENTRIES_PER_CALL`]).
    pub lines: HashMap<RecordId, u32>,
}

impl Writer {
    /// Until every sender is gone (the server stopped).
    pub fn run(mut self, jobs: Receiver<Job>) {
        self.apply_retention();
        let mut retention_due = Instant::now() + RETENTION_EVERY;
        let mut events = Vec::with_capacity(MAX_BATCH);
        let mut reads = Vec::new();
        loop {
            let first = match jobs.recv_timeout(retention_due.saturating_duration_since(Instant::now())) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    self.apply_retention();
                    retention_due = Instant::now() + RETENTION_EVERY;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut job = Some(first);
            while let Some(j) = job.take() {
                match j {
                    Job::Event(e) => events.push(e),
                    Job::Read(r) => reads.push(r),
                }
                if events.len() + reads.len() < MAX_BATCH {
                    job = jobs.try_recv().ok();
                }
            }
            if !events.is_empty() {
                self.write(&mut events);
            }
            for r in reads.drain(..) {
                match r {
                    Read::List(query, reply) => {
                        let _ = reply.send(read::list(&self.conn, &query));
                    }
                    Read::Get(id, reply) => {
                        let _ = reply.send(read::get(&self.conn, &id));
                    }
                    Read::Dialogue(conversation, budget, reply) => {
                        let _ = reply.send(read::dialogue(&self.conn, &conversation, budget));
                    }
                }
            }
        }
        info!("call history closed");
    }

    fn write(&mut self, events: &mut Vec<StoreEvent>) {
        let n = events.len() as u64;
        let result = self.conn.transaction().and_then(|tx| {
            for event in events.drain(..) {
                apply(&tx, &mut self.lines, &self.counters, event)?;
            }
            tx.commit()
        });
        match result {
            Ok(()) => {
                self.counters.written.fetch_add(n, Relaxed);
            }
            Err(e) => {
                // A full disk, a database another process holds: these calls' lines are lost,
                // the calls go on.
                self.counters.failed.fetch_add(n, Relaxed);
                warn!("call history: a batch of {n} events was not stored: {e}");
                events.clear();
            }
        }
    }

    fn apply_retention(&mut self) {
        let Some(keep) = self.retention else { return };
        let cutoff = UnixMs(UnixMs::now().0.saturating_sub(keep.as_millis() as u64));
        match schema::delete_ended_before(&mut self.conn, cutoff) {
            Ok(0) => {}
            Ok(n) => info!(calls = n, "call history: deleted calls past their retention"),
            Err(e) => warn!("call history: retention failed: {e}"),
        }
    }
}

fn apply(tx: &Transaction<'_>, lines: &mut HashMap<RecordId, u32>, counters: &Counters, event: StoreEvent) -> rusqlite::Result<()> {
    match event {
        StoreEvent::Opened(o) => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO calls (id, transport, agent, room, identity, started_ms, conversation)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![o.id.as_str(), o.transport, o.agent, o.room, o.identity, o.at.0 as i64, o.conversation])?;
            lines.insert(o.id, 0);
        }
        StoreEvent::Closed { id, at, reason, counters: media } => {
            let media = media.map(|m| serde_json::Value::Object(m).to_string());
            tx.prepare_cached("UPDATE calls SET ended_ms = MAX(started_ms, ?2), end_reason = ?3, counters = ?4 WHERE id = ?1")?
                .execute(params![id.as_str(), at.0 as i64, reason, media])?;
            lines.remove(&id);
        }
        StoreEvent::Note { id, at, identity, note } => {
            let count = lines.entry(id.clone()).or_insert(0);
            if *count >= MAX_ENTRIES_PER_CALL {
                counters.capped.fetch_add(1, Relaxed);
                return Ok(());
            }
            *count += 1;
            let line = Line { call: id.as_str(), at, identity: identity.as_deref() };
            match note {
                Note::UserAudio { item_id } => line.insert(tx, &item_id, "user", None, false, &EntryDetail::default())?,
                Note::UserText { item_id, text } => line.insert(tx, &item_id, "user", Some(&text), false, &EntryDetail::default())?,
                Note::UserTranscript { item_id, text } => {
                    let updated = tx
                        .prepare_cached("UPDATE transcript SET text = ?3 WHERE call_id = ?1 AND item_id = ?2 AND role = 'user'")?
                        .execute(params![id.as_str(), item_id, cut(&text)])?;
                    if updated == 0 {
                        line.insert(tx, &item_id, "user", Some(&text), false, &EntryDetail::default())?;
                    } else {
                        *count -= 1;
                    }
                }
                Note::Response { item_id, text, status, audio_ms, heard_ms, tool_calls } => {
                    let interrupted = status == "cancelled";
                    let heard_fraction =
                        heard_ms.filter(|_| audio_ms > 0).map(|h| ((h as f64 / audio_ms as f64).min(1.0) * 1000.0).round() / 1000.0);
                    let detail = EntryDetail {
                        status: Some(status.into()),
                        audio_ms: Some(audio_ms),
                        heard_ms,
                        heard_fraction,
                        tool_calls,
                        ..Default::default()
                    };
                    line.insert(tx, &item_id, "assistant", Some(&text), interrupted, &detail)?;
                }
                Note::ToolOutput { item_id, call_id, output } => {
                    let detail =
                        EntryDetail { tool_output: Some(ToolOutput { call_id, output: cut(&output).into() }), ..Default::default() };
                    line.insert(tx, &item_id, "user", None, false, &detail)?;
                }
            }
        }
    }
    Ok(())
}

/// One transcript line's common columns.
struct Line<'a> {
    call: &'a str,
    at: UnixMs,
    identity: Option<&'a str>,
}

impl Line<'_> {
    fn insert(
        &self,
        tx: &Transaction<'_>,
        item_id: &str,
        role: &str,
        text: Option<&str>,
        interrupted: bool,
        detail: &EntryDetail,
    ) -> rusqlite::Result<()> {
        let detail = (*detail != EntryDetail::default()).then(|| serde_json::to_string(detail).unwrap_or_default());
        tx.prepare_cached(
            "INSERT INTO transcript (call_id, item_id, role, identity, text, at_unix_ms, interrupted, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![self.call, item_id, role, self.identity, text.map(cut), self.at.0 as i64, interrupted, detail])?;
        Ok(())
    }
}

/// At most [`MAX_TEXT_BYTES`], cut at a character boundary.
fn cut(text: &str) -> &str {
    if text.len() <= MAX_TEXT_BYTES {
        return text;
    }
    let mut end = MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
