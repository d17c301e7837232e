//! The realtime protocol state of one call: turns, the response lifecycle and barge-in, as a
//! plain struct. It takes media events (from the audio worker), client events (from the data
//! channel) and agent output, and produces server events (`out`) and worker commands
//! (`controls`). No I/O here, so every sequence of PROTOCOL.md §2 is unit-testable.
//!
//! Time and ids are inputs, as in `media/`: methods whose effect depends on the time take `now`
//! (or the wall-clock time an event was received), and ids come from the [`IdSource`] given to
//! [`Conversation::new`]. Nothing here reads a clock or draws randomness, so tests can assert
//! exact events.
//!
//! A response is live from `response.created` until its audio has finished *playing* (the
//! worker says so), not merely until the agent has produced it: over WebRTC the server knows
//! what the caller has heard, so a barge-in during playback is a cancellation with an exact
//! truncation point.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use voxrelay_media::barge_in::{self, BargeIn, ResponsePhase};
use voxrelay_media::{AgentFrame, AudioTime, Control, FRAME, MediaEvent, TurnDetectConfig};
use voxrelay_signaling::call_history::ToolCall;
use voxrelay_signaling::events::ItemKind;
use voxrelay_signaling::events::{
    CancelReason, ClientEvent, ContentPart, Dialect, ErrorKind, IdSource, Item, ItemStatus, PartRef, Response as WireResponse,
    ResponseError, ResponseOptions, ResponseStatus, ServerEvent, SessionUpdate, StampedEvent, StatusDetails, parse_client_event,
};
use voxrelay_signaling::{ApiError, SessionConfig, SessionId};

use super::tools::{self, OpenCalls};
use crate::agent::{Agent, AgentNotice, AgentOutput};
use crate::store::Note;

struct Response {
    num: u64,
    id: String,
    item_id: String,
    playing: bool,
    agent_done: bool,
    /// A text-only response: its words are the content, its audio (if the agent made any) is
    /// dropped.
    text_only: bool,
    audio_frames_queued: u64,
    voiced_frames_sent: u64,
    /// The call's voiced-frame count when this response's first frame went out (marks index
    /// frames call-wide; see `heard`).
    first_voiced: Option<u64>,
    transcript: String,
    /// Set when the agent gave up on the response (provider failure): (code, message).
    failed: Option<(String, String)>,
    /// Function calls the agent made in this response (completed items, after the message).
    calls: Vec<Item>,
    /// When the response was created: the agent latency metric, and [`AGENT_SILENCE_LIMIT`].
    created_at: Instant,
    /// Whether the agent has given anything for it yet (audio, text, a call, its end).
    heard_from_agent: bool,
}

/// A response the agent has given nothing for in this long (a provider that accepted the request
/// and went quiet) fails: the client gets an `error` event (`provider_timeout`) and a failed
/// `response.done`, the agent drops it, and the call goes on. Providers answer in ≈ 1 s.
pub const AGENT_SILENCE_LIMIT: Duration = Duration::from_secs(10);

pub struct Conversation {
    dialect: Dialect,
    session_id: SessionId,
    config: SessionConfig,
    agent: Box<dyn Agent>,
    /// Where item, response and event ids come from.
    ids: IdSource,
    /// Server events to send, in order.
    pub out: Vec<StampedEvent>,
    /// Commands for the audio worker, in order.
    pub controls: Vec<Control>,
    /// The conversation's lines for the call history, in order (whoever drives the
    /// conversation drains them, as `out`).
    pub notes: Vec<Note>,
    input_item: Option<String>,
    /// Manual commits sent to the worker and not yet confirmed: the audio thread commits
    /// asynchronously, and a `response.create` right after `input_audio_buffer.commit` (the
    /// usual push-to-talk sequence) must answer that turn, not the one before it.
    commits_in_flight: u32,
    /// A `response.create` waiting for the commits sent before it.
    response_after_commit: Option<ResponseOptions>,
    last_item: Option<String>,
    response: Option<Response>,
    responses_started: u64,
    /// After a cancel, voiced frames the worker encoded before it saw the cancel are dropped
    /// here, so outbound audio stops within one frame.
    suppress_voiced: bool,
    /// Assistant items that can still be truncated: (item id, audio ms played).
    assistant_items: Vec<(String, Duration)>,
    /// Response created → first agent audio frame, for each response since last taken.
    pub agent_latencies: Vec<Duration>,
    /// Function calls waiting for the client's output.
    open_calls: OpenCalls,
    /// Voiced frames sent over the whole call.
    voiced_total: u64,
    /// Transports that learn what the caller actually heard (phone marks) count it here, in
    /// call-wide voiced frames; a cancelled response is truncated there instead of at what was
    /// sent, so the history holds only what the caller heard.
    heard: Option<Arc<AtomicU64>>,
    /// Set when the transport must drop audio it has buffered for the caller (a phone carrier
    /// plays from its own buffer); the call task takes it.
    pub flush_transport: bool,
    /// WebSocket sessions (PROTOCOL.md §8): a GA-shaped `session.update` switches the event
    /// names to GA.
    dialect_follows_updates: bool,
}

