//! WebSocket keepalive for sockets whose client may legitimately say nothing for minutes (a
//! Realtime session that only listens, or only sends text). TCP alone never notices a peer whose
//! network vanished without a FIN, so the server pings every [`PING_EVERY`] and gives up on a
//! socket from which nothing (no message, no pong) came back for [`GIVE_UP_AFTER`]. Every
//! WebSocket client library answers pings by itself while it reads. Time is an argument: the
//! policy is a table test.

use std::time::{Duration, Instant};

pub const PING_EVERY: Duration = Duration::from_secs(10);
/// Two unanswered pings: ≈ 20 s, like a WebRTC call's ICE timeout plus grace.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tick {
    Ping,
    /// Nothing heard for [`GIVE_UP_AFTER`]: close the socket.
    GiveUp,
}

#[derive(Clone, Copy, Debug)]
pub struct Keepalive {
    last_heard: Instant,
}

impl Keepalive {
    pub fn new(now: Instant) -> Self {
        Keepalive { last_heard: now }
    }

    /// Anything arrived from the client (a message, a pong), or the server is holding one of its
    /// messages (so it is not reading, and cannot hear a pong).
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// On each [`PING_EVERY`] tick.
    pub fn tick(&self, now: Instant) -> Tick {
        if now.saturating_duration_since(self.last_heard) >= GIVE_UP_AFTER { Tick::GiveUp } else { Tick::Ping }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_sockets_are_given_up_after_two_unanswered_pings() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // (last heard at, ticked at, expected)
        let cases = [(0, 10, Tick::Ping), (0, 19, Tick::Ping), (0, 20, Tick::GiveUp), (15, 30, Tick::Ping), (15, 40, Tick::GiveUp)];
        for (heard, at, expected) in cases {
            let mut k = Keepalive::new(t0);
            k.heard(t0 + s(heard));
            assert_eq!(k.tick(t0 + s(at)), expected, "heard at {heard} s, ticked at {at} s");
        }
    }
}
