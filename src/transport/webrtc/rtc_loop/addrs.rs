//! Which addresses a loop is reached at, and its sockets on them. A concrete media IP is one
//! address. For a wildcard (`0.0.0.0`, `::`; the Docker image listens on `0.0.0.0`) the loop binds
//! one UDP socket per address of the host's interfaces, all on one port number (`0.0.0.0`: the
//! IPv4 ones; `::`, dual-stack as a socket on it would be: IPv4 and IPv6 alike):
//! a datagram's socket tells which of them it was sent to, which ICE needs (a candidate is an
//! address) and one socket on the wildcard cannot say without `IP_PKTINFO`; replies leave from
//! the address the peer checked. Loopback addresses are left out unless the host has no other.

use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpListener, UdpSocket};

use super::conn::LocalAddrs;

/// The addresses a loop on `ip` advertises, in a stable order.
pub(super) fn media_addresses(ip: IpAddr) -> Result<Vec<IpAddr>, String> {
    if !ip.is_unspecified() {
        return Ok(vec![ip]);
    }
    let interfaces = rtc::shared::ifaces::ifaces().map_err(|e| format!("listing the network interfaces: {e}"))?;
    let mut all: Vec<IpAddr> = interfaces
        .iter()
        .filter_map(|i| i.addr.map(|a| a.ip()))
        .filter(|a| ip.is_ipv6() || a.is_ipv4())
        // IPv6 link-local addresses need a scope id a candidate cannot carry.
        .filter(|a| !matches!(a, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80))
        .collect();
    all.sort();
    all.dedup();
    let routable: Vec<IpAddr> = all.iter().copied().filter(|a| !a.is_loopback()).collect();
    let chosen = if routable.is_empty() { all } else { routable };
    if chosen.is_empty() {
        return Err(format!("no interface has an {} address", if ip.is_ipv4() { "IPv4" } else { "IP" }));
    }
    Ok(chosen)
}

/// A loop's bound sockets: UDP on each address, the ICE-TCP listener, what they advertise.
pub(super) type Bound = (Vec<UdpSocket>, Option<TcpListener>, LocalAddrs);

/// Ports tried for one loop before its start fails: an ephemeral port is the first UDP socket's
/// choice and is only known free there, so the same number can be taken on another address
/// or for TCP (any TCP socket of the host, outgoing ones included, may hold it).
const BIND_ATTEMPTS: usize = 16;

/// A loop's sockets on the first port from `next_port` that is free on every address for UDP
/// and, with `tcp_ip`, for TCP. A port found taken is given up whole and the next one tried;
/// any other error (an address not on this host, no permission) ends the search at once.
pub(super) async fn bind_free(ips: &[IpAddr], tcp_ip: Option<IpAddr>, mut next_port: impl FnMut() -> Option<u16>) -> Result<Bound, String> {
    let mut taken = Vec::new();
    for _ in 0..BIND_ATTEMPTS {
        let port = next_port().ok_or("no free media port for a loop")?;
        match bind(ips, port, tcp_ip).await {
            Ok(bound) => return Ok(bound),
            Err(e) if e.error.kind() == std::io::ErrorKind::AddrInUse => {
                tracing::debug!(%e, "a loop's port is taken: trying another");
                taken.push(e.at);
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!("binding a loop's media sockets: {} ports in use ({taken:?})", taken.len()))
}

/// A socket that could not be bound.
#[derive(Debug)]
pub(super) struct BindError {
    at: SocketAddr,
    what: &'static str,
    error: std::io::Error,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "binding {} on {}: {}", self.what, self.at, self.error)
    }
}

