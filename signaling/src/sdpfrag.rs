//! Trickle ICE SDP fragments (`application/trickle-ice-sdpfrag`, RFC 8840 as used by WHIP,
//! RFC 9725 §4.3): what a `PATCH` of a WHIP/WHEP resource carries, and what an ICE restart
//! answers with. Only the ICE lines matter; the rest is ignored, as the RFC says.

use crate::error::ApiError;

pub const SDPFRAG_TYPE: &str = "application/trickle-ice-sdpfrag";
/// A fragment is a handful of lines; a few candidates per interface.
pub const MAX_SDPFRAG_BYTES: usize = 16 * 1024;
const MAX_CANDIDATES: usize = 64;

/// The ICE content of a fragment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IceFragment {
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
    /// The `a=mid` of the m-section the candidates belong to.
    pub mid: Option<String>,
    /// Candidate attributes without the `a=` (`candidate:...`).
    pub candidates: Vec<String>,
    pub end_of_candidates: bool,
}

impl IceFragment {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let bad = |m: String| ApiError::bad_request("invalid_sdpfrag", m);
        let mut frag = IceFragment::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
                frag.ufrag = Some(ice_chars(v).ok_or_else(|| bad("a=ice-ufrag has characters ICE does not allow".into()))?);
            } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
                frag.pwd = Some(ice_chars(v).ok_or_else(|| bad("a=ice-pwd has characters ICE does not allow".into()))?);
            } else if let Some(v) = line.strip_prefix("a=mid:") {
                frag.mid = Some(v.to_string());
            } else if let Some(c) = line.strip_prefix("a=") {
                if c.starts_with("candidate:") {
                    if frag.candidates.len() == MAX_CANDIDATES {
                        return Err(bad(format!("more than {MAX_CANDIDATES} candidates")));
                    }
                    frag.candidates.push(c.to_string());
                } else if c == "end-of-candidates" {
                    frag.end_of_candidates = true;
                }
            } else if !(line.starts_with("m=") || line.starts_with("c=") || line.len() > 1 && line.as_bytes()[1] == b'=') {
                return Err(bad(format!("not an SDP line: {:?}", line.chars().take(40).collect::<String>())));
            }
        }
        if frag.ufrag.is_some() != frag.pwd.is_some() {
            return Err(bad("an ICE restart carries both a=ice-ufrag and a=ice-pwd".into()));
        }
        Ok(frag)
    }

    /// The fragment as sent: ICE credentials, then the m-section's mid and candidates.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if let (Some(u), Some(p)) = (&self.ufrag, &self.pwd) {
            out.push_str(&format!("a=ice-ufrag:{u}\r\na=ice-pwd:{p}\r\n"));
        }
        out.push_str("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n");
        if let Some(mid) = &self.mid {
            out.push_str(&format!("a=mid:{mid}\r\n"));
        }
        for c in &self.candidates {
            out.push_str(&format!("a={c}\r\n"));
        }
        if self.end_of_candidates {
            out.push_str("a=end-of-candidates\r\n");
        }
        out
    }
}

/// RFC 8839 ice-char: ALPHA / DIGIT / "+" / "/", 4 to 256 of them.
fn ice_chars(v: &str) -> Option<String> {
    let ok = (4..=256).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    ok.then(|| v.to_string())
}

/// The value of `a=<name>:` in an SDP (the first one).
pub fn sdp_attribute<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    sdp.lines().find_map(|l| l.trim().strip_prefix("a=")?.strip_prefix(name)?.strip_prefix(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trickle_and_restart_fragments_parse_as_rfc_8840_writes_them() {
        let trickle = "a=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                       a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\na=end-of-candidates\r\n";
        let f = IceFragment::parse(trickle).unwrap();
        assert_eq!(f.mid.as_deref(), Some("0"));
        assert_eq!(f.candidates, ["candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host"]);
        assert!(f.end_of_candidates && f.ufrag.is_none());
        let restart = "a=ice-ufrag:Ab12\r\na=ice-pwd:0123456789abcdef0123456789\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n";
        let f = IceFragment::parse(restart).unwrap();
        assert_eq!((f.ufrag.as_deref(), f.pwd.as_deref()), (Some("Ab12"), Some("0123456789abcdef0123456789")));
        assert_eq!(IceFragment::parse(&f.to_text()).unwrap(), f);
    }

    #[test]
    fn malformed_fragments_are_refused() {
        for bad in [
            "a=ice-ufrag:Ab12\r\n",
            "a=ice-ufrag:a b\r\na=ice-pwd:0123456789abcdef0123456789\r\n",
            "hello world",
            &"a=candidate:1 1 udp 1 127.0.0.1 1 typ host\r\n".repeat(MAX_CANDIDATES + 1),
        ] {
            assert_eq!(IceFragment::parse(bad).unwrap_err().code, "invalid_sdpfrag", "{bad:?}");
        }
    }

    #[test]
    fn attributes_are_found_in_an_sdp() {
        let sdp = "v=0\r\na=ice-ufrag:XyZw\r\na=ice-pwd:secretsecretsecretsecret\r\n";
        assert_eq!(sdp_attribute(sdp, "ice-ufrag"), Some("XyZw"));
        assert_eq!(sdp_attribute(sdp, "ice-options"), None);
    }
}
