//! A phone caller in a room (PROTOCOL.md §4: a Twilio stream whose `customParameters` carry
//! `room`). The caller's session is a room bridge ([`voxrelay_media::room_bridge`]): on the
//! audio worker its mu-law is decoded and encoded to Opus once, and the room's audio for its one
//! slot (the top speaker) is decoded, mixed with nothing else, and encoded to mu-law at 8 kHz.
//! This task only moves the frames: Opus into the room's packet queue, mu-law to the carrier.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use voxrelay_media::{EncodedFrame, Uplink};

use super::server_track::ServerTrack;
use super::slot::TrackKey;
use crate::call::POLL_INTERVAL;
use crate::metrics::Metrics;
use crate::transport::RtpPacketIn;
use crate::transport::phone::PhoneLine;

/// The tokio ends of a phone participant's bridge session.
pub struct PhoneRings {
    /// The caller's audio as Opus, for the room.
    pub forward: rtrb::Consumer<EncodedFrame>,
    /// What the caller hears, in the line's codec.
    pub egress: rtrb::Consumer<EncodedFrame>,
    /// Caller audio and turn events: nobody in the room needs them (an agent hears the caller
    /// through its own listen session), so they are dropped.
    pub uplink: rtrb::Consumer<Uplink>,
    /// Kept so the session lives: dropped with the task.
    pub _keep: Vec<Box<dyn Send>>,
}

pub async fn run_phone(
    key: TrackKey,
    mut rings: PhoneRings,
    line: Arc<PhoneLine>,
    packets: mpsc::Sender<(TrackKey, RtpPacketIn)>,
    metrics: Arc<Metrics>,
) {
    let mut track = ServerTrack::new();
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        while let Ok(frame) = rings.forward.pop() {
            if packets.try_send((key, track.packet(&frame))).is_err() {
                metrics.rooms.dropped_room_queue.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        while let Ok(frame) = rings.egress.pop() {
            // Silence is not sent: the carrier plays silence when it has nothing.
            if frame.voiced && line.send_frame(frame.bytes()) {
                metrics.rtp_out(u64::from(frame.len));
            }
        }
        while rings.uplink.pop().is_ok() {}
    }
}
