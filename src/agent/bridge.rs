//! The synchronous face of a provider agent. The call task calls [`Agent`] methods; they become
//! [`Cmd`]s for the provider's tokio task, and its output comes back as [`Up`] messages, each
//! tagged with the response it belongs to so output of a cancelled response is dropped here.
//!
//! Caller audio is gated: with server VAD on, only speech goes upstream (from a pre-roll before
//! the detected onset to the commit). The provider never hears the silence between turns nor,
//! on lines without echo cancellation, the agent's own voice coming back while it speaks; and
//! it is not billed for either.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::warn;
use voxrelay_media::{AudioTime, FRAME, FRAME_MS, SAMPLES_24K};
use voxrelay_signaling::SessionConfig;

use super::{Agent, AgentNotice, AgentOutput, ResponseOptions};

/// Commands waiting for the provider task: ~10 s of audio. A task that falls that far behind
/// is stuck; audio beyond it is dropped and counted rather than grown without bound.
const CMD_QUEUE: usize = 512;
/// Commands kept beyond the channel while the provider task catches up: a room hands a turn
/// over whole (a 30 s turn is 1,500 audio frames). Past this, commands are dropped.
const MAX_BACKLOG: usize = 3_000;
/// Audio kept before the VAD's onset so the provider hears the start of the first word.
pub const PREROLL_MS: u64 = 1000;
const PREROLL_FRAMES: usize = (PREROLL_MS / FRAME_MS as u64) as usize;
/// How far before the reported onset the pre-roll is sent from (soft attacks).
const ONSET_MARGIN: Duration = Duration::from_millis(200);
/// Provider audio produced ahead of playback, at most (60 s); beyond, frames are dropped.
pub const MAX_QUEUED_FRAMES: usize = 3000;

#[derive(Debug)]
pub enum Cmd {
    Configure(SessionConfig),
    /// The caller started speaking; the pre-roll and live audio follow.
    SpeechStarted,
    Audio { start: AudioTime, pcm: Box<[i16; SAMPLES_24K]> },
    Commit { item_id: String },
    ClearInput,
    Text { item_id: String, text: String },
    /// In a room: the turn that follows (its audio and commit) is spoken by this participant.
    Speaker(String),
    FunctionOutput { call_id: String, output: String },
    StartResponse(u64, ResponseOptions),
    CancelResponse { response: u64, played: Duration },
}

#[derive(Debug)]
pub enum Up {
    Output { response: u64, out: AgentOutput },
    Notice(AgentNotice),
}

/// The provider task's ends of the bridge.
pub struct Link {
    pub cmds: mpsc::Receiver<Cmd>,
    up: mpsc::UnboundedSender<Up>,
    queued_audio: Arc<AtomicUsize>,
    dropped_audio: bool,
}

impl Link {
    pub fn output(&mut self, response: u64, out: AgentOutput) {
        if matches!(out, AgentOutput::Audio(_)) {
            if self.queued_audio.load(Ordering::Relaxed) >= MAX_QUEUED_FRAMES {
                if !self.dropped_audio {
                    self.dropped_audio = true;
                    warn!("provider audio is more than 60 s ahead of playback; dropping");
                }
                return;
            }
            self.queued_audio.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self.up.send(Up::Output { response, out });
    }

    pub fn notice(&self, n: AgentNotice) {
        let _ = self.up.send(Up::Notice(n));
    }

    pub fn error(&self, code: &str, message: impl Into<String>) {
        self.notice(AgentNotice::Error { code: code.into(), message: message.into() });
    }

    /// A link with no bridge behind it, for protocol tests and benchmarks: the command sender
    /// and what the task sends up.
    pub fn detached() -> (Self, mpsc::Sender<Cmd>, mpsc::UnboundedReceiver<Up>) {
        let (cmd_tx, cmd_rx) = mpsc::channel(CMD_QUEUE);
        let (up_tx, up_rx) = mpsc::unbounded_channel();
        (Link { cmds: cmd_rx, up: up_tx, queued_audio: Arc::new(AtomicUsize::new(0)), dropped_audio: false }, cmd_tx, up_rx)
    }
}

pub struct Bridge {
    cmds: mpsc::Sender<Cmd>,
    up: mpsc::UnboundedReceiver<Up>,
    queued_audio: Arc<AtomicUsize>,
    current: Option<u64>,
    outputs: VecDeque<AgentOutput>,
    notices: VecDeque<AgentNotice>,
    gate: bool,
    streaming: bool,
    preroll: VecDeque<(AudioTime, [i16; SAMPLES_24K])>,
    dropped_cmds: u64,
    task_gone: bool,
    /// Commands the channel had no room for, in order (see [`MAX_BACKLOG`]).
    backlog: VecDeque<Cmd>,
}

impl Bridge {
    /// Starts the provider task `run` on the current tokio runtime. It ends when the bridge is
    /// dropped (its command channel closes).
    pub fn spawn<F, Fut>(config: &SessionConfig, run: F) -> Self
    where
        F: FnOnce(Link) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (cmd_tx, cmd_rx) = mpsc::channel(CMD_QUEUE);
        let (up_tx, up_rx) = mpsc::unbounded_channel();
        let queued_audio = Arc::new(AtomicUsize::new(0));
        let link = Link { cmds: cmd_rx, up: up_tx, queued_audio: queued_audio.clone(), dropped_audio: false };
        tokio::spawn(run(link));
        Self {
            cmds: cmd_tx,
            up: up_rx,
            queued_audio,
            current: None,
            outputs: VecDeque::new(),
            notices: VecDeque::new(),
            gate: config.turn_detection.is_some(),
            streaming: config.turn_detection.is_none(),
            preroll: VecDeque::with_capacity(PREROLL_FRAMES),
            dropped_cmds: 0,
            task_gone: false,
            backlog: VecDeque::new(),
        }
    }

