-- Version 2: the conversation a call continues (a session's `conversation`).
ALTER TABLE calls ADD COLUMN conversation TEXT;
CREATE INDEX calls_by_conversation ON calls (conversation, started_ms, seq) WHERE conversation IS NOT NULL;
