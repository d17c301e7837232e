//! Admission: whether a new call may start now. The one place that knows the drain state, the
//! call limit (`--max-calls`), what each transport costs against it, and the shares no single
//! client may exceed; the HTTP layer, the engine and the phone streams all ask here.
//!
//! Costs are counted in quarter calls: an Opus call (WebRTC, plain RTP) costs a whole call; a
//! Realtime WebSocket session, a G.711 phone call and a room participant half a call each. Sized
//! against the default limit of 80 calls per core (BENCHMARKS.md "The default call limit"): a
//! core holds ≈ 250 WebSocket sessions and ≈ 200 phone calls by the turn-latency criterion, so
//! 160 of either is within it; a room participant decodes nothing but holds a peer connection
//! and its slots' packets (a subscriber on 3 slots is ≈ 150 packets/s out; a core forwards
//! ≈ 45 000–65 000), so 160 per core keep forwarding at half of what a core does.
//!
//! A call holds its place from the moment it is admitted: a [`Ticket`] reserves it while the
//! answer is built (or, for a phone stream, until its `start` arrives), so a burst of offers
//! cannot all pass the check before the first of them is counted.
//!
//! Shares (issue 21: one client secret once filled every slot):
//! - a client secret starts one call at a time (its session id is the call's);
//! - one IP address holds at most [`Shares::per_ip_quarters`] of the limit, and at most
//!   [`Shares::pending_per_ip`] calls that have not connected yet (an answer costs a port and a
//!   worker slot for up to 30 s; a client posting offers it never completes would hold them).
//!   The address is `None` where the edge exempts it (loopback, by default), and for a carrier
//!   that signed its request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use voxrelay_signaling::{ApiError, SessionId};

use crate::transport::TransportKind;

/// What a call or participant holds, for the limit and the shares.
#[derive(Clone, Debug)]
pub struct Seat {
    pub quarters: usize,
    pub ip: Option<IpAddr>,
    /// The client secret's session, when a secret started it.
    pub secret: Option<SessionId>,
    pub connected: bool,
}

impl Seat {
    pub fn call(kind: TransportKind, ip: Option<IpAddr>, secret: Option<SessionId>) -> Seat {
        Seat { quarters: Admission::cost_quarters(kind), ip, secret, connected: false }
    }

    pub fn room_participant() -> Seat {
        Seat { quarters: Admission::ROOM_PARTICIPANT_QUARTERS, ip: None, secret: None, connected: false }
    }
}

/// The per-client shares (README "Limits").
#[derive(Clone, Copy, Debug)]
pub struct Shares {
    /// Quarter calls one IP may hold; 0: no limit.
    pub per_ip_quarters: usize,
    /// Calls from one IP not connected yet; 0: no limit.
    pub pending_per_ip: usize,
}

impl Shares {
    /// A quarter of the limit per address (at least one call), 10 unconnected calls.
    pub fn default_for(max_calls: usize) -> Shares {
        Shares { per_ip_quarters: max_calls.max(4), pending_per_ip: 10 }
    }

    pub const NONE: Shares = Shares { per_ip_quarters: 0, pending_per_ip: 0 };
}

pub struct Admission {
    max_calls: usize,
    shares: Shares,
    draining: AtomicBool,
    reserved: Arc<Mutex<HashMap<u64, Seat>>>,
    next_ticket: AtomicU64,
}

impl Admission {
    pub fn new(max_calls: usize, shares: Shares) -> Self {
        Self { max_calls, shares, draining: AtomicBool::new(false), reserved: Arc::default(), next_ticket: AtomicU64::new(0) }
    }

    /// What one call of `kind` costs against `max_calls`, in quarter calls.
    pub fn cost_quarters(kind: TransportKind) -> usize {
        match kind {
            TransportKind::WebRtc | TransportKind::PlainRtp => 4,
            // No Opus to code, no DTLS/SRTP: JSON and base64 per frame.
            TransportKind::WebSocket => 2,
            // G.711 at 8 kHz, no Opus; a core holds ≈ 200 by the turn-latency criterion, not
            // the 320 a quarter would let in at the default limit.
            TransportKind::Twilio => 2,
        }
    }

