//! ICE on a live connection, for WHIP/WHEP `PATCH` (RFC 9725 §4.3, RFC 8840): candidates the
//! client trickles after its offer, and ICE restarts (new credentials on both sides, the rest of
//! the session unchanged).

use std::time::{Duration, Instant};

use rtc::peer_connection::sdp::RTCSessionDescription;
use voxrelay_signaling::ApiError;
use voxrelay_signaling::sdpfrag::{IceFragment, sdp_attribute};
use voxrelay_signaling::whip::{IcePatched, etag_of};
use webrtc::peer_connection::RTCIceCandidateInit;

use super::peer::{GATHER_TIMEOUT, Peer};
use super::rtc_loop::LoopConn;

/// A handle on one participant's connection, for its ICE.
#[derive(Clone)]
pub struct IceControl {
    conn: IceConn,
}

/// The connection: a webrtc-rs peer (rooms), or a call on a shared loop.
#[derive(Clone)]
enum IceConn {
    Driver(Peer),
    Loop(LoopConn),
}

impl IceControl {
    pub(crate) fn driver(peer: Peer) -> Self {
        Self { conn: IceConn::Driver(peer) }
    }

    pub(crate) fn on_loop(conn: LoopConn) -> Self {
        Self { conn: IceConn::Loop(conn) }
    }

    async fn local_sdp(&self) -> Option<String> {
        match &self.conn {
            IceConn::Driver(peer) => peer.local_description().await.map(|d| d.sdp),
            IceConn::Loop(conn) => conn.descriptions().await.0,
        }
    }

    async fn remote_sdp(&self) -> Option<String> {
        match &self.conn {
            IceConn::Driver(peer) => peer.remote_description().await.map(|d| d.sdp),
            IceConn::Loop(conn) => conn.descriptions().await.1,
        }
    }

    /// The resource's ETag: the server's current ICE username fragment, quoted.
    pub async fn etag(&self) -> Option<String> {
        let local = self.local_sdp().await?;
        sdp_attribute(&local, "ice-ufrag").map(etag_of)
    }

    /// A `PATCH` (RFC 9725 §4.3): a fragment with new credentials restarts ICE, which must be
    /// conditional (`If-Match`: the current ETag, or `*`); any other adds its candidates.
    pub async fn patch(&self, fragment: &IceFragment, if_match: Option<&str>) -> Result<IcePatched, ApiError> {
        let etag = self.etag().await;
        let restart = self.is_restart(fragment).await;
        match if_match {
            None if restart => {
                return Err(ApiError::precondition_failed("if_match_required", "an ICE restart needs If-Match with the resource's ETag"));
            }
            Some(m) if m != "*" && Some(m) != etag.as_deref() => {
                return Err(ApiError::precondition_failed("etag_mismatch", "If-Match does not carry the resource's current ETag"));
            }
            _ => {}
        }
        if !restart {
            self.add_candidates(fragment).await?;
            return Ok(IcePatched::Trickled);
        }
        let fragment = self.restart(fragment).await?;
        Ok(IcePatched::Restarted { fragment, etag: self.etag().await.unwrap_or_default() })
    }

    /// Whether `fragment` carries ICE credentials other than the client's current ones.
    pub async fn is_restart(&self, fragment: &IceFragment) -> bool {
        let Some(ufrag) = &fragment.ufrag else { return false };
        let remote = self.remote_sdp().await;
        remote.as_deref().and_then(|r| sdp_attribute(r, "ice-ufrag")) != Some(ufrag.as_str())
    }

    /// Adds the trickled candidates (an end-of-candidates line needs nothing: the ICE agent
    /// keeps checking what it has).
    pub async fn add_candidates(&self, fragment: &IceFragment) -> Result<(), ApiError> {
        for candidate in &fragment.candidates {
            let init = RTCIceCandidateInit {
                candidate: candidate.clone(),
                sdp_mid: fragment.mid.clone(),
                sdp_mline_index: fragment.mid.is_none().then_some(0),
                username_fragment: fragment.ufrag.clone(),
                ..Default::default()
            };
            let added = match &self.conn {
                IceConn::Driver(peer) => peer.add_ice_candidate(init).await.map_err(|e| e.to_string()),
                IceConn::Loop(conn) => conn.add_candidate(init).await,
            };
            added.map_err(|e| ApiError::bad_request("invalid_candidate", format!("candidate {candidate:?} was refused: {e}")))?;
        }
        Ok(())
    }

