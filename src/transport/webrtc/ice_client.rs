//! The client side of `PATCH`ing a live connection (WHIP/WHEP resources, 1:1 calls): trickled
//! candidates and ICE restarts as RFC 9725 §4.3 describes them. Used by the test clients.

use std::time::{Duration, Instant};

use voxrelay_signaling::sdpfrag::{IceFragment, SDPFRAG_TYPE, sdp_attribute};

use super::client::ClientError;
use super::peer::Peer;

/// A resource the client can `PATCH` and `DELETE` (its URL and credentials).
pub(crate) struct Resource {
    pub http: reqwest::Client,
    pub url: String,
    pub token: String,
}

impl Resource {
    pub fn new(http: &reqwest::Client, url: &str, token: &str) -> Self {
        Resource { http: http.clone(), url: url.to_string(), token: token.to_string() }
    }

    /// `PATCH` with a fragment: (status, ETag, body).
    pub async fn patch(&self, fragment: String, if_match: Option<&str>) -> Result<(u16, Option<String>, String), ClientError> {
        let mut req = self.http.patch(&self.url).bearer_auth(&self.token).header("content-type", SDPFRAG_TYPE).body(fragment);
        if let Some(tag) = if_match {
            req = req.header("if-match", tag);
        }
        let resp = req.send().await.map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
        Ok((status, etag, resp.text().await.unwrap_or_default()))
    }
}

pub(crate) fn candidates_of(sdp: &str) -> Vec<String> {
    sdp.lines().filter_map(|l| l.trim().strip_prefix("a=")).filter(|c| c.starts_with("candidate:")).map(str::to_string).collect()
}

/// ICE restart from the offering side: new local credentials go to the server in a `PATCH`
/// (`If-Match`: `etag`, or `*`); the server's fragment (its new credentials and candidates)
/// becomes the new answer. Returns the resource's new ETag.
pub(crate) async fn restart(peer: &Peer, resource: &Resource, etag: Option<&str>) -> Result<Option<String>, ClientError> {
    let webrtc_err = |e: webrtc::error::Error| ClientError::WebRtc(e.to_string());
    let before = peer.local_description().await.map(|d| d.sdp).unwrap_or_default();
    peer.restart_ice().await.map_err(webrtc_err)?;
    let offer = peer.create_offer(None).await.map_err(webrtc_err)?;
    peer.set_local_description(offer).await.map_err(webrtc_err)?;
    let old_ufrag = sdp_attribute(&before, "ice-ufrag").map(str::to_string);
    let deadline = Instant::now() + Duration::from_secs(5);
    let local = loop {
        let sdp = peer.local_description().await.map(|d| d.sdp).unwrap_or_default();
        let fresh = sdp_attribute(&sdp, "ice-ufrag").map(str::to_string) != old_ufrag;
        if fresh && sdp.contains("a=candidate:") || Instant::now() > deadline {
            break sdp;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mine = IceFragment {
        ufrag: sdp_attribute(&local, "ice-ufrag").map(str::to_string),
        pwd: sdp_attribute(&local, "ice-pwd").map(str::to_string),
        mid: sdp_attribute(&local, "mid").map(str::to_string),
        candidates: candidates_of(&local),
        end_of_candidates: true,
    };
    let (status, etag, body) = resource.patch(mine.to_text(), Some(etag.unwrap_or("*"))).await?;
    if status != 200 {
        return Err(ClientError::Refused(status, body));
    }
    let theirs = IceFragment::parse(&body).map_err(|e| ClientError::Http(e.message))?;
    let (Some(ufrag), Some(pwd)) = (&theirs.ufrag, &theirs.pwd) else {
        return Err(ClientError::Http("the server's fragment has no ICE credentials".into()));
    };
    let previous = peer.remote_description().await.map(|d| d.sdp).unwrap_or_default();
    let mut answer = super::ice::with_credentials(&previous, ufrag, pwd);
    for c in &theirs.candidates {
        answer.push_str(&format!("a={c}\r\n"));
    }
    let answer = rtc::peer_connection::sdp::RTCSessionDescription::answer(answer).map_err(webrtc_err)?;
    peer.set_remote_description(answer).await.map_err(webrtc_err)?;
    Ok(etag)
}
