//! What a peer's RTCP reports tell its call: the share of the call's outbound packets it lost,
//! which sizes the encoder's in-band FEC (`voxrelay_media::PeerLoss`).
//!
//! The library's interceptor chain ends inbound RTCP before the application (its interceptors
//! act on it). [`LossReports`] sits after them and lets report packets through: a compound with
//! a sender or receiver report that has report blocks, once every few seconds per peer. The shared
//! loop reads them from its connection's messages, a driver per call from its outbound track;
//! both hand [`reported_loss`] to the call as [`TransportEvent::PeerReport`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};

use crate::transport::TransportEvent;

/// The fraction lost (RFC 3550 §6.4.1, in 256ths) a report in `packets` gives for the stream
/// `ssrc`; the last one if several do.
pub fn reported_loss(packets: &[Box<dyn rtcp::Packet>], ssrc: u32) -> Option<u8> {
    packets.iter().rev().flat_map(|p| report_blocks(&**p).iter().rev()).find(|b| b.ssrc == ssrc).map(|b| b.fraction_lost)
}

fn carries_reports(packets: &[Box<dyn rtcp::Packet>]) -> bool {
    packets.iter().any(|p| !report_blocks(&**p).is_empty())
}

/// The reception report blocks of a sender or receiver report; none for other packets.
fn report_blocks(packet: &dyn rtcp::Packet) -> &[ReceptionReport] {
    let any = packet.as_any();
    match (any.downcast_ref::<ReceiverReport>(), any.downcast_ref::<SenderReport>()) {
        (Some(rr), _) => &rr.reports,
        (_, Some(sr)) => &sr.reports,
        _ => &[],
    }
}

/// Where [`LossReports`] sits in the chain: after every interceptor the library has (they still
/// see the reports first), application-most.
pub const LOSS_REPORTS_SLOT: usize = 14_000;

/// An interceptor that delivers inbound RTCP reports with report blocks to the application.
/// Everything else passes as it came.
#[derive(Default)]
pub struct LossReports {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for LossReports {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && carries_reports(packets)
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for LossReports {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// A driver's call: reads the reports about `track` (stream `ssrc`) until the track is unbound.
pub async fn forward_reports(track: Arc<TrackLocalStaticRTP>, ssrc: u32, to_call: mpsc::UnboundedSender<TransportEvent>) {
    while let Some(event) = track.poll().await {
        let TrackLocalEvent::OnRtcpPacket(packets) = event else { continue };
        if let Some(fraction_lost) = reported_loss(&packets, ssrc)
            && to_call.send(TransportEvent::PeerReport { fraction_lost }).is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::source_description::SourceDescription;

    fn block(ssrc: u32, fraction_lost: u8) -> ReceptionReport {
        ReceptionReport { ssrc, fraction_lost, ..Default::default() }
    }

    #[test]
    fn the_loss_of_our_stream_is_read_from_receiver_and_sender_reports() {
        let rr: Vec<Box<dyn rtcp::Packet>> =
            vec![Box::new(ReceiverReport { ssrc: 9, reports: vec![block(1, 3), block(42, 26)], ..Default::default() })];
        assert_eq!(reported_loss(&rr, 42), Some(26));
        assert_eq!(reported_loss(&rr, 7), None, "no block for another stream");
        // A browser that also sends reports in its sender report; SDES alongside is skipped.
        let sr: Vec<Box<dyn rtcp::Packet>> = vec![
            Box::new(SenderReport { ssrc: 9, reports: vec![block(42, 51)], ..Default::default() }),
            Box::new(SourceDescription::default()),
        ];
        assert_eq!(reported_loss(&sr, 42), Some(51));
        assert!(carries_reports(&rr) && carries_reports(&sr));
        let empty: Vec<Box<dyn rtcp::Packet>> = vec![Box::new(ReceiverReport { ssrc: 9, ..Default::default() })];
        assert!(!carries_reports(&empty) && reported_loss(&empty, 42).is_none());
    }

    #[test]
    fn reports_are_delivered_and_everything_else_passes_as_it_came() {
        use rtc::interceptor::AttributedPacket;
        let tagged = |packet| TaggedPacket { now: Instant::now(), transport: Default::default(), message: AttributedPacket::new(packet) };
        let mut i = LossReports::default();
        i.handle_read(tagged(Packet::Rtcp(vec![Box::new(ReceiverReport { reports: vec![block(1, 0)], ..Default::default() })]))).unwrap();
        i.handle_read(tagged(Packet::Rtcp(vec![Box::new(SourceDescription::default())]))).unwrap();
        i.handle_read(tagged(Packet::Rtp(Default::default()))).unwrap();
        let delivered: Vec<bool> = std::iter::from_fn(|| i.poll_read()).map(|m| m.message.has(&Attribute::DeliverToApplication)).collect();
        assert_eq!(delivered, [true, false, false]);
        i.handle_write(tagged(Packet::Rtp(Default::default()))).unwrap();
        assert!(i.poll_write().is_some_and(|m| m.message.attributes.is_empty()));
    }
}
