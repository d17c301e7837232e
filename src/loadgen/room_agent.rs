//! Room mode with an agent (`--room R --agent echo`): the publishers take turns, one sentence
//! each, and wait for the agent's answer before the next one speaks, as people talking to an
//! assistant in a meeting do. Measures the turn latency a listener experiences: the end of a
//! participant's speech → the first packet of the agent's answer at another participant, minus
//! the `silence_duration_ms` the turn detector must wait for.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;

use crate::transport::webrtc::room_client::{RoomClient, encode_speech};

/// How long a turn may wait for the agent's `response.done` before the next one starts.
const ANSWER_WAIT: Duration = Duration::from_secs(20);

/// Attaches the agent `name` to `room`, with server VAD waiting `silence_ms`.
pub async fn attach(http: &reqwest::Client, base: &str, key: &str, room: &str, name: &str, silence_ms: u32) -> anyhow::Result<()> {
    let body = json!({"agent": name, "turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms}});
    let resp = http.post(format!("{base}/v1/rooms/{room}/agent")).bearer_auth(key).json(&body).send().await?;
    let status = resp.status();
    anyhow::ensure!(status.is_success(), "attaching the agent: {status} {}", resp.text().await.unwrap_or_default());
    Ok(())
}

/// Turns in round robin for `duration` seconds. Returns when each turn's speech ended and
/// whether the agent answered it.
pub async fn take_turns(pubs: &mut [RoomClient], pcm: &[i16], silence_ms: u32, duration: f64) -> anyhow::Result<Vec<(Instant, bool)>> {
    let mut turns = Vec::new();
    if pubs.is_empty() {
        return Ok(turns);
    }
    let start = Instant::now();
    let trailing = (silence_ms as usize + 200) / 20;
    while start.elapsed().as_secs_f64() < duration {
        let n = turns.len();
        let gain = 1.0 - 0.01 * (n % 50) as f32;
        let p = &mut pubs[n % pubs.len()];
        // The answer to this turn is the first response.done after this speaker's commit
        // (earlier answers' events reach every participant too, some of them late).
        let me = p.location.rsplit('/').next().unwrap_or_default().to_string();
        let mut committed = false;
        p.queue_encoded(encode_speech(pcm, gain).map_err(anyhow::Error::msg)?);
        p.queue_silence(trailing);
        let before = p.sent().len();
        let deadline = Instant::now() + ANSWER_WAIT;
        let mut answered = false;
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(100), p.events.recv()).await {
                Ok(Some((_, ev))) if ev["type"] == "input_audio_buffer.committed" && ev["speaker"] == me.as_str() => committed = true,
                Ok(Some((_, ev))) if committed && ev["type"] == "response.done" && ev["identity"].is_string() => {
                    answered = true;
                    break;
                }
                Ok(None) => break,
                _ => {}
            }
        }
        let sent = p.sent();
        let end = sent[before.min(sent.len())..].iter().filter(|s| s.voiced).map(|s| s.at).max();
        turns.push((end.unwrap_or_else(Instant::now), answered));
    }
    Ok(turns)
}

/// For each turn's end of speech: the first packet of someone other than the publishers (the
/// agent) any subscriber received after it, in ms, minus `silence_ms`.
pub fn turn_latencies(turns: &[(Instant, bool)], pubs: &[RoomClient], subs: &[RoomClient], silence_ms: u32) -> Vec<f64> {
    let people: HashSet<Bytes> = pubs.iter().flat_map(|p| p.sent()).map(|s| s.payload).collect();
    let agent: Vec<Instant> =
        subs.iter().flat_map(|s| s.received()).filter(|r| r.payload.len() > 10 && !people.contains(&r.payload)).map(|r| r.at).collect();
    let out: Vec<f64> = turns
        .iter()
        .filter(|(_, answered)| *answered)
        .filter_map(|(end, _)| {
            agent.iter().filter(|t| *t > end).min().map(|t| t.duration_since(*end).as_secs_f64() * 1000.0 - f64::from(silence_ms))
        })
        .collect();
    out
}
