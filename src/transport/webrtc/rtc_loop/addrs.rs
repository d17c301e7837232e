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

/// A loop's sockets: UDP on each of `ips` at `port` (0: the first socket picks one and the
/// others follow it), and with `tcp` one ICE-TCP listener on `tcp_ip` (the wildcard itself, or
/// the one address) at the same port number.
pub(super) async fn bind(
    ips: &[IpAddr],
    port: u16,
    tcp_ip: Option<IpAddr>,
) -> Result<(Vec<UdpSocket>, Option<TcpListener>, LocalAddrs), String> {
    let mut sockets = Vec::with_capacity(ips.len());
    let mut port = port;
    for &ip in ips {
        let at = SocketAddr::new(ip, port);
        let socket = UdpSocket::bind(at).await.map_err(|e| format!("binding {at}: {e}"))?;
        port = socket.local_addr().map_err(|e| e.to_string())?.port();
        sockets.push(socket);
    }
    let udp: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
    let tcp = match tcp_ip {
        Some(ip) => {
            let at = SocketAddr::new(ip, port);
            Some(TcpListener::bind(at).await.map_err(|e| format!("binding ICE-TCP on {at}: {e}"))?)
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
}
