//! Access layer of cryptobot: who a request comes from and whether it may come in, the same for
//! both front doors, the REST API (server) and the WebSocket upgrade (ws-gateway).
//!
//! It provides the [`Authenticator`] (static bearer tokens or HS256 JWTs) and the [`Principal`]
//! with its scopes, the client's address behind trusted proxies ([`client_ip`]), and the
//! per-address request rate ([`IpRateLimiter`]). Every rule reads a request through the small
//! [`RequestParts`] trait (headers, query, peer), so the rules are plain and tested without a
//! server.
//!
//! It is its own crate, below both doors, because neither door may depend on the other, and the
//! domain must stay free of tokio and of HTTP concerns.
//!
//! May depend on: jsonwebtoken (with HMAC-SHA256 from RustCrypto's hmac and sha2 as its only
//! crypto), serde, thiserror, tokio's clock (paused-time tests govern the
//! limiter), and actix-web only behind the `actix` feature, for the one `RequestParts` impl.
//! Must not depend on: any other cryptobot crate, or any I/O.

/// The client's address behind trusted proxies.
pub mod address;
/// Bearer tokens, JWTs, principals and scopes.
pub mod auth;
/// HS256 as jsonwebtoken's crypto provider.
mod hs256;
/// Per-address request rates (connection attempts at the upgrade, REST requests).
pub mod rate;
/// What the rules read of a request.
pub mod request;

pub use address::{IpRange, client_ip};
pub use auth::{
    AuthError, Authenticator, JwtSecret, Principal, SCOPE_READ, SCOPE_TRADE, StaticToken,
};
pub use rate::{IpRateLimiter, Quota, retry_after_secs};
pub use request::RequestParts;
