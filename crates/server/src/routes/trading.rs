//! `GET /portfolio`, `GET|POST /trades`, `PATCH /positions/{symbol}`.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, SecondsFormat, Utc};
use cryptobot_access::Principal;
use cryptobot_domain::{
    ClientOrderId, PositionUpdateInput, Symbol, Trade, TradeInput, TradeOrigin, TradeQuery,
};
use serde::{Deserialize, Serialize};

use super::responses::{Backend, BadRequest, Conflict, Guarded, JsonBody, NotFound};
use super::support::{self, Cursor};
use crate::error::ApiError;
use crate::state::AppState;

/// Default and largest `limit` of `GET /trades`.
const DEFAULT_TRADES_LIMIT: usize = 50;
const MAX_TRADES_LIMIT: usize = 1000;

/// Returns cash and positions valued at the latest prices.
#[utoipa::path(
    get,
    path = "/api/v1/portfolio",
    operation_id = "portfolio",
    summary = "Cash and positions valued at the latest prices",
    responses(
        (status = 200, description = "the summary", body = cryptobot_domain::PortfolioSummary),
        Guarded, Backend,
    )
)]
pub(super) async fn portfolio(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.portfolio.summary().await?))
}

/// Query of `GET /trades`; every value is read as text and checked here, so each gets its code.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct TradesQuery {
    #[param(minimum = 1, maximum = 1000, default = 50)]
    limit: Option<usize>,
    #[param(value_type = Option<super::schemas::SymbolText>)]
    symbol: Option<String>,
    #[param(value_type = Option<super::schemas::ClientOrderIdText>)]
    client_order_id: Option<String>,
    #[param(format = DateTime)]
    from: Option<String>,
    #[param(format = DateTime)]
    to: Option<String>,
    #[param(maximum = 18_446_744_073_709_551_615_u64)]
    before_id: Option<u64>,
    #[param(maximum = 18_446_744_073_709_551_615_u64)]
    after_id: Option<u64>,
}

impl TradesQuery {
    fn parse(self) -> Result<TradeQuery, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_TRADES_LIMIT);
        if !(1..=MAX_TRADES_LIMIT).contains(&limit) {
            return Err(ApiError::BadRequest {
                code: "invalid_limit",
                message: format!("limit must be between 1 and {MAX_TRADES_LIMIT}"),
            });
        }
        let time = |name: &str, text: Option<String>| {
            text.map(|text| {
                DateTime::parse_from_rfc3339(&text)
                    .map(|time| time.with_timezone(&Utc))
                    .map_err(|_| ApiError::BadRequest {
                        code: "invalid_query",
                        message: format!(
                            "{name} must be an RFC 3339 time such as 2026-01-01T00:00:00Z"
                        ),
                    })
            })
            .transpose()
        };
        let query = TradeQuery {
            symbol: self.symbol.as_deref().map(Symbol::parse).transpose()?,
            client_order_id: ClientOrderId::parse_optional(self.client_order_id.as_deref())?,
            from: time("from", self.from)?,
            to: time("to", self.to)?,
            before_id: self.before_id,
            after_id: self.after_id,
            limit,
        };
        if let (Some(from), Some(to)) = (query.from, query.to)
            && from >= to
        {
            return Err(ApiError::BadRequest {
                code: "invalid_query",
                message: "from must be before to".to_owned(),
            });
        }
        Ok(query)
    }
}

/// Returns one page of trades (newest first, oldest first with `after_id`) as a JSON array. When
/// more trades match, a `Link: <...>; rel="next"` header gives the next page's URL: the same query
/// with the cursor moved past the page's last trade.
#[utoipa::path(
    get,
    path = "/api/v1/trades",
    operation_id = "listTrades",
    summary = "One page of the trade history; Link: <...>; rel=\"next\" to the next page",
    params(TradesQuery),
    responses(
        (status = 200, description = "a page of trades, newest first (oldest first with after_id)", body = [cryptobot_domain::Trade], headers(("Link" = String, description = "RFC 8288 link to the next page, when more trades match"))),
        Guarded, BadRequest, Backend,
    )
)]
pub(super) async fn trades(
    state: web::Data<AppState>,
    query: web::Query<TradesQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner().parse()?;
    let page = state.trade.trades(query.clone()).await?;
    Ok(support::page(&page.trades, page.more, |last| {
        next_page(&query, last.id)
    }))
}

