//! The history as `GET /v1/calls` and `GET /v1/calls/<id>` answer it, and a conversation's
//! dialogue for the call that continues it.

use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use tracing::warn;
use voxrelay_signaling::ApiError;
use voxrelay_signaling::call_history::{
    CallDetail, CallList, CallQuery, CallSummary, EntryDetail, TranscriptEntry, TranscriptRole, call_not_found,
};

const SUMMARY_COLUMNS: &str = "id, transport, agent, room, identity, started_ms, ended_ms, end_reason, conversation";

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
        conversation: row.get(8)?,
    })
}

/// A database error is the server's problem: logged here, a bare 500 for the client.
fn internal(e: rusqlite::Error) -> ApiError {
    warn!("call history read failed: {e}");
    ApiError::internal("the call history could not be read")
}

pub fn list(conn: &Connection, q: &CallQuery) -> Result<CallList, ApiError> {
    // Newest first; a page continues strictly below its cursor's (start, insertion) position.
    let cursor: (i64, i64) = match &q.before {
        None => (i64::MAX, i64::MAX),
        Some(id) => conn
            .prepare_cached("SELECT started_ms, seq FROM calls WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
            .map_err(internal)?
            .ok_or_else(|| call_not_found(id))?,
    };
    let since = q.since.map_or(0, |s| s.saturating_mul(1000)) as i64;
    let mut filter = String::from("started_ms >= ? AND (started_ms, seq) < (?, ?)");
    let mut args = vec![Sql::Integer(since), Sql::Integer(cursor.0), Sql::Integer(cursor.1)];
    if let Some(room) = &q.room {
        filter.push_str(" AND room = ?");
        args.push(Sql::Text(room.to_string()));
    }
    if let Some(conversation) = &q.conversation {
        filter.push_str(" AND conversation = ?");
        args.push(Sql::Text(conversation.to_string()));
    }
    args.push(Sql::Integer(q.limit as i64 + 1));
    let sql = format!("SELECT {SUMMARY_COLUMNS} FROM calls WHERE {filter} ORDER BY started_ms DESC, seq DESC LIMIT ?");
    let mut rows: Vec<CallSummary> =
        conn.prepare_cached(&sql).and_then(|mut s| s.query_map(params_from_iter(args), summary)?.collect()).map_err(internal)?;
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
                let (started_ms, counters): (i64, Option<String>) = (r.get(5)?, r.get(9)?);
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

/// Lines read back per conversation at most, newest first, before the budget cuts them.
const DIALOGUE_ROWS: i64 = 2000;

/// What was said in a conversation's calls, oldest first, within `budget_chars` (newest kept):
/// the words of each turn (spoken turns without a transcription have none), a response cut
/// short marked with "…".
pub fn dialogue(conn: &Connection, conversation: &str, budget_chars: usize) -> Result<Vec<(TranscriptRole, String)>, ApiError> {
    let mut s = conn
        .prepare_cached(
            "SELECT t.role, t.text, t.interrupted FROM transcript t JOIN calls c ON c.id = t.call_id
             WHERE c.conversation = ?1 AND t.text IS NOT NULL AND t.text != ''
             ORDER BY c.started_ms DESC, c.seq DESC, t.seq DESC LIMIT ?2",
        )
        .map_err(internal)?;
    let rows: Vec<(String, String, bool)> = s
        .query_map(params![conversation, DIALOGUE_ROWS], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .and_then(Iterator::collect)
        .map_err(internal)?;
    let mut turns = Vec::new();
    let mut used = 0;
    for (role, text, interrupted) in rows {
        let text = if interrupted { format!("{}…", text.trim_end()) } else { text };
        used += text.len();
        if used > budget_chars && !turns.is_empty() {
            break;
        }
        turns.push((if role == "assistant" { TranscriptRole::Assistant } else { TranscriptRole::User }, text));
    }
    turns.reverse();
    Ok(turns)
}
