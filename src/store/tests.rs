use serde_json::json;
use voxrelay_signaling::RoomName;
use voxrelay_signaling::call_history::{CallQuery, ToolCall, TranscriptRole};

use super::*;

fn opened(id: &str, at: u64, room: Option<&str>) -> StoreEvent {
    StoreEvent::Opened(Opened {
        id: id_of(id),
        transport: if room.is_some() { "room" } else { "webrtc" },
        agent: Some("echo".into()),
        room: room.map(Into::into),
        identity: room.map(|_| "alice".into()),
        conversation: None,
        at: UnixMs(at),
    })
}

fn id_of(id: &str) -> RecordId {
    RecordId::from(&voxrelay_signaling::CallId::from_client(id))
}

fn note(id: &str, at: u64, note: Note) -> StoreEvent {
    StoreEvent::Note { id: id_of(id), at: UnixMs(at), identity: None, note }
}

fn query(limit: usize) -> CallQuery {
    CallQuery { room: None, conversation: None, since: None, before: None, limit }
}

#[tokio::test]
async fn a_call_is_stored_with_its_transcript_in_order() {
    let store = Store::open(&Database::Memory, None).unwrap();
    let t0 = 1_700_000_000_000;
    store.record(opened("rtc_1", t0, None));
    store.record(note("rtc_1", t0 + 1000, Note::UserAudio { item_id: "item_a".into() }));
    store.record(note("rtc_1", t0 + 1100, Note::UserTranscript { item_id: "item_a".into(), text: "what time is it".into() }));
    let call = ToolCall { call_id: "call_1".into(), name: "clock".into(), arguments: "{}".into() };
    store.record(note(
        "rtc_1",
        t0 + 2000,
        Note::Response {
            item_id: "item_b".into(),
            text: "Let me".into(),
            status: "cancelled",
            audio_ms: 3000,
            heard_ms: Some(1000),
            tool_calls: vec![call.clone()],
        },
    ));
    store.record(note("rtc_1", t0 + 2100, Note::ToolOutput { item_id: "item_c".into(), call_id: "call_1".into(), output: "12:00".into() }));
    store.record(note(
        "rtc_1",
        t0 + 2200,
        Note::UserText { item_id: "item_d".into(), text: "[The caller pressed 5 on the phone keypad]".into() },
    ));
    let live = store.get("rtc_1").await.unwrap();
    assert_eq!((live.summary.ended_at, live.summary.end_reason.as_deref(), live.summary.duration_ms), (None, None, None));

    let media = json!({"packets_in": 250}).as_object().cloned();
    store.record(StoreEvent::Closed { id: id_of("rtc_1"), at: UnixMs(t0 + 5500), reason: "hung_up", counters: media });
    let detail = store.get("rtc_1").await.unwrap();
    let s = &detail.summary;
    assert_eq!((s.transport.as_str(), s.agent.as_deref(), s.started_at), ("webrtc", Some("echo"), t0 / 1000));
    assert_eq!((s.ended_at, s.end_reason.as_deref(), s.duration_ms), (Some(t0 / 1000 + 5), Some("hung_up"), Some(5500)));
    assert_eq!(detail.counters.unwrap()["packets_in"], 250);
    let t = &detail.transcript;
    assert_eq!(t.len(), 4, "the transcription completes the spoken turn instead of adding a line: {t:?}");
    assert_eq!((t[0].role, t[0].text.as_deref(), t[0].at_ms), (TranscriptRole::User, Some("what time is it"), 1000));
    assert_eq!((t[1].role, t[1].text.as_deref(), t[1].interrupted), (TranscriptRole::Assistant, Some("Let me"), true));
    assert_eq!((t[1].detail.heard_ms, t[1].detail.heard_fraction, t[1].detail.audio_ms), (Some(1000), Some(0.333), Some(3000)));
    assert_eq!(t[1].detail.tool_calls, [call]);
    assert_eq!(t[2].detail.tool_output.as_ref().unwrap().output, "12:00");
    assert_eq!((t[3].at_ms, t[3].detail.item_id.as_deref()), (2200, Some("item_d")));
}

