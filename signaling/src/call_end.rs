//! Why a call ended, as `/metrics` labels it (`voxrelay_calls_ended_by_reason_total`) and, once
//! calls are stored, as their record says.

/// Why a 1:1 call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// `DELETE` of the call, or the drain's grace ran out.
    Requested,
    /// The person hung up (closed the connection, the socket, the stream).
    HungUp,
    /// The connection failed (ICE consent lost, DTLS failed).
    Failed,
    /// The transport never connected.
    NeverConnected,
    /// Interrupted for longer than the grace.
    Lost,
    /// Nothing said, by the caller or the agent, for the session's `idle_timeout`.
    IdleTimeout,
    /// The call reached its `max_call_duration`.
    MaxCallDuration,
}

impl EndReason {
    pub const ALL: [EndReason; 7] = [
        EndReason::Requested,
        EndReason::HungUp,
        EndReason::Failed,
        EndReason::NeverConnected,
        EndReason::Lost,
        EndReason::IdleTimeout,
        EndReason::MaxCallDuration,
    ];

    pub fn label(self) -> &'static str {
        match self {
            EndReason::Requested => "requested",
            EndReason::HungUp => "hung_up",
            EndReason::Failed => "failed",
            EndReason::NeverConnected => "never_connected",
            EndReason::Lost => "lost",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::MaxCallDuration => "max_call_duration",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}
