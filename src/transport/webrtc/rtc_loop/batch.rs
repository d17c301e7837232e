//! Datagrams out in batches: what a loop's connections write during one wake-up is queued here
//! and leaves with one `sendmmsg` per socket (Linux), instead of one `sendto` each. A room's
//! packet forwarded to N subscribers, or the audio of every call on a worker's tick, is then a
//! few system calls, not N.
//!
//! Nothing waits: a socket whose buffer is full drops the rest of its batch (as a full buffer
//! drops a lone `sendto`), and a destination the kernel refuses skips only its own datagram.

use std::io;
use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::net::UdpSocket;
use tracing::debug;

/// Datagrams handed to the kernel per system call (its own cap is `UIO_MAXIOV`, 1024).
const PER_CALL: usize = 64;

/// The datagrams a loop wrote since its last flush.
#[derive(Default)]
pub(super) struct Outbox {
    /// Per socket (the loop's order), its datagrams in the order written; kept allocated.
    queued: Vec<Vec<(SocketAddr, BytesMut)>>,
}

/// What one flush did, for the loop's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Flushed {
    pub sent: usize,
    pub calls: usize,
    pub dropped: usize,
}

impl Outbox {
    pub fn push(&mut self, socket: usize, to: SocketAddr, datagram: BytesMut) {
        if self.queued.len() <= socket {
            self.queued.resize_with(socket + 1, Vec::new);
        }
        self.queued[socket].push((to, datagram));
    }

    pub fn is_empty(&self) -> bool {
        self.queued.iter().all(Vec::is_empty)
    }

    /// Sends everything queued, each on its socket (`sockets[i]`), in order per socket.
    pub fn flush(&mut self, sockets: &[(SocketAddr, UdpSocket)]) -> Flushed {
        let mut flushed = Flushed::default();
        for (queued, (_, socket)) in self.queued.iter_mut().zip(sockets) {
            let mut rest = &queued[..];
            while !rest.is_empty() {
                let chunk = &rest[..rest.len().min(PER_CALL)];
                flushed.calls += 1;
                match send_batch(socket, chunk) {
                    Ok(n) => {
                        flushed.sent += n;
                        rest = &rest[n.max(1)..];
                        if n == 0 {
                            flushed.dropped += 1;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        debug!(dropped = rest.len(), "UDP send buffer full: the rest of the batch is dropped");
                        flushed.dropped += rest.len();
                        break;
                    }
                    Err(e) => {
                        // The first datagram's destination was refused (unreachable, or not a
                        // family this socket sends to); the others may go.
                        debug!(peer = %chunk[0].0, "UDP send: {e}");
                        flushed.dropped += 1;
                        rest = &rest[1..];
                    }
                }
            }
            queued.clear();
        }
        flushed
    }
}

/// Sends the datagrams in one system call; how many the kernel took (an error only when it took
/// none: the first one's).
#[cfg(target_os = "linux")]
fn send_batch(socket: &UdpSocket, batch: &[(SocketAddr, BytesMut)]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;

    // SAFETY (all three arrays): plain C structs for which all-zero is a valid value.
    let mut addrs: [libc::sockaddr_storage; PER_CALL] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; PER_CALL] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; PER_CALL] = unsafe { std::mem::zeroed() };
    let n = batch.len().min(PER_CALL);
    for (i, (to, data)) in batch[..n].iter().enumerate() {
        let len = write_sockaddr(&mut addrs[i], *to);
        iovs[i] = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
        msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
        msgs[i].msg_hdr.msg_namelen = len;
        msgs[i].msg_hdr.msg_iov = &mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    // Straight to the (non-blocking) socket, not through tokio's readiness: a send never waits
    // for it, and EAGAIN is an answer here (the batch's rest is dropped), not a reason to wait.
    // SAFETY: `msgs[..n]` point into `addrs` and `iovs` (alive for this call) and into the
    // caller's datagrams, which outlive it; the kernel only reads them.
    let sent = unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(sent as usize) }
}

#[cfg(not(target_os = "linux"))]
fn send_batch(socket: &UdpSocket, batch: &[(SocketAddr, BytesMut)]) -> io::Result<usize> {
    let (to, data) = &batch[0];
    socket.try_send_to(data, *to).map(|_| 1)
}

/// Writes `addr` as the C socket address the kernel reads; its length.
#[cfg(target_os = "linux")]
fn write_sockaddr(storage: &mut libc::sockaddr_storage, addr: SocketAddr) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, every socket address.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn socket() -> (SocketAddr, UdpSocket) {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        (s.local_addr().unwrap(), s)
    }

    #[tokio::test]
    async fn a_batch_reaches_each_destination_in_order() {
        let sender = socket().await;
        let (a_addr, a) = socket().await;
        let (b_addr, b) = socket().await;
        let mut outbox = Outbox::default();
        // More than one system call's worth, to two destinations, interleaved.
        for i in 0..150u32 {
            let to = if i % 3 == 0 { b_addr } else { a_addr };
            outbox.push(0, to, BytesMut::from(&i.to_be_bytes()[..]));
        }
        let flushed = outbox.flush(std::slice::from_ref(&sender));
        assert_eq!(flushed, Flushed { sent: 150, calls: 3, dropped: 0 });
        assert!(outbox.is_empty());
        let mut buf = [0u8; 16];
        for (socket, want) in [(&a, (0..150u32).filter(|i| i % 3 != 0).collect::<Vec<_>>()), (&b, (0..150).step_by(3).collect())] {
            for i in want {
                let (n, from) = socket.recv_from(&mut buf).await.unwrap();
                assert_eq!((&buf[..n], from), (&i.to_be_bytes()[..], sender.0));
            }
        }
    }

    #[tokio::test]
    async fn a_refused_destination_costs_only_its_own_datagram() {
        let sender = socket().await;
        let (a_addr, a) = socket().await;
        let mut outbox = Outbox::default();
        outbox.push(0, a_addr, BytesMut::from(&b"one"[..]));
        // An IPv6 destination on an IPv4 socket: the kernel refuses it.
        outbox.push(0, "[::1]:9".parse().unwrap(), BytesMut::from(&b"lost"[..]));
        outbox.push(0, a_addr, BytesMut::from(&b"two"[..]));
        let flushed = outbox.flush(std::slice::from_ref(&sender));
        assert_eq!((flushed.sent, flushed.dropped), (2, 1));
        let mut buf = [0u8; 16];
        for want in [&b"one"[..], b"two"] {
            let (n, _) = a.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], want);
        }
    }
}