#[tokio::test]
async fn pages_are_newest_first_and_filter_by_room_and_start() {
    let store = Store::open(&Database::Memory, None).unwrap();
    for i in 0..5u64 {
        store.record(opened(&format!("rtc_{i}"), 1_000_000 + i * 1000, None));
    }
    store.record(opened("part_r1", 1_001_500, Some("standup")));
    store.record(opened("part_r2", 1_001_500, Some("standup")));
    let first = store.list(query(4)).await.unwrap();
    let ids: Vec<_> = first.data.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["rtc_4", "rtc_3", "rtc_2", "part_r2"]);
    assert!(first.has_more);
    let rest = store.list(CallQuery { before: Some("part_r2".into()), ..query(10) }).await.unwrap();
    let ids: Vec<_> = rest.data.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["part_r1", "rtc_1", "rtc_0"], "equal start times keep their insertion order across pages");
    assert!(!rest.has_more);
    let room = store.list(CallQuery { room: Some(RoomName::parse("standup").unwrap()), ..query(10) }).await.unwrap();
    assert_eq!(room.data.len(), 2);
    assert_eq!(room.data[0].identity.as_deref(), Some("alice"));
    let since = store.list(CallQuery { since: Some(1_002), ..query(10) }).await.unwrap();
    let ids: Vec<_> = since.data.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["rtc_4", "rtc_3", "rtc_2"]);
    let e = store.list(CallQuery { before: Some("rtc_nope".into()), ..query(10) }).await.unwrap_err();
    assert_eq!((e.status.as_u16(), e.code), (404, "call_not_found"));
    assert_eq!(store.get("rtc_nope").await.unwrap_err().code, "call_not_found");
}

#[tokio::test]
async fn a_call_keeps_at_most_its_line_limit_and_long_text_is_cut() {
    let store = Store::open(&Database::Memory, None).unwrap();
    store.record(opened("rtc_x", 0, None));
    let long = "é".repeat(MAX_TEXT_BYTES);
    store.record(note("rtc_x", 1, Note::UserText { item_id: "item_0".into(), text: long }));
    for i in 1..MAX_ENTRIES_PER_CALL + 5 {
        store.record(note("rtc_x", 1, Note::UserText { item_id: format!("item_{i}"), text: "hi".into() }));
        // A barrier now and then keeps the queue (8192) from filling: this tests the line limit.
        if i % 4096 == 0 {
            store.get("rtc_x").await.unwrap();
        }
    }
    let detail = store.get("rtc_x").await.unwrap();
    assert_eq!(detail.transcript.len(), MAX_ENTRIES_PER_CALL as usize);
    assert_eq!((store.counters.capped.load(Relaxed), store.counters.dropped.load(Relaxed)), (5, 0));
    let first = detail.transcript[0].text.as_deref().unwrap();
    assert!(first.len() <= MAX_TEXT_BYTES && first.len() >= MAX_TEXT_BYTES - 1 && first.chars().all(|c| c == 'é'));
    assert!(store.render_metrics().contains("voxrelay_history_events_lost_total{why=\"call_line_limit\"} 5"));
}

