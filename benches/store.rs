//! The call history's write path (src/store): what a call costs the writer thread, on a file
//! database in WAL mode as the server runs it. Each sample records whole calls (opened, the
//! lines of a short conversation, closed) and waits until the writer has committed them (a
//! read queued behind them), so the time is throughput, not queueing.
//! `cargo bench --bench store`; numbers in BENCHMARKS.md ("Call history").

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use voxrelay::store::{Database, Note, Opened, RecordId, Store, StoreEvent, UnixMs};
use voxrelay_signaling::CallId;
use voxrelay_signaling::call_history::CallQuery;

/// One call's events: opened, 5 turns (a spoken turn with its transcript, a response), closed.
const EVENTS_PER_CALL: u64 = 2 + 5 * 3;

fn one_call(store: &Store, n: u64) {
    let id = RecordId::from(&CallId::random("rtc_"));
    let at = UnixMs(1_700_000_000_000 + n);
    let opened =
        Opened { id: id.clone(), transport: "webrtc", agent: Some("echo".into()), room: None, identity: None, conversation: None, at };
    store.record(StoreEvent::Opened(opened));
    for turn in 0..5 {
        let item_id = format!("item_{turn}");
        let notes = [
            Note::UserAudio { item_id: item_id.clone() },
            Note::UserTranscript { item_id, text: "what is the weather like in Lisbon tomorrow morning".into() },
            Note::Response {
                item_id: format!("item_r{turn}"),
                text: "Tomorrow morning in Lisbon: sunny, 17 degrees, light wind from the north.".into(),
                status: "completed",
                audio_ms: 4200,
                heard_ms: None,
                tool_calls: Vec::new(),
            },
        ];
        for note in notes {
            store.record(StoreEvent::Note { id: id.clone(), at, identity: None, note });
        }
    }
    let media = serde_json::json!({"packets_in": 9000, "packets_out": 9000, "frames_decoded": 9000}).as_object().cloned();
    store.record(StoreEvent::Closed { id, at, reason: "hung_up", counters: media });
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("voxrelay-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(&Database::File(dir.join("voxrelay.db")), None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let barrier = || rt.block_on(store.list(CallQuery { room: None, conversation: None, since: None, before: None, limit: 1 })).unwrap();
    // Calls per sample: ≈ 2,000 events, well inside the queue (8,192), so nothing drops.
    const CALLS: u64 = 100;
    let mut g = c.benchmark_group("call history");
    g.throughput(Throughput::Elements(CALLS * EVENTS_PER_CALL));
    g.sample_size(30).measurement_time(Duration::from_secs(10));
    let mut n = 0;
    g.bench_function("100 calls of 17 events, written and committed (file, WAL)", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                for _ in 0..CALLS {
                    n += 1;
                    one_call(&store, n);
                }
                barrier();
            }
            start.elapsed()
        })
    });
    g.finish();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
