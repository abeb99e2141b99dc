//! The OpenAPI 3.1 document of the REST API, derived from the handlers' `#[utoipa::path]`
//! attributes and the types' `ToSchema` derives, built once and served at
//! `/api/v1/openapi.json`. docs/openapi.json is its committed copy (a test keeps them equal).

use std::borrow::Cow;
use std::sync::LazyLock;

pub(super) use cryptobot_domain::openapi::{ClientOrderIdText, SymbolText};
use cryptobot_domain::openapi::{PositiveDecimalText, nullable};
use serde_json::{Value, json};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::path::{OperationBuilder, PathItemBuilder};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HttpMethod, OpenApi as Document, Ref, RefOr};
use utoipa::{Modify, OpenApi, PartialSchema, ToResponse, ToSchema};

/// The document, serialized once.
pub static OPENAPI: LazyLock<String> = LazyLock::new(|| {
    // expect: the document is plain maps, strings and numbers.
    serde_json::to_string_pretty(&document()).expect("the OpenAPI document serializes") + "\n"
});

/// The document as a JSON value.
#[must_use]
pub fn document() -> Value {
    let mut value = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    drop_int64_of_u64(&mut value);
    value
}

/// utoipa gives every `u64` the `int64` format, which would cap ids and cursors at `i64::MAX`;
/// the server takes any `u64`, as their `maximum` says.
fn drop_int64_of_u64(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("maximum").and_then(Value::as_u64) == Some(u64::MAX)
                && map.get("format").and_then(Value::as_str) == Some("int64")
            {
                map.remove("format");
            }
            map.values_mut().for_each(drop_int64_of_u64);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_int64_of_u64),
        _ => {}
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cryptobot REST API",
        version = "0.1.0",
        description = "The REST API of cryptobot (docs/api.md is the prose contract). Money, prices and quantities are decimal strings. Every error is {\"error\", \"code\"}. The WebSocket protocol is described by docs/asyncapi.yaml."
    ),
    servers((url = "http://127.0.0.1:8080")),
    paths(
        super::health::health,
        super::health::time,
        super::openapi,
        super::market::tickers,
        super::market::ticker,
        super::market::candles,
        super::trading::portfolio,
        super::trading::trades,
        super::trading::create_trade,
        super::trading::update_position,
        super::orders::list,
        super::orders::place,
        super::orders::cancel_all,
        super::orders::cancel,
        super::orders::cancel_by_client_id,
        super::health::metrics,
    ),
    components(
        schemas(
            ErrorBody,
            SymbolText,
            ClientOrderIdText,
            PositiveDecimalText,
            cryptobot_domain::openapi::DecimalText,
            cryptobot_domain::Side,
            cryptobot_domain::Ticker,
            cryptobot_domain::Trade,
            TradeInputSchema,
            super::trading::TradeResponse,
            LevelSchema,
            PositionUpdateInputSchema,
            cryptobot_domain::Position,
            cryptobot_domain::PositionValuation,
            cryptobot_domain::PortfolioSummary,
            TimeBody,
            HealthBody,
            cryptobot_domain::OrderType,
            cryptobot_domain::TimeInForce,
            cryptobot_domain::OrderStatus,
            cryptobot_domain::Interval,
            cryptobot_domain::Order,
            OrderInputSchema,
            super::orders::PlacedResponse,
            cryptobot_domain::Candle,
        ),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            PayloadTooLarge,
            UnsupportedMediaType,
            Unprocessable,
            RateLimited,
            ServerError,
            Unavailable,
            UpgradeRequired,
        )
    ),
    modifiers(&Contract)
)]
struct ApiDoc;

/// What the derive cannot say: the bearer scheme and the public operations, the WebSocket
/// endpoint (mounted by the gateway crate), the shared `symbol` parameter and the examples.
struct Contract;

