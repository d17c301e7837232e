//! Building the server's answers on `rtc::stun`: success and error responses with SOFTWARE,
//! MESSAGE-INTEGRITY (when the request was authenticated) and FINGERPRINT (when the request
//! carried one), and the integrity-placement check requests must pass.

use rtc::stun::attributes::*;
use rtc::stun::error_code::*;
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::*;
use rtc::stun::textattrs::TextAttribute;

const SOFTWARE: &str = "voxrelay";

/// MESSAGE-INTEGRITY must be the last attribute but for FINGERPRINT (RFC 5389 §15.4).
pub(crate) fn integrity_is_last(m: &Message) -> bool {
    let attrs = &m.attributes.0;
    match attrs.iter().position(|a| a.typ == ATTR_MESSAGE_INTEGRITY) {
        Some(i) => attrs[i + 1..].iter().all(|a| a.typ == ATTR_FINGERPRINT),
        None => false,
    }
}

pub(crate) fn reply(req: &Message, class: MessageClass) -> Message {
    let mut m = Message::new();
    m.set_type(MessageType::new(req.typ.method, class));
    m.transaction_id = req.transaction_id;
    m.write_header();
    m
}

/// SOFTWARE, MESSAGE-INTEGRITY (when authenticated) and FINGERPRINT (when the request had one).
pub(crate) fn finish(mut m: Message, key: Option<&[u8]>, req: &Message) -> Vec<u8> {
    let _ = TextAttribute::new(ATTR_SOFTWARE, SOFTWARE.into()).add_to(&mut m);
    if let Some(key) = key {
        let crypto = super::auth::crypto_provider();
        let _ = MessageIntegrity::new_raw_integrity_with_provider(key.to_vec(), crypto.crypto()).add_to(&mut m);
    }
    if req.contains(ATTR_FINGERPRINT) {
        let _ = FINGERPRINT.add_to(&mut m);
    }
    m.raw
}

pub(crate) fn error(req: &Message, code: ErrorCode, key: Option<&[u8]>, extra: &[TextAttribute]) -> Vec<u8> {
    let mut m = reply(req, CLASS_ERROR_RESPONSE);
    let reason = match code.0 {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        486 => "Allocation Quota Reached",
        508 => "Insufficient Capacity",
        _ => "Error",
    };
    let _ = ErrorCodeAttribute { code, reason: reason.as_bytes().to_vec() }.add_to(&mut m);
    for attr in extra {
        let _ = attr.add_to(&mut m);
    }
    finish(m, key, req)
}