    /// What one room participant costs, in quarter calls.
    pub const ROOM_PARTICIPANT_QUARTERS: usize = 2;

    /// Whether `want` may start, given the seats now live (calls and room participants); its
    /// place is held by the returned ticket until the call is counted live (drop it then).
    pub fn admit(&self, want: Seat, live: impl IntoIterator<Item = Seat>) -> Result<Ticket, ApiError> {
        if self.is_draining() {
            return Err(ApiError::overloaded("the server is draining and takes no new calls"));
        }
        let mut reserved = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
        let (mut total, mut ip_quarters, mut ip_pending) = (0, 0, 0);
        for seat in live.into_iter().chain(reserved.values().cloned()) {
            total += seat.quarters;
            if let Some(secret) = &want.secret
                && seat.secret.as_ref() == Some(secret)
            {
                return Err(ApiError::rate_limited("this client secret already has a call; a secret starts one call at a time", 1)
                    .with_code("client_secret_in_use"));
            }
            if want.ip.is_some() && seat.ip == want.ip {
                ip_quarters += seat.quarters;
                ip_pending += usize::from(!seat.connected);
            }
        }
        if total + want.quarters > self.max_calls.saturating_mul(4) {
            let limit = format!(
                "the server is at its limit of {} calls (a WebSocket session, a phone call or a room participant counts as half)",
                self.max_calls
            );
            return Err(ApiError::overloaded(limit));
        }
        if want.ip.is_some() {
            let Shares { per_ip_quarters, pending_per_ip } = self.shares;
            if per_ip_quarters > 0 && ip_quarters + want.quarters > per_ip_quarters {
                let share = per_ip_quarters as f64 / 4.0;
                return Err(ApiError::rate_limited(format!("this address holds its share of the server ({share} calls)"), 1));
            }
            if pending_per_ip > 0 && ip_pending + 1 > pending_per_ip {
                return Err(ApiError::rate_limited(
                    format!("this address has {pending_per_ip} calls that have not connected yet; connect or end them first"),
                    1,
                ));
            }
        }
        let id = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        reserved.insert(id, want);
        Ok(Ticket { id, reserved: self.reserved.clone() })
    }

    /// No new calls from now on (SIGTERM).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// An admitted call's place, held until the call is counted live (or given up); dropping it
/// gives the reservation back.
#[derive(Debug)]
pub struct Ticket {
    id: u64,
    reserved: Arc<Mutex<HashMap<u64, Seat>>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.reserved.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransportKind::{PlainRtp, Twilio, WebRtc, WebSocket};

    fn live(kinds: &[TransportKind]) -> Vec<Seat> {
        kinds.iter().map(|k| Seat { connected: true, ..Seat::call(*k, None, None) }).collect()
    }

    fn call(kind: TransportKind) -> Seat {
        Seat::call(kind, None, None)
    }

    #[test]
    fn a_phone_call_or_a_websocket_session_costs_half_a_call() {
        let a = Admission::new(2, Shares::NONE);
        assert!(a.admit(call(WebRtc), live(&[WebRtc])).is_ok());
        assert!(a.admit(call(WebRtc), live(&[WebRtc, WebRtc])).is_err());
        assert!(a.admit(call(Twilio), live(&[WebRtc, Twilio])).is_ok());
        assert!(a.admit(call(Twilio), live(&[WebRtc, Twilio, Twilio])).is_err());
        assert!(a.admit(call(PlainRtp), live(&[Twilio, Twilio])).is_ok());
        assert!(a.admit(call(PlainRtp), live(&[Twilio, Twilio, Twilio])).is_err());
        assert!(a.admit(call(WebSocket), live(&[WebRtc, WebSocket])).is_ok());
        assert!(a.admit(call(WebSocket), live(&[WebRtc, WebSocket, Twilio])).is_err());
    }

