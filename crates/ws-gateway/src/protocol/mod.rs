//! The wire protocol: inbound [`ClientMessage`]s (`client`), outbound [`ServerMessage`]s
//! (`server`) and the stable error codes (`codes`).
//!
//! Pure and synchronous, so every shape is unit-tested without a socket. The seed's messages keep
//! their exact field names; everything added is additional fields or new message types.

/// Requests clients send, and their parsing.
pub mod client;
/// Stable error codes and the fixed close code.
pub mod codes;
/// Frames the server sends.
pub mod server;

pub use client::{ClientMessage, ClientRequest, Envelope, RequestError, ResumeRequest};
pub use server::{
    ConnectionLimits, EventMeta, OrderList, OrderPlaced, PositionExited, ServerMessage,
    TradeExecuted, TradeNotification,
};
