//! Sending side of Opus DTX, as a browser does it once the answer asks for it (`usedtx=1`,
//! `voxrelay_signaling::sdp_dtx`), for the test client and the load generator: which packets go
//! out.
//!
//! WebRTC's rule (its Opus wrapper): libopus in DTX returns a 1-byte packet for every silent
//! frame; only the first of a run is sent, so the receiver knows the pause that follows is
//! silence, and the rest are dropped without using a sequence number. The comfort-noise update
//! libopus codes every 400 ms is an ordinary packet and goes out.

use voxrelay_media::is_dtx_packet;

/// Decides, packet by packet, what a sender in DTX puts on the wire.
#[derive(Clone, Copy, Debug, Default)]
pub struct DtxGate {
    on: bool,
    /// The previous frame was a DTX packet (sent or not).
    in_dtx: bool,
}

impl DtxGate {
    pub fn new(on: bool) -> Self {
        DtxGate { on, in_dtx: false }
    }

    /// Whether the frame coded as `payload` is sent. Off: always.
    pub fn sends(&mut self, payload: &[u8]) -> bool {
        if !self.on {
            return true;
        }
        let dtx = is_dtx_packet(payload);
        let send = !(dtx && self.in_dtx);
        self.in_dtx = dtx;
        send
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_a_run_of_dtx_packets_only_the_first_is_sent() {
        let mut gate = DtxGate::new(true);
        let frames: [&[u8]; 6] = [&[1, 2, 3, 4], &[8], &[8], &[8], &[1, 2, 3], &[8]];
        let sent: Vec<bool> = frames.iter().map(|f| gate.sends(f)).collect();
        assert_eq!(sent, [true, true, false, false, true, true]);
        let mut off = DtxGate::new(false);
        assert!(frames.iter().all(|f| off.sends(f)));
    }
}