/// The URL of the page after the one that ended with trade `last_id`.
fn next_page(query: &TradeQuery, last_id: u64) -> String {
    // Every value is URL-safe as written: symbols and client order ids are [A-Za-z0-9_.:-], and
    // the times are written with `Z` (no `+`).
    let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    let mut filters: Vec<String> = query.symbol.iter().map(|s| format!("symbol={s}")).collect();
    filters.extend(
        query
            .client_order_id
            .as_ref()
            .map(|c| format!("client_order_id={c}")),
    );
    filters.extend(query.from.map(|t| format!("from={}", time(t))));
    filters.extend(query.to.map(|t| format!("to={}", time(t))));
    let cursor = Cursor {
        limit: query.limit,
        before_id: query.before_id,
        after_id: query.after_id,
    };
    cursor.next_url("/api/v1/trades", filters, last_id)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct TradeResponse {
    trade: Trade,
    /// True when this repeats an earlier `client_order_id` and nothing was executed now.
    replayed: bool,
    /// False when the command carried no `client_order_id`, so a retry would trade again.
    idempotent: bool,
}

/// A request body that must be a JSON object. serde reads a struct from a JSON array too (the
/// fields in order: `[null, null]` would be a position update), which no client means.
#[derive(Debug)]
pub(super) struct Object<T>(pub(super) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Fields<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(Fields(std::marker::PhantomData))
            .map(Object)
    }
}

/// Executes a manual market order. 201 for a new trade, 200 for a replayed one. The body is
/// validated as the WebSocket's `manual_trade` payload is, by the same [`TradeInput`].
#[utoipa::path(
    post,
    path = "/api/v1/trades",
    operation_id = "createTrade",
    summary = "Executes a market order at the latest price (idempotent with client_order_id)",
    request_body = super::schemas::TradeInputSchema,
    responses(
        (status = 201, description = "a new trade", body = TradeResponse),
        (status = 200, description = "replayed: the client_order_id had executed already", body = TradeResponse),
        Guarded, JsonBody, NotFound, Conflict, Backend,
    )
)]
pub(super) async fn create_trade(
    state: web::Data<AppState>,
    principal: Option<web::ReqData<Principal>>,
    body: web::Json<Object<TradeInput>>,
) -> Result<HttpResponse, ApiError> {
    let mut request = body.into_inner().0.into_request(TradeOrigin::Manual)?;
    // The engine's trade log line names who asked.
    if let Some(principal) = principal {
        request = request.requested_by_principal(principal.name.clone());
    }
    let idempotent = request.client_order_id().is_some();
    let execution = state.trade.execute(request).await?;
    Ok(
        support::command_status(execution.replayed).json(TradeResponse {
            trade: execution.trade,
            replayed: execution.replayed,
            idempotent,
        }),
    )
}

/// Sets or clears a position's stop-loss and take-profit. A valid symbol the market does not
/// trade is 404 `unknown_symbol` (as `GET /tickers/{symbol}`), one merely not held `no_position`.
#[utoipa::path(
    patch,
    path = "/api/v1/positions/{symbol}",
    operation_id = "updatePosition",
    summary = "Sets or clears a held position's stop-loss and take-profit",
    request_body = super::schemas::PositionUpdateInputSchema,
    params(("symbol" = super::schemas::SymbolText, Path)),
    responses(
        (status = 200, description = "the updated position", body = cryptobot_domain::Position),
        Guarded, JsonBody, NotFound, Backend,
    )
)]
pub(super) async fn update_position(
    state: web::Data<AppState>,
    symbol: web::Path<String>,
    body: web::Json<Object<PositionUpdateInput>>,
) -> Result<HttpResponse, ApiError> {
    let symbol = Symbol::parse(&symbol)?;
    let update = body.into_inner().0.parse()?;
    support::ensure_traded(&state, &symbol)?;
    let position = state.portfolio.update_position(symbol, update).await?;
    Ok(HttpResponse::Ok().json(position))
}
