//! REST authentication: a middleware that authenticates every request it wraps with the same
//! [`Authenticator`](cryptobot_ws_gateway::Authenticator) as the WebSocket upgrade and checks the
//! scope the method needs.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use cryptobot_ws_gateway::auth::SCOPE_TRADE;
use cryptobot_ws_gateway::{Authenticator, Principal};

use crate::error::ApiError;

/// Authenticates the request: 401 `unauthorized` without a valid token, 403 `forbidden` when a
/// method that changes state (anything but GET, HEAD, OPTIONS) lacks the `trade` scope, or any
/// request lacks `read`. The handler does not run in either case. The [`Principal`] is stored in
/// the request's extensions.
///
/// The refusals are answered here as responses, not returned as errors, so that the middleware
/// around (the rate limit's headers) sees them like any other answer.
///
/// # Errors
/// Only those of the wrapped service.
pub async fn require_auth(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    match authorize(&req) {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Err(refusal) => Ok(req.error_response(refusal).map_into_right_body()),
    }
}

fn authorize(req: &ServiceRequest) -> Result<Principal, ApiError> {
    // Without the data (a test app that mounts routes alone) nothing is required, like mode none.
    let principal = match req.app_data::<web::Data<Authenticator>>() {
        Some(auth) => auth.authenticate(req.request()).map_err(|err| {
            tracing::info!(path = req.path(), %err, "request refused");
            ApiError::Unauthorized
        })?,
        None => Principal::anonymous(),
    };
    if !principal.can_read() {
        return Err(ApiError::Forbidden { scope: "read" });
    }
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !read_only && !principal.can_trade() {
        tracing::info!(principal = %principal.name, path = req.path(), "request refused: no trade scope");
        return Err(ApiError::Forbidden { scope: SCOPE_TRADE });
    }
    Ok(principal)
}
