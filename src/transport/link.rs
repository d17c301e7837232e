//! A participant's connection as its transport reports it, and the one policy for when to give
//! up on it. Shared by every participant over a transport: the person of a 1:1 call
//! (`call::person`) and each room member (`room::state`). Time comes in as an argument, so the
//! policy is a table test without sleeps.
//!
//! How long a vanished peer is held, end to end (RFC 7675 allows 30 s at most without consent):
//! a 1:1 WebRTC call keeps webrtc-rs's ICE timing (no answer to keepalives for 5 s:
//! "disconnected", i.e. [`Link::on_interrupted`]) plus [`DISCONNECTED_GRACE`]: ≈ 20 s, long
//! enough for an ICE restart after a Wi-Fi handover. A room participant's ICE gives up after
//! 2 s + 2 s ("failed": [`Departure::Failed`]). Plain RTP and phone streams have no
//! connectivity checks: 5 s without a packet or a carrier message counts as interrupted
//! (`plain_rtp::QUIET_PEER`, `phone::line::QUIET_CARRIER`), so an abandoned session ends ≈ 20 s
//! later, and a socket closing ends it at once.

use std::time::{Duration, Instant};

pub use voxrelay_signaling::EndReason;

/// A transport that never connects (offer posted, then abandoned) is dropped after this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// An interrupted transport (ICE "disconnected") often recovers; this long interrupted ends it.
pub const DISCONNECTED_GRACE: Duration = Duration::from_secs(15);

/// How the far end went away, as the transport saw it (the reason is for the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Departure {
    /// It hung up: closed the peer connection or the events channel, closed the socket, the
    /// carrier ended the stream.
    HungUp(&'static str),
    /// Its connection failed: ICE consent lost, DTLS failed, the peer connection dropped.
    Failed(&'static str),
}

impl Departure {
    pub fn why(self) -> &'static str {
        match self {
            Departure::HungUp(why) | Departure::Failed(why) => why,
        }
    }
}

/// Why a participant's connection was given up by the server's own clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overdue {
    /// Not connected [`CONNECT_TIMEOUT`] after it was opened.
    NeverConnected,
    /// Interrupted for longer than [`DISCONNECTED_GRACE`].
    Lost,
}

/// One participant's connection state.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    opened: Instant,
    connected: bool,
    interrupted_since: Option<Instant>,
}

impl Link {
    /// A transport that still has to connect (a WebRTC answer sent, ICE running).
    pub fn opened(now: Instant) -> Self {
        Link { opened: now, connected: false, interrupted_since: None }
    }

    /// A participant that is connected from the start (the room's agent, a phone stream that
    /// already started).
    pub fn up(now: Instant) -> Self {
        Link { opened: now, connected: true, interrupted_since: None }
    }

    pub fn on_connected(&mut self) {
        self.connected = true;
        self.interrupted_since = None;
    }

    pub fn on_interrupted(&mut self, now: Instant) {
        // A second "disconnected" does not restart the grace.
        self.interrupted_since.get_or_insert(now);
    }

    /// Whether media may be sent: connected once (an interruption keeps sending: the peer
    /// may come back, and RTP it misses meanwhile is lost either way).
    pub fn has_connected(&self) -> bool {
        self.connected
    }

    /// Whether the server gives up on the connection at `now`.
    pub fn overdue(&self, now: Instant) -> Option<Overdue> {
        if !self.connected && now.saturating_duration_since(self.opened) > CONNECT_TIMEOUT {
            return Some(Overdue::NeverConnected);
        }
        match self.interrupted_since {
            Some(t) if now.saturating_duration_since(t) > DISCONNECTED_GRACE => Some(Overdue::Lost),
            _ => None,
        }
    }
}

impl From<Departure> for EndReason {
    fn from(d: Departure) -> Self {
        match d {
            Departure::HungUp(_) => EndReason::HungUp,
            Departure::Failed(_) => EndReason::Failed,
        }
    }
}

impl From<Overdue> for EndReason {
    fn from(o: Overdue) -> Self {
        match o {
            Overdue::NeverConnected => EndReason::NeverConnected,
            Overdue::Lost => EndReason::Lost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_give_up_policy_as_a_table() {
        let t0 = Instant::now();
        // (what happened, at which second, asked at which second, expected)
        type Step = (&'static str, u64);
        let cases: [(&[Step], u64, Option<Overdue>); 9] = [
            (&[], 29, None),
            (&[], 31, Some(Overdue::NeverConnected)),
            (&[("connected", 1)], 300, None),
            (&[("connected", 1), ("interrupted", 10)], 24, None),
            (&[("connected", 1), ("interrupted", 10)], 26, Some(Overdue::Lost)),
            // Recovered: the grace is forgotten.
            (&[("connected", 1), ("interrupted", 10), ("connected", 12)], 60, None),
            // A repeated "disconnected" does not extend the grace.
            (&[("connected", 1), ("interrupted", 10), ("interrupted", 20)], 26, Some(Overdue::Lost)),
            // Interrupted before ever connecting: the connect timeout still applies first.
            (&[("interrupted", 5)], 31, Some(Overdue::NeverConnected)),
            (&[("up", 0), ("interrupted", 2)], 18, Some(Overdue::Lost)),
        ];
        for (steps, asked, expected) in cases {
            let mut link = Link::opened(t0);
            for &(what, at) in steps {
                match what {
                    "connected" => link.on_connected(),
                    "interrupted" => link.on_interrupted(t0 + S(at)),
                    "up" => link = Link::up(t0 + S(at)),
                    _ => unreachable!(),
                }
            }
            assert_eq!(link.overdue(t0 + S(asked)), expected, "{steps:?} asked at {asked} s");
        }
    }

    #[test]
    fn end_reasons_have_distinct_labels_in_index_order() {
        for (i, r) in EndReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut labels: Vec<_> = EndReason::ALL.iter().map(|r| r.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), EndReason::ALL.len());
        assert_eq!(EndReason::from(Departure::Failed("ICE")), EndReason::Failed);
        assert_eq!(EndReason::from(Overdue::Lost), EndReason::Lost);
    }
}
