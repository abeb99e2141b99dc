//! The outbound socket side of a connection: the upgraded response's body, which encodes what the
//! connection's outbox holds into WebSocket frames at the moment the HTTP/1 dispatcher asks for
//! more.
//!
//! actix-web writes a response body only when its write buffer has room (`h1_write_buffer_size`),
//! so frames stay in the outbox, where tickers are still conflated, until the socket takes them.
//! There is no channel between the connection and the socket: the fan-out puts a frame into the
//! outbox and wakes the dispatcher task of the same thread; one poll of the body takes everything
//! waiting (up to `ws.write_buffer_bytes`) and the dispatcher writes it with one `write`.

use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::web::{Bytes, BytesMut};
use actix_ws::CloseReason;

use crate::fanout::{Port, PortFailure};
use crate::metrics::{GatewayMetrics, LocalWire, control_frame_type, text_frame_type};
use crate::outbox::Frame;

/// RFC 6455 §5.5: a control frame carries at most 125 bytes.
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Frame opcodes (RFC 6455 §5.2).
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Appends one unmasked, final server frame (header and payload) to `out`.
pub(crate) fn encode_frame(out: &mut BytesMut, opcode: u8, payload: &[u8]) {
    let len = payload.len();
    out.reserve(len + 10);
    out.extend_from_slice(&[0x80 | opcode]);
    if len < 126 {
        // Fits: len < 126.
        #[allow(clippy::cast_possible_truncation)]
        out.extend_from_slice(&[len as u8]);
    } else if let Ok(short) = u16::try_from(len) {
        out.extend_from_slice(&[126]);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.extend_from_slice(&[127]);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Appends a close frame: the code and the reason, cut to fit a control frame at a character
/// boundary (some browsers treat an oversized close frame as malformed).
pub(crate) fn encode_close(out: &mut BytesMut, reason: Option<&CloseReason>) {
    let Some(reason) = reason else {
        encode_frame(out, OP_CLOSE, &[]);
        return;
    };
    let mut payload = Vec::with_capacity(MAX_CONTROL_PAYLOAD);
    payload.extend_from_slice(&u16::from(reason.code).to_be_bytes());
    if let Some(text) = &reason.description {
        let mut end = text.len().min(MAX_CONTROL_PAYLOAD - 2);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        payload.extend_from_slice(&text.as_bytes()[..end]);
    }
    encode_frame(out, OP_CLOSE, &payload);
}

fn encode(out: &mut BytesMut, frame: &Frame) {
    match frame {
        Frame::Text(bytes) => encode_frame(out, OP_TEXT, bytes),
        Frame::Binary(bytes) => encode_frame(out, OP_BINARY, bytes),
        Frame::Ping(bytes) => encode_frame(out, OP_PING, control(bytes)),
        Frame::Pong(bytes) => encode_frame(out, OP_PONG, control(bytes)),
    }
}

fn control(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.len().min(MAX_CONTROL_PAYLOAD)]
}

/// The body of the `101 Switching Protocols` response: every byte the server sends on the socket.
pub(crate) struct OutboundBody {
    port: Rc<Port>,
    /// Encoded frames not yet handed to the dispatcher; its allocation is reused once the
    /// dispatcher has copied the previous chunk into its write buffer.
    wire: BytesMut,
    /// Most bytes one poll encodes (`ws.write_buffer_bytes`): bounds one turn of the dispatcher
    /// for a connection with a backlog, which stays in the outbox meanwhile.
    chunk_bytes: usize,
    metrics: Arc<GatewayMetrics>,
    /// The worker's local frame counts and delivery times (no shared atomic per frame).
    local: Rc<LocalWire>,
    /// actix-ws's own body, never polled: dropping it with this one tells actix-ws's inbound
    /// stream that the connection is gone.
    _actix: BoxBody,
}

impl OutboundBody {
    /// The body writing `port`'s outbox; `actix` is the body actix-ws built for the upgrade;
    /// written frames are counted in `local`.
    pub(crate) fn new(
        port: Rc<Port>,
        actix: BoxBody,
        metrics: Arc<GatewayMetrics>,
        local: Rc<LocalWire>,
        chunk_bytes: usize,
    ) -> Self {
        Self {
            port,
            wire: BytesMut::new(),
            chunk_bytes,
            metrics,
            local,
            _actix: actix,
        }
    }
}

impl MessageBody for OutboundBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        let port = &this.port;
        port.register_writer(cx.waker());
        if port.writer_finished() {
            return Poll::Ready(None);
        }
        let mut sent = 0_u64;
        {
            let mut outbox = port.outbox.borrow_mut();
            // Read once per poll, and only when a live event is written: one clock read per
            // write of the dispatcher, not one per frame.
            let mut now = None;
            while this.wire.len() < this.chunk_bytes {
                let Some((frame, stamp)) = outbox.pop_stamped() else {
                    break;
                };
                encode(&mut this.wire, &frame);
                sent += 1;
                this.local.frame(match &frame {
                    Frame::Text(bytes) => text_frame_type(bytes),
                    Frame::Binary(_) => control_frame_type(false, false),
                    Frame::Ping(_) => control_frame_type(true, false),
                    Frame::Pong(_) => control_frame_type(false, true),
                });
                if let Some(stamp) = stamp {
                    let now = *now.get_or_insert_with(std::time::Instant::now);
                    this.local.delivered(stamp.kind, stamp.entered, now);
                }
            }
            let conflated = outbox.take_conflated();
            if conflated > 0 {
                GatewayMetrics::add(&this.metrics.tickers_conflated, conflated);
            }
        }
        if sent > 0 {
            port.wrote();
        }
        // The close frame goes last, after everything queued before it.
        if this.wire.len() < this.chunk_bytes
            && port.outbox.borrow().is_empty()
            && let Some(reason) = port.take_close()
        {
            encode_close(&mut this.wire, reason.as_ref());
        }
        if !this.wire.is_empty() {
            return Poll::Ready(Some(Ok(this.wire.split().freeze())));
        }
        if port.writer_finished() {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

impl Drop for OutboundBody {
    fn drop(&mut self) {
        // The dispatcher is done with the socket: the client went away (or the close went out).
        self.port.fail(PortFailure::Gone);
    }
}

#[cfg(test)]
mod tests {
    use actix_ws::CloseCode;

    use super::*;

    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_frame(&mut out, opcode, payload);
        out.to_vec()
    }

    #[test]
    fn frames_have_the_rfc_6455_header_for_each_length_class() {
        // TC0: RFC 6455 §5.7's unmasked "Hello"
        assert_eq!(
            frame(OP_TEXT, b"Hello"),
            [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        // TC1: an empty text frame
        assert_eq!(frame(OP_TEXT, b""), [0x81, 0x00]);
        // TC2: 125 bytes, the longest 7-bit length
        let long = vec![b'x'; 125];
        assert_eq!(&frame(OP_TEXT, &long)[..2], [0x81, 125]);
        // TC3: 126 bytes: 16-bit length
        let long = vec![b'x'; 126];
        let encoded = frame(OP_BINARY, &long);
        assert_eq!(&encoded[..4], [0x82, 126, 0x00, 126]);
        assert_eq!(encoded.len(), 4 + 126);
        // TC4: 65,535 bytes: still 16-bit
        let long = vec![b'x'; 65_535];
        assert_eq!(&frame(OP_TEXT, &long)[..4], [0x81, 126, 0xff, 0xff]);
        // TC5: 65,536 bytes: 64-bit length (RFC 6455 §5.7's 64 KiB binary example)
        let long = vec![b'x'; 65_536];
        let encoded = frame(OP_BINARY, &long);
        assert_eq!(
            &encoded[..10],
            [0x82, 127, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
        );
        assert_eq!(encoded.len(), 10 + 65_536);
        // TC6: ping and pong (RFC 6455 §5.7's "Hello" ping)
        assert_eq!(
            frame(OP_PING, b"Hello"),
            [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        assert_eq!(frame(OP_PONG, b""), [0x8a, 0x00]);
    }

    #[test]
    fn control_frames_are_cut_to_125_bytes() {
        let mut out = BytesMut::new();
        encode(&mut out, &Frame::Pong(Bytes::from(vec![7_u8; 200])));
        assert_eq!(&out[..2], [0x8a, 125]);
        assert_eq!(out.len(), 2 + 125);
    }

    #[test]
    fn close_frames_carry_the_code_and_a_reason_cut_at_a_character_boundary() {
        // TC0: no reason: an empty close frame
        let mut out = BytesMut::new();
        encode_close(&mut out, None);
        assert_eq!(&out[..], [0x88, 0x00]);
        // TC1: code and text
        let mut out = BytesMut::new();
        let reason = CloseReason {
            code: CloseCode::Policy,
            description: Some("slow consumer".to_owned()),
        };
        encode_close(&mut out, Some(&reason));
        let mut expected = vec![0x88, 15, 0x03, 0xf0];
        expected.extend_from_slice(b"slow consumer");
        assert_eq!(&out[..], &expected[..]);
        // TC2: a 200-byte reason of two-byte characters: 122 bytes of text (61 characters), not 123
        let mut out = BytesMut::new();
        let reason = CloseReason {
            code: CloseCode::Normal,
            description: Some("é".repeat(100)),
        };
        encode_close(&mut out, Some(&reason));
        assert_eq!(out[1], 2 + 122);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }
}