pub fn turn_config(config: &SessionConfig) -> TurnDetectConfig {
    match config.turn_detection {
        Some(td) => TurnDetectConfig {
            server_vad: true,
            threshold: td.threshold,
            prefix_padding_ms: td.prefix_padding_ms,
            silence_duration_ms: td.silence_duration_ms,
            interrupt_response: td.interrupt_response,
        },
        None => TurnDetectConfig { server_vad: false, ..TurnDetectConfig::default() },
    }
}

impl Conversation {
    /// `ids`: [`IdSource::random`] for a live call.
    pub fn new(dialect: Dialect, session_id: SessionId, config: SessionConfig, agent: Box<dyn Agent>, ids: IdSource) -> Self {
        Self {
            dialect,
            session_id,
            config,
            agent,
            ids,
            out: Vec::new(),
            controls: Vec::new(),
            notes: Vec::new(),
            input_item: None,
            commits_in_flight: 0,
            response_after_commit: None,
            last_item: None,
            response: None,
            responses_started: 0,
            suppress_voiced: false,
            assistant_items: Vec::new(),
            agent_latencies: Vec::new(),
            open_calls: OpenCalls::default(),
            voiced_total: 0,
            heard: None,
            flush_transport: false,
            dialect_follows_updates: false,
        }
    }

    /// A session over WebSocket: GA names from the first GA-shaped `session.update`.
    pub fn with_dialect_from_updates(mut self) -> Self {
        self.dialect_follows_updates = true;
        self
    }

    /// The agent's audio as a client over WebSocket receives it: one `response.audio.delta`
    /// (GA `response.output_audio.delta`) per frame sent, in the session's output format.
    pub fn on_audio_delta(&mut self, audio: &[u8]) {
        use base64::Engine as _;
        let Some(r) = self.response.as_ref() else { return };
        let at = Self::part_ref(r);
        self.emit(ServerEvent::AudioDelta { at, delta: base64::engine::general_purpose::STANDARD.encode(audio) });
    }

    /// Truncate cancelled responses at what `heard` says the caller heard (see the field).
    pub fn with_heard(mut self, heard: Arc<AtomicU64>) -> Self {
        self.heard = Some(heard);
        self
    }

    /// A DTMF digit from the caller's keypad (phone transports): announced as OpenAI's SIP calls
    /// do, and added to the conversation as a user text item, so every agent gets it the way
    /// it gets typed text (in the history the model answers from; Gemini Live answers it at
    /// once, as it does any text turn). `received_at`: when the transport received it.
    pub fn on_dtmf(&mut self, digit: char, received_at: SystemTime) {
        let received_at = received_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.emit(ServerEvent::DtmfReceived { event: digit.to_string(), received_at });
        let id = self.ids.item();
        self.add_text_item(id, &dtmf_text(digit));
    }

    /// A user text item: to the agent, then announced.
    fn add_text_item(&mut self, id: String, text: &str) {
        let previous = self.last_item.replace(id.clone());
        self.agent.on_text(&id, text);
        self.notes.push(Note::UserText { item_id: id.clone(), text: text.to_string() });
        self.emit(ServerEvent::ItemCreated { previous_item_id: previous, item: Item::user_text(id, text) });
    }