/// A loop's sockets: UDP on each of `ips` at `port` (0: the first socket picks one and the
/// others follow it), and with `tcp_ip` one ICE-TCP listener on it (the wildcard itself, or
/// the one address) at the same port number.
pub(super) async fn bind(ips: &[IpAddr], port: u16, tcp_ip: Option<IpAddr>) -> Result<Bound, BindError> {
    let failed = |at, what, error| BindError { at, what, error };
    let mut sockets = Vec::with_capacity(ips.len());
    let mut port = port;
    for &ip in ips {
        let at = SocketAddr::new(ip, port);
        let socket = UdpSocket::bind(at).await.map_err(|e| failed(at, "UDP", e))?;
        port = socket.local_addr().map_err(|e| failed(at, "UDP", e))?.port();
        sockets.push(socket);
    }
    let udp: Vec<SocketAddr> = sockets
        .iter()
        .zip(ips)
        .map(|(s, &ip)| s.local_addr().map_err(|e| failed(SocketAddr::new(ip, port), "UDP", e)))
        .collect::<Result<_, _>>()?;
    let tcp = match tcp_ip {
        Some(ip) => {
            let at = SocketAddr::new(ip, port);
            Some(TcpListener::bind(at).await.map_err(|e| failed(at, "ICE-TCP", e))?)
        }
        None => None,
    };
    let tcp_addrs = if tcp.is_some() { ips.iter().map(|&ip| SocketAddr::new(ip, port)).collect() } else { Vec::new() };
    Ok((sockets, tcp, LocalAddrs { udp, tcp: tcp_addrs }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn a_concrete_ip_is_its_own_address_and_a_wildcard_lists_interfaces() {
        let lo: IpAddr = Ipv4Addr::LOCALHOST.into();
        assert_eq!(media_addresses(lo).unwrap(), vec![lo]);
        let any = media_addresses(Ipv4Addr::UNSPECIFIED.into()).unwrap();
        assert!(!any.is_empty() && any.iter().all(|a| a.is_ipv4() && !a.is_unspecified()), "{any:?}");
        assert!(any.iter().all(|a| !a.is_loopback()) || any == vec![lo], "loopback only when nothing else: {any:?}");
    }

    #[test]
    fn the_ipv6_wildcard_is_dual_stack() {
        let v4 = media_addresses(Ipv4Addr::UNSPECIFIED.into()).unwrap();
        let any = media_addresses(std::net::Ipv6Addr::UNSPECIFIED.into()).unwrap();
        // Loopback counts only on a host with nothing else, so compare the routable ones.
        let routable = |a: &&IpAddr| !a.is_loopback();
        assert!(v4.iter().filter(routable).all(|a| any.contains(a)), "{v4:?} in {any:?}");
        assert!(any.iter().all(|a| !matches!(a, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)), "no link-local: {any:?}");
    }

    #[tokio::test]
    async fn every_address_gets_a_socket_on_one_port() {
        let ips = media_addresses(Ipv4Addr::UNSPECIFIED.into()).unwrap();
        let (sockets, tcp, local) = bind(&ips, 0, Some(Ipv4Addr::UNSPECIFIED.into())).await.unwrap();
        assert_eq!(sockets.len(), ips.len());
        let port = local.udp[0].port();
        assert!(local.udp.iter().chain(&local.tcp).all(|a| a.port() == port), "{local:?}");
        assert_eq!(tcp.unwrap().local_addr().unwrap().port(), port);
    }

    /// The flake this fixes: UDP's ephemeral port was taken for TCP, and the server fell back
    /// to a driver per call. A taken port is skipped; the loop binds on the next.
    #[tokio::test]
    async fn a_port_taken_for_tcp_is_skipped_for_the_next() {
        let lo: IpAddr = Ipv4Addr::LOCALHOST.into();
        let holder = std::net::TcpListener::bind((lo, 0)).unwrap();
        let taken = holder.local_addr().unwrap().port();
        let mut offered = vec![0, taken].into_iter().rev();
        let (_udp, tcp, local) = bind_free(&[lo], Some(lo), || offered.next()).await.unwrap();
        let port = local.udp[0].port();
        assert_ne!(port, taken);
        assert_eq!(tcp.unwrap().local_addr().unwrap().port(), port, "TCP on UDP's number");
        assert_eq!(offered.next(), None, "both offers used: the taken one first");
    }

    #[tokio::test]
    async fn an_error_other_than_a_taken_port_is_not_retried() {
        let mut asked = 0;
        // TEST-NET-1 is on no interface here: EADDRNOTAVAIL.
        let nowhere: IpAddr = Ipv4Addr::new(192, 0, 2, 254).into();
        let e = bind_free(&[nowhere], None, || {
            asked += 1;
            Some(0)
        })
        .await
        .err()
        .unwrap();
        assert_eq!(asked, 1, "{e}");
        assert!(e.contains("192.0.2.254"), "{e}");
    }

    #[tokio::test]
    async fn when_every_port_is_taken_the_error_says_so() {
        let lo: IpAddr = Ipv4Addr::LOCALHOST.into();
        let holder = std::net::TcpListener::bind((lo, 0)).unwrap();
        let taken = holder.local_addr().unwrap().port();
        let e = bind_free(&[lo], Some(lo), || Some(taken)).await.err().unwrap();
        assert!(e.contains(&format!("{BIND_ATTEMPTS} ports in use")), "{e}");
    }
}
