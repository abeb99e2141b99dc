//! The inbound size guard: reads WebSocket frame headers off the raw upgraded byte stream and cuts
//! the stream as soon as a message declares more than `max_message_bytes`.
//!
//! actix-ws checks `max_frame_size` only after it has read whatever the socket had, so a frame is
//! buffered before it is refused (docs/security.md). Counting raw bytes between messages instead
//! refuses honest clients, because actix-ws reads ahead into the next messages. Reading the headers
//! gives the exact answer: a message is refused by its declared length, before its payload arrives,
//! and messages that are each within the limit pass however closely they follow each other (the
//! read-ahead of complete messages is bounded by actix-http's own 32 KiB payload back-pressure).

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::stream::Stream;

/// Longest WebSocket frame header: 2 bytes, 8 bytes of extended length, 4 bytes of mask.
const MAX_HEADER_LEN: usize = 14;

/// Shared between the guard and the connection actor (same worker thread, hence `Rc`/`Cell`).
#[derive(Debug, Default)]
pub(crate) struct InboundBudget {
    /// Set when the guard cut the stream for a message over the limit.
    overflowed: Cell<bool>,
    /// Set when the guard cut the stream for a frame with reserved bits set.
    violated: Cell<bool>,
}

/// Why the guard cut the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A message declared more than the limit (close 1009).
    TooBig,
    /// A frame has RSV1, RSV2 or RSV3 set, which only a negotiated extension may do, and this
    /// gateway negotiates none (RFC 6455 §5.2: close 1002). actix-http reports these as invalid
    /// data, the same error as bad UTF-8, which would close with 1007.
    ReservedBits,
}

/// First-byte bits RSV1-3.
const RSV_MASK: u8 = 0b0111_0000;

impl InboundBudget {
    /// Whether the guard cut the stream; the actor then closes with `close_code_too_big`.
    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed.get()
    }
}

/// Where the meter is in the frame it is reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Collecting a header; `have` bytes of it are in `header`.
    Header { have: usize },
    /// Skipping `remaining` payload bytes of the current frame.
    Payload { remaining: u64 },
}

/// Follows the frames of one client's byte stream and sums the declared payload of the message in
/// progress (its first data frame plus its continuations). Never looks at payload bytes.
#[derive(Debug, Clone)]
pub(crate) struct FrameMeter {
    /// Largest payload a message may declare in total.
    limit: u64,
    position: Position,
    header: [u8; MAX_HEADER_LEN],
    /// Payload declared so far by the data message in progress.
    message_bytes: u64,
}

impl FrameMeter {
    /// A meter that refuses messages larger than `limit` bytes of payload.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit: u64::try_from(limit).unwrap_or(u64::MAX),
            position: Position::Header { have: 0 },
            header: [0; MAX_HEADER_LEN],
            message_bytes: 0,
        }
    }

    /// Feeds the next chunk of the stream; fails once a frame is refused.
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) -> Result<(), Refusal> {
        while !chunk.is_empty() {
            match self.position {
                Position::Payload { remaining } => {
                    let skipped = remaining.min(chunk.len() as u64);
                    // expect: `skipped` is at most `chunk.len()`, a usize.
                    chunk = &chunk[usize::try_from(skipped).expect("bounded by chunk.len()")..];
                    self.position = Self::after_payload(remaining - skipped);
                }
                Position::Header { have } => {
                    let needed = header_len(&self.header[..have]);
                    let take = (needed - have).min(chunk.len());
                    self.header[have..have + take].copy_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    let have = have + take;
                    // A complete 2-byte prefix may reveal that more header bytes are needed.
                    if have < header_len(&self.header[..have]) {
                        self.position = Position::Header { have };
                    } else {
                        self.on_header(have)?;
                    }
                }
            }
        }
        Ok(())
    }

    const fn after_payload(remaining: u64) -> Position {
        if remaining == 0 {
            Position::Header { have: 0 }
        } else {
            Position::Payload { remaining }
        }
    }

    /// Accounts for a complete header of `len` bytes.
    fn on_header(&mut self, len: usize) -> Result<(), Refusal> {
        let header = &self.header[..len];
        if header[0] & RSV_MASK != 0 {
            return Err(Refusal::ReservedBits);
        }
        let opcode = header[0] & 0x0F;
        let payload = match header[1] & 0x7F {
            126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
            127 => {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(&header[2..10]);
                u64::from_be_bytes(bytes)
            }
            short => u64::from(short),
        };
        match opcode {
            // Text or binary: a new message starts.
            0x1 | 0x2 => self.message_bytes = payload,
            // Continuation: the message in progress grows.
            0x0 => self.message_bytes = self.message_bytes.saturating_add(payload),
            // Control frames (and reserved opcodes, which actix-ws refuses with 1002) stand alone
            // between fragments; they are refused here only if they are themselves too big.
            _ if payload > self.limit => return Err(Refusal::TooBig),
            _ => {}
        }
        if self.message_bytes > self.limit {
            return Err(Refusal::TooBig);
        }
        self.position = Self::after_payload(payload);
        Ok(())
    }
}

/// Length of the header that starts with `prefix`, as far as the prefix tells (at least 2).
fn header_len(prefix: &[u8]) -> usize {
    if prefix.len() < 2 {
        return 2;
    }
    let masked = if prefix[1] & 0x80 == 0 { 0 } else { 4 };
    let extended = match prefix[1] & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + extended + masked
}

