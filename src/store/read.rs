//! The history as `GET /v1/calls` and `GET /v1/calls/<id>` answer it.

use rusqlite::{Connection, OptionalExtension, Row, params};
use tracing::warn;
use voxrelay_signaling::ApiError;
use voxrelay_signaling::call_history::{
    CallDetail, CallList, CallQuery, CallSummary, EntryDetail, TranscriptEntry, TranscriptRole, call_not_found,
};

const SUMMARY_COLUMNS: &str = "id, transport, agent, room, identity, started_ms, ended_ms, end_reason";

fn summary(row: &Row<'_>) -> rusqlite::Result<CallSummary> {
    let started: i64 = row.get(5)?;
    let ended: Option<i64> = row.get(6)?;
    Ok(CallSummary {
        id: row.get(0)?,
        transport: row.get(1)?,
        agent: row.get(2)?,
        room: row.get(3)?,
        identity: row.get(4)?,
        started_at: (started / 1000) as u64,
        ended_at: ended.map(|e| (e / 1000) as u64),
        end_reason: row.get(7)?,
        duration_ms: ended.map(|e| e.saturating_sub(started).max(0) as u64),
    })
}

/// A database error is the server's problem: logged here, a bare 500 for the client.
fn internal(e: rusqlite::Error) -> ApiError {
    warn!("call history read failed: {e}");
    ApiError::internal("the call history could not be read")
}

pub fn list(conn: &Connection, q: &CallQuery) -> Result<CallList, ApiError> {
    // Newest first; a page continues strictly below its cursor's (start, insertion) position.
    let cursor = match &q.before {
        None => (i64::MAX, i64::MAX),
        Some(id) => conn
            .prepare_cached("SELECT started_ms, seq FROM calls WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
            .map_err(internal)?
            .ok_or_else(|| call_not_found(id))?,
    };
    let since = q.since.map_or(0, |s| s.saturating_mul(1000)) as i64;
    let take = q.limit as i64 + 1;
    let mut rows: Vec<CallSummary> = match &q.room {
        Some(room) => {
            let sql = format!(
                "SELECT {SUMMARY_COLUMNS} FROM calls WHERE room = ?1 AND started_ms >= ?2 AND (started_ms, seq) < (?3, ?4)
                 ORDER BY started_ms DESC, seq DESC LIMIT ?5"
            );
            let mut s = conn.prepare_cached(&sql).map_err(internal)?;
            s.query_map(params![room.as_str(), since, cursor.0, cursor.1, take], summary).and_then(Iterator::collect)
        }
        None => {
            let sql = format!(
                "SELECT {SUMMARY_COLUMNS} FROM calls WHERE started_ms >= ?1 AND (started_ms, seq) < (?2, ?3)
                 ORDER BY started_ms DESC, seq DESC LIMIT ?4"
            );
            let mut s = conn.prepare_cached(&sql).map_err(internal)?;
            s.query_map(params![since, cursor.0, cursor.1, take], summary).and_then(Iterator::collect)
        }
    }
    .map_err(internal)?;
    let has_more = rows.len() > q.limit;
    rows.truncate(q.limit);
    Ok(CallList { data: rows, has_more })
}

pub fn get(conn: &Connection, id: &str) -> Result<CallDetail, ApiError> {
    let sql = format!("SELECT {SUMMARY_COLUMNS}, counters FROM calls WHERE id = ?1");
    let found = conn
        .prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_row([id], |r| {
                let (started_ms, counters): (i64, Option<String>) = (r.get(5)?, r.get(8)?);
                Ok((summary(r)?, started_ms, counters))
            })
            .optional()
        })
        .map_err(internal)?;
    let (summary, start, counters) = found.ok_or_else(|| call_not_found(id))?;
    let mut s = conn
        .prepare_cached(
            "SELECT role, identity, text, at_unix_ms, interrupted, detail, item_id FROM transcript WHERE call_id = ?1 ORDER BY seq",
        )
        .map_err(internal)?;
    let transcript = s
        .query_map([id], |r| {
            let role: String = r.get(0)?;
            let at: i64 = r.get(3)?;
            let detail: Option<String> = r.get(5)?;
            let mut detail: EntryDetail = detail.and_then(|d| serde_json::from_str(&d).ok()).unwrap_or_default();
            detail.item_id = r.get(6)?;
            Ok(TranscriptEntry {
                role: if role == "assistant" { TranscriptRole::Assistant } else { TranscriptRole::User },
                identity: r.get(1)?,
                text: r.get(2)?,
                at_ms: at.saturating_sub(start).max(0) as u64,
                interrupted: r.get(4)?,
                detail,
            })
        })
        .and_then(Iterator::collect)
        .map_err(internal)?;
    let counters = counters.and_then(|c| serde_json::from_str(&c).ok());
    Ok(CallDetail { summary, transcript, counters })
}
