//! Opus DTX in SDP (RFC 7587 §6.1): `usedtx=1` in an `a=fmtp` of an Opus payload type says its
//! sender prefers to *receive* DTX. voxrelay's answers say so, and browsers then stop sending
//! while their user is silent; the test client and the load generator read it back.
//!
//! The WebRTC stack's answer repeats the offer's fmtp parameters, so the preference is added to
//! the answer's text here, after negotiation, the one edit voxrelay makes to an answer.

/// Opus payload types of `sdp` (`a=rtpmap:<pt> opus/48000...`), in order.
fn opus_payload_types(sdp: &str) -> Vec<&str> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=rtpmap:"))
        .filter_map(|rest| rest.split_once(' '))
        .filter(|(_, codec)| codec.to_ascii_lowercase().starts_with("opus/"))
        .map(|(pt, _)| pt)
        .collect()
}

/// Whether `sdp` asks its peer to send Opus with DTX.
pub fn asks_for_dtx(sdp: &str) -> bool {
    let opus = opus_payload_types(sdp);
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=fmtp:"))
        .filter_map(|rest| rest.split_once(' '))
        .any(|(pt, params)| opus.contains(&pt) && params.split(';').any(|p| p.trim().eq_ignore_ascii_case("usedtx=1")))
}

/// `answer` with `usedtx=1` on every Opus payload type: added to its fmtp line, set where the
/// line says otherwise, or a new fmtp line after the rtpmap when there is none. Line endings are
/// kept (CRLF, as SDP requires).
pub fn prefer_dtx(answer: &str) -> String {
    let opus = opus_payload_types(answer);
    if opus.is_empty() {
        return answer.to_string();
    }
    let has_fmtp: Vec<&str> =
        answer.lines().filter_map(|l| l.trim_end().strip_prefix("a=fmtp:")).filter_map(|r| r.split_once(' ')).map(|(pt, _)| pt).collect();
    let mut out = String::with_capacity(answer.len() + 16 * opus.len());
    for line in answer.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let ending = &line[body.len()..];
        let fmtp = body.strip_prefix("a=fmtp:").and_then(|r| r.split_once(' ')).filter(|(pt, _)| opus.contains(pt));
        match fmtp {
            Some((pt, params)) => {
                let mut kept: Vec<&str> =
                    params.split(';').map(str::trim).filter(|p| !p.is_empty() && !p.to_ascii_lowercase().starts_with("usedtx=")).collect();
                kept.push("usedtx=1");
                out.push_str(&format!("a=fmtp:{pt} {}{ending}", kept.join(";")));
            }
            None => out.push_str(line),
        }
        let rtpmap_pt = body.strip_prefix("a=rtpmap:").and_then(|r| r.split_once(' ')).map(|(pt, _)| pt);
        if let Some(pt) = rtpmap_pt.filter(|pt| opus.contains(pt) && !has_fmtp.contains(pt)) {
            let ending = if ending.is_empty() { "\r\n" } else { ending };
            if line.len() == body.len() {
                out.push_str("\r\n");
            }
            out.push_str(&format!("a=fmtp:{pt} usedtx=1{ending}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:0 PCMU/8000\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";

    #[test]
    fn adds_usedtx_to_the_opus_fmtp_and_nothing_else() {
        let out = prefer_dtx(ANSWER);
        assert_eq!(out, ANSWER.replace("useinbandfec=1\r\n", "useinbandfec=1;usedtx=1\r\n"));
        assert!(asks_for_dtx(&out) && !asks_for_dtx(ANSWER));
        assert_eq!(prefer_dtx(&out), out, "idempotent");
    }

    #[test]
    fn overrides_usedtx_0_and_adds_a_missing_fmtp_line() {
        let zero = ANSWER.replace("useinbandfec=1", "usedtx=0;useinbandfec=1");
        assert!(prefer_dtx(&zero).contains("a=fmtp:111 minptime=10;useinbandfec=1;usedtx=1\r\n"), "{}", prefer_dtx(&zero));
        let bare = ANSWER.replace("a=fmtp:111 minptime=10;useinbandfec=1\r\n", "");
        assert!(prefer_dtx(&bare).contains("a=rtpmap:111 opus/48000/2\r\na=fmtp:111 usedtx=1\r\na=rtpmap:0"));
    }

    #[test]
    fn leaves_an_answer_without_opus_alone() {
        let g711 = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\na=fmtp:0 usedtx=1\r\n";
        assert_eq!(prefer_dtx(g711), g711);
        assert!(!asks_for_dtx(g711), "usedtx means nothing for G.711");
    }
}
