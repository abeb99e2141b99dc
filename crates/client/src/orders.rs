//! Resting orders as the client builds them: constructors of the domain's [`OrderRequest`] that
//! set an idempotency key, the payloads of the order commands, and their replies.

use cryptobot_domain::{
    DomainError, Order, OrderFields, OrderInput, OrderQuery, OrderRef, OrderRequest, OrderSize,
    OrderType, Side, Symbol, TimeInForce,
};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::{ClientError, generate_client_order_id};

/// Constructors of [`OrderRequest`] for `place_order`, each with a fresh `client_order_id`, so
/// that placing the same value again (after [`ClientError::Timeout`] or `unavailable`) returns the
/// same order instead of placing a second one. Bring the trait into scope and write
/// `OrderRequest::limit(..)?`. Each checks the order as the server does
/// ([`OrderRequest::new`]): a request that cannot be placed is never built.
///
/// # Errors
/// [`DomainError`] for a zero or negative size or price, or an option the type does not take
/// (`time_in_force` other than GTC on a non-limit order, `post_only` on anything but a GTC
/// limit order); it converts into [`ClientError::InvalidRequest`].
pub trait NewOrder: Sized {
    /// A market order of `size` (a quote amount for buys only).
    fn market(symbol: Symbol, side: Side, size: OrderSize) -> Result<Self, DomainError>;
    /// A GTC limit order of `quantity` at `price`.
    fn limit(
        symbol: Symbol,
        side: Side,
        quantity: Decimal,
        price: Decimal,
    ) -> Result<Self, DomainError>;
    /// A stop-market order: fills at the last price once it reaches `stop_price`.
    fn stop_market(
        symbol: Symbol,
        side: Side,
        quantity: Decimal,
        stop_price: Decimal,
    ) -> Result<Self, DomainError>;
    /// A stop-limit order: rests at `price` once the last price reaches `stop_price`.
    fn stop_limit(
        symbol: Symbol,
        side: Side,
        quantity: Decimal,
        stop_price: Decimal,
        price: Decimal,
    ) -> Result<Self, DomainError>;
    /// The same order with another time in force (`IOC`, `FOK`; limit orders only).
    fn time_in_force(self, time_in_force: TimeInForce) -> Result<Self, DomainError>;
    /// The same order, refused instead of filled on placing (GTC limit orders only).
    fn post_only(self) -> Result<Self, DomainError>;
}

impl NewOrder for OrderRequest {
    fn market(symbol: Symbol, side: Side, size: OrderSize) -> Result<Self, DomainError> {
        request(symbol, side, OrderType::Market, size, None, None)
    }

    fn limit(
        symbol: Symbol,
        side: Side,
        quantity: Decimal,
        price: Decimal,
    ) -> Result<Self, DomainError> {
        let size = OrderSize::Quantity(quantity);
        request(symbol, side, OrderType::Limit, size, Some(price), None)
    }

    fn stop_market(
        symbol: Symbol,
        side: Side,
        quantity: Decimal,
        stop_price: Decimal,
    ) -> Result<Self, DomainError> {
        let size = OrderSize::Quantity(quantity);
        request(
            symbol,
            side,
            OrderType::StopMarket,
            size,
            None,
            Some(stop_price),
        )
    }

    fn stop_limit(
        symbol: Symbol,
        side: Side,
        quantity: Decimal,
        stop_price: Decimal,
        price: Decimal,
    ) -> Result<Self, DomainError> {
        let size = OrderSize::Quantity(quantity);
        request(
            symbol,
            side,
            OrderType::StopLimit,
            size,
            Some(price),
            Some(stop_price),
        )
    }

    fn time_in_force(self, time_in_force: TimeInForce) -> Result<Self, DomainError> {
        let mut fields = OrderFields::clone(&self);
        fields.time_in_force = time_in_force;
        Self::new(fields)
    }

    fn post_only(self) -> Result<Self, DomainError> {
        let mut fields = OrderFields::clone(&self);
        fields.post_only = true;
        Self::new(fields)
    }
}

fn request(
    symbol: Symbol,
    side: Side,
    order_type: OrderType,
    size: OrderSize,
    price: Option<Decimal>,
    stop_price: Option<Decimal>,
) -> Result<OrderRequest, DomainError> {
    OrderRequest::new(OrderFields {
        symbol,
        side,
        order_type,
        size,
        price,
        stop_price,
        time_in_force: TimeInForce::Gtc,
        post_only: false,
        client_order_id: Some(generate_client_order_id()),
    })
}

/// The answer to a `place_order`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderPlacement {
    /// The order as it stands after placing: `new` (resting), or already `filled`, `expired`
    /// or `rejected`.
    pub order: Order,
    /// True when the `client_order_id` had already placed this order: this is that order now.
    pub replayed: bool,
}

/// The `place_order` payload: the wire form of `request`, with a key generated when it has none
/// (so that the client's own resend after a reconnect places it once).
pub(crate) fn place_payload(request: &OrderRequest) -> Value {
    let mut input = OrderInput::from(request);
    if input.client_order_id.is_none() {
        input.client_order_id = Some(generate_client_order_id().to_string());
    }
    // expect: OrderInput is plain strings, enums and options.
    serde_json::to_value(input).expect("an order input serializes")
}