/// Wraps the upgraded request payload and fails it as soon as a message declares more than the
/// limit, so an oversized message is never buffered (actix-ws checks sizes only after reading).
pub(crate) struct GuardedPayload {
    /// The raw request body: the client's WebSocket frames.
    inner: actix_web::dev::Payload,
    /// Flag shared with the actor.
    budget: Rc<InboundBudget>,
    meter: FrameMeter,
}

impl GuardedPayload {
    /// Guards `inner`, refusing messages over `limit` bytes of payload.
    pub(crate) fn new(
        inner: actix_web::dev::Payload,
        budget: Rc<InboundBudget>,
        limit: usize,
    ) -> Self {
        Self {
            inner,
            budget,
            meter: FrameMeter::new(limit),
        }
    }
}

impl Stream for GuardedPayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.budget.overflowed.get() || self.budget.violated.get() {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled
            && let Err(refusal) = self.meter.feed(chunk)
        {
            return Poll::Ready(Some(Err(match refusal {
                Refusal::TooBig => {
                    self.budget.overflowed.set(true);
                    PayloadError::Overflow
                }
                // actix-ws wraps this in an `Io` error of kind `Other`, which the connection
                // classifies as a protocol violation (close 1002).
                Refusal::ReservedBits => {
                    self.budget.violated.set(true);
                    PayloadError::Io(std::io::Error::other(
                        "reserved bits set without a negotiated extension",
                    ))
                }
            })));
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame with the given first byte and payload length (payload bytes zero).
    fn frame(first: u8, payload: usize) -> Vec<u8> {
        let mut out = header(first, payload);
        out.resize(out.len() + payload, 0);
        out
    }

    /// Only the header of such a frame.
    fn header(first: u8, payload: usize) -> Vec<u8> {
        let mut out = vec![first];
        if payload < 126 {
            out.push(0x80 | u8::try_from(payload).expect("< 126"));
        } else if let Ok(short) = u16::try_from(payload) {
            out.push(0x80 | 126);
            out.extend_from_slice(&short.to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(payload as u64).to_be_bytes());
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        out
    }

    const TEXT: u8 = 0x81;
    const TEXT_FIRST: u8 = 0x01;
    const CONT: u8 = 0x00;
    const CONT_LAST: u8 = 0x80;
    const PING: u8 = 0x89;

    /// Feeds `bytes` split every `step` bytes; returns whether the meter accepted all of it.
    fn feed_in_steps(limit: usize, bytes: &[u8], step: usize) -> bool {
        let mut meter = FrameMeter::new(limit);
        bytes.chunks(step).all(|chunk| meter.feed(chunk).is_ok())
    }

    #[test]
    fn accepts_messages_within_the_limit_and_refuses_the_first_one_over_it() {
        let limit = 60_000;
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            // TC0: ten messages of exactly the limit, back to back (a guard counting the pipeline as one message would refuse these)
            (
                "pipelined at the limit",
                frame(TEXT, limit).repeat(10),
                true,
            ),
            // TC1: one byte over
            ("one over", frame(TEXT, limit + 1), false),
            // TC2: 16-bit and 64-bit lengths
            ("small", [frame(TEXT, 5), frame(TEXT, 300)].concat(), true),
            ("64-bit length", frame(TEXT, 70_000), false),
            ("huge declared", header(TEXT, 1 << 40), false),
            // TC3: fragments add up across continuations, with a ping between them
            (
                "fragments within",
                [
                    frame(TEXT_FIRST, 30_000),
                    frame(PING, 4),
                    frame(CONT, 20_000),
                    frame(CONT_LAST, 10_000),
                ]
                .concat(),
                true,
            ),
            (
                "fragments over",
                [
                    frame(TEXT_FIRST, 30_000),
                    frame(CONT, 20_000),
                    frame(CONT_LAST, 10_001),
                ]
                .concat(),
                false,
            ),
            // TC4: a new message resets the count
            (
                "after fragments",
                [
                    frame(TEXT_FIRST, 50_000),
                    frame(CONT_LAST, 10_000),
                    frame(TEXT, 60_000),
                ]
                .concat(),
                true,
            ),
        ];
        for (name, bytes, accepted) in cases {
            for step in [1, 2, 3, 7, 13, 1024, bytes.len()] {
                assert_eq!(
                    feed_in_steps(limit, &bytes, step),
                    accepted,
                    "{name}, chunks of {step}"
                );
            }
        }
    }

    #[test]
    fn refuses_a_message_by_its_header_before_any_payload() {
        let mut meter = FrameMeter::new(1_000);
        assert_eq!(meter.feed(&header(TEXT, 1_001)), Err(Refusal::TooBig));
    }

    #[test]
    fn refuses_reserved_bits_on_any_frame() {
        // TC0: RSV1, RSV2, RSV3 on a text frame, RSV1 on a continuation and a ping
        for first in [
            TEXT | 0x40,
            TEXT | 0x20,
            TEXT | 0x10,
            CONT_LAST | 0x40,
            PING | 0x40,
        ] {
            let mut meter = FrameMeter::new(1_000);
            assert_eq!(
                meter.feed(&frame(first, 5)),
                Err(Refusal::ReservedBits),
                "{first:#x}"
            );
        }
        // TC1: none set
        assert_eq!(FrameMeter::new(1_000).feed(&frame(TEXT, 5)), Ok(()));
    }
}
