//! The OpenAPI 3.1 document of the REST API, assembled from the handlers' `#[utoipa::path]`
//! attributes, the error responses (responses.rs) and the body schemas (schemas.rs), built once
//! and served at `/api/v1/openapi.json`. docs/openapi.json is its committed copy (a test keeps
//! them equal).

use std::sync::LazyLock;

use serde_json::{Value, json};
use utoipa::openapi::path::{OperationBuilder, PathItemBuilder};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{HttpMethod, OpenApi as Document, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi};

use super::responses::{
    BadRequest, Conflict, ErrorBody, Forbidden, NotFound, PayloadTooLarge, RateLimited,
    ServerError, Unauthorized, Unavailable, Unprocessable, UnsupportedMediaType, UpgradeRequired,
    WebSocketRefusals,
};
use super::schemas::{
    ClientOrderIdText, HealthBody, LevelSchema, OpenApiBody, OrderInputSchema,
    PositionUpdateInputSchema, PositiveDecimalText, SymbolText, TimeBody, TradeInputSchema,
};

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
        super::health::livez,
        super::health::readyz,
        serve,
        super::market::tickers,
        super::market::ticker,
        super::market::candles,
        super::trading::portfolio,
        super::trading::trades,
        super::trading::create_trade,
        super::trading::update_position,
        super::controls::force_exit,
        super::controls::state,
        super::controls::pause,
        super::controls::resume,
        super::performance::performance,
        super::performance::daily,
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
            cryptobot_domain::Performance,
            cryptobot_domain::PerformanceStats,
            cryptobot_domain::SymbolPerformance,
            cryptobot_domain::DailyProfit,
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
            cryptobot_domain::TradingState,
            cryptobot_domain::BotState,
            super::controls::ExitBody,
            super::controls::ExitResponse,
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
        for (status, response) in WebSocketRefusals::responses() {
            websocket = websocket.response(status, response);
        }
        let mut preflight = OperationBuilder::new()
            .operation_id(Some("websocketPreflight"))
            .summary(Some(
                "The upgrade's checks without the upgrade, for browsers (docs/protocol.md)",
            ))
            .response(
                "204",
                ResponseBuilder::new().description("an upgrade would be admitted now"),
            );
        for (status, response) in WebSocketRefusals::responses() {
            preflight = preflight.response(status, response);
        }
        doc.paths.paths.insert(
            "/api/v1/ws".to_owned(),
            PathItemBuilder::new()
                .operation(HttpMethod::Get, websocket.build())
                .operation(HttpMethod::Post, preflight.build())
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
                &mut item.head,
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
        // One handler serves GET and HEAD; operation ids must still be unique.
        for item in doc.paths.paths.values_mut() {
            if let Some(head) = item.head.as_mut() {
                head.operation_id = head.operation_id.take().map(|id| format!("{id}Head"));
            }
        }
        for path in [
            "/api/v1/health",
            "/api/v1/time",
            "/api/v1/openapi.json",
            "/livez",
            "/readyz",
        ] {
            if let Some(item) = doc.paths.paths.get_mut(path) {
                for operation in [&mut item.get, &mut item.head].into_iter().flatten() {
                    operation.security = Some(vec![SecurityRequirement::default()]);
                }
            }
        }
    }
}

/// Serves [`OPENAPI`].
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "openapi",
    summary = "This document",
    responses(
        (status = 200, description = "the OpenAPI 3.1 document", body = inline(OpenApiBody)),
        RateLimited,
    )
)]
pub(super) async fn serve() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

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