    #[test]
    fn an_admitted_call_holds_its_place_until_its_ticket_drops() {
        let a = Admission::new(1, Shares::NONE);
        let held = a.admit(call(Twilio), []).unwrap();
        assert!(a.admit(call(WebSocket), []).is_ok(), "2 quarters held + 2");
        assert!(a.admit(call(WebRtc), []).is_err(), "2 quarters held + 4 > 4");
        drop(held);
        let ticket = a.admit(call(WebRtc), []).unwrap();
        assert!(a.admit(call(WebRtc), []).is_err(), "a burst of offers: the second waits for the first's place");
        drop(ticket);
        assert!(a.admit(call(WebRtc), []).is_ok());
    }

    #[test]
    fn room_participants_share_the_limit_with_calls() {
        let a = Admission::new(2, Shares::NONE);
        let rooms = |n: usize| (0..n).map(|_| Seat::room_participant());
        assert!(a.admit(Seat::room_participant(), live(&[WebRtc]).into_iter().chain(rooms(1))).is_ok());
        assert!(a.admit(Seat::room_participant(), live(&[WebRtc]).into_iter().chain(rooms(2))).is_err(), "4 + 2 + 2 + 2 quarters");
        assert!(a.admit(call(WebRtc), rooms(2)).is_ok());
        assert!(a.admit(call(WebRtc), rooms(3)).is_err());
    }

    #[test]
    fn a_client_secret_starts_one_call_at_a_time() {
        let a = Admission::new(100, Shares::NONE);
        let secret = SessionId::random();
        let first = a.admit(Seat::call(WebRtc, None, Some(secret.clone())), []).unwrap();
        let e = a.admit(Seat::call(WebSocket, None, Some(secret.clone())), []).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (429, "client_secret_in_use"));
        drop(first);
        let mut on = Seat::call(WebRtc, None, Some(secret.clone()));
        on.connected = true;
        assert!(a.admit(Seat::call(WebRtc, None, Some(secret.clone())), [on]).is_err(), "nor while its call is live");
        assert!(a.admit(Seat::call(WebRtc, None, Some(SessionId::random())), []).is_ok(), "another secret is fine");
        assert!(a.admit(Seat::call(WebRtc, None, Some(secret)), []).is_ok(), "after the call, the secret may call again");
    }

    #[test]
    fn one_address_holds_its_share_and_few_unconnected_calls() {
        let a = Admission::new(8, Shares { per_ip_quarters: 8, pending_per_ip: 3 });
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let seat = |addr: &str, connected: bool| Seat { connected, ..Seat::call(WebRtc, ip(addr), None) };
        // Two connected calls fill 198.51.100.7's share of 2 (8 quarters); others still get in.
        let mine = [seat("198.51.100.7", true), seat("198.51.100.7", true)];
        let e = a.admit(seat("198.51.100.7", false), mine.clone()).unwrap_err();
        assert_eq!(e.status.as_u16(), 429);
        assert!(a.admit(seat("203.0.113.1", false), mine.clone()).is_ok());
        assert!(a.admit(Seat::call(Twilio, None, None), mine).is_ok(), "an exempt caller");
        // Unconnected calls: at most 3 per address, whatever the share.
        let a = Admission::new(100, Shares { per_ip_quarters: 0, pending_per_ip: 3 });
        let waiting = [seat("198.51.100.7", false), seat("198.51.100.7", false), seat("198.51.100.7", true)];
        assert!(a.admit(seat("198.51.100.7", false), waiting.clone()).is_ok());
        let tickets: Vec<_> = (0..1).map(|_| a.admit(seat("198.51.100.7", false), waiting.clone()).unwrap()).collect();
        assert!(a.admit(seat("198.51.100.7", false), waiting).is_err(), "two waiting + one reserved");
        drop(tickets);
    }

    #[test]
    fn draining_refuses_every_kind() {
        let a = Admission::new(10, Shares::NONE);
        a.start_draining();
        for kind in TransportKind::ALL {
            let e = a.admit(call(kind), []).unwrap_err();
            assert_eq!(e.status.as_u16(), 503);
        }
        assert_eq!(a.admit(Seat::room_participant(), []).unwrap_err().status.as_u16(), 503);
    }
}