    /// Audio of response `r` the caller heard: what marks acknowledged when the transport has
    /// them, else what was sent.
    fn played(&self, r: &Response) -> Duration {
        let frames = match (&self.heard, r.first_voiced) {
            (Some(heard), Some(first)) => heard.load(Ordering::Relaxed).saturating_sub(first).min(r.voiced_frames_sent),
            (Some(_), None) => 0,
            (None, _) => r.voiced_frames_sent,
        };
        FRAME * frames as u32
    }

    fn emit(&mut self, event: ServerEvent) {
        let event_id = self.ids.event();
        self.out.push(StampedEvent { dialect: self.dialect, event_id, event });
    }

    fn session_json(&self) -> Value {
        match self.dialect {
            Dialect::Beta => self.config.beta_json(self.session_id.as_str()),
            Dialect::Ga => self.config.ga_json(self.session_id.as_str()),
        }
    }

    /// The session's settings as they stand (a `session.update` changes them).
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Tells the client the call ends in `seconds_left` (`session.ending`).
    pub fn ending(&mut self, reason: &str, seconds_left: u64) {
        self.emit(ServerEvent::SessionEnding { reason: reason.to_string(), seconds_left });
    }

    pub fn error(&mut self, code: &str, message: &str, event_id: Option<String>) {
        self.emit(ServerEvent::invalid_request(code, message, event_id));
    }

    /// A problem on the server's side (a provider), not in anything the client sent.
    fn server_error(&mut self, code: &str, message: &str) {
        self.emit(ServerEvent::server_error(code, message));
    }

    /// What the agent reports outside responses (caller transcripts, provider errors).
    pub fn poll_agent_notices(&mut self) {
        while let Some(n) = self.agent.poll_notice() {
            match n {
                AgentNotice::InputTranscript { item_id, transcript } => {
                    self.notes.push(Note::UserTranscript { item_id: item_id.clone(), text: transcript.clone() });
                    self.emit(ServerEvent::InputTranscriptionCompleted { item_id, content_index: 0, transcript })
                }
                AgentNotice::Error { code, message } => self.server_error(&code, &message),
                AgentNotice::RateLimits(rate_limits) => self.emit(ServerEvent::RateLimitsUpdated { rate_limits }),
            }
        }
    }

    /// The data channel opened.
    pub fn on_open(&mut self) {
        let session = self.session_json();
        self.emit(ServerEvent::SessionCreated { session });
    }

    /// An event from the audio worker; a committed turn may start a response at `now`.
    pub fn on_media(&mut self, ev: MediaEvent, now: Instant) {
        match ev {
            MediaEvent::SpeechStarted { audio_start } => {
                let item_id = self.ids.item();
                self.input_item = Some(item_id.clone());
                self.agent.on_speech_started(audio_start);
                self.emit(ServerEvent::SpeechStarted { audio_start_ms: audio_start.as_ms(), item_id });
                self.barge_in();
            }
            MediaEvent::SpeechStopped { audio_end } => {
                let item_id = self.input_item.clone();
                self.emit(ServerEvent::SpeechStopped { audio_end_ms: audio_end.as_ms(), item_id });
            }
            MediaEvent::Committed { audio_end } => self.on_committed(audio_end, now),
            MediaEvent::Cleared => self.emit(ServerEvent::InputCleared),
            MediaEvent::PlaybackStarted { response } => {
                if let Some(r) = self.response.as_mut().filter(|r| r.num == response && !r.playing) {
                    r.playing = true;
                    let response_id = r.id.clone();
                    self.emit(ServerEvent::OutputAudioStarted { response_id });
                }
            }
            MediaEvent::PlaybackFinished { response, .. } => {
                if self.response.as_ref().is_some_and(|r| r.num == response && r.agent_done) {
                    self.complete_response();
                }
            }
            // Cancellation is driven from here (see cancel_response); the worker's echo of it
            // carries nothing new.
            MediaEvent::PlaybackCleared { .. } => {}
        }
    }