impl Modify for Contract {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("needed when auth.mode is not none (docs/security.md)"))
                    .build(),
            ),
        );
        doc.security = Some(vec![
            SecurityRequirement::default(),
            SecurityRequirement::new("bearer", Vec::<String>::new()),
        ]);
        let mut websocket = OperationBuilder::new()
            .operation_id(Some("websocket"))
            .summary(Some(
                "The WebSocket endpoint (docs/protocol.md, docs/asyncapi.yaml)",
            ))
            .response(
                "101",
                ResponseBuilder::new().description("switching protocols"),
            );
        for (status, name) in [
            ("400", BadRequest::response().0),
            ("401", Unauthorized::response().0),
            ("403", Forbidden::response().0),
            ("429", RateLimited::response().0),
            ("503", Unavailable::response().0),
            ("426", UpgradeRequired::response().0),
        ] {
            websocket = websocket.response(status, Ref::from_response_name(name));
        }
        doc.paths.paths.insert(
            "/api/v1/ws".to_owned(),
            PathItemBuilder::new()
                .operation(HttpMethod::Get, websocket.build())
                .build(),
        );
        let examples = [
            (
                "Order",
                json!({"id": 1, "client_order_id": "web-o1", "symbol": "BTCUSDT", "side": "buy", "type": "limit", "quantity": "0.01", "amount": null, "price": "61750.00", "stop_price": null, "time_in_force": "GTC", "post_only": false, "status": "new", "reserved_cash": "618.1175", "reserved_quantity": "0", "trade_id": null, "reason": null, "created_at": "2026-12-01T12:46:17.514837065Z", "updated_at": "2026-12-01T12:46:17.514837065Z"}),
            ),
            (
                "Candle",
                json!({"symbol": "BTCUSDT", "interval": "1m", "open_time": "2026-12-01T13:30:00Z", "open": "65000", "high": "65042.25", "low": "64530.57", "close": "64541.54", "volume": "3.19298730", "closed": false}),
            ),
        ];
        for (name, example) in examples {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(name) {
                object.examples = vec![example];
            }
        }
        // utoipa tags each operation with its module path; the document has no tags.
        for item in doc.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                operation.tags = None;
            }
        }
        for path in ["/api/v1/health", "/api/v1/time", "/api/v1/openapi.json"] {
            if let Some(get) = doc
                .paths
                .paths
                .get_mut(path)
                .and_then(|item| item.get.as_mut())
            {
                get.security = Some(vec![SecurityRequirement::default()]);
            }
        }
    }
}

/// The `{"error", "code"}` body of every refusal.
#[derive(ToSchema)]
#[schema(as = Error)]
#[allow(dead_code, reason = "a schema only: error.rs writes the body")]
struct ErrorBody {
    error: String,
    #[schema(pattern = "^[a-z_]+$")]
    code: String,
}

/// Declares the error responses: each a description, optional headers, and the error body.
macro_rules! error_responses {
    ($($name:ident: $description:literal $(, $header:literal)?;)*) => {$(
        #[doc = concat!("The `", stringify!($name), "` response: ", $description, ".")]
        pub(crate) struct $name;

        impl<'s> ToResponse<'s> for $name {
            fn response() -> (&'s str, RefOr<Response>) {
                (stringify!($name), error_response($description, &[$($header)?]).into())
            }
        }
    )*};
}

error_responses! {
    BadRequest: "invalid_json, invalid_payload, invalid_query, invalid_decimal, invalid_limit, invalid_path, invalid_symbol, invalid_client_order_id, invalid_upgrade (GET /api/v1/ws without the upgrade headers), subprotocol_required";
    Unauthorized: "unauthorized: a token is missing or invalid", "WWW-Authenticate";
    Forbidden: "forbidden: the token lacks the scope";
    NotFound: "unknown_symbol, no_position, unknown_order, not_found";
    Conflict: "duplicate_client_order_id, order_not_open, post_only_would_cross, too_many_orders";
    PayloadTooLarge: "payload_too_large: body over 16 KiB";
    UnsupportedMediaType: "unsupported_media_type: body not application/json";
    Unprocessable: "invalid_size, invalid_levels, invalid_order, order_too_small, insufficient_funds, insufficient_position";
    RateLimited: "rate_limited", "Retry-After";
    ServerError: "storage_error, internal";
    Unavailable: "no_price, unavailable, too_many_connections";
    UpgradeRequired: "invalid_upgrade: a WebSocket version other than 13";
}

fn error_response(description: &str, headers: &[&str]) -> Response {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(ErrorBody::name())))
            .build(),
    );
    for name in headers {
        response = response.header(
            *name,
            utoipa::openapi::HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .build(),
        );
    }
    response.build()
}

/// `GET /api/v1/time`'s body (health.rs writes it).
#[derive(ToSchema)]
#[schema(as = Time)]
#[allow(dead_code, reason = "a schema only")]
pub(super) struct TimeBody {
    #[schema(format = DateTime)]
    server_time: String,
    timestamp: i64,
    ts_us: i64,
}

/// `GET /api/v1/health`'s body (health.rs writes it).
#[derive(Debug, Clone, Copy)]
pub(super) struct HealthBody;

impl PartialSchema for HealthBody {
    fn schema() -> RefOr<Schema> {
        schema_of(json!({
            "type": "object",
            "required": ["status", "version", "uptime_secs", "role", "market", "trading_engine"],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "degraded"]},
                "version": {"type": "string"},
                "uptime_secs": {"type": "integer", "minimum": 0},
                "role": {"type": "string", "enum": ["all", "engine", "gateway"]},
                "market": {"type": "object", "required": ["source", "symbols", "priced_symbols", "feed"]},
                "trading_engine": {"type": "string", "enum": ["ok", "unavailable"]},
                "broker": {"type": "object", "required": ["connected"], "properties": {"connected": {"type": "boolean"}}}
            }
        }))
    }
}

