//! `GET /performance` and `GET /profit/daily`: the trade log summed per symbol and per UTC day.

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::responses::{Backend, BadRequest, Guarded};
use crate::error::ApiError;
use crate::state::AppState;

/// Default and largest `days` of `GET /profit/daily` (a leap year).
const DEFAULT_DAYS: u32 = 30;
const MAX_DAYS: u32 = 366;

/// Returns, per symbol ever traded and in total: trades, realized PnL (fees included), fees, the
/// win rate of the sells and the traded volume.
#[utoipa::path(
    get,
    path = "/api/v1/performance",
    operation_id = "performance",
    summary = "Trades, realized PnL, fees, win rate and volume per symbol and in total",
    responses(
        (status = 200, description = "per symbol (by symbol) and the total", body = cryptobot_domain::Performance),
        Guarded, Backend,
    )
)]
pub(super) async fn performance(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.trade.performance().await?))
}

/// Query of `GET /profit/daily`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct DailyQuery {
    /// UTC days to cover, today included.
    #[param(minimum = 1, maximum = 366, default = 30)]
    days: Option<u32>,
}

/// Returns one row per UTC day with trades among the last `days` (today included), newest first.
#[utoipa::path(
    get,
    path = "/api/v1/profit/daily",
    operation_id = "dailyProfit",
    summary = "Trades, realized PnL and fees per UTC day, newest first",
    params(DailyQuery),
    responses(
        (status = 200, description = "one row per day that has trades, newest first", body = [cryptobot_domain::DailyProfit]),
        Guarded, BadRequest, Backend,
    )
)]
pub(super) async fn daily(
    state: web::Data<AppState>,
    query: web::Query<DailyQuery>,
) -> Result<HttpResponse, ApiError> {
    let days = query.days.unwrap_or(DEFAULT_DAYS);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: format!("days must be between 1 and {MAX_DAYS}"),
        });
    }
    Ok(HttpResponse::Ok().json(state.trade.daily_profit(days).await?))
}
