//! 1:1 calls across nodes. A new call (an offer, or a Realtime session socket) is placed on the
//! least-loaded node: by the API key, where the engine places it now; by a client secret, on the
//! node chosen when the secret was minted, so the secret's "one call at a time" is checked in
//! one place. A live call's requests (end, ICE, hangup, its events and sideband sockets, its
//! record) go to the node that made its id: the id carries that node's tag
//! ([`crate::CallId::node_tag`]), so finding it costs no lookup when it is this node.
//!
//! Phone streams stay where they arrive (a carrier's socket is not passed around), and so do
//! plain-RTP sessions (a load tester aims at one node); their follow-ups are still routed.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{already_forwarded, pass_on};
use crate::auth::{Caller, bearer};
use crate::{Api, CallId};

/// Where a call request goes, as the engine decides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallTarget<'a> {
    /// A new call by the API key: the least-loaded node.
    New,
    /// A new call by a client secret: the node its calls were placed on when it was minted
    /// (`None`: minted without a cluster's view; served here).
    Pinned(Option<&'a str>),
    /// A live call or its record, by its id.
    Live(&'a CallId),
}

/// What a request is about, from its method and path.
#[derive(Debug, PartialEq, Eq)]
enum Subject<'p> {
    NewCall,
    Call(&'p str),
}

fn subject_of<'p>(method: &Method, path: &'p str, query: Option<&'p str>) -> Option<Subject<'p>> {
    let rest = path.strip_prefix("/v1/")?;
    let segments: Vec<&str> = rest.split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::POST, ["realtime"] | ["realtime", "calls"]) => Some(Subject::NewCall),
        // The sideband socket names its call in the query; without it, a session socket.
        (&Method::GET, ["realtime"]) => match query_call_id(query) {
            Some(id) => Some(Subject::Call(id)),
            None => Some(Subject::NewCall),
        },
        (_, ["realtime", "calls", id] | ["realtime", "calls", id, "hangup"]) => Some(Subject::Call(id)),
        (&Method::GET, ["calls", id] | ["calls", id, "events"]) => Some(Subject::Call(id)),
        (_, ["rtp", id] | ["rtp", id, "events"]) => Some(Subject::Call(id)),
        _ => None,
    }
}

fn query_call_id(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|pair| pair.strip_prefix("call_id=")).filter(|id| !id.is_empty())
}

pub async fn forward_calls(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    if already_forwarded(&req) {
        return next.run(req).await;
    }
    let Some(subject) = subject_of(req.method(), req.uri().path(), req.uri().query()) else { return next.run(req).await };
    let home = match subject {
        Subject::Call(id) => {
            let id = CallId::from_client(id);
            // Ids without a node's tag were made by a node without a cluster: here or nowhere.
            if id.node_tag().is_none() {
                return next.run(req).await;
            }
            api.engine.call_home(CallTarget::Live(&id)).await
        }
        Subject::NewCall => {
            let token = bearer(req.headers()).ok().map(String::from).or_else(|| crate::realtime_ws::protocol_secret(req.headers()));
            // No or a bad credential: the handler answers the 401.
            let Some(Ok(caller)) = (match token {
                Some(t) => Some(api.auth.caller_token(&t).await),
                None => None,
            }) else {
                return next.run(req).await;
            };
            match &caller {
                Caller::ApiKey => api.engine.call_home(CallTarget::New).await,
                Caller::Secret(grant) => api.engine.call_home(CallTarget::Pinned(grant.node.as_deref())).await,
            }
        }
    };
    match home {
        Ok(None) => next.run(req).await,
        Ok(Some(base)) => pass_on(&api, &base, req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_requests_are_found_by_path() {
        let (get, post) = (Method::GET, Method::POST);
        assert_eq!(subject_of(&post, "/v1/realtime/calls", None), Some(Subject::NewCall));
        assert_eq!(subject_of(&post, "/v1/realtime", Some("model=x")), Some(Subject::NewCall));
        assert_eq!(subject_of(&get, "/v1/realtime", Some("model=x")), Some(Subject::NewCall));
        assert_eq!(subject_of(&get, "/v1/realtime", Some("model=x&call_id=rtc_a_b")), Some(Subject::Call("rtc_a_b")));
        assert_eq!(subject_of(&Method::DELETE, "/v1/realtime/calls/rtc_1", None), Some(Subject::Call("rtc_1")));
        assert_eq!(subject_of(&Method::PATCH, "/v1/realtime/calls/rtc_1", None), Some(Subject::Call("rtc_1")));
        assert_eq!(subject_of(&post, "/v1/realtime/calls/rtc_1/hangup", None), Some(Subject::Call("rtc_1")));
        assert_eq!(subject_of(&get, "/v1/calls/rtc_1", None), Some(Subject::Call("rtc_1")));
        assert_eq!(subject_of(&get, "/v1/calls/rtc_1/events", None), Some(Subject::Call("rtc_1")));
        assert_eq!(subject_of(&Method::DELETE, "/v1/rtp/rtp_1", None), Some(Subject::Call("rtp_1")));
        assert_eq!(subject_of(&get, "/v1/rtp/rtp_1/events", None), Some(Subject::Call("rtp_1")));
        for (m, p) in [(&get, "/v1/calls"), (&post, "/v1/rtp"), (&post, "/v1/realtime/sessions"), (&post, "/v1/realtime/client_secrets")] {
            assert_eq!(subject_of(m, p, None), None, "{p}");
        }
        assert_eq!(subject_of(&post, "/v1/rooms/a/join", None), None);
    }
}
