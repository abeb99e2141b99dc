//! The Binance spot combined-stream wire format: subscribe requests out, stream frames in, and
//! their mapping to [`Ticker`]s with exact decimals (the exchange's strings never become floats).

use chrono::{DateTime, Utc};
use cryptobot_domain::{Symbol, Ticker};
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::market::BinanceStream;

/// One message received on a combined-stream connection, as far as the feed cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Frame {
    /// A market update.
    Update(Update),
    /// The answer to a request, e.g. `{"result":null,"id":1}`.
    Reply {
        /// Id of the request.
        id: Option<u64>,
    },
    /// An error answer, e.g. `{"error":{"code":2,"msg":"Invalid request"},"id":1}`.
    Error {
        /// The exchange's description.
        message: String,
    },
}

/// A market update of one symbol, parsed but not yet merged into a [`Ticker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Update {
    /// The pair, as the exchange spells it.
    pub symbol: String,
    /// Last price (`c`); absent on `bookTicker`.
    pub last: Option<Decimal>,
    /// Best bid (`b`).
    pub bid: Decimal,
    /// Best ask (`a`).
    pub ask: Decimal,
    /// 24 h base volume (`v`); absent on `bookTicker`.
    pub volume: Option<Decimal>,
    /// 24 h change in percent (`P`); absent on `bookTicker`.
    pub change_pct: Option<Decimal>,
    /// Event time (`E`, ms since the epoch), when given.
    pub event_time: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct RawFrame {
    stream: Option<String>,
    data: Option<RawData>,
    id: Option<u64>,
    #[serde(default)]
    result: Option<serde_json::Value>,
    error: Option<RawError>,
}

#[derive(Deserialize)]
struct RawError {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    msg: Option<String>,
}

#[derive(Deserialize)]
struct RawData {
    #[serde(rename = "s")]
    symbol: String,
    #[serde(rename = "c")]
    last: Option<String>,
    #[serde(rename = "b")]
    bid: String,
    #[serde(rename = "a")]
    ask: String,
    #[serde(rename = "v")]
    volume: Option<String>,
    #[serde(rename = "P")]
    change_pct: Option<String>,
    #[serde(rename = "E")]
    event_time_ms: Option<i64>,
}

/// Builds the stream name of a symbol, e.g. `btcusdt@ticker`.
pub(super) fn stream_name(symbol: &Symbol, stream: BinanceStream) -> String {
    format!(
        "{}@{}",
        symbol.as_str().to_ascii_lowercase(),
        stream.suffix()
    )
}

/// Builds a `SUBSCRIBE` request.
pub(super) fn subscribe_request(streams: &[String], id: u64) -> String {
    serde_json::json!({ "method": "SUBSCRIBE", "params": streams, "id": id }).to_string()
}

/// Parses one text frame.
///
/// # Errors
/// A description of what is wrong, for the log: not JSON, neither update nor reply, a field that is
/// not a decimal, a non-positive price.
pub(super) fn parse_frame(text: &str) -> Result<Frame, String> {
    let raw: RawFrame = serde_json::from_str(text).map_err(|e| format!("not a frame: {e}"))?;
    if let Some(error) = raw.error {
        return Ok(Frame::Error {
            message: format!(
                "code {}: {}",
                error.code.unwrap_or_default(),
                error.msg.unwrap_or_default()
            ),
        });
    }
    match (raw.stream, raw.data) {
        (Some(_), Some(data)) => parse_data(data).map(Frame::Update),
        (None, None) if raw.id.is_some() || raw.result.is_some() => Ok(Frame::Reply { id: raw.id }),
        _ => Err("neither a stream update nor a reply".to_owned()),
    }
}

fn parse_data(raw: RawData) -> Result<Update, String> {
    let decimal = |field: &str, text: &str| {
        text.parse::<Decimal>()
            .map_err(|_| format!("{field}: {text:?} is not a decimal"))
    };
    let optional = |field: &str, text: Option<&String>| text.map(|t| decimal(field, t)).transpose();
    let update = Update {
        last: optional("c", raw.last.as_ref())?,
        bid: decimal("b", &raw.bid)?,
        ask: decimal("a", &raw.ask)?,
        volume: optional("v", raw.volume.as_ref())?,
        change_pct: optional("P", raw.change_pct.as_ref())?,
        event_time: raw
            .event_time_ms
            .map(|ms| {
                DateTime::from_timestamp_millis(ms).ok_or_else(|| format!("E: {ms} out of range"))
            })
            .transpose()?,
        symbol: raw.symbol,
    };
    if update.bid < Decimal::ZERO || update.ask < Decimal::ZERO {
        return Err("negative bid or ask".to_owned());
    }
    if update.last.is_some_and(|last| last <= Decimal::ZERO) {
        return Err("last price is not positive".to_owned());
    }
    Ok(update)
}