impl ToSchema for HealthBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Health")
    }
}

/// A schema from its JSON (for the rules a derive cannot express: `oneOf` beside `properties`,
/// `const`); keys utoipa has no field for are kept as extensions, which serialize in place.
fn schema_of(value: Value) -> RefOr<Schema> {
    let Value::Object(mut map) = value else {
        return ObjectBuilder::new().into();
    };
    let mut extra = Extensions::default();
    for key in ["oneOf", "const", "allOf"] {
        if let Some(value) = map.remove(key) {
            extra.insert(key.to_owned(), value);
        }
    }
    let mut schema: Schema = serde_json::from_value(Value::Object(map))
        .unwrap_or_else(|_| ObjectBuilder::new().build().into());
    if let Schema::Object(object) = &mut schema
        && !extra.is_empty()
    {
        object
            .extensions
            .get_or_insert_with(Extensions::default)
            .merge(extra);
    }
    schema.into()
}

fn schema_ref<T: ToSchema>() -> Value {
    json!({ "$ref": format!("#/components/schemas/{}", T::name()) })
}

fn or_null<T: ToSchema>() -> Value {
    serde_json::to_value(nullable::<T>()).unwrap_or_default()
}

/// `POST /api/v1/trades`'s body (`cryptobot_domain::TradeInput`): exactly one of the sizes.
#[derive(Debug, Clone, Copy)]
pub(super) struct TradeInputSchema;

impl PartialSchema for TradeInputSchema {
    fn schema() -> RefOr<Schema> {
        let positive = schema_ref::<PositiveDecimalText>();
        let one_size = |size: &str, other: &str| {
            json!({
                "properties": {size: positive, other: {"type": "null"}},
                "required": [size]
            })
        };
        schema_of(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["symbol", "side"],
            "properties": {
                "symbol": schema_ref::<SymbolText>(),
                "side": schema_ref::<cryptobot_domain::Side>(),
                "quantity": or_null::<PositiveDecimalText>(),
                "amount": or_null::<PositiveDecimalText>(),
                "client_order_id": or_null::<ClientOrderIdText>()
            },
            "oneOf": [one_size("quantity", "amount"), one_size("amount", "quantity")],
            "description": "exactly one of quantity and amount; an optional field given as null is the same as left out"
        }))
    }
}

impl ToSchema for TradeInputSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("TradeInput")
    }
}

/// A stop-loss or take-profit level: a positive decimal, or `null` to clear it.
#[derive(Debug, Clone, Copy)]
struct LevelSchema;

impl PartialSchema for LevelSchema {
    fn schema() -> RefOr<Schema> {
        nullable::<PositiveDecimalText>()
    }
}

impl ToSchema for LevelSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Level")
    }
}

/// `PATCH /api/v1/positions/{symbol}`'s body (`cryptobot_domain::PositionUpdateInput`).
#[derive(Debug, Clone, Copy)]
pub(super) struct PositionUpdateInputSchema;

impl PartialSchema for PositionUpdateInputSchema {
    fn schema() -> RefOr<Schema> {
        schema_of(json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "stop_loss": schema_ref::<LevelSchema>(),
                "take_profit": schema_ref::<LevelSchema>()
            }
        }))
    }
}

impl ToSchema for PositionUpdateInputSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("PositionUpdateInput")
    }
}

/// `POST /api/v1/orders`'s body (`cryptobot_domain::OrderInput`), with the rules of
/// `OrderInput::into_request` between the type and the fields as one branch per valid shape.
#[derive(Debug, Clone, Copy)]
pub(super) struct OrderInputSchema;

/// One valid shape of an order: its type (and side), the fields it forbids (null), the
/// `time_in_force` values it takes, whether `post_only` is free, and the decimals it needs.
struct Shape {
    kind: &'static str,
    side: Option<&'static str>,
    forbidden: &'static [&'static str],
    time_in_force: &'static [Option<&'static str>],
    post_only_free: bool,
    needed: &'static [&'static str],
}

const GTC: &[Option<&str>] = &[Some("GTC"), None];