#[tokio::test]
async fn a_file_database_outlives_the_server_and_closes_what_it_left_open() {
    let dir = std::env::temp_dir().join(format!("voxrelay-store-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let db = Database::File(dir.join("sub/voxrelay.db"));
    {
        let store = Store::open(&db, None).unwrap();
        store.record(opened("rtc_done", 10_000, None));
        store.record(StoreEvent::Closed { id: id_of("rtc_done"), at: UnixMs(12_000), reason: "requested", counters: None });
        store.record(opened("rtc_open", 20_000, None));
        store.record(note("rtc_open", 23_000, Note::UserAudio { item_id: "item_1".into() }));
        store.list(query(1)).await.unwrap();
    }
    // The first writer lets go once its queue is gone; a second open may briefly wait on it.
    let store = Store::open(&db, None).unwrap();
    let open = store.get("rtc_open").await.unwrap().summary;
    assert_eq!((open.end_reason.as_deref(), open.duration_ms), (Some("interrupted"), Some(3000)));
    assert_eq!(store.get("rtc_done").await.unwrap().summary.end_reason.as_deref(), Some("requested"));
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn retention_removes_calls_ended_long_ago_at_start() {
    let dir = std::env::temp_dir().join(format!("voxrelay-store-retention-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let db = Database::File(dir.join("voxrelay.db"));
    let now = UnixMs::now().0;
    {
        let store = Store::open(&db, None).unwrap();
        for (id, ended) in [("rtc_old", now - 3 * 86_400_000), ("rtc_recent", now - 1000)] {
            store.record(opened(id, ended - 1000, None));
            store.record(StoreEvent::Closed { id: id_of(id), at: UnixMs(ended), reason: "hung_up", counters: None });
        }
        store.list(query(1)).await.unwrap();
    }
    let store = Store::open(&db, Some(Duration::from_secs(2 * 86_400))).unwrap();
    let ids: Vec<_> = store.list(query(10)).await.unwrap().data.into_iter().map(|c| c.id).collect();
    assert_eq!(ids, ["rtc_recent"]);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn history_off_answers_that_it_is_off() {
    let store = Store::open(&Database::Off, None).unwrap();
    store.record(opened("rtc_1", 0, None));
    let e = store.list(query(1)).await.unwrap_err();
    assert_eq!((e.status.as_u16(), e.code), (404, "history_disabled"));
}

#[tokio::test]
async fn a_conversations_dialogue_spans_its_calls_within_the_budget() {
    let store = Store::open(&Database::Memory, None).unwrap();
    let conv = voxrelay_signaling::ConversationId::parse("conv_0123456789abcdef").unwrap();
    for (i, id) in ["rtc_a", "rtc_b", "rtc_other"].into_iter().enumerate() {
        let mut o = opened(id, 1000 * i as u64, None);
        if let StoreEvent::Opened(o) = &mut o {
            o.conversation = (id != "rtc_other").then(|| conv.to_string());
        }
        store.record(o);
    }
    let response = |text: &str, status| Note::Response {
        item_id: "item_r".into(),
        text: text.into(),
        status,
        audio_ms: 1000,
        heard_ms: None,
        tool_calls: Vec::new(),
    };
    store.record(note("rtc_a", 1, Note::UserAudio { item_id: "item_1".into() }));
    store.record(note("rtc_a", 2, Note::UserTranscript { item_id: "item_1".into(), text: "hello there".into() }));
    store.record(note("rtc_a", 3, response("Hi! How can I help?", "completed")));
    store.record(note("rtc_a", 4, Note::UserAudio { item_id: "item_2".into() }));
    store.record(note("rtc_b", 5, Note::UserText { item_id: "item_3".into(), text: "book a table".into() }));
    store.record(note("rtc_b", 6, response("For how many", "cancelled")));
    store.record(note("rtc_other", 7, Note::UserText { item_id: "item_4".into(), text: "someone else".into() }));
    let turns = store.dialogue(&conv, 10_000).await.unwrap();
    let turns: Vec<(&str, &str)> = turns.iter().map(|(r, t)| (r.as_str(), t.as_str())).collect();
    assert_eq!(
        turns,
        [("user", "hello there"), ("assistant", "Hi! How can I help?"), ("user", "book a table"), ("assistant", "For how many…")],
        "oldest first, words only (an untranscribed turn has none), a cut response marked"
    );
    let newest = store.dialogue(&conv, 30).await.unwrap();
    assert_eq!(newest.len(), 2, "the newest within the budget: {newest:?}");
    let unknown = voxrelay_signaling::ConversationId::parse("conv_nobodyknowsthis").unwrap();
    assert!(store.dialogue(&unknown, 10_000).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_stalled_disk_drops_and_counts_events_and_never_blocks_a_call() {
    let dir = std::env::temp_dir().join(format!("voxrelay-store-stall-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("voxrelay.db");
    let store = Store::open(&Database::File(path.clone()), None).unwrap();
    store.list(query(1)).await.unwrap();
    // Another process holds the database's write lock: the writer's next commit waits for it.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    store.record(opened("rtc_first", 1, None));
    // More than the queue and a batch the writer may hold: the rest must drop.
    for i in 0..(QUEUE as u64 + 1000) {
        store.record(note("rtc_first", 2 + i, Note::UserText { item_id: format!("item_{i}"), text: "hi".into() }));
    }
    let dropped = store.counters.dropped.load(Relaxed);
    assert!(dropped >= 1000 - 512, "a full queue drops instead of waiting: {dropped} dropped");
    assert!(store.render_metrics().contains("voxrelay_history_events_lost_total{why=\"queue_full\"}"));
    other.execute_batch("COMMIT").unwrap();
    // The writer catches up with what it kept, in order (a read meanwhile is refused as busy,
    // not queued behind a full queue).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let detail = loop {
        match store.get("rtc_first").await {
            Ok(d) => break d,
            Err(e) if e.status.as_u16() == 503 && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(detail.transcript.len() as u64, QUEUE as u64 + 1000 - dropped);
    assert_eq!(detail.transcript[0].detail.item_id.as_deref(), Some("item_0"));
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