    fn send(&mut self, cmd: Cmd) {
        let cmd = match self.backlog.is_empty() {
            true => match self.cmds.try_send(cmd) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(cmd)) => cmd,
                Err(mpsc::error::TrySendError::Closed(_)) => return self.dropped(),
            },
            false => cmd,
        };
        if self.backlog.len() < MAX_BACKLOG {
            self.backlog.push_back(cmd);
        } else {
            self.dropped();
        }
    }

    fn dropped(&mut self) {
        self.dropped_cmds += 1;
        if self.dropped_cmds.is_power_of_two() {
            warn!(dropped = self.dropped_cmds, "provider task is not keeping up; commands dropped");
        }
    }

    /// Hands the task what waited for room in its channel, in order.
    fn flush_backlog(&mut self) {
        while let Some(cmd) = self.backlog.pop_front() {
            match self.cmds.try_send(cmd) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(cmd)) => {
                    self.backlog.push_front(cmd);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.backlog.clear();
                    return;
                }
            }
        }
    }

    /// Moves everything the task has sent into the local queues.
    fn pump(&mut self) {
        self.flush_backlog();
        loop {
            match self.up.try_recv() {
                Ok(Up::Output { response, out }) => {
                    if matches!(out, AgentOutput::Audio(_)) {
                        self.queued_audio.fetch_sub(1, Ordering::Relaxed);
                    }
                    if self.current == Some(response) {
                        self.outputs.push_back(out);
                    }
                }
                Ok(Up::Notice(n)) => self.notices.push_back(n),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    if !self.task_gone {
                        self.task_gone = true;
                        self.notices.push_back(AgentNotice::Error {
                            code: "provider_unavailable".into(),
                            message: "the provider connection task ended".into(),
                        });
                    }
                    if self.current.is_some() && self.outputs.is_empty() {
                        self.outputs.push_back(AgentOutput::Failed {
                            code: "provider_unavailable".into(),
                            message: "the provider connection task ended".into(),
                        });
                    }
                    return;
                }
            }
        }
    }
}

impl Agent for Bridge {
    fn configure(&mut self, config: &SessionConfig) {
        self.gate = config.turn_detection.is_some();
        if !self.gate {
            // Push-to-talk: the client decides what is a turn, so everything goes up.
            self.streaming = true;
        }
        self.send(Cmd::Configure(config.clone()));
    }

    fn on_audio(&mut self, start: AudioTime, pcm: &[i16; SAMPLES_24K]) {
        if self.streaming || !self.gate {
            self.send(Cmd::Audio { start, pcm: Box::new(*pcm) });
            return;
        }
        if self.preroll.len() == PREROLL_FRAMES {
            self.preroll.pop_front();
        }
        self.preroll.push_back((start, *pcm));
    }

    fn on_speech_started(&mut self, audio_start: AudioTime) {
        if self.streaming {
            return;
        }
        self.streaming = true;
        self.send(Cmd::SpeechStarted);
        let from = audio_start.saturating_sub(ONSET_MARGIN);
        while let Some((start, pcm)) = self.preroll.pop_front() {
            if start + FRAME > from {
                self.send(Cmd::Audio { start, pcm: Box::new(pcm) });
            }
        }
    }

    fn on_committed(&mut self, _audio_end: AudioTime, item_id: &str) {
        self.send(Cmd::Commit { item_id: item_id.into() });
        self.streaming = !self.gate;
    }

    fn on_input_cleared(&mut self) {
        self.preroll.clear();
        self.streaming = !self.gate;
        self.send(Cmd::ClearInput);
    }

    fn on_text(&mut self, item_id: &str, text: &str) {
        self.send(Cmd::Text { item_id: item_id.into(), text: text.into() });
    }

