//! TURN over a byte stream (RFC 5766 §2.1, RFC 6062): STUN messages and ChannelData follow
//! each other with no other delimiter. A STUN message is 20 header bytes plus the length field;
//! ChannelData is 4 header bytes plus its length, padded to a multiple of 4 on streams. The
//! first two bits tell them apart (00 STUN, 01 ChannelData); anything else means the stream has
//! lost its framing.

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// `message` bytes form one message (without ChannelData padding); `consumed` bytes
    /// (with padding) are done.
    Complete { message: usize, consumed: usize },
    Partial,
    Invalid,
}

pub fn next_frame(buf: &[u8]) -> Frame {
    if buf.len() < 4 {
        return if buf.first().is_some_and(|b| b >> 6 >= 2) { Frame::Invalid } else { Frame::Partial };
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let (message, consumed) = match buf[0] >> 6 {
        0 => (20 + len, 20 + len),
        1 => (4 + len, (4 + len).div_ceil(4) * 4),
        _ => return Frame::Invalid,
    };
    if buf.len() < consumed { Frame::Partial } else { Frame::Complete { message, consumed } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_and_padded_channel_data_split_a_stream() {
        let mut stream = vec![0x00, 0x01, 0x00, 0x00];
        stream.extend_from_slice(&[0; 16]);
        stream.extend_from_slice(&[0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0]);
        assert_eq!(next_frame(&stream), Frame::Complete { message: 20, consumed: 20 });
        assert_eq!(next_frame(&stream[20..]), Frame::Complete { message: 9, consumed: 12 });
        assert_eq!(next_frame(&stream[20..30]), Frame::Partial);
        assert_eq!(next_frame(&[0x80, 0, 0, 0]), Frame::Invalid);
        assert_eq!(next_frame(&[0x40]), Frame::Partial);
    }
}
