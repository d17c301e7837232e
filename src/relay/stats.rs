//! The TURN server's counters: exported at `/metrics` (`voxrelay_turn_*`) and asserted by tests.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct TurnStats {
    pub allocations: AtomicU64,
    pub malformed: AtomicU64,
    pub unauthorized: AtomicU64,
    pub forbidden_peer: AtomicU64,
    pub quota_refused: AtomicU64,
    pub dropped_policy: AtomicU64,
    pub dropped_no_permission: AtomicU64,
    pub dropped_rate: AtomicU64,
    pub relayed_to_peer: AtomicU64,
    pub relayed_to_client: AtomicU64,
    /// Open TCP/TLS client connections.
    pub tcp_connections: AtomicU64,
    /// TCP/TLS connections closed at once because `max-tcp-connections` were open.
    pub tcp_refused: AtomicU64,
    /// TCP/TLS connections closed for sending nothing within the hello timeout.
    pub tcp_silent_closed: AtomicU64,
}

impl TurnStats {
    /// Prometheus text exposition (appended to `/metrics` when TURN runs in-process).
    pub fn prometheus(&self) -> String {
        let rows: [(&str, &str, &AtomicU64); 13] = [
            ("allocations", "gauge", &self.allocations),
            ("malformed_total", "counter", &self.malformed),
            ("unauthorized_total", "counter", &self.unauthorized),
            ("forbidden_peer_total", "counter", &self.forbidden_peer),
            ("quota_refused_total", "counter", &self.quota_refused),
            ("dropped_policy_total", "counter", &self.dropped_policy),
            ("dropped_no_permission_total", "counter", &self.dropped_no_permission),
            ("dropped_rate_total", "counter", &self.dropped_rate),
            ("relayed_to_peer_total", "counter", &self.relayed_to_peer),
            ("relayed_to_client_total", "counter", &self.relayed_to_client),
            ("tcp_connections", "gauge", &self.tcp_connections),
            ("tcp_refused_total", "counter", &self.tcp_refused),
            ("tcp_silent_closed_total", "counter", &self.tcp_silent_closed),
        ];
        let mut out = String::new();
        for (name, kind, value) in rows {
            let help = name.trim_end_matches("_total").replace('_', " ");
            out.push_str(&format!(
                "# HELP voxrelay_turn_{name} Embedded TURN server: {help}.\n# TYPE voxrelay_turn_{name} {kind}\nvoxrelay_turn_{name} {}\n",
                Self::get(value)
            ));
        }
        out
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
