//! ICE-TCP for a loop (RFC 6544 passive candidates, RFC 4571 framing): each accepted stream gets
//! a reader that hands whole frames to the loop and a writer the loop queues frames to. TCP is
//! the rare path (UDP blocked), so a channel hop per frame is acceptable here.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::{Command, Media};

/// RFC 4571: a frame is at most 65535 bytes; ICE-TCP frames here are STUN, DTLS, SRTP.
const MAX_FRAME: usize = u16::MAX as usize;
/// Frames queued to a slow stream before it is dropped.
const WRITE_QUEUE: usize = 256;

/// One stream's ends, as the loop holds them: dropping it closes the stream (the writer ends
/// when its queue closes, the reader is aborted).
pub(super) struct Stream {
    pub frames: mpsc::Sender<Bytes>,
    reader: tokio::task::JoinHandle<()>,
    /// When it was accepted, and whether a frame on it reached a connection yet: a stream
    /// that names no connection for [`UNROUTED_TIMEOUT`] is closed.
    pub opened: Instant,
    pub routed: bool,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// How long an accepted stream may go without a frame for a known connection.
pub(super) const UNROUTED_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the reader and writer of one accepted stream.
pub(super) fn start(
    stream: TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    to_loop: mpsc::WeakUnboundedSender<Command>,
    media: mpsc::WeakSender<Media>,
) -> Stream {
    let _ = stream.set_nodelay(true);
    let (mut read, mut write) = stream.into_split();
    let (frames, mut queued) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    tokio::spawn(async move {
        while let Some(frame) = queued.recv().await {
            let Ok(len) = u16::try_from(frame.len()) else { continue };
            if write.write_all(&len.to_be_bytes()).await.is_err() || write.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    let reader = tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(2048);
        loop {
            let mut len = [0u8; 2];
            if read.read_exact(&mut len).await.is_err() {
                break;
            }
            let n = usize::from(u16::from_be_bytes(len)).min(MAX_FRAME);
            buf.resize(n, 0);
            if read.read_exact(&mut buf[..n]).await.is_err() {
                break;
            }
            // Waits when the loop is behind: TCP's own flow control slows the peer.
            let Some(media) = media.upgrade() else { return };
            if media.send(Media::TcpIn { local, peer, data: buf.split().freeze() }).await.is_err() {
                return;
            }
        }
        if let Some(to_loop) = to_loop.upgrade() {
            let _ = to_loop.send(Command::TcpGone { peer });
        }
    });
    Stream { frames, reader, opened: Instant::now(), routed: false }
}