const SHAPES: [Shape; 6] = [
    Shape {
        kind: "market",
        side: None,
        forbidden: &["amount", "price", "stop_price"],
        time_in_force: GTC,
        post_only_free: false,
        needed: &["quantity"],
    },
    Shape {
        kind: "market",
        side: Some("buy"),
        forbidden: &["quantity", "price", "stop_price"],
        time_in_force: GTC,
        post_only_free: false,
        needed: &["amount"],
    },
    Shape {
        kind: "limit",
        side: None,
        forbidden: &["amount", "stop_price"],
        time_in_force: GTC,
        post_only_free: true,
        needed: &["quantity", "price"],
    },
    Shape {
        kind: "limit",
        side: None,
        forbidden: &["amount", "stop_price"],
        time_in_force: &[Some("IOC"), Some("FOK")],
        post_only_free: false,
        needed: &["quantity", "price"],
    },
    Shape {
        kind: "stop_market",
        side: None,
        forbidden: &["amount", "price"],
        time_in_force: GTC,
        post_only_free: false,
        needed: &["quantity", "stop_price"],
    },
    Shape {
        kind: "stop_limit",
        side: None,
        forbidden: &["amount"],
        time_in_force: GTC,
        post_only_free: false,
        needed: &["quantity", "price", "stop_price"],
    },
];

impl Shape {
    fn branch(&self) -> Value {
        let mut properties = serde_json::Map::new();
        properties.insert("type".into(), json!({ "const": self.kind }));
        if let Some(side) = self.side {
            properties.insert("side".into(), json!({ "const": side }));
        }
        for field in self.forbidden {
            properties.insert((*field).into(), json!({"type": "null"}));
        }
        properties.insert(
            "time_in_force".into(),
            json!({ "enum": self.time_in_force }),
        );
        if !self.post_only_free {
            properties.insert("post_only".into(), json!({"enum": [false, null]}));
        }
        for field in self.needed {
            properties.insert((*field).into(), schema_ref::<PositiveDecimalText>());
        }
        let mut required: Vec<&str> = self.needed.to_vec();
        if !self.time_in_force.contains(&None) {
            required.push("time_in_force");
        }
        json!({ "properties": properties, "required": required })
    }
}

impl PartialSchema for OrderInputSchema {
    fn schema() -> RefOr<Schema> {
        let positive = or_null::<PositiveDecimalText>();
        schema_of(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["symbol", "side", "type"],
            "properties": {
                "symbol": schema_ref::<SymbolText>(),
                "side": schema_ref::<cryptobot_domain::Side>(),
                "type": schema_ref::<cryptobot_domain::OrderType>(),
                "quantity": positive,
                "amount": positive,
                "price": positive,
                "stop_price": positive,
                "time_in_force": {
                    "oneOf": [schema_ref::<cryptobot_domain::TimeInForce>(), {"type": "null"}],
                    "default": "GTC"
                },
                "post_only": {"type": ["boolean", "null"], "default": false},
                "client_order_id": or_null::<ClientOrderIdText>()
            },
            "description": "exactly one of quantity and amount (amount for market buys only); price for limit and stop_limit only, stop_price for stop_market and stop_limit only; time_in_force other than GTC for limit orders only; post_only true for GTC limit orders only; an optional field given as null is the same as left out (else invalid_payload or 422 invalid_order)",
            "oneOf": SHAPES.iter().map(Shape::branch).collect::<Vec<_>>(),
            "examples": [{"symbol": "BTCUSDT", "side": "buy", "type": "limit", "quantity": "0.01", "price": "61750.00", "client_order_id": "web-o1"}]
        }))
    }
}

impl ToSchema for OrderInputSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("OrderInput")
    }
}

/// The body of `GET /api/v1/openapi.json`: an OpenAPI document.
#[derive(Debug, Clone, Copy)]
pub(super) struct OpenApiBody;

impl PartialSchema for OpenApiBody {
    fn schema() -> RefOr<Schema> {
        schema_of(json!({"type": "object", "required": ["openapi", "paths"]}))
    }
}

impl ToSchema for OpenApiBody {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_has_every_mounted_route_and_nothing_else() {
        let doc = document();
        let mut documented: Vec<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(|method| (method.to_ascii_uppercase(), path.clone()))
            })
            .collect();
        documented.sort();
        let mut mounted = super::super::mounted_routes();
        // Mounted by the gateway crate (served, tests/integration/openapi.rs).
        mounted.push(("GET".into(), "/api/v1/ws".into()));
        mounted.sort();
        assert_eq!(documented, mounted);
        // Every operation answers its errors with the one error body.
        for (name, response) in doc["components"]["responses"].as_object().unwrap() {
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/Error",
                "{name}"
            );
        }
    }

    const COMMITTED: &str = "../../docs/openapi.json";

    #[test]
    fn the_committed_document_is_the_generated_one() {
        // Regenerate with: UPDATE_OPENAPI=1 cargo test -p cryptobot-server --lib openapi
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(COMMITTED);
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, OPENAPI.as_str()).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap();
        assert!(
            committed == *OPENAPI,
            "docs/openapi.json differs from the code's document: regenerate it with \
             UPDATE_OPENAPI=1 cargo test -p cryptobot-server --lib openapi"
        );
    }
}