    /// Speech started: a response in progress is cut when the barge-in policy says so.
    fn barge_in(&mut self) {
        let interrupt = self.config.turn_detection.is_some_and(|t| t.interrupt_response);
        let phase = match &self.response {
            None => ResponsePhase::Idle,
            Some(r) if r.playing => ResponsePhase::Speaking,
            Some(_) => ResponsePhase::Pending,
        };
        if barge_in::on_speech_started(interrupt, phase) == BargeIn::Cut {
            self.cancel_response(CancelReason::TurnDetected);
        }
    }

    fn on_committed(&mut self, audio_end: AudioTime, now: Instant) {
        let item_id = self.input_item.take().unwrap_or_else(|| self.ids.item());
        let previous = self.last_item.replace(item_id.clone());
        self.agent.on_committed(audio_end, &item_id);
        self.emit(ServerEvent::InputCommitted { previous_item_id: previous.clone(), item_id: item_id.clone() });
        self.notes.push(Note::UserAudio { item_id: item_id.clone() });
        self.emit(ServerEvent::ItemCreated { previous_item_id: previous, item: Item::user_audio(item_id) });
        self.commits_in_flight = self.commits_in_flight.saturating_sub(1);
        let auto = self.config.turn_detection.is_some_and(|t| t.create_response);
        let requested = if self.commits_in_flight == 0 { self.response_after_commit.take() } else { None };
        if (auto || requested.is_some()) && self.response.is_none() {
            self.start_response(now, requested.unwrap_or_default());
        }
    }

    fn start_response(&mut self, now: Instant, options: ResponseOptions) {
        // A response that does not say takes the session's modalities (`["text"]`: text only).
        let text_only = options.text_only.unwrap_or(!self.config.modalities.iter().any(|m| m == "audio"));
        let options = ResponseOptions { text_only: Some(text_only), ..options };
        self.responses_started += 1;
        let num = self.responses_started;
        let r = Response {
            num,
            id: self.ids.response(),
            item_id: self.ids.item(),
            playing: false,
            agent_done: false,
            text_only,
            audio_frames_queued: 0,
            voiced_frames_sent: 0,
            first_voiced: None,
            transcript: String::new(),
            failed: None,
            calls: Vec::new(),
            created_at: now,
            heard_from_agent: false,
        };
        self.suppress_voiced = false;
        self.emit(ServerEvent::ResponseCreated { response: WireResponse::in_progress(&r.id) });
        let item = Item::assistant(&r.item_id, ItemStatus::InProgress, Vec::new());
        self.emit(ServerEvent::OutputItemAdded { response_id: r.id.clone(), output_index: 0, item: item.clone() });
        self.emit(ServerEvent::ItemCreated { previous_item_id: self.last_item.clone(), item });
        self.emit(ServerEvent::ContentPartAdded { at: Self::part_ref(&r), part: Self::part(&r, String::new()) });
        self.last_item = Some(r.item_id.clone());
        self.response = Some(r);
        self.agent.start_response(num, &options);
    }

    /// The one content part of a response: the audio of its message item (output 0).
    fn part_ref(r: &Response) -> PartRef {
        PartRef { response_id: r.id.clone(), item_id: r.item_id.clone(), output_index: 0, content_index: 0 }
    }

    /// The response's message item as it ended, with the transcript so far.
    fn final_item(r: &Response, status: ItemStatus) -> Item {
        Item::assistant(&r.item_id, status, vec![Self::part(r, r.transcript.clone())])
    }

    /// The response's content part holding `words`: audio with its transcript, or text.
    fn part(r: &Response, words: String) -> ContentPart {
        if r.text_only { ContentPart::Text { text: words } } else { ContentPart::Audio { transcript: words } }
    }

