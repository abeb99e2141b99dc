//! Runtime controls: `GET /bot`, `POST /bot/pause`, `POST /bot/resume`,
//! `POST /positions/{symbol}/exit`.

use actix_web::{HttpResponse, web};
use cryptobot_access::Principal;
use cryptobot_domain::{
    BotState, ClientOrderId, ForceExitRequest, Order, Symbol, Trade, TradingState,
};
use serde::{Deserialize, Serialize};

use super::responses::{Backend, Conflict, Guarded, JsonBody, NotFound};
use super::support;
use super::trading::Object;
use crate::error::ApiError;
use crate::state::AppState;

/// Returns the auto-trading state: `running` or `paused`, who changed it last and when.
#[utoipa::path(
    get,
    path = "/api/v1/bot",
    operation_id = "botState",
    summary = "The auto-trading state (running or paused), who changed it and when",
    responses(
        (status = 200, description = "the state", body = BotState),
        Guarded, Backend,
    )
)]
pub(super) async fn state(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.trade.bot_state().await?))
}

/// Pauses auto-trading: the bot follows no signal until resumed. Stop-loss, take-profit,
/// resting orders and manual commands keep working. Pausing a paused bot changes nothing.
#[utoipa::path(
    post,
    path = "/api/v1/bot/pause",
    operation_id = "pauseTrading",
    summary = "Pauses the bot's own trading (protection and manual commands keep working)",
    responses(
        (status = 200, description = "the state after the command", body = BotState),
        Guarded, Backend,
    )
)]
pub(super) async fn pause(
    state: web::Data<AppState>,
    principal: Option<web::ReqData<Principal>>,
) -> Result<HttpResponse, ApiError> {
    set(&state, TradingState::Paused, principal).await
}

/// Resumes auto-trading. Resuming a running bot changes nothing.
#[utoipa::path(
    post,
    path = "/api/v1/bot/resume",
    operation_id = "resumeTrading",
    summary = "Resumes the bot's own trading",
    responses(
        (status = 200, description = "the state after the command", body = BotState),
        Guarded, Backend,
    )
)]
pub(super) async fn resume(
    state: web::Data<AppState>,
    principal: Option<web::ReqData<Principal>>,
) -> Result<HttpResponse, ApiError> {
    set(&state, TradingState::Running, principal).await
}

async fn set(
    state: &AppState,
    to: TradingState,
    principal: Option<web::ReqData<Principal>>,
) -> Result<HttpResponse, ApiError> {
    let changed_by = principal.map(|principal| principal.name.clone());
    let bot = state.trade.set_trading_state(to, changed_by).await?;
    Ok(HttpResponse::Ok().json(bot))
}

/// The optional body of `POST /positions/{symbol}/exit`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ExitBody {
    /// Idempotency key (1-64 of `[A-Za-z0-9_.:-]`): a repeat returns the first exit's trade.
    #[schema(value_type = Option<super::schemas::ClientOrderIdText>)]
    client_order_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ExitResponse {
    /// The sell of the whole position (origin `force_exit`).
    trade: Trade,
    /// The resting sell orders of the symbol canceled first (empty on a replay).
    canceled_orders: Vec<Order>,
    /// True when this repeats an earlier `client_order_id` and nothing was sold now.
    replayed: bool,
    /// False when the command carried no `client_order_id`, so a retry would sell again.
    idempotent: bool,
}

/// Sells the whole held quantity of a symbol at market, as one trade; the symbol's resting sell
/// orders are canceled first (listed in the reply). 201 for a new exit, 200 for a replayed one;
/// 404 `no_position` when nothing is held. The body is optional.
#[utoipa::path(
    post,
    path = "/api/v1/positions/{symbol}/exit",
    operation_id = "forceExit",
    summary = "Sells the whole position at market, canceling its resting sell orders first (idempotent with client_order_id)",
    request_body(content = Option<ExitBody>, description = "optional"),
    params(("symbol" = super::schemas::SymbolText, Path)),
    responses(
        (status = 201, description = "the position was sold", body = ExitResponse),
        (status = 200, description = "replayed: the client_order_id had exited already", body = ExitResponse),
        Guarded, JsonBody, NotFound, Conflict, Backend,
    )
)]
pub(super) async fn force_exit(
    state: web::Data<AppState>,
    principal: Option<web::ReqData<Principal>>,
    symbol: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let symbol = Symbol::parse(&symbol)?;
    let body = exit_body(&body)?;
    let client_order_id = ClientOrderId::parse_optional(body.client_order_id.as_deref())?;
    support::ensure_traded(&state, &symbol)?;
    let idempotent = client_order_id.is_some();
    let request = ForceExitRequest {
        symbol,
        client_order_id,
        requested_by: principal.map(|principal| principal.name.clone()),
    };
    let exit = state.trade.force_exit(request).await?;
    Ok(support::command_status(exit.replayed).json(ExitResponse {
        trade: exit.trade,
        canceled_orders: exit.canceled_orders,
        replayed: exit.replayed,
        idempotent,
    }))
}

/// An empty body (or `null`) is no options; anything else must be the JSON object, with the
/// codes the JSON bodies of the other routes get.
fn exit_body(bytes: &[u8]) -> Result<ExitBody, ApiError> {
    if bytes.len() > super::MAX_JSON_BODY {
        return Err(ApiError::PayloadTooLarge {
            limit: super::MAX_JSON_BODY,
        });
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(ExitBody::default());
    }
    // `null` (the document's body is optional) is no options too.
    serde_json::from_slice::<Option<Object<ExitBody>>>(bytes)
        .map(|body| body.map(|Object(body)| body).unwrap_or_default())
        .map_err(|err| {
            if err.is_data() {
                ApiError::BadRequest {
                    code: "invalid_payload",
                    message: err.to_string(),
                }
            } else {
                ApiError::BadRequest {
                    code: "invalid_json",
                    message: format!("request body is not valid JSON: {err}"),
                }
            }
        })
}
