//! Admission: whether a new call may start now. The one place that knows the drain state, the
//! call limit (`--max-calls`) and what each transport costs against it; the HTTP layer, the
//! engine and the phone streams all ask here.
//!
//! Costs are counted in quarter calls: an Opus call (WebRTC, plain RTP) costs a whole call, a
//! Realtime WebSocket session half a call, a G.711 phone call a quarter (BENCHMARKS.md: ≈ 200 phone calls per core against ≈ 50 WebRTC
//! calls by the same turn-latency criterion). A phone stream counts from its upgrade, before
//! its `start` arrives, so a flood of idle upgrades cannot get past the limit. A room
//! participant costs a quarter too: nothing is decoded for it, but it holds a peer connection
//! and its slots' packets (a subscriber on 3 slots is ≈ 150 packets/s out, ≈ 0.3 % of a core at
//! the measured forwarding rate, against ≈ 2 % for an echo call), so a quarter is conservative.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use voxrelay_signaling::ApiError;

use crate::transport::TransportKind;

pub struct Admission {
    max_calls: usize,
    draining: AtomicBool,
    /// Phone streams upgraded whose `start` has not arrived yet.
    phone_pending: AtomicUsize,
}

impl Admission {
    pub fn new(max_calls: usize) -> Self {
        Self { max_calls, draining: AtomicBool::new(false), phone_pending: AtomicUsize::new(0) }
    }

    /// What one call of `kind` costs against `max_calls`, in quarter calls.
    pub fn cost_quarters(kind: TransportKind) -> usize {
        match kind {
            TransportKind::WebRtc | TransportKind::PlainRtp => 4,
            // No Opus to code, no DTLS/SRTP: JSON and base64 per frame. Measured at half a
            // WebRTC call's CPU or less (BENCHMARKS.md "Realtime over WebSocket": 50 sessions
            // 19 % of a core vs 41 %); counted as half a call.
            TransportKind::WebSocket => 2,
            TransportKind::Twilio => 1,
        }
    }

    /// What one room participant costs, in quarter calls.
    pub const ROOM_PARTICIPANT_QUARTERS: usize = 1;

    /// Whether one more call of `kind` may start, given the kinds of the calls now live and the
    /// participants in rooms.
    pub fn admit(
        &self,
        kind: TransportKind,
        live: impl IntoIterator<Item = TransportKind>,
        room_participants: usize,
    ) -> Result<(), ApiError> {
        self.admit_quarters(Self::cost_quarters(kind), live, room_participants)
    }

    /// Whether one more participant may join a room (same limit as calls).
    pub fn admit_room_participant(&self, live: impl IntoIterator<Item = TransportKind>, room_participants: usize) -> Result<(), ApiError> {
        self.admit_quarters(Self::ROOM_PARTICIPANT_QUARTERS, live, room_participants)
    }

    fn admit_quarters(&self, cost: usize, live: impl IntoIterator<Item = TransportKind>, room_participants: usize) -> Result<(), ApiError> {
        if self.is_draining() {
            return Err(ApiError::overloaded("the server is draining and takes no new calls"));
        }
        let live: usize = live.into_iter().map(Self::cost_quarters).sum();
        let pending = self.phone_pending.load(Ordering::SeqCst) * Self::cost_quarters(TransportKind::Twilio);
        let rooms = room_participants * Self::ROOM_PARTICIPANT_QUARTERS;
        if live + pending + rooms + cost > self.max_calls.saturating_mul(4) {
            let limit =
                format!("the server is at its limit of {} calls (a WebSocket session counts as half, a phone call or a room participant as a quarter)", self.max_calls);
            return Err(ApiError::overloaded(limit));
        }
        Ok(())
    }

    /// Holds a phone stream's place from its upgrade until its call starts or it goes away.
    pub fn hold_phone_stream(&self) -> PendingPhone<'_> {
        self.phone_pending.fetch_add(1, Ordering::SeqCst);
        PendingPhone(self)
    }

    /// No new calls from now on (SIGTERM).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// A phone stream waiting for its `start`; dropping it gives the place back.
pub struct PendingPhone<'a>(&'a Admission);

impl Drop for PendingPhone<'_> {
    fn drop(&mut self) {
        self.0.phone_pending.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransportKind::{PlainRtp, Twilio, WebRtc};

    #[test]
    fn a_phone_call_costs_a_quarter_of_the_limit() {
        let a = Admission::new(2);
        assert!(a.admit(WebRtc, [WebRtc], 0).is_ok());
        assert!(a.admit(WebRtc, [WebRtc, WebRtc], 0).is_err());
        assert!(a.admit(Twilio, [WebRtc, Twilio, Twilio, Twilio], 0).is_ok());
        assert!(a.admit(Twilio, [WebRtc, Twilio, Twilio, Twilio, Twilio], 0).is_err());
        assert!(a.admit(PlainRtp, [Twilio, Twilio, Twilio, Twilio], 0).is_ok());
    }

    #[test]
    fn waiting_phone_streams_count_until_released() {
        let a = Admission::new(1);
        let held: Vec<_> = (0..3).map(|_| a.hold_phone_stream()).collect();
        assert!(a.admit(Twilio, [], 0).is_ok());
        assert!(a.admit(WebRtc, [], 0).is_err(), "3 quarters held + 4 > 4");
        drop(held);
        assert!(a.admit(WebRtc, [], 0).is_ok());
    }

    #[test]
    fn room_participants_share_the_limit_with_calls() {
        let a = Admission::new(2);
        assert!(a.admit_room_participant([WebRtc], 3).is_ok());
        assert!(a.admit_room_participant([WebRtc], 4).is_err(), "4 + 4 quarters are the limit");
        assert!(a.admit(WebRtc, [], 4).is_ok());
        assert!(a.admit(WebRtc, [], 5).is_err());
    }

    #[test]
    fn draining_refuses_every_kind() {
        let a = Admission::new(10);
        a.start_draining();
        for kind in TransportKind::ALL {
            let e = a.admit(kind, [], 0).unwrap_err();
            assert_eq!(e.status.as_u16(), 503);
        }
        assert_eq!(a.admit_room_participant([], 0).unwrap_err().status.as_u16(), 503);
    }
}
