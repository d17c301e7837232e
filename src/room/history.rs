//! Room participants in the call history: a record per connection (a rejoin is a new one),
//! opened when the room takes it in and closed with the reason it left. The room's AI
//! participant's record also holds the room's transcript (see `room::agent`).

use std::sync::Arc;

use voxrelay_signaling::RoomName;
use voxrelay_signaling::room_wire::LeaveReason;

use super::state::Member;
use crate::store::{Opened, Store, StoreEvent, UnixMs};

pub fn joined(store: &Arc<Store>, room: &RoomName, m: &Member) {
    let transport = if m.is_agent() {
        "agent"
    } else if m.peer.is_none() {
        "twilio"
    } else {
        "webrtc"
    };
    store.record(StoreEvent::Opened(Opened {
        id: m.record.clone(),
        transport,
        agent: m.agent.clone(),
        room: Some(room.to_string()),
        identity: Some(m.identity.to_string()),
        conversation: m.conversation.clone(),
        at: UnixMs::now(),
    }));
}

pub fn left(store: &Arc<Store>, m: &Member, reason: LeaveReason) {
    store.record(StoreEvent::Closed { id: m.record.clone(), at: UnixMs::now(), reason: reason.label(), counters: None });
}
