//! `GET|POST|DELETE /orders`, `DELETE /orders/{id}`, `DELETE /orders/by-client-id/{key}`.

use actix_web::{HttpResponse, web};
use cryptobot_domain::{
    ClientOrderId, Order, OrderInput, OrderQuery, OrderQueryInput, OrderRef, StatusFilter, Symbol,
};
use serde::{Deserialize, Serialize};

use super::responses::{Backend, BadRequest, Conflict, Guarded, JsonBody, NotFound};
use super::support::{self, Cursor};
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = OrderResponse)]
pub(super) struct PlacedResponse {
    order: Order,
    /// True when this repeats an earlier `client_order_id` and nothing was placed now.
    replayed: bool,
    /// False when the command carried no `client_order_id`, so a retry would place again.
    idempotent: bool,
}

/// Places an order. 201 for a new order (whatever its status after placing: `new`, or already
/// `filled` / `expired`), 200 for a replayed one. The body is validated as the WebSocket's
/// `place_order` payload is, by the same [`OrderInput`].
#[utoipa::path(
    post,
    path = "/api/v1/orders",
    operation_id = "placeOrder",
    summary = "Places a market, limit, stop-market or stop-limit order (idempotent with client_order_id)",
    request_body = super::schemas::OrderInputSchema,
    responses(
        (status = 201, description = "a new order (status new, filled or expired)", body = PlacedResponse),
        (status = 200, description = "replayed: the client_order_id had placed this order already", body = PlacedResponse),
        Guarded, JsonBody, NotFound, Conflict, Backend,
    )
)]
pub(super) async fn place(
    state: web::Data<AppState>,
    body: web::Json<OrderInput>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_inner().into_request()?;
    let idempotent = request.client_order_id.is_some();
    let placement = state.trade.place_order(request).await?;
    Ok(
        support::command_status(placement.replayed).json(PlacedResponse {
            order: placement.order,
            replayed: placement.replayed,
            idempotent,
        }),
    )
}

/// Returns one page of orders as a JSON array (newest first, oldest first with `after_id`), with
/// a `Link: <...>; rel="next"` header when more match, as `GET /trades`.
#[utoipa::path(
    get,
    path = "/api/v1/orders",
    operation_id = "listOrders",
    summary = "One page of orders; Link: <...>; rel=\"next\" to the next page",
    params(cryptobot_domain::OrderQueryInput),
    responses(
        (status = 200, description = "a page of orders, newest first (oldest first with after_id)", body = [cryptobot_domain::Order], headers(("Link" = String, description = "RFC 8288 link to the next page, when more orders match"))),
        Guarded, BadRequest, Backend,
    )
)]
pub(super) async fn list(
    state: web::Data<AppState>,
    query: web::Query<OrderQueryInput>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner().parse()?;
    let page = state.trade.orders(query.clone()).await?;
    Ok(support::page(&page.orders, page.more, |last| {
        next_page(&query, last.id)
    }))
}

/// The URL of the page after the one that ended with order `last_id`.
fn next_page(query: &OrderQuery, last_id: u64) -> String {
    // Every value is URL-safe as written: symbols, keys and status names.
    let mut filters: Vec<String> = query
        .status
        .iter()
        .map(|status| match status {
            StatusFilter::Open => "status=open".to_owned(),
            StatusFilter::Is(status) => format!("status={}", status.as_str()),
        })
        .collect();
    filters.extend(query.symbol.as_ref().map(|s| format!("symbol={s}")));
    filters.extend(
        query
            .client_order_id
            .as_ref()
            .map(|c| format!("client_order_id={c}")),
    );
    let cursor = Cursor {
        limit: query.limit,
        before_id: query.before_id,
        after_id: query.after_id,
    };
    cursor.next_url("/api/v1/orders", filters, last_id)
}

/// Cancels an open order by id: 200 with the order canceled, 404 `unknown_order`, 409
/// `order_not_open`.
#[utoipa::path(
    delete,
    path = "/api/v1/orders/{id}",
    operation_id = "cancelOrder",
    summary = "Cancels one open order by id",
    params(("id" = u64, Path, maximum = 18446744073709551615_u64)),
    responses(
        (status = 200, description = "the order, canceled", body = cryptobot_domain::Order),
        Guarded, BadRequest, NotFound, Conflict, Backend,
    )
)]
pub(super) async fn cancel(
    state: web::Data<AppState>,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let order = state.trade.cancel_order(OrderRef::Id(*id)).await?;
    Ok(HttpResponse::Ok().json(order))
}

/// Cancels an open order by its `client_order_id`.
#[utoipa::path(
    delete,
    path = "/api/v1/orders/by-client-id/{client_order_id}",
    operation_id = "cancelOrderByClientId",
    summary = "Cancels one open order by its client_order_id",
    params(("client_order_id" = super::schemas::ClientOrderIdText, Path)),
    responses(
        (status = 200, description = "the order, canceled", body = cryptobot_domain::Order),
        Guarded, BadRequest, NotFound, Conflict, Backend,
    )
)]
pub(super) async fn cancel_by_client_id(
    state: web::Data<AppState>,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = ClientOrderId::parse(&key)?;
    let order = state
        .trade
        .cancel_order(OrderRef::ClientOrderId(key))
        .await?;
    Ok(HttpResponse::Ok().json(order))
}

/// Query of `DELETE /orders`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct CancelAllQuery {
    #[param(value_type = Option<super::schemas::SymbolText>)]
    symbol: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CanceledResponse {
    orders: Vec<Order>,
}

/// Cancels every open order (of `symbol` only, when given): 200 with those canceled.
#[utoipa::path(
    delete,
    path = "/api/v1/orders",
    operation_id = "cancelAllOrders",
    summary = "Cancels every open order (of one symbol, when given)",
    params(CancelAllQuery),
    responses(
        (status = 200, description = "the orders canceled", body = inline(CanceledResponse)),
        Guarded, BadRequest, NotFound, Backend,
    )
)]
pub(super) async fn cancel_all(
    state: web::Data<AppState>,
    query: web::Query<CancelAllQuery>,
) -> Result<HttpResponse, ApiError> {
    let symbol = query.symbol.as_deref().map(Symbol::parse).transpose()?;
    if let Some(symbol) = &symbol {
        support::ensure_traded(&state, symbol)?;
    }
    let orders = state.trade.cancel_all_orders(symbol).await?;
    Ok(HttpResponse::Ok().json(CanceledResponse { orders }))
}