    /// ICE restart with the client's new credentials: the session is renegotiated with only
    /// those changed, and the server answers with fresh credentials of its own and its
    /// candidates.
    pub async fn restart(&self, fragment: &IceFragment) -> Result<IceFragment, ApiError> {
        let (Some(ufrag), Some(pwd)) = (&fragment.ufrag, &fragment.pwd) else {
            return Err(ApiError::bad_request("invalid_sdpfrag", "an ICE restart carries a=ice-ufrag and a=ice-pwd"));
        };
        let failed =
            |what: &str, e: &dyn std::fmt::Display| ApiError::unprocessable("ice_restart_failed", format!("ICE restart: {what}: {e}"));
        let remote = self.remote_sdp().await.ok_or_else(|| failed("no session", &"nothing negotiated yet"))?;
        let offer = with_credentials(&remote, ufrag, pwd);
        let before = self.etag().await;
        let local = match &self.conn {
            IceConn::Driver(peer) => {
                let offer = RTCSessionDescription::offer(offer).map_err(|e| failed("the renewed offer", &e))?;
                peer.set_remote_description(offer).await.map_err(|e| failed("applying the new credentials", &e))?;
                let answer = peer.create_answer(None).await.map_err(|e| failed("answering", &e))?;
                peer.set_local_description(answer).await.map_err(|e| failed("applying the answer", &e))?;
                self.add_candidates(fragment).await?;
                self.gathered(peer).await.ok_or_else(|| failed("gathering", &"no local description"))?
            }
            IceConn::Loop(conn) => {
                let local = conn.renegotiate(offer).await.map_err(|(what, e)| failed(what, &e))?;
                self.add_candidates(fragment).await?;
                local
            }
        };
        if self.etag().await == before {
            return Err(ApiError::unprocessable("ice_restart_failed", "the WebRTC stack kept the old ICE credentials"));
        }
        Ok(IceFragment {
            ufrag: sdp_attribute(&local, "ice-ufrag").map(str::to_string),
            pwd: sdp_attribute(&local, "ice-pwd").map(str::to_string),
            mid: sdp_attribute(&local, "mid").map(str::to_string),
            candidates: local
                .lines()
                .filter_map(|l| l.trim().strip_prefix("a="))
                .filter(|c| c.starts_with("candidate:"))
                .map(str::to_string)
                .collect(),
            end_of_candidates: true,
        })
    }

    /// The local description once it lists candidates again (bounded by the gathering timeout).
    async fn gathered(&self, peer: &Peer) -> Option<String> {
        let deadline = Instant::now() + GATHER_TIMEOUT;
        loop {
            let sdp = peer.local_description().await?.sdp;
            if sdp.contains("a=candidate:") || Instant::now() > deadline {
                return Some(sdp);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The negotiated offer with new ICE credentials and without its old candidates.
pub(crate) fn with_credentials(sdp: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.starts_with("a=ice-ufrag:") {
            out.push_str(&format!("a=ice-ufrag:{ufrag}\r\n"));
        } else if line.starts_with("a=ice-pwd:") {
            out.push_str(&format!("a=ice-pwd:{pwd}\r\n"));
        } else if !(line.starts_with("a=candidate:") || line == "a=end-of-candidates") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_restart_offer_changes_only_the_credentials_and_drops_old_candidates() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:old1\r\na=ice-pwd:oldoldoldoldoldoldoldold\r\n\
                   a=candidate:1 1 udp 1 127.0.0.1 5 typ host\r\na=mid:0\r\n";
        let out = super::with_credentials(sdp, "new1", "newnewnewnewnewnewnewnew");
        assert_eq!(out, "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:new1\r\na=ice-pwd:newnewnewnewnewnewnewnew\r\na=mid:0\r\n");
    }
}
