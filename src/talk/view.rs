//! The live terminal view of `voxrelay talk`: your microphone's level, what the server's voice
//! detection says about you, what the agent is doing, the conversation so far, a room's people
//! with who is speaking, the connection's round-trip time and what the network does to the
//! audio coming in (packets, loss, jitter). Redrawn whole every 100 ms with plain ANSI escapes (no TUI crate: the screen is a
//! dozen lines). Keys: `m` mutes, space talks and sends in push-to-talk mode, `q` quits.
//!
//! The state and its text are plain data ([`View`]), so the tests check them without a
//! terminal; [`Terminal`] is the raw-mode keyboard and the redraw.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use serde_json::{Value, json};

/// Conversation lines kept on screen.
const SHOWN_LINES: usize = 12;

/// What a key asks the call loop to do.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// A client event for the server.
    Send(Value),
    Quit,
}

/// Incoming audio as the network delivered it: packets, losses (sequence gaps) and the RFC 3550
/// interarrival jitter, per stream.
#[derive(Debug, Default)]
pub struct RxStats {
    streams: HashMap<u32, StreamStats>,
    pub packets: u64,
    pub lost: u64,
}

#[derive(Debug)]
struct StreamStats {
    last_seq: u16,
    /// Arrival minus RTP time of the last packet, in 48 kHz samples, and the smoothed jitter.
    last_transit: f64,
    jitter: f64,
}

impl RxStats {
    pub fn on_packet(&mut self, stream: u32, seq: u16, timestamp: u32, at: Instant, origin: Instant) {
        self.packets += 1;
        let transit = at.saturating_duration_since(origin).as_secs_f64() * 48_000.0 - f64::from(timestamp);
        match self.streams.get_mut(&stream) {
            None => {
                self.streams.insert(stream, StreamStats { last_seq: seq, last_transit: transit, jitter: 0.0 });
            }
            Some(s) => {
                let gap = seq.wrapping_sub(s.last_seq);
                // Ahead by a little: the packets between were lost; far ahead or behind: reordered
                // or a restart, not counted.
                if (2..1000).contains(&gap) {
                    self.lost += u64::from(gap - 1);
                }
                if gap != 0 && gap < 0x8000 {
                    s.last_seq = seq;
                }
                let d = (transit - s.last_transit).abs();
                s.last_transit = transit;
                // A timestamp jump (a new talkspurt after silence is not one: RTP time runs on)
                // must not count as seconds of jitter.
                if d < 48_000.0 {
                    s.jitter += (d - s.jitter) / 16.0;
                }
            }
        }
    }

    /// The worst stream's jitter, in ms.
    pub fn jitter_ms(&self) -> f64 {
        self.streams.values().map(|s| s.jitter / 48.0).fold(0.0, f64::max)
    }

    pub fn loss_pct(&self) -> f64 {
        let expected = self.packets + self.lost;
        if expected == 0 { 0.0 } else { self.lost as f64 * 100.0 / expected as f64 }
    }
}

pub struct View {
    room: Option<String>,
    lines: VecDeque<String>,
    you: &'static str,
    agent: &'static str,
    level_dbfs: f64,
    pub muted: bool,
    /// Push-to-talk: `Some(talking)`; `None` when the server's voice detection takes turns.
    pub push_to_talk: Option<bool>,
    /// A room's people and whether each is speaking.
    people: BTreeMap<String, bool>,
    pub stats: RxStats,
    /// The connection's round-trip time, as ICE last measured it.
    pub rtt: Option<std::time::Duration>,
}

impl View {
    pub fn new(room: Option<&str>, push_to_talk: bool) -> Self {
        View {
            room: room.map(String::from),
            lines: VecDeque::new(),
            you: if push_to_talk { "press space to talk" } else { "listening" },
            agent: "idle",
            level_dbfs: -120.0,
            muted: false,
            push_to_talk: push_to_talk.then_some(false),
            people: BTreeMap::new(),
            stats: RxStats::default(),
            rtt: None,
        }
    }

