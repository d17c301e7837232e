//! Ids that cross the API, as types: a call id cannot be passed where a session id is meant,
//! and a room name is checked once, where it enters. On the wire they are plain strings
//! (`#[serde(transparent)]`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ApiError;
use crate::auth::random_id;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A live call (`rtc_…`, `rtp_…`, `tel_…` by transport): what `Location` headers, DELETE and
    /// the events sockets address.
    CallId
);
string_id!(
    /// The session a client secret was minted for (`sess_…`); a call started with that secret
    /// belongs to it.
    SessionId
);
string_id!(
    /// A participant of a call or room: a person's identity (from a room token) or an agent's.
    ParticipantId
);
string_id!(
    /// A room's name, as it appears in `/v1/rooms/<room>/…` and in room tokens.
    RoomName
);
string_id!(
    /// A conversation that spans calls (a session's `conversation`): a new call on it starts
    /// with the dialogue so far. Whoever holds it continues the conversation, so it is a random
    /// token the client makes, not a name.
    ConversationId
);

/// Shortest conversation id: 16 characters of the id alphabet are ≥ 95 bits, not guessable.
pub const MIN_CONVERSATION_ID: usize = 16;

impl ConversationId {
    pub fn parse(id: &str) -> Result<Self, ApiError> {
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if !(MIN_CONVERSATION_ID..=MAX_NAME_BYTES).contains(&id.len()) || !id.chars().all(ok) {
            let message = format!(
                "conversation is {MIN_CONVERSATION_ID} to {MAX_NAME_BYTES} characters of letters, digits, _ and - \
                 (a random token: whoever knows it continues the conversation)"
            );
            return Err(ApiError::bad_request("invalid_conversation", message));
        }
        Ok(ConversationId(id.to_string()))
    }
}

impl CallId {
    /// A new random id with the transport's prefix.
    pub fn random(prefix: &str) -> Self {
        CallId(random_id(prefix))
    }

    /// A new id made on a node of a cluster: `<prefix><tag>_<random>`, so any node can tell
    /// from the id alone where the call lives ([`CallId::node_tag`]).
    pub fn random_on(prefix: &str, node_tag: Option<&str>) -> Self {
        match node_tag {
            Some(tag) => CallId(random_id(&format!("{prefix}{tag}_"))),
            None => CallId::random(prefix),
        }
    }

    /// The tag of the node that made this id, if a node of a cluster made it (`rtc_<tag>_<random>`).
    pub fn node_tag(&self) -> Option<&str> {
        let mut parts = self.0.split('_');
        let (_prefix, tag, _random) = (parts.next()?, parts.next()?, parts.next()?);
        let ok = parts.next().is_none() && tag.len() == NODE_TAG_LEN && tag.chars().all(|c| c.is_ascii_alphanumeric());
        ok.then_some(tag)
    }

    /// An id as a client sent it (a path segment); unknown ids are simply not found.
    pub fn from_client(id: &str) -> Self {
        CallId(id.to_string())
    }
}

impl SessionId {
    pub fn random() -> Self {
        SessionId(random_id("sess_"))
    }
}

/// An id issued before (tests, stored records).
impl From<&str> for SessionId {
    fn from(id: &str) -> Self {
        SessionId(id.to_string())
    }
}

/// Characters of a node's tag in the ids it makes.
pub const NODE_TAG_LEN: usize = 8;

/// Longest room name or identity accepted: long enough for UUIDs and readable names, short
/// enough to log and to put in URLs and tokens.
pub const MAX_NAME_BYTES: usize = 128;

/// Names in URLs and tokens: letters, digits and `-_.:@`, 1 to [`MAX_NAME_BYTES`] bytes, so a
/// name never needs escaping in a path, a header or a log line.
fn check_name(kind: &str, name: &str) -> Result<(), ApiError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.:@".contains(c);
    if name.is_empty() || name.len() > MAX_NAME_BYTES || !name.chars().all(allowed) {
        let message = format!("a {kind} is 1 to {MAX_NAME_BYTES} characters of letters, digits and -_.:@ (got {name:?})");
        return Err(ApiError::bad_request("invalid_name", message));
    }
    Ok(())
}

impl RoomName {
    pub fn parse(name: &str) -> Result<Self, ApiError> {
        check_name("room name", name).map(|()| RoomName(name.to_string()))
    }
}

impl ParticipantId {
    pub fn parse(identity: &str) -> Result<Self, ApiError> {
        check_name("participant identity", identity).map(|()| ParticipantId(identity.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_strings_on_the_wire() {
        let id = CallId::random("rtc_");
        assert!(id.as_str().starts_with("rtc_") && id.as_str().len() == 4 + 24);
        assert_eq!(id.node_tag(), None);
        let tagged = CallId::random_on("rtc_", Some("Ab3dE6g8"));
        assert!(tagged.as_str().starts_with("rtc_Ab3dE6g8_") && tagged.as_str().len() == 4 + 9 + 24, "{tagged}");
        assert_eq!(tagged.node_tag(), Some("Ab3dE6g8"));
        for odd in ["rtc_short_x", "rtc_Ab3dE6g8_x_y", "rtc_Ab3d-6g8_x", "plain"] {
            assert_eq!(CallId::from_client(odd).node_tag(), None, "{odd}");
        }
        assert_eq!(serde_json::to_value(&id).unwrap(), serde_json::Value::String(id.to_string()));
        let back: SessionId = serde_json::from_str("\"sess_x\"").unwrap();
        assert_eq!(back.as_str(), "sess_x");
    }

    #[test]
    fn conversation_ids_are_unguessable_tokens() {
        assert!(ConversationId::parse("conv_3f9a7c2e1b4d5a6f").is_ok());
        for bad in ["", "conv_short", "conv 3f9a7c2e1b4d5a6f", "conv.3f9a7c2e1b4d5a6f", &"x".repeat(MAX_NAME_BYTES + 1)] {
            assert_eq!(ConversationId::parse(bad).unwrap_err().code, "invalid_conversation", "{bad:?}");
        }
    }

    #[test]
    fn room_names_and_identities_are_checked_where_they_enter() {
        assert_eq!(RoomName::parse("standup-2026.12").unwrap().as_str(), "standup-2026.12");
        assert!(ParticipantId::parse("alice@example.com").is_ok());
        for bad in ["", "a b", "room/1", "é", &"x".repeat(MAX_NAME_BYTES + 1)] {
            let e = RoomName::parse(bad).unwrap_err();
            assert_eq!((e.status.as_u16(), e.code), (400, "invalid_name"), "{bad:?}");
        }
    }
}
