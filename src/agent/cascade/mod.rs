//! The `cascade` agent: speech-to-text (Deepgram or AssemblyAI) → a language model over SSE (OpenAI chat
//! completions or Anthropic messages) → text-to-speech (ElevenLabs), chained per turn.
//!
//! Our turn detector decides turns. At a commit the STT is asked to finalize; the response
//! starts when the caller's final transcript is in (or after [`FINALIZE_WAIT`]). The dialogue is
//! kept here, within [`HISTORY_BUDGET_CHARS`](super::history::HISTORY_BUDGET_CHARS), and sent whole with each LLM request; a barge-in
//! keeps only the part of the answer the caller heard (by the fraction of its audio played).

mod assemblyai;
mod config;
mod deepgram;
mod elevenlabs;
mod llm;
mod reply;
mod sentences;
mod stt;

pub use config::{CascadeConfig, CascadeSection, LlmDialect, ProviderSection, SttProvider, resolve as resolve_config};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use voxrelay_media::{Resampler, SAMPLES_24K, SampleRate};
use voxrelay_signaling::SessionConfig;

use self::reply::RespMsg;
use self::stt::{SttIn, SttOut};
use super::bridge::{Cmd, Link};
use super::history::Dialogue;
use super::{AgentNotice, AgentOutput};

/// How long a response waits for the caller's final transcript after the commit.
pub const FINALIZE_WAIT: Duration = Duration::from_millis(1500);
pub const DEFAULT_INSTRUCTIONS: &str =
    "You are a helpful voice assistant. Your words will be spoken aloud: answer briefly, in plain sentences, without markup.";

struct Running {
    num: u64,
    task: tokio::task::JoinHandle<()>,
    text: String,
    frames: u64,
    /// Function calls of this response, as dialogue turns (remembered after its text).
    calls: Vec<String>,
}

struct Cascade {
    cfg: Arc<CascadeConfig>,
    http: reqwest::Client,
    session: SessionConfig,
    history: Dialogue,
    turn_text: String,
    /// The committed user item whose final transcript is awaited, and until when.
    finalizing: Option<(String, Instant)>,
    waiting_response: Option<u64>,
    /// The next response's own instructions (`response.create`), instead of the session's.
    response_instructions: Option<String>,
    running: Option<Running>,
    /// The last response the providers finished; its audio may still be playing, so a barge-in
    /// can still shorten what it remembers.
    finished: Option<Running>,
    resp_tx: mpsc::UnboundedSender<RespMsg>,
    /// In a room: who spoke the turn being transcribed (its text is prefixed with the name).
    speaker: Option<String>,
}

/// `prior`: the dialogue of the conversation this call continues (the LLM gets it with every
/// request, as it gets this call's turns).
pub async fn run(cfg: CascadeConfig, session: SessionConfig, prior: Dialogue, mut link: Link) {
    let cfg = Arc::new(cfg);
    let (stt_tx, stt_in) = mpsc::channel(512);
    let (stt_out_tx, mut stt_out) = mpsc::unbounded_channel();
    let stt = stt::spawn(cfg.clone(), stt_in, stt_out_tx);
    let (resp_tx, mut resp_rx) = mpsc::unbounded_channel();
    let http = match reqwest::Client::builder().connect_timeout(cfg.connect_timeout).build() {
        Ok(h) => h,
        Err(e) => {
            link.error("provider_error", format!("cascade: HTTP client: {e}"));
            return;
        }
    };
    let mut c = Cascade {
        cfg,
        http,
        session,
        history: prior,
        turn_text: String::new(),
        finalizing: None,
        waiting_response: None,
        response_instructions: None,
        running: None,
        finished: None,
        resp_tx,
        speaker: None,
    };
    #[allow(clippy::expect_used, reason = "fixed, supported rates: cannot fail")]
    let (mut up, mut down) = (
        Resampler::new(SampleRate::HZ_24K, SampleRate::HZ_48K).expect("24 -> 48 kHz"),
        Resampler::new(SampleRate::HZ_48K, SampleRate::HZ_16K).expect("48 -> 16 kHz"),
    );
    loop {
        let deadline = c.finalizing.as_ref().map(|(_, t)| *t);
        tokio::select! {
            cmd = link.cmds.recv() => {
                let Some(cmd) = cmd else { break };
                match cmd {
                    Cmd::Audio { pcm, .. } => {
                        let mut wide = [0i16; SAMPLES_24K * 2];
                        let mut narrow = [0i16; SAMPLES_24K * 2 / 3];
                        up.process(&pcm[..], &mut wide);
                        down.process(&wide, &mut narrow);
                        let bytes = narrow.iter().flat_map(|s| s.to_le_bytes()).collect();
                        let _ = stt_tx.try_send(SttIn::Audio(bytes));
                    }
                    Cmd::Commit { item_id } => {
                        let _ = stt_tx.try_send(SttIn::Finalize);
                        c.finalizing = Some((item_id, Instant::now() + FINALIZE_WAIT));
                    }
                    other => c.on_cmd(other, &mut link),
                }
            }
            ev = stt_out.recv() => match ev {
                Some(SttOut::Final(text)) => {
                    if !c.turn_text.is_empty() {
                        c.turn_text.push(' ');
                    }
                    c.turn_text.push_str(&text);
                }
                Some(SttOut::Finalized) => c.user_turn_done(&mut link),
                Some(SttOut::Error { code, message }) => link.error(code, message),
                None => {}
            },
            Some(RespMsg::Out(num, out)) = resp_rx.recv() => c.on_output(num, out, &mut link),
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => c.user_turn_done(&mut link),
        }
    }
    if let Some(r) = c.running.take() {
        r.task.abort();
    }
    drop(stt_tx);
    let _ = stt.await;
}