    /// Whether the microphone's audio goes out now (not muted; in push-to-talk, while talking).
    pub fn sending(&self) -> bool {
        !self.muted && self.push_to_talk.unwrap_or(true)
    }

    pub fn line(&mut self, line: String) {
        if self.lines.len() == SHOWN_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// A microphone frame's level (shown even when muted: you see that the device works).
    pub fn on_mic(&mut self, frame: &[i16]) {
        let rms = crate::transport::webrtc::client::rms(frame).max(1e-3);
        self.level_dbfs = 20.0 * (rms / 32768.0).log10();
    }

    pub fn on_event(&mut self, event: &Value, elapsed_s: f64) {
        if let Some(text) = super::lines::line(event) {
            self.line(format!("{elapsed_s:>6.1}s  {text}"));
        }
        let Some(kind) = event["type"].as_str() else { return };
        match kind {
            "input_audio_buffer.speech_started" => self.you = "speaking",
            "input_audio_buffer.speech_stopped" => self.you = "stopped",
            "input_audio_buffer.committed" => self.you = "turn sent",
            "response.created" => self.agent = "answering",
            "response.output_audio.delta" | "response.audio.delta" | "output_audio_buffer.started" => self.agent = "speaking",
            "response.done" | "output_audio_buffer.stopped" | "output_audio_buffer.cleared" => {
                self.agent = "idle";
                if self.you == "turn sent" || self.you == "stopped" {
                    self.you = if self.push_to_talk.is_some() { "press space to talk" } else { "listening" };
                }
            }
            "room.joined" => {
                let me = event["identity"].as_str();
                for p in event["participants"].as_array().into_iter().flatten() {
                    if let Some(id) = p["identity"].as_str().filter(|id| Some(*id) != me) {
                        self.people.insert(id.to_string(), false);
                    }
                }
            }
            "participant.joined" => {
                if let Some(id) = event["participant"]["identity"].as_str() {
                    self.people.insert(id.to_string(), false);
                }
            }
            "participant.left" => {
                if let Some(id) = event["identity"].as_str() {
                    self.people.remove(id);
                }
            }
            "active_speakers" => {
                let speaking: Vec<&str> =
                    event["speakers"].as_array().into_iter().flatten().filter_map(|s| s["identity"].as_str()).collect();
                for (id, on) in self.people.iter_mut() {
                    *on = speaking.contains(&id.as_str());
                }
            }
            _ => {}
        }
    }

    /// A key pressed: what to tell the server, if anything.
    pub fn on_key(&mut self, key: u8) -> Vec<Action> {
        match key {
            b'q' | b'Q' | 3 => vec![Action::Quit],
            b'm' | b'M' => {
                self.muted = !self.muted;
                self.line(if self.muted { "  (muted)".into() } else { "  (unmuted)".into() });
                // A room shows everyone who is muted.
                if self.room.is_some() { vec![Action::Send(json!({"type": "mute", "muted": self.muted}))] } else { Vec::new() }
            }
            b' ' => match self.push_to_talk {
                Some(false) => {
                    self.push_to_talk = Some(true);
                    self.you = "talking (space sends)";
                    vec![Action::Send(json!({"type": "input_audio_buffer.clear"}))]
                }
                Some(true) => {
                    self.push_to_talk = Some(false);
                    self.you = "turn sent";
                    vec![Action::Send(json!({"type": "input_audio_buffer.commit"})), Action::Send(json!({"type": "response.create"}))]
                }
                None => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// The whole screen, `width` columns wide.
    pub fn render(&self, width: usize) -> String {
        let width = width.clamp(40, 200);
        let mut out = String::new();
        let title = match &self.room {
            Some(room) => format!("voxrelay talk — room {room}"),
            None => "voxrelay talk".to_string(),
        };
        out.push_str(&format!("{title}\r\n"));
        // -60..0 dBFS across the meter.
        let meter_w = width.saturating_sub(30).min(40);
        let filled = (((self.level_dbfs + 60.0) / 60.0).clamp(0.0, 1.0) * meter_w as f64).round() as usize;
        let mic = if self.muted { "MUTED".to_string() } else { format!("{:>5.0} dBFS", self.level_dbfs) };
        out.push_str(&format!("mic   [{}{}] {mic}\r\n", "#".repeat(filled), " ".repeat(meter_w - filled)));
        out.push_str(&format!("you   {}\r\nagent {}\r\n", self.you, self.agent));
        if self.room.is_some() {
            let people: Vec<String> =
                self.people.iter().map(|(id, on)| if *on { format!("{id} (speaking)") } else { id.clone() }).collect();
            out.push_str(&format!("room  {}\r\n", if people.is_empty() { "nobody else".into() } else { people.join(", ") }));
        }
        let rtt = self.rtt.map_or_else(|| "not measured yet".to_string(), |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0));
        out.push_str(&format!(
            "net   RTT {rtt}; in: {} packets, loss {:.1} %, jitter {:.1} ms\r\n",
            self.stats.packets,
            self.stats.loss_pct(),
            self.stats.jitter_ms()
        ));
        out.push_str(&"─".repeat(width.min(60)));
        out.push_str("\r\n");
        for line in &self.lines {
            let shown: String = line.chars().take(width).collect();
            out.push_str(&shown);
            out.push_str("\r\n");
        }
        let keys = if self.push_to_talk.is_some() { "space talk/send · m mute · q quit" } else { "m mute · q quit" };
        out.push_str(&format!("\r\n{keys}\r\n"));
        out
    }
}

/// The terminal in raw mode (keys arrive one by one, unechoed) for as long as this lives, with
/// a thread reading them; restored on drop.
pub struct Terminal {
    saved: libc::termios,
    pub keys: tokio::sync::mpsc::UnboundedReceiver<u8>,
}

impl Terminal {
    /// `None` when stdin and stdout are not both a terminal (then lines are printed instead).
    pub fn open() -> Option<Terminal> {
        use std::io::IsTerminal;
        if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
            return None;
        }
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios this function owns.
        let saved = unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            t.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG);
            t.c_cc[libc::VMIN] = 1;
            t.c_cc[libc::VTIME] = 0;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return None;
            }
            saved
        };
        let (tx, keys) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut byte = [0u8; 1];
            while std::io::stdin().read(&mut byte).is_ok_and(|n| n == 1) {
                if tx.send(byte[0]).is_err() {
                    break;
                }
            }
        });
        // Hide the cursor while drawing.
        print!("\x1b[?25l");
        Some(Terminal { saved, keys })
    }

    pub fn draw(&self, view: &View) {
        use std::io::Write;
        let width = terminal_width().unwrap_or(80);
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\x1b[H\x1b[2J{}", view.render(width));
        let _ = out.flush();
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `open` on the same fd.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.saved);
        }
        print!("\x1b[?25h\r\n");
    }
}

