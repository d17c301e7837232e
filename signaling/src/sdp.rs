//! A light look at an SDP offer before it reaches the WebRTC stack, so a client that sends the
//! wrong thing gets a precise 400 (`offer_without_audio`, `unsupported_codec`, ...) instead of a
//! generic negotiation failure. It does not replace the stack's own parser.

use crate::error::ApiError;

/// SDP bodies above this are refused with 413 before parsing (PROTOCOL.md: 64 KiB).
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// The audio codecs voxrelay answers with, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferedCodec {
    Opus,
    /// G.711 mu-law (RTP static payload type 0).
    Pcmu,
    /// G.711 A-law (RTP static payload type 8).
    Pcma,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OfferSummary {
    /// The codec the call will use: Opus when offered, else PCMU, else PCMA.
    pub codec: OfferedCodec,
    /// The payload type the offer uses for that codec in its first audio m-line.
    pub payload_type: u8,
    pub has_data_channel: bool,
    /// The one-byte header extension id the offer gives RFC 6464 audio levels
    /// (`a=extmap:N urn:ietf:params:rtp-hdrext:ssrc-audio-level` in its first audio m-line);
    /// the answer keeps it (RFC 8285), so inbound packets carry levels under this id.
    pub audio_level_ext: Option<u8>,
    /// Every audio m-line, in order (rooms: the first carries the microphone, each one that
    /// can receive is a slot).
    pub audio_lines: Vec<AudioLine>,
}

/// The offerer's direction of one m-line (RFC 3264 §6; `sendrecv` when the line says nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The offerer will receive on this line.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The offerer will send on this line.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
}

/// One audio m-line of an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioLine {
    pub mid: Option<String>,
    /// Port 0 (a rejected or stopped line) reads as inactive.
    pub direction: Direction,
}

/// RFC 6464's extension URI.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

