//! A light look at an SDP offer before it reaches the WebRTC stack, so a client that sends the
//! wrong thing gets a precise 400 (`offer_without_audio`, `unsupported_codec`, ...) instead of a
//! generic negotiation failure. It does not replace the stack's own parser.

use crate::error::ApiError;

/// SDP bodies above this are refused with 413 before parsing (PROTOCOL.md: 64 KiB).
pub const MAX_SDP_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct OfferSummary {
    /// Payload type the offer uses for Opus/48000 in its first audio m-line.
    pub opus_payload_type: u8,
    pub has_data_channel: bool,
}

pub fn inspect_offer(sdp: &str) -> Result<OfferSummary, ApiError> {
    let malformed = |msg: &str| ApiError::bad_request("invalid_offer", format!("malformed SDP offer: {msg}"));
    let mut lines = sdp.lines().map(str::trim_end).filter(|l| !l.is_empty());
    if lines.next() != Some("v=0") {
        return Err(malformed("it must start with v=0"));
    }
    let mut in_audio = false;
    let mut saw_audio = false;
    let mut has_data_channel = false;
    let mut opus = None;
    for line in lines {
        let Some((kind, value)) = line.split_once('=') else {
            return Err(malformed(&format!("line {line:?} is not <type>=<value>")));
        };
        if kind.len() != 1 {
            return Err(malformed(&format!("line {line:?} has no one-letter type")));
        }
        if kind == "m" {
            let media = value.split(' ').next().unwrap_or("");
            in_audio = media == "audio" && !saw_audio;
            saw_audio |= media == "audio";
            has_data_channel |= media == "application" && value.contains("DTLS/SCTP");
            continue;
        }
        if in_audio && kind == "a" {
            if let Some(rtpmap) = value.strip_prefix("rtpmap:") {
                let (pt, codec) = rtpmap.split_once(' ').ok_or_else(|| malformed("bad a=rtpmap"))?;
                if codec.to_ascii_lowercase().starts_with("opus/48000") && opus.is_none() {
                    opus = Some(pt.parse::<u8>().map_err(|_| malformed("bad payload type in a=rtpmap"))?);
                }
            }
        }
    }
    if !saw_audio {
        return Err(ApiError::bad_request("offer_without_audio", "the SDP offer has no audio m-line"));
    }
    let opus_payload_type = opus.ok_or_else(|| {
        ApiError::bad_request("unsupported_codec", "the SDP offer's audio m-line does not offer opus/48000/2")
    })?;
    Ok(OfferSummary { opus_payload_type, has_data_channel })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";

    #[test]
    fn finds_opus_payload_type_and_data_channel() {
        let s = inspect_offer(OFFER).unwrap();
        assert_eq!(s, OfferSummary { opus_payload_type: 111, has_data_channel: true });
    }

    #[test]
    fn refuses_offer_without_audio_and_garbage() {
        let no_audio = "v=0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
        assert_eq!(inspect_offer(no_audio).unwrap_err().code, "offer_without_audio");
        assert_eq!(inspect_offer("hello").unwrap_err().code, "invalid_offer");
        assert_eq!(inspect_offer("v=0\r\nnonsense\r\n").unwrap_err().code, "invalid_offer");
    }
}
