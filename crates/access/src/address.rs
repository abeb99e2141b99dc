//! The client's address: the TCP peer, or what a trusted reverse proxy says it saw
//! (`ws.trusted_proxies`), the same for the REST limits and the WebSocket's.

use std::net::IpAddr;

use crate::RequestParts;

/// The client's IP address: the TCP peer, or the last `X-Forwarded-For` entry when the peer is a
/// trusted proxy (earlier entries could be forged by the client).
#[must_use]
pub fn client_ip(req: &(impl RequestParts + ?Sized), trusted: &[IpAddr]) -> Option<IpAddr> {
    let peer = req.peer_ip()?;
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let forwarded = req
        .header_values("x-forwarded-for")
        .into_iter()
        .flat_map(|v| v.split(','))
        .last()
        .and_then(|last| last.trim().parse().ok());
    Some(forwarded.unwrap_or(peer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::TestRequest;

    #[test]
    fn client_ip_trusts_forwarded_for_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let request = |peer: &str| {
            TestRequest {
                peer: peer.parse().ok(),
                ..TestRequest::default()
            }
            .header("X-Forwarded-For", "6.6.6.6, 203.0.113.7")
        };
        // TC0: an untrusted peer is the client, whatever it claims
        assert_eq!(
            client_ip(&request("198.51.100.2"), &[proxy]),
            "198.51.100.2".parse().ok()
        );
        // TC1: a trusted proxy: the last forwarded address (the one the proxy saw)
        assert_eq!(
            client_ip(&request("10.0.0.1"), &[proxy]),
            "203.0.113.7".parse().ok()
        );
        // TC2: no trusted proxies configured
        assert_eq!(
            client_ip(&request("10.0.0.1"), &[]),
            "10.0.0.1".parse().ok()
        );
        // TC3: a trusted proxy that forwards nothing readable is itself the client; no peer, no address
        let bare = TestRequest {
            peer: Some(proxy),
            ..TestRequest::default()
        }
        .header("X-Forwarded-For", "not an address");
        assert_eq!(client_ip(&bare, &[proxy]), Some(proxy));
        assert_eq!(client_ip(&TestRequest::default(), &[proxy]), None);
    }
}