    fn on_speaker(&mut self, name: &str) {
        self.send(Cmd::Speaker(name.into()));
    }

    fn on_function_output(&mut self, call_id: &str, output: &str) {
        self.send(Cmd::FunctionOutput { call_id: call_id.into(), output: output.into() });
    }

    fn start_response(&mut self, response: u64, options: &ResponseOptions) {
        self.pump();
        self.outputs.clear();
        self.current = Some(response);
        self.send(Cmd::StartResponse(response, options.clone()));
    }

    fn cancel_response(&mut self, response: u64, played: Duration) {
        self.current = None;
        self.outputs.clear();
        self.send(Cmd::CancelResponse { response, played });
    }

    fn poll_output(&mut self) -> Option<AgentOutput> {
        self.pump();
        self.outputs.pop_front()
    }

    fn poll_notice(&mut self) -> Option<AgentNotice> {
        self.pump();
        self.notices.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(v: i16) -> [i16; SAMPLES_24K] {
        [v; SAMPLES_24K]
    }

    #[tokio::test]
    async fn gates_audio_to_speech_with_a_preroll_and_drops_stale_output() {
        let (tx, mut rx) = mpsc::unbounded_channel::<Link>();
        let mut b = Bridge::spawn(&SessionConfig::default(), move |link| async move {
            let _ = tx.send(link);
        });
        let mut link = rx.recv().await.unwrap();
        for i in 0..100u64 {
            b.on_audio(AudioTime::from_ms(i * 20), &frame(i as i16));
        }
        assert!(link.cmds.try_recv().is_err(), "silence before speech stays local");
        b.on_speech_started(AudioTime::from_ms(1500));
        b.on_audio(AudioTime::from_ms(2000), &frame(100));
        b.on_committed(AudioTime::from_ms(2500), "item_a");
        b.on_audio(AudioTime::from_ms(2520), &frame(101));
        let mut audio = Vec::new();
        let mut commit = None;
        while let Ok(c) = link.cmds.try_recv() {
            match c {
                Cmd::Audio { start, .. } => audio.push(start.as_ms()),
                Cmd::Commit { item_id } => commit = Some(item_id),
                Cmd::SpeechStarted => assert!(audio.is_empty(), "announced before its audio"),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(audio.first(), Some(&1300), "pre-roll from onset - 200 ms");
        assert_eq!(audio.last(), Some(&2000), "nothing after the commit");
        assert_eq!(commit.as_deref(), Some("item_a"));

        b.start_response(1, &ResponseOptions::default());
        link.output(1, AgentOutput::TranscriptDelta("hi".into()));
        b.cancel_response(1, Duration::from_millis(0));
        link.output(1, AgentOutput::Audio(Box::new(frame(5))));
        link.notice(AgentNotice::Error { code: "x".into(), message: "y".into() });
        b.start_response(2, &ResponseOptions::default());
        link.output(2, AgentOutput::Done);
        assert!(matches!(b.poll_output(), Some(AgentOutput::Done)), "response 1's output is gone");
        assert!(b.poll_output().is_none());
        assert_eq!(b.poll_notice(), Some(AgentNotice::Error { code: "x".into(), message: "y".into() }));
        assert_eq!(b.queued_audio.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_whole_room_turn_reaches_a_slow_provider_task_in_order() {
        let (tx, mut rx) = mpsc::unbounded_channel::<Link>();
        let mut b = Bridge::spawn(&SessionConfig::default(), move |link| async move {
            let _ = tx.send(link);
        });
        let mut link = rx.recv().await.unwrap();
        // A 30 s turn handed over at once, while the task reads nothing.
        b.on_speaker("alice");
        b.on_speech_started(AudioTime::ZERO);
        for i in 0..1_500u64 {
            b.on_audio(AudioTime::from_ms(i * 20), &frame(i as i16));
        }
        b.on_committed(AudioTime::from_ms(30_000), "item_a");
        let mut got = Vec::new();
        while got.len() < 1_503 {
            while let Ok(c) = link.cmds.try_recv() {
                got.push(c);
            }
            b.poll_output();
        }
        assert!(matches!(&got[0], Cmd::Speaker(n) if n == "alice"));
        assert!(matches!(got[1], Cmd::SpeechStarted));
        let starts: Vec<u64> =
            got.iter().filter_map(|c| if let Cmd::Audio { start, .. } = c { Some(start.as_ms()) } else { None }).collect();
        assert_eq!(starts, (0..1_500u64).map(|i| i * 20).collect::<Vec<_>>());
        assert!(matches!(got.last(), Some(Cmd::Commit { item_id }) if item_id == "item_a"));
        assert_eq!(b.dropped_cmds, 0);
    }
}
