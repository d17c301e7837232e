-- Version 1: calls (1:1 calls and room participants) and their transcripts.
-- Times are unix milliseconds; `transcript.at_unix_ms - calls.started_ms` is an entry's at_ms.
CREATE TABLE calls (
    seq INTEGER PRIMARY KEY,          -- insertion order: ties between equal start times
    id TEXT NOT NULL UNIQUE,
    transport TEXT NOT NULL,
    agent TEXT,
    room TEXT,
    identity TEXT,
    started_ms INTEGER NOT NULL,
    ended_ms INTEGER,
    end_reason TEXT,
    counters TEXT                     -- JSON object of media counters, at the end
);
CREATE INDEX calls_by_start ON calls (started_ms, seq);
CREATE INDEX calls_by_room ON calls (room, started_ms, seq) WHERE room IS NOT NULL;
CREATE INDEX calls_by_end ON calls (ended_ms) WHERE ended_ms IS NOT NULL;

CREATE TABLE transcript (
    seq INTEGER PRIMARY KEY,          -- order within a call
    call_id TEXT NOT NULL,
    item_id TEXT,
    role TEXT NOT NULL,               -- user | assistant
    identity TEXT,
    text TEXT,
    at_unix_ms INTEGER NOT NULL,
    interrupted INTEGER NOT NULL DEFAULT 0,
    detail TEXT                       -- JSON: status, audio_ms, heard_ms, tool calls, ...
);
CREATE INDEX transcript_by_call ON transcript (call_id, item_id);