    fn complete_response(&mut self) {
        let Some(r) = self.response.take() else { return };
        if r.text_only {
            self.emit(ServerEvent::TextDone { at: Self::part_ref(&r), text: r.transcript.clone() });
        } else {
            self.emit(ServerEvent::AudioDone { at: Self::part_ref(&r) });
            self.emit(ServerEvent::AudioTranscriptDone { at: Self::part_ref(&r), transcript: r.transcript.clone() });
        }
        self.emit(ServerEvent::ContentPartDone { at: Self::part_ref(&r), part: Self::part(&r, r.transcript.clone()) });
        let (status, item_status, details) = match &r.failed {
            None => (ResponseStatus::Completed, ItemStatus::Completed, None),
            Some((code, message)) => {
                let error = ResponseError { kind: ErrorKind::ServerError, code: code.clone(), message: message.clone() };
                (ResponseStatus::Failed, ItemStatus::Incomplete, Some(StatusDetails::Failed { error }))
            }
        };
        let item = Self::final_item(&r, item_status);
        let status_label = if r.failed.is_some() { "failed" } else { "completed" };
        self.note_response(&r, status_label, FRAME * r.voiced_frames_sent as u32, None);
        self.emit(ServerEvent::OutputItemDone { response_id: r.id.clone(), output_index: 0, item: item.clone() });
        let output: Vec<Item> = std::iter::once(item).chain(r.calls).collect();
        if r.playing {
            self.emit(ServerEvent::OutputAudioStopped { response_id: r.id.clone() });
        }
        self.emit(ServerEvent::ResponseDone { response: WireResponse::new(&r.id, status, details, output) });
        self.remember_item(r.item_id, FRAME * r.voiced_frames_sent as u32);
    }

    fn cancel_response(&mut self, reason: CancelReason) {
        let Some(r) = self.response.take() else { return };
        let played = self.played(&r);
        self.flush_transport = true;
        self.controls.push(Control::CancelResponse(r.num));
        self.agent.cancel_response(r.num, played);
        self.suppress_voiced = true;
        self.emit(ServerEvent::OutputAudioCleared { response_id: Some(r.id.clone()) });
        self.emit(ServerEvent::ItemTruncated { item_id: r.item_id.clone(), content_index: 0, audio_end_ms: played.as_millis() as u64 });
        self.note_response(&r, "cancelled", FRAME * r.audio_frames_queued as u32, Some(played));
        let output: Vec<Item> = std::iter::once(Self::final_item(&r, ItemStatus::Incomplete)).chain(r.calls).collect();
        let details = Some(StatusDetails::Cancelled { reason });
        self.emit(ServerEvent::ResponseDone { response: WireResponse::new(&r.id, ResponseStatus::Cancelled, details, output) });
        self.remember_item(r.item_id, played);
    }

    /// A response's line in the history: what it said, how it ended, its audio (`audio`: what
    /// the agent made of it) and, when cut short, what the caller heard.
    fn note_response(&mut self, r: &Response, status: &'static str, audio: Duration, heard: Option<Duration>) {
        let tool_calls = r
            .calls
            .iter()
            .filter_map(|item| match &item.kind {
                ItemKind::FunctionCall { call_id, name, arguments, .. } => {
                    Some(ToolCall { call_id: call_id.clone(), name: name.clone(), arguments: arguments.clone() })
                }
                _ => None,
            })
            .collect();
        self.notes.push(Note::Response {
            item_id: r.item_id.clone(),
            text: r.transcript.clone(),
            status,
            audio_ms: audio.as_millis() as u64,
            heard_ms: heard.map(|h| h.as_millis() as u64),
            tool_calls,
        });
    }

    /// The server ends the call: a running response is cancelled (`response.done`, status
    /// `cancelled`, reason `call_ended`) so clients and watchers see every response finish.
    pub fn end_of_call(&mut self) {
        self.cancel_response(CancelReason::CallEnded);
    }

    fn remember_item(&mut self, id: String, played: Duration) {
        // A client truncates only what it is playing; a short memory is enough.
        if self.assistant_items.len() == 16 {
            self.assistant_items.remove(0);
        }
        self.assistant_items.push((id, played));
    }

    /// Whether an encoded outbound frame should be sent; counts the audio the caller hears.
    pub fn on_egress_frame(&mut self, voiced: bool) -> bool {
        if !voiced {
            return true;
        }
        if self.suppress_voiced {
            return false;
        }
        if let Some(r) = self.response.as_mut() {
            r.first_voiced.get_or_insert(self.voiced_total);
            r.voiced_frames_sent += 1;
        }
        self.voiced_total += 1;
        true
    }

