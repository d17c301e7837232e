//! Calls that end on their own: the one policy for a call's idle timeout (nothing said, by the
//! caller or the agent, for so long) and its maximum duration, and for telling the client
//! before either ends the call (`session.ending` with the seconds left). The server's values
//! are ceilings; a session may ask for less (`idle_timeout`, `max_call_duration`). Time comes
//! in as an argument, so the policy is a table test.

use std::time::{Duration, Instant};

use voxrelay_signaling::{EndReason, SessionConfig};

/// A limit's warning comes this long before it ends the call, or at three quarters of the
/// limit when that is shorter.
pub const WARN_LEAD: Duration = Duration::from_secs(60);

/// The server's defaults (`--idle-timeout`, `--max-call-duration`); `None`: no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallLimits {
    pub idle: Option<Duration>,
    pub max: Option<Duration>,
}

impl CallLimits {
    /// What applies to a session: its own values where they are lower than the server's.
    pub fn for_session(self, config: &SessionConfig) -> CallLimits {
        let lower = |server: Option<Duration>, asked: Option<u64>| match (server, asked.map(Duration::from_secs)) {
            (Some(s), Some(a)) => Some(s.min(a)),
            (s, a) => s.or(a),
        };
        CallLimits { idle: lower(self.idle, config.idle_timeout_s), max: lower(self.max, config.max_call_duration_s) }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Idle,
    MaxDuration,
}

impl Limit {
    pub fn label(self) -> &'static str {
        match self {
            Limit::Idle => "idle_timeout",
            Limit::MaxDuration => "max_call_duration",
        }
    }
}

impl From<Limit> for EndReason {
    fn from(l: Limit) -> EndReason {
        match l {
            Limit::Idle => EndReason::IdleTimeout,
            Limit::MaxDuration => EndReason::MaxCallDuration,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Tell the client: `left` until `limit` ends the call.
    Warn {
        limit: Limit,
        left: Duration,
    },
    End(Limit),
}

/// One call's clock.
#[derive(Debug)]
pub struct Lifetime {
    started: Instant,
    last_activity: Instant,
    agent_speaking: bool,
    warned_idle: bool,
    warned_max: bool,
}

impl Lifetime {
    pub fn new(now: Instant) -> Lifetime {
        Lifetime { started: now, last_activity: now, agent_speaking: false, warned_idle: false, warned_max: false }
    }

    /// Someone said something (caller speech, a client event): the idle count starts again.
    pub fn on_activity(&mut self, now: Instant) {
        self.last_activity = now;
        self.warned_idle = false;
    }

    /// While the agent speaks the call is not idle; its silence counts from when it stopped.
    pub fn on_agent_speaking(&mut self, speaking: bool, now: Instant) {
        self.agent_speaking = speaking;
        self.on_activity(now);
    }

    pub fn poll(&mut self, now: Instant, limits: CallLimits) -> Option<Verdict> {
        if self.agent_speaking {
            self.on_activity(now);
        }
        for (limit, max, since, warned) in [
            (Limit::MaxDuration, limits.max, self.started, &mut self.warned_max),
            (Limit::Idle, limits.idle, self.last_activity, &mut self.warned_idle),
        ] {
            let Some(max) = max else { continue };
            let elapsed = now.saturating_duration_since(since);
            if elapsed >= max {
                return Some(Verdict::End(limit));
            }
            let lead = WARN_LEAD.min(max / 4);
            if !*warned && elapsed + lead >= max {
                *warned = true;
                return Some(Verdict::Warn { limit, left: max - elapsed });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn idle_warns_then_ends_unless_someone_speaks() {
        let t0 = Instant::now();
        let limits = CallLimits { idle: Some(8 * S), max: None };
        let mut life = Lifetime::new(t0);
        // (seconds since start, what happens first, the verdict expected)
        let table: [(u64, Option<&str>, Option<Verdict>); 9] = [
            (1, None, None),
            (5, None, None),
            (6, None, Some(Verdict::Warn { limit: Limit::Idle, left: 2 * S })),
            (7, None, None),
            (7, Some("caller speaks"), None),
            (12, None, None),
            (13, None, Some(Verdict::Warn { limit: Limit::Idle, left: 2 * S })),
            (14, Some("agent starts"), None),
            (40, None, None),
        ];
        for (at, happens, expected) in table {
            let now = t0 + S * at as u32;
            match happens {
                Some("caller speaks") => life.on_activity(now),
                Some("agent starts") => life.on_agent_speaking(true, now),
                _ => {}
            }
            assert_eq!(life.poll(now, limits), expected, "at {at} s");
        }
        life.on_agent_speaking(false, t0 + 41 * S);
        assert_eq!(life.poll(t0 + 46 * S, limits), None);
        assert_eq!(life.poll(t0 + 47 * S, limits), Some(Verdict::Warn { limit: Limit::Idle, left: 2 * S }));
        assert_eq!(life.poll(t0 + 48 * S, limits), None, "warned once");
        assert_eq!(life.poll(t0 + 49 * S, limits), Some(Verdict::End(Limit::Idle)));
    }

    #[test]
    fn the_maximum_duration_warns_a_minute_ahead_and_ignores_activity() {
        let t0 = Instant::now();
        let limits = CallLimits { idle: None, max: Some(600 * S) };
        let mut life = Lifetime::new(t0);
        assert_eq!(life.poll(t0 + 539 * S, limits), None);
        life.on_activity(t0 + 539 * S);
        assert_eq!(life.poll(t0 + 540 * S, limits), Some(Verdict::Warn { limit: Limit::MaxDuration, left: 60 * S }));
        assert_eq!(life.poll(t0 + 599 * S, limits), None);
        assert_eq!(life.poll(t0 + 600 * S, limits), Some(Verdict::End(Limit::MaxDuration)));
    }

    #[test]
    fn a_session_may_lower_the_servers_limits_not_raise_them() {
        let server = CallLimits { idle: Some(300 * S), max: Some(3600 * S) };
        let mut config = SessionConfig::default();
        assert_eq!(server.for_session(&config), server);
        config.idle_timeout_s = Some(30);
        config.max_call_duration_s = Some(7200);
        assert_eq!(server.for_session(&config), CallLimits { idle: Some(30 * S), max: Some(3600 * S) });
        let open = CallLimits::default();
        assert_eq!(open.for_session(&config), CallLimits { idle: Some(30 * S), max: Some(7200 * S) });
    }
}
