//! Opening the database: pragmas, versioned migrations (`PRAGMA user_version`), and closing
//! the calls a previous run left open (it was killed or crashed).

use rusqlite::Connection;

use super::note::UnixMs;

/// Migration `i` takes the schema from version `i` to `i + 1`; never edit a shipped one, add
/// the next.
const MIGRATIONS: &[&str] = &[include_str!("migrations/0001_calls.sql"), include_str!("migrations/0002_conversations.sql")];

/// What an end reason reads for a call the server never got to end.
pub const INTERRUPTED: &str = "interrupted";

/// Sets the connection up and brings the schema to the current version.
pub fn prepare(conn: &mut Connection) -> rusqlite::Result<()> {
    // WAL: readers never block the writer, and a committed transaction is in the log before
    // `COMMIT` returns, so a killed process loses nothing committed. NORMAL skips the fsync per
    // commit (an OS crash may lose the last commits; a process crash loses none).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    migrate(conn)
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let version = version.max(0) as usize;
    if version > MIGRATIONS.len() {
        let message = format!("the database has schema version {version}; this voxrelay knows up to {}", MIGRATIONS.len());
        return Err(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH), Some(message)));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// Calls still open from a previous run end where their last stored line was (or where they
/// began), as [`INTERRUPTED`]. Returns how many.
pub fn close_interrupted(conn: &Connection) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE calls SET end_reason = ?1, ended_ms = MAX(started_ms, COALESCE(
             (SELECT MAX(at_unix_ms) FROM transcript WHERE transcript.call_id = calls.id), started_ms))
         WHERE ended_ms IS NULL",
        [INTERRUPTED],
    )
}

/// Deletes calls that ended before `cutoff`, with their transcripts. Returns how many calls.
pub fn delete_ended_before(conn: &mut Connection, cutoff: UnixMs) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM transcript WHERE call_id IN (SELECT id FROM calls WHERE ended_ms < ?1)", [cutoff.0 as i64])?;
    let n = tx.execute("DELETE FROM calls WHERE ended_ms < ?1", [cutoff.0 as i64])?;
    tx.commit()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_run_once_and_a_newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        prepare(&mut conn).unwrap();
        prepare(&mut conn).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
        conn.pragma_update(None, "user_version", MIGRATIONS.len() as i64 + 1).unwrap();
        let e = prepare(&mut conn).unwrap_err().to_string();
        assert!(e.contains(&format!("schema version {}", MIGRATIONS.len() + 1)), "{e}");
    }

    #[test]
    fn open_calls_of_a_previous_run_end_at_their_last_line() {
        let mut conn = Connection::open_in_memory().unwrap();
        prepare(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO calls (id, transport, started_ms) VALUES ('rtc_a', 'webrtc', 1000), ('rtc_b', 'webrtc', 5000);
             INSERT INTO calls (id, transport, started_ms, ended_ms, end_reason) VALUES ('rtc_c', 'webrtc', 1, 2, 'hung_up');
             INSERT INTO transcript (call_id, role, at_unix_ms) VALUES ('rtc_a', 'user', 1500), ('rtc_a', 'assistant', 2500);",
        )
        .unwrap();
        assert_eq!(close_interrupted(&conn).unwrap(), 2);
        let ends: Vec<(String, i64, String)> = conn
            .prepare("SELECT id, ended_ms, end_reason FROM calls ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            ends,
            [("rtc_a".into(), 2500, INTERRUPTED.into()), ("rtc_b".into(), 5000, INTERRUPTED.into()), ("rtc_c".into(), 2, "hung_up".into())]
        );
    }

    #[test]
    fn retention_deletes_ended_calls_and_their_lines_only() {
        let mut conn = Connection::open_in_memory().unwrap();
        prepare(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO calls (id, transport, started_ms, ended_ms) VALUES ('old', 'webrtc', 1, 10), ('new', 'webrtc', 1, 100);
             INSERT INTO calls (id, transport, started_ms) VALUES ('live', 'webrtc', 1);
             INSERT INTO transcript (call_id, role, at_unix_ms) VALUES ('old', 'user', 5), ('new', 'user', 5), ('live', 'user', 5);",
        )
        .unwrap();
        assert_eq!(delete_ended_before(&mut conn, UnixMs(50)).unwrap(), 1);
        let left: i64 = conn.query_row("SELECT COUNT(*) FROM transcript", [], |r| r.get(0)).unwrap();
        let calls: i64 = conn.query_row("SELECT COUNT(*) FROM calls", [], |r| r.get(0)).unwrap();
        assert_eq!((left, calls), (2, 2));
    }
}