fn terminal_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills a winsize this function owns.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        (libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col > 0).then_some(usize::from(ws.ws_col))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_screen_follows_the_conversation() {
        let mut v = View::new(None, false);
        v.on_mic(&[16_000i16; 960]);
        v.on_event(&json!({"type": "input_audio_buffer.speech_started"}), 1.0);
        let screen = v.render(80);
        assert!(screen.contains("you   speaking") && screen.contains("agent idle"), "{screen}");
        assert!(screen.contains("-6 dBFS") && screen.contains("you: speaking…"), "{screen}");
        v.on_event(&json!({"type": "response.created"}), 2.0);
        v.on_event(&json!({"type": "response.output_audio_transcript.done", "transcript": "hello"}), 2.5);
        assert!(v.render(80).contains("agent answering") && v.render(80).contains("agent said: hello"));
        for i in 0..20 {
            v.line(format!("line {i}"));
        }
        let screen = v.render(80);
        assert!(!screen.contains("line 7\r") && screen.contains("line 19"), "only the last lines are shown: {screen}");
        assert!(screen.contains("m mute · q quit") && !screen.contains("space"));
        assert!(screen.contains("net   RTT not measured yet; in: 0 packets, loss 0.0 %"), "{screen}");
        v.rtt = Some(Duration::from_micros(1500));
        assert!(v.render(80).contains("net   RTT 1.5 ms"));
    }

    #[test]
    fn push_to_talk_clears_then_commits_and_asks_for_an_answer() {
        let mut v = View::new(None, true);
        assert!(!v.sending(), "nothing goes out before space");
        assert_eq!(v.on_key(b' '), vec![Action::Send(json!({"type": "input_audio_buffer.clear"}))]);
        assert!(v.sending());
        assert_eq!(
            v.on_key(b' '),
            vec![Action::Send(json!({"type": "input_audio_buffer.commit"})), Action::Send(json!({"type": "response.create"}))]
        );
        assert!(!v.sending());
        assert_eq!(v.on_key(b'x'), vec![]);
        assert_eq!(v.on_key(b'q'), vec![Action::Quit]);
        assert_eq!(v.on_key(3), vec![Action::Quit], "Ctrl-C in raw mode");
    }

    #[test]
    fn mute_silences_and_a_room_is_told() {
        let mut one = View::new(None, false);
        assert_eq!(one.on_key(b'm'), vec![]);
        assert!(!one.sending() && one.render(80).contains("MUTED"));
        let mut room = View::new(Some("standup"), false);
        assert_eq!(room.on_key(b'm'), vec![Action::Send(json!({"type": "mute", "muted": true}))]);
        assert_eq!(room.on_key(b'm'), vec![Action::Send(json!({"type": "mute", "muted": false}))]);
        assert!(room.sending());
    }

    #[test]
    fn a_rooms_people_and_who_speaks() {
        let mut v = View::new(Some("standup"), false);
        v.on_event(
            &json!({"type": "room.joined", "room": "standup", "identity": "me", "participants": [{"identity": "me"}, {"identity": "ann"}]}),
            0.1,
        );
        v.on_event(&json!({"type": "participant.joined", "participant": {"identity": "bo"}}), 0.2);
        v.on_event(&json!({"type": "active_speakers", "speakers": [{"identity": "bo", "level": 0.5}]}), 0.3);
        assert!(v.render(80).contains("room  ann, bo (speaking)"), "{}", v.render(80));
        v.on_event(&json!({"type": "participant.left", "identity": "ann"}), 0.4);
        assert!(v.render(80).contains("room  bo (speaking)"));
    }

    #[test]
    fn loss_and_jitter_of_incoming_audio() {
        let origin = Instant::now();
        let mut s = RxStats::default();
        // 50 packets on time, with numbers 10 and 11 lost.
        for i in 0..50u16 {
            if i == 10 || i == 11 {
                continue;
            }
            s.on_packet(1, i, u32::from(i) * 960, origin + Duration::from_millis(u64::from(i) * 20), origin);
        }
        assert_eq!((s.packets, s.lost), (48, 2));
        assert!((s.loss_pct() - 4.0).abs() < 1e-9);
        assert!(s.jitter_ms() < 0.1, "on time: {}", s.jitter_ms());
        // Every other packet 10 ms late.
        let mut late = RxStats::default();
        for i in 0..200u16 {
            let delay = if i % 2 == 1 { 10 } else { 0 };
            late.on_packet(2, i, u32::from(i) * 960, origin + Duration::from_millis(u64::from(i) * 20 + delay), origin);
        }
        assert!((8.0..11.0).contains(&late.jitter_ms()), "alternating 10 ms: {} ms", late.jitter_ms());
    }
}
