//! L4 in the snapshot: per gateway port, how a new connection is treated (HTTP, TCP proxying, or
//! TLS: passthrough by SNI or termination), and the ordered VirtualService `tcp` and `tls` routes
//! that choose its upstream. Looked up once per connection, never per byte.

use super::Target;
use serde::Serialize;
use std::net::IpAddr;
use std::sync::Arc;

/// What a connection on a gateway port is, before any byte is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PortKind {
    /// Plain HTTP (the default of a port without TCP or TLS servers).
    Http,
    /// Plain TCP: `tcp` routes.
    Tcp,
    /// TLS: the ClientHello's SNI picks a passthrough `tls` route or a terminating server
    /// (HTTPS, or TLS then `tcp` routes).
    Tls,
}

/// The L4 side of one gateway port: the union of every TCP and TLS server on that port.
#[derive(Debug, Serialize)]
pub struct L4Port {
    pub port: u16,
    pub kind: PortKind,
    /// For TCP servers and TLS servers that terminate: first match wins.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<Arc<L4Route>>,
    /// For `PASSTHROUGH` servers, matched by SNI: first match wins.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<Arc<L4Route>>,
}

/// One compiled `tcp` or `tls` rule of a VirtualService, as served on one port.
#[derive(Debug, Serialize)]
pub struct L4Route {
    /// `vs/<ns>/<name>/tcp/<i>` or `vs/<ns>/<name>/tls/<i>`.
    pub id: String,
    /// `ns/name` of the Gateway this route is served for (metrics label).
    pub gateway: String,
    /// `ns/name` of the VirtualService.
    pub virtual_service: String,
    /// OR across entries; empty means every connection.
    pub matches: Vec<L4Match>,
    pub destinations: Vec<L4Destination>,
    /// Sum of `weight`s; never 0.
    pub total_weight: u32,
}

/// AND of the conditions of one `match` entry.
#[derive(Debug, Clone, Default, Serialize)]
pub struct L4Match {
    /// The gateway port the connection arrived on.
    pub port: Option<u16>,
    /// The address the client connected to is in one of these (when not empty).
    pub destination_subnets: Vec<Cidr>,
    /// `tcp` routes: the client's address is in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_subnet: Option<Cidr>,
    /// `tls` routes: lowercased SNI names (`a.example.com`, `*.example.com`, `*`), already
    /// narrowed to what the server's hosts admit. Never empty for a `tls` route.
    pub sni_hosts: Vec<String>,
}

/// An IP network `addr/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// `a.b.c.d`, `a.b.c.d/n`, `::1`, `2001:db8::/32`; `None` when it is neither.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let addr: IpAddr = ip.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// One weighted upstream of an L4 route.
#[derive(Debug, Serialize)]
pub struct L4Destination {
    /// Normalised weight; 0 gets no connections.
    pub weight: u32,
    /// `host` as written (metrics label `destination_service`).
    pub host: String,
    pub subset: Option<String>,
    pub port: u16,
    pub target: Target,
}

/// What the data plane knows of a new connection when it picks an L4 route.
#[derive(Debug, Clone, Copy)]
pub struct L4Conn<'a> {
    /// The gateway port (Gateway server `port.number`) of the listener.
    pub port: u16,
    /// The local address the client connected to.
    pub destination: IpAddr,
    /// The client's address.
    pub source: IpAddr,
    /// The ClientHello's SNI (lowercased), for `tls` routes.
    pub sni: Option<&'a str>,
}

impl L4Match {
    fn matches(&self, c: &L4Conn<'_>) -> bool {
        if self.port.is_some_and(|p| p != c.port) {
            return false;
        }
        if !self.destination_subnets.is_empty()
            && !self
                .destination_subnets
                .iter()
                .any(|n| n.contains(c.destination))
        {
            return false;
        }
        if self.source_subnet.is_some_and(|n| !n.contains(c.source)) {
            return false;
        }
        if self.sni_hosts.is_empty() {
            return true;
        }
        let Some(sni) = c.sni else {
            return false;
        };
        self.sni_hosts.iter().any(|h| sni_matches(h, sni))
    }
}

/// `*` matches every name, `*.example.com` every name under it (not `example.com`).
pub fn sni_matches(pattern: &str, sni: &str) -> bool {
    let sni = sni.trim_end_matches('.');
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => sni.len() > suffix.len() && ends_with_ignore_case(sni, suffix),
        None => pattern.eq_ignore_ascii_case(sni),
    }
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

impl L4Route {
    pub fn matches(&self, c: &L4Conn<'_>) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.matches(c))
    }
}

impl L4Port {
    /// The first `tcp` route that takes the connection.
    pub fn tcp_route(&self, c: &L4Conn<'_>) -> Option<&Arc<L4Route>> {
        self.tcp.iter().find(|r| r.matches(c))
    }

    /// The first `tls` (passthrough) route that takes the connection.
    pub fn tls_route(&self, c: &L4Conn<'_>) -> Option<&Arc<L4Route>> {
        self.tls.iter().find(|r| r.matches(c))
    }
}

impl super::Snapshot {
    /// How a new connection on gateway port `port` is treated: by its TCP and TLS servers, else
    /// TLS when HTTPS servers terminate there, else HTTP. TLS wins a port shared with plain TCP
    /// servers: a ClientHello is recognisable, plain TCP is not.
    pub fn port_kind(&self, port: u16) -> PortKind {
        let terminates = self.tls.contains_key(&port);
        match self.l4.get(&port) {
            Some(l) if l.kind == PortKind::Tcp && !terminates => PortKind::Tcp,
            Some(_) => PortKind::Tls,
            None if terminates => PortKind::Tls,
            None => PortKind::Http,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let n = Cidr::parse("10.1.0.0/16").expect("parses");
        assert!(n.contains("10.1.2.3".parse().expect("ip")));
        assert!(!n.contains("10.2.0.1".parse().expect("ip")));
        assert!(n.contains("::ffff:10.1.9.9".parse().expect("ip")));
        let one = Cidr::parse("127.0.0.1").expect("parses");
        assert!(one.contains("127.0.0.1".parse().expect("ip")));
        assert!(!one.contains("127.0.0.2".parse().expect("ip")));
        let all = Cidr::parse("0.0.0.0/0").expect("parses");
        assert!(all.contains("192.0.2.1".parse().expect("ip")));
        let v6 = Cidr::parse("2001:db8::/32").expect("parses");
        assert!(v6.contains("2001:db8::5".parse().expect("ip")));
        assert!(!v6.contains("2001:db9::5".parse().expect("ip")));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nope").is_none());
    }

    #[test]
    fn sni_patterns() {
        assert!(sni_matches("a.example.com", "A.example.com"));
        assert!(sni_matches("*.example.com", "b.a.example.com"));
        assert!(!sni_matches("*.example.com", "example.com"));
        assert!(sni_matches("*", "anything"));
        assert!(!sni_matches("a.example.com", "b.example.com"));
    }
}
