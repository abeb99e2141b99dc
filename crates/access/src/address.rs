//! The client's address: the TCP peer, or what a trusted reverse proxy says it saw
//! (`ws.trusted_proxies`), the same for the REST limits and the WebSocket's.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::RequestParts;

/// One entry of `ws.trusted_proxies`: an address (`10.0.0.1`, `::1`) or a CIDR range
/// (`10.0.0.0/8`, `fd00::/8`), as an ingress has a range of addresses, not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    /// The network address, host bits cleared.
    network: IpAddr,
    /// Leading bits that must match: 0 to 32 (IPv4) or 0 to 128 (IPv6).
    prefix: u8,
}

impl IpRange {
    /// Whether `ip` is in the range. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a
    /// dual-stack socket reports) is the IPv4 address it maps.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u128::from(u32::from(ip)), self.prefix, 32) == u128::from(u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(ip), self.prefix, 128) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `value` (of `width` bits) with everything after the first `prefix` bits cleared.
fn mask(value: u128, prefix: u8, width: u8) -> u128 {
    let host_bits = u32::from(width - prefix);
    if host_bits >= 128 {
        0
    } else {
        value >> host_bits << host_bits
    }
}

impl From<IpAddr> for IpRange {
    fn from(ip: IpAddr) -> Self {
        let ip = ip.to_canonical();
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        Self {
            network: ip,
            prefix,
        }
    }
}

impl FromStr for IpRange {
    type Err = String;

    /// `ADDRESS` or `ADDRESS/PREFIX`; the address of a range must have no host bits set
    /// (`10.0.0.1/8` is refused: it is either a typo of `10.0.0.0/8` or of `10.0.0.1`).
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let ip: IpAddr = address.parse().map_err(|_| {
            format!(
                "{text:?} is not an IP address or CIDR range (e.g. 10.0.0.1, 10.0.0.0/8, fd00::/8)"
            )
        })?;
        let single = Self::from(ip);
        let Some(prefix) = prefix else {
            return Ok(single);
        };
        let width = single.prefix;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= width)
            .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {width}"))?;
        let range = Self {
            network: single.network,
            prefix,
        };
        let cleared = match single.network {
            IpAddr::V4(v4) => IpAddr::V4(
                u32::try_from(mask(u128::from(u32::from(v4)), prefix, 32))
                    .unwrap_or_default()
                    .into(),
            ),
            IpAddr::V6(v6) => IpAddr::V6(mask(u128::from(v6), prefix, 128).into()),
        };
        if cleared != single.network {
            return Err(format!(
                "{text:?} has host bits set: the range is {cleared}/{prefix}"
            ));
        }
        Ok(range)
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = if self.network.is_ipv4() { 32 } else { 128 };
        if self.prefix == full {
            write!(f, "{}", self.network)
        } else {
            write!(f, "{}/{}", self.network, self.prefix)
        }
    }
}