    /// Pulls the agent's next audio frame (transcript text is turned into events on the way).
    /// Call only when the worker's ring has room for one frame. `now` times the agent's latency.
    pub fn next_agent_frame(&mut self, now: Instant) -> Option<AgentFrame> {
        loop {
            let r = self.response.as_mut().filter(|r| !r.agent_done)?;
            let num = r.num;
            let Some(output) = self.agent.poll_output() else {
                if now.saturating_duration_since(r.created_at) >= AGENT_SILENCE_LIMIT && !r.heard_from_agent {
                    self.abandon_silent_response();
                }
                return None;
            };
            r.heard_from_agent = true;
            match output {
                AgentOutput::TranscriptDelta(delta) => {
                    r.transcript.push_str(&delta);
                    let at = Self::part_ref(r);
                    let event =
                        if r.text_only { ServerEvent::TextDelta { at, delta } } else { ServerEvent::AudioTranscriptDelta { at, delta } };
                    self.emit(event);
                }
                AgentOutput::FunctionCall { call_id, name, arguments } => {
                    // After the message item (output 0), in the order the model made them.
                    let index = 1 + r.calls.len() as u32;
                    let call = tools::call_events(&mut self.ids, &r.id, index, self.last_item.as_deref(), &call_id, &name, &arguments);
                    r.calls.push(call.item);
                    self.last_item = Some(call.item_id);
                    self.open_calls.open(&call_id);
                    for event in call.events {
                        self.emit(event);
                    }
                }
                // A text-only response has no audio (providers that cannot skip it make it).
                AgentOutput::Audio(_) if r.text_only => {}
                AgentOutput::Audio(pcm) => {
                    if r.audio_frames_queued == 0 {
                        self.agent_latencies.push(now.saturating_duration_since(r.created_at));
                    }
                    r.audio_frames_queued += 1;
                    return Some(AgentFrame::Audio { response: num, pcm: *pcm });
                }
                AgentOutput::Failed { code, message } => {
                    r.agent_done = true;
                    r.failed = Some((code.clone(), message.clone()));
                    let queued = r.audio_frames_queued;
                    self.server_error(&code, &message);
                    if queued == 0 {
                        self.complete_response();
                        return None;
                    }
                    return Some(AgentFrame::End { response: num });
                }
                AgentOutput::Done => {
                    r.agent_done = true;
                    if r.audio_frames_queued == 0 {
                        self.complete_response();
                        return None;
                    }
                    return Some(AgentFrame::End { response: num });
                }
            }
        }
    }

    /// [`AGENT_SILENCE_LIMIT`] passed with nothing from the agent: the response fails.
    fn abandon_silent_response(&mut self) {
        let Some(r) = self.response.as_mut() else { return };
        let message = format!("the agent gave nothing for {} s; the response was abandoned", AGENT_SILENCE_LIMIT.as_secs());
        r.agent_done = true;
        r.failed = Some(("provider_timeout".into(), message.clone()));
        self.agent.cancel_response(r.num, Duration::ZERO);
        self.server_error("provider_timeout", &message);
        self.complete_response();
    }

    /// Moves the agent's next frames into the audio worker's ring while it has room (one call
    /// task, one room agent: the same pull).
    /// Hands the agent's frames to the worker while its ring has room; returns whether any of
    /// them was audio.
    pub fn feed_agent(&mut self, ring: &mut rtrb::Producer<AgentFrame>, now: Instant) -> bool {
        let mut audio = false;
        while ring.slots() > 0 {
            let Some(frame) = self.next_agent_frame(now) else { break };
            audio |= matches!(frame, AgentFrame::Audio { .. });
            let _ = ring.push(frame);
        }
        audio
    }

    pub fn on_caller_audio(&mut self, start: AudioTime, pcm: &[i16; voxrelay_media::SAMPLES_24K]) {
        self.agent.on_audio(start, pcm);
    }