impl Cascade {
    fn on_cmd(&mut self, cmd: Cmd, link: &mut Link) {
        match cmd {
            Cmd::Configure(s) => self.session = s,
            Cmd::ClearInput => self.turn_text.clear(),
            Cmd::Text { text, .. } => self.history.push("user", &text),
            // The next response continues from the result.
            Cmd::FunctionOutput { call_id, output } => self.history.push(llm::OUTPUT, &llm::output_turn(&call_id, &output)),
            Cmd::StartResponse(num, options) => {
                self.response_instructions = options.instructions;
                if self.finalizing.is_some() {
                    self.waiting_response = Some(num);
                } else {
                    self.start(num, link);
                }
            }
            Cmd::CancelResponse { response, played } => {
                if self.waiting_response == Some(response) {
                    self.waiting_response = None;
                }
                let r = match self.running.take_if(|r| r.num == response) {
                    Some(r) => {
                        r.task.abort();
                        r
                    }
                    None => match self.finished.take_if(|r| r.num == response) {
                        Some(r) => {
                            // It was remembered whole when the providers finished.
                            self.history.replace_last("assistant", &r.text, "");
                            r
                        }
                        None => return,
                    },
                };
                // Keep what the caller heard: the played fraction of the answer's audio.
                let total_ms = (r.frames * 20).max(1);
                let chars = r.text.chars().count() as u64 * (played.as_millis() as u64).min(total_ms) / total_ms;
                let heard: String = r.text.chars().take(chars as usize).collect();
                if !heard.trim().is_empty() {
                    self.history.push("assistant", &format!("{}…", heard.trim_end()));
                }
            }
            Cmd::Speaker(name) => self.speaker = Some(name),
            Cmd::SpeechStarted | Cmd::Audio { .. } | Cmd::Commit { .. } => {}
        }
    }

    /// The caller's turn is transcribed (or the wait is over).
    fn user_turn_done(&mut self, link: &mut Link) {
        let Some((item_id, _)) = self.finalizing.take() else { return };
        let text = std::mem::take(&mut self.turn_text);
        let speaker = self.speaker.take();
        if !text.trim().is_empty() {
            match &speaker {
                Some(name) => self.history.push("user", &format!("{} {}", crate::agent::speaker_label(name), text.trim())),
                None => self.history.push("user", &text),
            }
            link.notice(AgentNotice::InputTranscript { item_id, transcript: text.trim().to_string() });
        }
        if let Some(num) = self.waiting_response.take() {
            self.start(num, link);
        }
    }

    fn start(&mut self, num: u64, link: &mut Link) {
        if let Some(r) = self.running.take() {
            r.task.abort();
        }
        // Nothing was understood (nor any function result came) since the last answer: say
        // nothing rather than guess.
        if self.history.turns().back().is_none_or(|(role, _)| *role != "user" && *role != llm::OUTPUT) {
            link.output(num, AgentOutput::Done);
            return;
        }
        let system = match self.response_instructions.take() {
            Some(text) => text,
            None if self.session.instructions.is_empty() => DEFAULT_INSTRUCTIONS.to_string(),
            None => self.session.instructions.clone(),
        };
        let prompt = reply::Prompt {
            system,
            turns: self.history.turns().iter().cloned().collect(),
            tools: self.session.tools.clone(),
            tool_choice: self.session.tool_choice.clone(),
        };
        let task = tokio::spawn(reply::respond(self.cfg.clone(), self.http.clone(), num, prompt, self.resp_tx.clone()));
        self.running = Some(Running { num, task, text: String::new(), frames: 0, calls: Vec::new() });
    }

    fn on_output(&mut self, num: u64, out: AgentOutput, link: &mut Link) {
        let Some(r) = self.running.as_mut().filter(|r| r.num == num) else { return };
        match &out {
            AgentOutput::TranscriptDelta(t) => r.text.push_str(t),
            AgentOutput::Audio(_) => r.frames += 1,
            AgentOutput::FunctionCall { call_id, name, arguments } => {
                let call = llm::ToolCall { id: call_id.clone(), name: name.clone(), arguments: arguments.clone() };
                r.calls.push(call.turn());
            }
            AgentOutput::Done | AgentOutput::Failed { .. } => {
                #[allow(clippy::expect_used, reason = "matched as Some just above")]
                let mut r = self.running.take().expect("matched above");
                self.history.push("assistant", &r.text);
                for call in r.calls.drain(..) {
                    self.history.push(llm::CALL, &call);
                }
                self.finished = Some(r);
            }
        }
        link.output(num, out);
    }
}
