//! The schemas of the request and response bodies a derive cannot write: the cross-field rules
//! of the order and trade bodies (`oneOf` beside `properties`, `const`) and the bodies the
//! handlers write as JSON values. A leaf: it knows no handler.

use std::borrow::Cow;

use cryptobot_domain::openapi::nullable;
pub(super) use cryptobot_domain::openapi::{ClientOrderIdText, PositiveDecimalText, SymbolText};
use serde_json::{Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{ObjectBuilder, Schema};
use utoipa::{PartialSchema, ToSchema};

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

/// `GET /livez`'s body.
#[derive(Debug, Clone, Copy)]
pub(super) struct LivenessBody;

impl PartialSchema for LivenessBody {
    fn schema() -> RefOr<Schema> {
        schema_of(json!({
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string", "const": "ok"}}
        }))
    }
}

/// `GET /readyz`'s body: one entry per check this node's role has.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReadinessBody;

impl PartialSchema for ReadinessBody {
    fn schema() -> RefOr<Schema> {
        schema_of(json!({
            "type": "object",
            "required": ["status", "role", "checks"],
            "properties": {
                "status": {"type": "string", "enum": ["ready", "not_ready"]},
                "role": {"type": "string", "enum": ["all", "engine", "gateway"]},
                "checks": {
                    "type": "object",
                    "required": ["engine"],
                    "properties": {
                        "engine": {"type": "string", "description": "ok, or why not: unavailable, timeout, no engine alive (gateway)"},
                        "broker": {"type": "string", "description": "with bus.backend = redis: ok or disconnected"},
                        "feed": {"type": "string", "description": "engine and all: ok, disconnected or stale"},
                        "storage": {"type": "string", "description": "engine and all: ok, timeout, or the write's error"}
                    }
                }
            }
        }))
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

/// A stop-loss or take-profit level: a positive decimal, or `null` to clear it.
#[derive(Debug, Clone, Copy)]
pub(super) struct LevelSchema;

impl PartialSchema for LevelSchema {
    fn schema() -> RefOr<Schema> {
        nullable::<PositiveDecimalText>()
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

/// The body of `GET /api/v1/openapi.json`: an OpenAPI document.
#[derive(Debug, Clone, Copy)]
pub(super) struct OpenApiBody;

impl PartialSchema for OpenApiBody {
    fn schema() -> RefOr<Schema> {
        schema_of(json!({"type": "object", "required": ["openapi", "paths"]}))
    }
}

impl ToSchema for OpenApiBody {}

/// The component names of the schemas above, the wire types they describe.
macro_rules! schema_names {
    ($($schema:ident: $name:literal),* $(,)?) => {$(
        impl ToSchema for $schema {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    )*};
}

schema_names! {
    HealthBody: "Health",
    LivenessBody: "Liveness",
    ReadinessBody: "Readiness",
    TradeInputSchema: "TradeInput",
    LevelSchema: "Level",
    PositionUpdateInputSchema: "PositionUpdateInput",
    OrderInputSchema: "OrderInput",
}
