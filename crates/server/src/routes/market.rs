//! `GET /tickers` and `GET /tickers/{symbol}`.

use actix_web::{HttpResponse, web};
use cryptobot_domain::Symbol;

use crate::error::ApiError;
use crate::state::AppState;

/// Returns the latest ticker of every configured symbol.
pub(super) async fn tickers(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.market.tickers().await)
}

/// Returns the latest ticker of one symbol.
pub(super) async fn ticker(
    state: web::Data<AppState>,
    symbol: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let symbol = Symbol::parse(&symbol)?;
    Ok(HttpResponse::Ok().json(state.market.ticker(&symbol).await?))
}