pub fn inspect_offer(sdp: &str) -> Result<OfferSummary, ApiError> {
    let malformed = |msg: &str| ApiError::bad_request("invalid_offer", format!("malformed SDP offer: {msg}"));
    let mut lines = sdp.lines().map(str::trim_end).filter(|l| !l.is_empty());
    if lines.next() != Some("v=0") {
        return Err(malformed("it must start with v=0"));
    }
    let mut in_audio = false;
    let mut saw_audio = false;
    let mut has_data_channel = false;
    let mut audio_level_ext = None;
    let mut audio_lines: Vec<AudioLine> = Vec::new();
    let mut in_any_audio = false;
    // Port 0: the line is rejected whatever its direction attribute says.
    let mut rejected = false;
    let mut opus = None;
    // Static payload types count even without an a=rtpmap line (RFC 3551).
    let (mut pcmu, mut pcma) = (None, None);
    for line in lines {
        let Some((kind, value)) = line.split_once('=') else {
            return Err(malformed(&format!("line {line:?} is not <type>=<value>")));
        };
        if kind.len() != 1 {
            return Err(malformed(&format!("line {line:?} has no one-letter type")));
        }
        if kind == "m" {
            let mut fields = value.split(' ');
            let media = fields.next().unwrap_or("");
            in_audio = media == "audio" && !saw_audio;
            in_any_audio = media == "audio";
            if in_any_audio {
                rejected = fields.clone().next() == Some("0");
                audio_lines.push(AudioLine { mid: None, direction: if rejected { Direction::Inactive } else { Direction::SendRecv } });
            }
            if in_audio {
                for fmt in fields.skip(2) {
                    match fmt {
                        "0" => pcmu = pcmu.or(Some(0)),
                        "8" => pcma = pcma.or(Some(8)),
                        _ => {}
                    }
                }
            }
            saw_audio |= media == "audio";
            has_data_channel |= media == "application" && value.contains("DTLS/SCTP");
            continue;
        }
        // `in_any_audio` is set only right after a line was pushed.
        if let Some(line) = audio_lines.last_mut().filter(|_| in_any_audio && kind == "a") {
            let direction = match value {
                "sendrecv" => Some(Direction::SendRecv),
                "sendonly" => Some(Direction::SendOnly),
                "recvonly" => Some(Direction::RecvOnly),
                "inactive" => Some(Direction::Inactive),
                _ => None,
            };
            if let Some(direction) = direction.filter(|_| !rejected) {
                line.direction = direction;
            } else if let Some(mid) = value.strip_prefix("mid:") {
                line.mid = Some(mid.to_string());
            }
        }
        if in_audio && kind == "a" {
            if let Some(extmap) = value.strip_prefix("extmap:") {
                // `N[/direction] URI [attributes]`; one-byte ids are 1..=14 (RFC 8285), which
                // is all the server's RTP stack reads.
                let mut fields = extmap.split(' ');
                let id = fields.next().and_then(|f| f.split('/').next()).and_then(|id| id.parse::<u8>().ok());
                if fields.next() == Some(AUDIO_LEVEL_URI) {
                    audio_level_ext = audio_level_ext.or(id.filter(|id| (1..=14).contains(id)));
                }
            } else if let Some(rtpmap) = value.strip_prefix("rtpmap:") {
                let (pt, codec) = rtpmap.split_once(' ').ok_or_else(|| malformed("bad a=rtpmap"))?;
                let pt = pt.parse::<u8>().map_err(|_| malformed("bad payload type in a=rtpmap"))?;
                let codec = codec.to_ascii_lowercase();
                if codec.starts_with("opus/48000") {
                    opus = opus.or(Some(pt));
                } else if codec.starts_with("pcmu/8000") {
                    pcmu = pcmu.or(Some(pt));
                } else if codec.starts_with("pcma/8000") {
                    pcma = pcma.or(Some(pt));
                }
            }
        }
    }
    if !saw_audio {
        return Err(ApiError::bad_request("offer_without_audio", "the SDP offer has no audio m-line"));
    }
    let (codec, payload_type) = match (opus, pcmu, pcma) {
        (Some(pt), _, _) => (OfferedCodec::Opus, pt),
        (None, Some(pt), _) => (OfferedCodec::Pcmu, pt),
        (None, None, Some(pt)) => (OfferedCodec::Pcma, pt),
        _ => {
            return Err(ApiError::bad_request(
                "unsupported_codec",
                "the SDP offer's audio m-line offers none of opus/48000/2, PCMU/8000, PCMA/8000",
            ));
        }
    };
    Ok(OfferSummary { codec, payload_type, has_data_channel, audio_level_ext, audio_lines })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";

    #[test]
    fn finds_opus_payload_type_and_data_channel() {
        let s = inspect_offer(OFFER).unwrap();
        let audio_lines = vec![AudioLine { mid: None, direction: Direction::SendRecv }];
        assert_eq!(
            s,
            OfferSummary { codec: OfferedCodec::Opus, payload_type: 111, has_data_channel: true, audio_level_ext: None, audio_lines }
        );
    }

    #[test]
    fn finds_the_audio_level_extension_id_of_the_first_audio_m_line() {
        // As Chromium offers it: several extensions, the level among them.
        let chromium = OFFER.replace(
            "a=rtpmap:111 opus/48000/2\r\n",
            "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=extmap:2/sendrecv http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\na=rtpmap:111 opus/48000/2\r\n",
        );
        assert_eq!(inspect_offer(&chromium).unwrap().audio_level_ext, Some(1));
        let with_direction =
            OFFER.replace("a=rtpmap:0 PCMU", "a=extmap:7/sendonly urn:ietf:params:rtp-hdrext:ssrc-audio-level vad=on\r\na=rtpmap:0 PCMU");
        assert_eq!(inspect_offer(&with_direction).unwrap().audio_level_ext, Some(7));
        // Two-byte ids (15 and up) and ids of other m-lines are not used.
        let two_byte = OFFER.replace("a=rtpmap:0 PCMU", "a=extmap:15 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=rtpmap:0 PCMU");
        assert_eq!(inspect_offer(&two_byte).unwrap().audio_level_ext, None);
        let later = format!("{OFFER}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=extmap:3 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n");
        assert_eq!(inspect_offer(&later).unwrap().audio_level_ext, None);
    }

    #[test]
    fn lists_audio_lines_with_mid_and_direction() {
        let room = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n\
                    m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=recvonly\r\n\
                    m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:2\r\n\
                    m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=mid:3\r\na=sendrecv\r\n\
                    m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:4\r\na=sendrecv\r\n";
        let lines = inspect_offer(room).unwrap().audio_lines;
        let got: Vec<(Option<&str>, Direction)> = lines.iter().map(|l| (l.mid.as_deref(), l.direction)).collect();
        use Direction::*;
        assert_eq!(got, [(Some("0"), SendOnly), (Some("1"), RecvOnly), (Some("2"), SendRecv), (Some("3"), Inactive)]);
        assert_eq!(lines.iter().filter(|l| l.direction.receives()).count(), 2);
    }

    #[test]
    fn falls_back_to_g711_static_payload_types() {
        let pcmu = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0 8\r\n";
        assert_eq!(inspect_offer(pcmu).unwrap().codec, OfferedCodec::Pcmu);
        let pcma = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 8\r\na=rtpmap:8 PCMA/8000\r\n";
        assert_eq!(
            inspect_offer(pcma).unwrap(),
            OfferSummary {
                codec: OfferedCodec::Pcma,
                payload_type: 8,
                has_data_channel: false,
                audio_level_ext: None,
                audio_lines: vec![AudioLine { mid: None, direction: Direction::SendRecv }]
            }
        );
        let g722 = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 9\r\na=rtpmap:9 G722/8000\r\n";
        assert_eq!(inspect_offer(g722).unwrap_err().code, "unsupported_codec");
    }

    #[test]
    fn refuses_offer_without_audio_and_garbage() {
        let no_audio = "v=0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
        assert_eq!(inspect_offer(no_audio).unwrap_err().code, "offer_without_audio");
        assert_eq!(inspect_offer("hello").unwrap_err().code, "invalid_offer");
        assert_eq!(inspect_offer("v=0\r\nnonsense\r\n").unwrap_err().code, "invalid_offer");
    }
}