/// The `cancel_order` payload.
pub(crate) fn cancel_payload(order: &OrderRef) -> Value {
    match order {
        OrderRef::Id(id) => serde_json::json!({ "order_id": id }),
        OrderRef::ClientOrderId(key) => serde_json::json!({ "client_order_id": key.as_str() }),
    }
}

/// The `list_orders` payload: the query's fields, `limit` always included.
pub(crate) fn list_payload(query: &OrderQuery) -> Value {
    // expect: OrderQuery is numbers, strings and enums.
    serde_json::to_value(query).expect("an order query serializes")
}

/// `field` of a reply's payload (the whole payload when `field` is `None`); `null` if absent.
pub(crate) fn reply_field(reply: &Value, field: Option<&str>) -> Value {
    let payload = reply.get("payload").unwrap_or(&Value::Null);
    field
        .map_or(Some(payload), |field| payload.get(field))
        .cloned()
        .unwrap_or(Value::Null)
}

/// A reply's value that is not what `kind` carries, as the client's error.
pub(crate) fn unexpected(kind: &str, err: &serde_json::Error) -> ClientError {
    ClientError::Protocol(format!("{kind}: {err}"))
}

/// Applies order updates that came before an `open_orders` snapshot with a larger `seq` to it,
/// so the snapshot is the state as of the last of them.
pub(crate) fn patch_open_orders(open: &mut Vec<Order>, newer: impl IntoIterator<Item = Order>) {
    for order in newer {
        open.retain(|known| known.id != order.id);
        if order.status.is_open() {
            open.push(order);
        }
    }
    open.sort_by_key(|order| order.id);
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::{ClientOrderId, OrderStatus, StatusFilter};
    use serde_json::json;

    use super::*;

    fn btc() -> Symbol {
        Symbol::parse("BTCUSDT").unwrap()
    }

    #[test]
    fn constructors_carry_fresh_keys_and_the_documented_payload() {
        let qty: Decimal = "0.01".parse().unwrap();
        let price: Decimal = "61750.00".parse().unwrap();
        // TC0: a limit order, as docs/protocol.md shows it
        let limit = OrderRequest::limit(btc(), Side::Buy, qty, price).unwrap();
        let again = OrderRequest::limit(btc(), Side::Buy, qty, price).unwrap();
        assert_ne!(limit.client_order_id, again.client_order_id);
        let key = limit.client_order_id.clone().unwrap();
        assert_eq!(
            place_payload(&limit),
            json!({"symbol":"BTCUSDT","side":"buy","type":"limit","quantity":"0.01",
                   "price":"61750.00","time_in_force":"GTC","post_only":false,
                   "client_order_id":key.as_str()})
        );
        // TC1: a stop-limit sell, IOC and post-only set by the modifiers
        let stop = OrderRequest::stop_limit(btc(), Side::Sell, qty, price, price).unwrap();
        assert_eq!(place_payload(&stop)["stop_price"], "61750.00");
        assert_eq!(place_payload(&stop)["type"], "stop_limit");
        let ioc = OrderRequest::limit(btc(), Side::Buy, qty, price)
            .unwrap()
            .time_in_force(TimeInForce::Ioc)
            .unwrap();
        assert_eq!(place_payload(&ioc)["time_in_force"], "IOC");
        assert_eq!(
            place_payload(&limit.post_only().unwrap())["post_only"],
            true
        );
        // TC2: a market buy by amount; a request without a key gets one
        let market = OrderRequest::market(btc(), Side::Buy, OrderSize::Amount(Decimal::from(100)))
            .unwrap()
            .with_client_order_id(None);
        let payload = place_payload(&market);
        assert_eq!(payload["amount"], "100");
        assert!(ClientOrderId::parse(payload["client_order_id"].as_str().unwrap()).is_ok());
        // TC3: what the server would refuse is not built, with the server's code
        let zero = OrderRequest::limit(btc(), Side::Buy, qty, Decimal::ZERO).unwrap_err();
        assert_eq!(zero.code(), "invalid_size");
        let stop = OrderRequest::stop_market(btc(), Side::Sell, qty, price).unwrap();
        assert_eq!(stop.post_only().unwrap_err().code(), "invalid_order");
        let err = ClientError::from(zero);
        assert!(err.is_fatal(), "{err}");
    }

    #[test]
    fn cancel_and_list_payloads_are_the_documented_ones() {
        assert_eq!(cancel_payload(&OrderRef::Id(99)), json!({"order_id": 99}));
        let key = ClientOrderId::parse("ws-o2").unwrap();
        assert_eq!(
            cancel_payload(&OrderRef::ClientOrderId(key)),
            json!({"client_order_id": "ws-o2"})
        );
        let mut query = OrderQuery::latest(1);
        query.status = Some(StatusFilter::Open);
        assert_eq!(list_payload(&query), json!({"status": "open", "limit": 1}));
        query.status = Some(StatusFilter::Is(OrderStatus::Filled));
        query.symbol = Some(btc());
        assert_eq!(
            list_payload(&query),
            json!({"status": "filled", "symbol": "BTCUSDT", "limit": 1})
        );
    }
}
