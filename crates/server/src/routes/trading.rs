//! `GET /portfolio`, `GET|POST /trades`, `PATCH /positions/{symbol}`.

use actix_web::{HttpResponse, web};
use cryptobot_domain::{
    ClientOrderId, OrderSize, PositionUpdate, Side, Symbol, Trade, TradeOrigin, TradeRequest,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::state::AppState;

/// Default and largest `limit` of `GET /trades`.
const DEFAULT_TRADES_LIMIT: usize = 50;
const MAX_TRADES_LIMIT: usize = 1000;

/// Returns cash and positions valued at the latest prices.
pub(super) async fn portfolio(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.portfolio.summary().await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TradesQuery {
    limit: Option<usize>,
}

/// Returns the most recent trades, newest first.
pub(super) async fn recent_trades(
    state: web::Data<AppState>,
    query: web::Query<TradesQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_TRADES_LIMIT);
    if !(1..=MAX_TRADES_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest {
            code: "invalid_limit",
            message: format!("limit must be between 1 and {MAX_TRADES_LIMIT}"),
        });
    }
    Ok(HttpResponse::Ok().json(state.trade.recent_trades(limit).await?))
}

/// Body of `POST /trades`: exactly one of `quantity` (base asset) or `amount` (quote asset).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TradeBody {
    symbol: String,
    side: Side,
    #[serde(default, with = "rust_decimal::serde::str_option")]
    quantity: Option<Decimal>,
    #[serde(default, with = "rust_decimal::serde::str_option")]
    amount: Option<Decimal>,
    client_order_id: Option<String>,
}

#[derive(Debug, Serialize)]
struct TradeResponse {
    trade: Trade,
    /// True when this repeats an earlier `client_order_id` and nothing was executed now.
    replayed: bool,
    /// False when the command carried no `client_order_id`, so a retry would trade again.
    idempotent: bool,
}

/// Executes a manual market order. 201 for a new trade, 200 for a replayed one.
pub(super) async fn create_trade(
    state: web::Data<AppState>,
    body: web::Json<TradeBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let size = match (body.quantity, body.amount) {
        (Some(quantity), None) => OrderSize::Quantity(quantity),
        (None, Some(amount)) => OrderSize::Amount(amount),
        _ => {
            return Err(ApiError::BadRequest {
                code: "invalid_payload",
                message: "give exactly one of quantity or amount".into(),
            });
        }
    };
    let client_order_id = body
        .client_order_id
        .as_deref()
        .map(ClientOrderId::parse)
        .transpose()?;
    let idempotent = client_order_id.is_some();
    let request = TradeRequest::new(
        Symbol::parse(&body.symbol)?,
        body.side,
        size,
        client_order_id,
        TradeOrigin::Manual,
    )?;
    let execution = state.trade.execute(request).await?;
    let mut response = if execution.replayed {
        HttpResponse::Ok()
    } else {
        HttpResponse::Created()
    };
    Ok(response.json(TradeResponse {
        trade: execution.trade,
        replayed: execution.replayed,
        idempotent,
    }))
}

/// Sets or clears a position's stop-loss and take-profit.
pub(super) async fn update_position(
    state: web::Data<AppState>,
    symbol: web::Path<String>,
    body: web::Json<PositionUpdate>,
) -> Result<HttpResponse, ApiError> {
    let symbol = Symbol::parse(&symbol)?;
    let position = state
        .portfolio
        .update_position(symbol, body.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(position))
}