impl Update {
    /// Merges the update into the symbol's previous ticker.
    ///
    /// The last price is `c`, or on `bookTicker` (which carries no trades) the mid of bid and ask;
    /// volume and change carry over from `previous` when the stream does not send them, zero
    /// before any. The time is the exchange's event time, or `now` when it sends none.
    ///
    /// Returns `None` when there is no usable price (an empty book on `bookTicker`).
    pub(super) fn into_ticker(
        self,
        symbol: Symbol,
        previous: Option<&Ticker>,
        now: DateTime<Utc>,
    ) -> Option<Ticker> {
        let price = match self.last {
            Some(last) => last,
            None if self.bid > Decimal::ZERO && self.ask > Decimal::ZERO => {
                ((self.bid + self.ask) / Decimal::TWO).normalize()
            }
            None => return None,
        };
        Some(Ticker {
            symbol,
            price,
            bid: self.bid,
            ask: self.ask,
            volume_24h: self
                .volume
                .or_else(|| previous.map(|t| t.volume_24h))
                .unwrap_or_default(),
            change_24h_pct: self
                .change_pct
                .or_else(|| previous.map(|t| t.change_24h_pct))
                .unwrap_or_default(),
            updated_at: self.event_time.unwrap_or(now),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use chrono::TimeZone;

    use super::*;

    fn dec(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    const TICKER: &str = r#"{"stream":"btcusdt@ticker","data":{"e":"24hrTicker","E":1700000000123,"s":"BTCUSDT","p":"120.50","P":"0.185","w":"65000.1","x":"64879.49","c":"65000.12345678","Q":"0.001","b":"64999.99000000","B":"1.2","a":"65000.13000000","A":"0.5","o":"64879.62","h":"65500","l":"64000","v":"12345.67800000","q":"800000000","O":1,"C":2,"F":3,"L":4,"n":5}}"#;

    #[test]
    fn a_ticker_frame_maps_to_exact_decimals() {
        let Frame::Update(update) = parse_frame(TICKER).unwrap() else {
            panic!("not an update");
        };
        let now = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        let ticker = update
            .into_ticker(Symbol::parse("BTCUSDT").unwrap(), None, now)
            .unwrap();
        assert_eq!(ticker.price, dec("65000.12345678"));
        assert_eq!(ticker.price.to_string(), "65000.12345678");
        assert_eq!(ticker.bid.to_string(), "64999.99000000");
        assert_eq!(ticker.ask, dec("65000.13"));
        assert_eq!(ticker.volume_24h, dec("12345.678"));
        assert_eq!(ticker.change_24h_pct, dec("0.185"));
        assert_eq!(ticker.updated_at.timestamp_millis(), 1_700_000_000_123);
    }

    #[test]
    fn a_book_ticker_uses_the_mid_and_keeps_the_previous_volume() {
        let frame = r#"{"stream":"bnbusdt@bookTicker","data":{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21","a":"25.36520000","A":"40.66"}}"#;
        let Frame::Update(update) = parse_frame(frame).unwrap() else {
            panic!("not an update");
        };
        let symbol = Symbol::parse("BNBUSDT").unwrap();
        let now = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        let previous = Ticker {
            symbol: symbol.clone(),
            price: dec("25"),
            bid: dec("25"),
            ask: dec("25"),
            volume_24h: dec("7"),
            change_24h_pct: dec("-1.5"),
            updated_at: now,
        };
        let ticker = update.into_ticker(symbol, Some(&previous), now).unwrap();
        assert_eq!(ticker.price, dec("25.35855"));
        assert_eq!(ticker.volume_24h, dec("7"));
        assert_eq!(ticker.change_24h_pct, dec("-1.5"));
        assert_eq!(ticker.updated_at, now);
    }

    #[test]
    fn replies_and_errors_are_recognised() {
        // TC0: subscribe acknowledged
        assert_eq!(
            parse_frame(r#"{"result":null,"id":3}"#),
            Ok(Frame::Reply { id: Some(3) })
        );
        // TC1: request refused
        assert!(matches!(
            parse_frame(r#"{"error":{"code":2,"msg":"Invalid request"},"id":1}"#),
            Ok(Frame::Error { message }) if message.contains("Invalid request")
        ));
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let cases = [
            // TC0: not JSON
            "not json",
            // TC1: JSON but nothing we know
            r#"{"hello":"world"}"#,
            // TC2: price not a decimal
            r#"{"stream":"x","data":{"s":"BTCUSDT","c":"abc","b":"1","a":"1"}}"#,
            // TC3: a float instead of a string
            r#"{"stream":"x","data":{"s":"BTCUSDT","c":1.5,"b":"1","a":"1"}}"#,
            // TC4: missing bid
            r#"{"stream":"x","data":{"s":"BTCUSDT","c":"1","a":"1"}}"#,
            // TC5: zero price
            r#"{"stream":"x","data":{"s":"BTCUSDT","c":"0","b":"1","a":"1"}}"#,
            // TC6: negative ask
            r#"{"stream":"x","data":{"s":"BTCUSDT","c":"1","b":"1","a":"-1"}}"#,
        ];
        for case in cases {
            assert!(parse_frame(case).is_err(), "{case}");
        }
    }

    #[test]
    fn requests_use_lower_case_stream_names() {
        let symbol = Symbol::parse("ETHBTC").unwrap();
        assert_eq!(stream_name(&symbol, BinanceStream::Ticker), "ethbtc@ticker");
        assert_eq!(
            stream_name(&symbol, BinanceStream::BookTicker),
            "ethbtc@bookTicker"
        );
        assert_eq!(
            subscribe_request(&["ethbtc@ticker".to_owned()], 7),
            r#"{"id":7,"method":"SUBSCRIBE","params":["ethbtc@ticker"]}"#
        );
    }
}
