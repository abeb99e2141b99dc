//! `GET /tickers`, `GET /tickers/{symbol}` and `GET /candles/{symbol}`.

use actix_web::{HttpResponse, web};
use cryptobot_domain::Symbol;

use super::responses::{Backend, BadRequest, Guarded, NotFound, Unavailable};
use crate::error::ApiError;
use crate::state::AppState;

/// Returns the latest ticker of every configured symbol.
#[utoipa::path(
    get,
    path = "/api/v1/tickers",
    operation_id = "tickers",
    summary = "The latest ticker of every symbol, in market.symbols order",
    responses(
        (status = 200, description = "tickers", body = [cryptobot_domain::Ticker]),
        Guarded,
    )
)]
pub(super) async fn tickers(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.market.tickers().await)
}

/// Returns the latest ticker of one symbol.
#[utoipa::path(
    get,
    path = "/api/v1/tickers/{symbol}",
    operation_id = "ticker",
    summary = "The latest ticker of one symbol",
    params(("symbol" = super::schemas::SymbolText, Path)),
    responses(
        (status = 200, description = "the ticker", body = cryptobot_domain::Ticker),
        Guarded, BadRequest, NotFound, Unavailable,
    )
)]
pub(super) async fn ticker(
    state: web::Data<AppState>,
    symbol: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let symbol = Symbol::parse(&symbol)?;
    Ok(HttpResponse::Ok().json(state.market.ticker(&symbol).await?))
}

/// Query of `GET /candles/{symbol}`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct CandlesQuery {
    #[param(value_type = Option<cryptobot_domain::Interval>, default = "1m")]
    interval: Option<String>,
    #[param(minimum = 1, maximum = 1000, default = 500)]
    limit: Option<usize>,
    /// Only candles opened before this time (exclusive).
    #[param(format = DateTime)]
    end: Option<String>,
}

/// Returns candle history of one symbol, oldest first (the newest last, the open candle included
/// when `end` is not given): at most `limit` (1-1000, default 500) candles of `interval` (`1m`,
/// `5m`, `1h`, `1d`; default `1m`) opened before `end` (RFC 3339, exclusive).
#[utoipa::path(
    get,
    path = "/api/v1/candles/{symbol}",
    operation_id = "candles",
    summary = "OHLCV candle history of one symbol, oldest first (the open candle last when end is not given)",
    params(("symbol" = super::schemas::SymbolText, Path), CandlesQuery),
    responses(
        (status = 200, description = "candles, oldest first", body = [cryptobot_domain::Candle]),
        Guarded, BadRequest, NotFound, Backend,
    )
)]
pub(super) async fn candles(
    state: web::Data<AppState>,
    symbol: web::Path<String>,
    query: web::Query<CandlesQuery>,
) -> Result<HttpResponse, ApiError> {
    use cryptobot_services::market::CandleQuery;
    use cryptobot_services::market::candles::{DEFAULT_CANDLES_LIMIT, MAX_CANDLES_LIMIT};
    let symbol = Symbol::parse(&symbol)?;
    let query = query.into_inner();
    let interval = match query.interval.as_deref() {
        None => cryptobot_domain::Interval::M1,
        Some(name) => {
            cryptobot_domain::Interval::from_name(name).ok_or_else(|| ApiError::BadRequest {
                code: "invalid_query",
                message: "interval must be 1m, 5m, 1h or 1d".to_owned(),
            })?
        }
    };
    let limit = query.limit.unwrap_or(DEFAULT_CANDLES_LIMIT);
    if !(1..=MAX_CANDLES_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest {
            code: "invalid_limit",
            message: format!("limit must be between 1 and {MAX_CANDLES_LIMIT}"),
        });
    }
    let end = query
        .end
        .map(|text| {
            chrono::DateTime::parse_from_rfc3339(&text)
                .map(|time| time.with_timezone(&chrono::Utc))
                .map_err(|_| ApiError::BadRequest {
                    code: "invalid_query",
                    message: "end must be an RFC 3339 time such as 2026-01-01T00:00:00Z".to_owned(),
                })
        })
        .transpose()?;
    super::support::ensure_traded(&state, &symbol)?;
    let candles = state
        .trade
        .candles(CandleQuery {
            symbol,
            interval,
            limit,
            end,
        })
        .await?;
    Ok(HttpResponse::Ok().json(candles))
}