impl<'de> serde::Deserialize<'de> for IpRange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for IpRange {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The client's IP address: the TCP peer when it is not a trusted proxy; otherwise the
/// `X-Forwarded-For` entries are read from the right (the one the nearest proxy appended) and
/// the first that is not itself a trusted proxy is the client. Entries left of it could be
/// forged by the client and are never read; a chain of trusted proxies that forwards nothing
/// readable leaves the nearest proxy as the client.
#[must_use]
pub fn client_ip(req: &(impl RequestParts + ?Sized), trusted: &[IpRange]) -> Option<IpAddr> {
    let peer = req.peer_ip()?.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|range| range.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let values = req.header_values("x-forwarded-for");
    let mut client = peer;
    for entry in values.iter().flat_map(|v| v.split(',')).rev() {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip.to_canonical();
        if !is_trusted(client) {
            break;
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::TestRequest;

    fn ranges(list: &[&str]) -> Vec<IpRange> {
        list.iter().map(|r| r.parse().unwrap()).collect()
    }

    fn ip(text: &str) -> Option<IpAddr> {
        text.parse().ok()
    }

    #[test]
    fn client_ip_trusts_forwarded_for_only_from_trusted_proxies() {
        let proxy = ranges(&["10.0.0.1"]);
        let request = |peer: &str| {
            TestRequest {
                peer: peer.parse().ok(),
                ..TestRequest::default()
            }
            .header("X-Forwarded-For", "6.6.6.6, 203.0.113.7")
        };
        // TC0: an untrusted peer is the client, whatever it claims
        assert_eq!(
            client_ip(&request("198.51.100.2"), &proxy),
            ip("198.51.100.2")
        );
        // TC1: a trusted proxy: the last forwarded address (the one the proxy saw)
        assert_eq!(client_ip(&request("10.0.0.1"), &proxy), ip("203.0.113.7"));
        // TC2: no trusted proxies configured
        assert_eq!(client_ip(&request("10.0.0.1"), &[]), ip("10.0.0.1"));
        // TC3: a trusted proxy that forwards nothing readable is itself the client; no peer, no address
        let bare = TestRequest {
            peer: ip("10.0.0.1"),
            ..TestRequest::default()
        }
        .header("X-Forwarded-For", "not an address");
        assert_eq!(client_ip(&bare, &proxy), ip("10.0.0.1"));
        assert_eq!(client_ip(&TestRequest::default(), &proxy), None);
    }

    #[test]
    fn ranges_and_chains_of_trusted_proxies() {
        let ingress = ranges(&["10.0.0.0/8", "fd00::/8"]);
        let request = |peer: &str, forwarded: &str| {
            TestRequest {
                peer: peer.parse().ok(),
                ..TestRequest::default()
            }
            .header("X-Forwarded-For", forwarded)
        };
        // TC0: any peer of the range is trusted
        assert_eq!(
            client_ip(&request("10.42.7.9", "203.0.113.7"), &ingress),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_ip(&request("fd12::1", "203.0.113.7"), &ingress),
            ip("203.0.113.7")
        );
        // TC1: outside the range the peer is the client
        assert_eq!(
            client_ip(&request("11.0.0.1", "203.0.113.7"), &ingress),
            ip("11.0.0.1")
        );
        // TC2: a chain of two trusted hops: the first untrusted entry from the right; what the
        // client wrote further left is not read
        assert_eq!(
            client_ip(
                &request("10.0.0.2", "6.6.6.6, 203.0.113.7, 10.0.0.1"),
                &ingress
            ),
            ip("203.0.113.7")
        );
        // TC3: every entry trusted: the leftmost proxy is as far as the chain tells
        assert_eq!(
            client_ip(&request("10.0.0.2", "10.0.0.1"), &ingress),
            ip("10.0.0.1")
        );
        // TC4: an IPv4-mapped IPv6 peer (a dual-stack socket) is its IPv4 address
        assert_eq!(
            client_ip(&request("::ffff:10.0.0.3", "203.0.113.7"), &ingress),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_ip(&request("::ffff:11.0.0.3", "203.0.113.7"), &ingress),
            ip("11.0.0.3")
        );
    }

    #[test]
    fn ranges_parse_and_refuse_what_is_ambiguous() {
        // TC0: single addresses are full-length ranges and print as addresses
        for (text, printed) in [
            ("127.0.0.1", "127.0.0.1"),
            ("::1", "::1"),
            (" 10.0.0.0/8 ", "10.0.0.0/8"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("fd00::/8", "fd00::/8"),
            ("::ffff:10.0.0.1", "10.0.0.1"),
        ] {
            let range: IpRange = text.parse().unwrap();
            assert_eq!(range.to_string(), printed, "{text}");
        }
        assert!(
            "0.0.0.0/0"
                .parse::<IpRange>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            !"10.0.0.0/8"
                .parse::<IpRange>()
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        // TC1: refused, with the reason
        for (text, reason) in [
            ("proxy", "is not an IP address or CIDR range"),
            ("10.0.0.0/33", "prefix length must be 0 to 32"),
            ("fd00::/129", "prefix length must be 0 to 128"),
            ("10.0.0.0/x", "prefix length"),
            ("10.0.0.1/8", "host bits set: the range is 10.0.0.0/8"),
        ] {
            let err = text.parse::<IpRange>().unwrap_err();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }
}
