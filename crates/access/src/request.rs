//! The parts of an HTTP request that authentication and the client address read.

use std::net::IpAddr;

/// What the access rules read of a request: its headers, its query string and its TCP peer.
/// Implemented for actix-web's `HttpRequest` behind the `actix` feature.
pub trait RequestParts {
    /// Every value of the header `name` (case-insensitive) that is visible ASCII, in order.
    fn header_values(&self, name: &str) -> Vec<&str>;

    /// The query string, without the `?` (empty when there is none).
    fn query(&self) -> &str;

    /// The address of the TCP peer, when known.
    fn peer_ip(&self) -> Option<IpAddr>;
}

#[cfg(feature = "actix")]
impl RequestParts for actix_web::HttpRequest {
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers()
            .get_all(name)
            .filter_map(|value| value.to_str().ok())
            .collect()
    }

    fn query(&self) -> &str {
        self.query_string()
    }

    fn peer_ip(&self) -> Option<IpAddr> {
        self.peer_addr().map(|addr| addr.ip())
    }
}

/// A request written out by hand, for the unit tests of the rules.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct TestRequest {
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) query: String,
    pub(crate) peer: Option<IpAddr>,
}

#[cfg(test)]
impl TestRequest {
    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

#[cfg(test)]
impl RequestParts for TestRequest {
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .collect()
    }

    fn query(&self) -> &str {
        &self.query
    }

    fn peer_ip(&self) -> Option<IpAddr> {
        self.peer
    }
}