    /// A client event (data channel or events socket); `response.create` starts a response at
    /// `now`.
    pub fn on_client_text(&mut self, text: &str, now: Instant) {
        let parsed = match parse_client_event(text) {
            Ok(p) => p,
            Err(e) => return self.error(e.code, &e.message, e.event_id),
        };
        let event_id = parsed.event_id;
        match parsed.event {
            ClientEvent::SessionUpdate(update) => {
                let ga = matches!(update, SessionUpdate::Ga(_));
                let next = match update.applied_to(&self.config).and_then(|next| crate::agent::check_voice(&next).map(|()| next)) {
                    Ok(next) => next,
                    Err(e) => return self.api_error(e, event_id),
                };
                // A WebSocket session speaks GA names once the client shows it is a GA client.
                if ga && self.dialect_follows_updates {
                    self.dialect = Dialect::Ga;
                }
                self.config = next;
                self.agent.configure(&self.config);
                self.controls.push(Control::SetTurn(turn_config(&self.config)));
                let session = self.session_json();
                self.emit(ServerEvent::SessionUpdated { session });
            }
            ClientEvent::InputAudioAppend => {}
            ClientEvent::InputAudioCommit => {
                self.commits_in_flight += 1;
                self.controls.push(Control::CommitInput);
            }
            ClientEvent::InputAudioClear => {
                self.input_item = None;
                self.agent.on_input_cleared();
                self.controls.push(Control::ClearInput);
            }
            ClientEvent::ItemCreate { item_id, text } => {
                let id = item_id.unwrap_or_else(|| self.ids.item());
                self.add_text_item(id, &text);
            }
            ClientEvent::FunctionCallOutput { item_id, call_id, output } => {
                if !self.open_calls.close(&call_id) {
                    let message = format!("no function call {call_id:?} is waiting for output");
                    return self.error("unknown_call_id", &message, event_id);
                }
                let id = item_id.unwrap_or_else(|| self.ids.item());
                let previous = self.last_item.replace(id.clone());
                self.agent.on_function_output(&call_id, &output);
                self.notes.push(Note::ToolOutput { item_id: id.clone(), call_id: call_id.clone(), output: output.clone() });
                self.emit(ServerEvent::ItemCreated { previous_item_id: previous, item: Item::function_call_output(id, call_id, output) });
            }
            ClientEvent::ItemTruncate { item_id, audio_end_ms } => match self.assistant_items.iter().find(|(id, _)| *id == item_id) {
                Some((_, played)) if Duration::from_millis(audio_end_ms) <= *played => {
                    self.emit(ServerEvent::ItemTruncated { item_id, content_index: 0, audio_end_ms });
                }
                Some(_) => self.error("invalid_audio_end_ms", "audio_end_ms is beyond the audio of that item", event_id),
                None => self.error("item_not_found", &format!("no truncatable assistant item {item_id:?}"), event_id),
            },
            ClientEvent::ResponseCreate(options) => {
                if self.response.is_some() {
                    return self.error("conversation_already_has_active_response", "a response is in progress; cancel it first", event_id);
                }
                if self.commits_in_flight > 0 {
                    self.response_after_commit = Some(options);
                } else {
                    self.start_response(now, options);
                }
            }
            ClientEvent::ResponseCancel { .. } => {
                if self.response.is_none() {
                    return self.error("response_cancel_not_active", "there is no active response to cancel", event_id);
                }
                self.cancel_response(CancelReason::ClientCancelled);
            }
            ClientEvent::OutputAudioClear => {
                self.controls.push(Control::ClearOutput);
                self.flush_transport = true;
                if self.response.is_some() {
                    self.cancel_response(CancelReason::ClientCancelled);
                } else {
                    self.emit(ServerEvent::OutputAudioCleared { response_id: None });
                }
            }
        }
    }

    fn api_error(&mut self, e: ApiError, event_id: Option<String>) {
        self.error(e.code, &e.message, event_id);
    }
}

#[cfg(test)]
impl Conversation {
    /// The events sent so far, drained, as the client reads them.
    pub fn take_json(&mut self) -> Vec<Value> {
        self.out.drain(..).map(|e| serde_json::from_str(&e.to_json()).expect("events are JSON")).collect()
    }
}

/// How a keypad digit reads to a model: a sentence any LLM understands, with the key as sent.
pub fn dtmf_text(digit: char) -> String {
    format!("[The caller pressed {digit} on the phone keypad]")
}

mod room;
pub use room::HeardTurn;
#[cfg(test)]
mod tests;
