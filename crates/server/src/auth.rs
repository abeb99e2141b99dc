//! REST authentication: a middleware that authenticates every request it wraps with the same
//! [`Authenticator`](cryptobot_access::Authenticator) as the WebSocket upgrade (the access
//! crate's) and checks the scope the method needs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::HttpMessage;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use cryptobot_access::{Authenticator, Principal, SCOPE_READ, SCOPE_TRADE};

use crate::error::ApiError;

/// The future of a REST middleware built by a function: boxed, as a closure's future has no name.
pub type MiddlewareFuture<B> =
    Pin<Box<dyn Future<Output = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>>>>;

/// Builds the authentication middleware (for `wrap(from_fn(..))`) around `authenticator`: 401
/// `unauthorized` without a valid token, 403 `forbidden` when a method that changes state
/// (anything but GET, HEAD, OPTIONS) lacks the `trade` scope, or any request lacks `read`. The
/// handler does not run in either case. The [`Principal`] is stored in the request's extensions.
///
/// The middleware holds its authenticator, so no app can mount the routes without one (it is not
/// looked up in the app data, where a missing one could only be noticed per request). The
/// refusals are answered here as responses, not returned as errors, so that the middleware around
/// (the rate limit's headers) sees them like any other answer.
pub fn require_auth<B: MessageBody + 'static>(
    authenticator: Arc<Authenticator>,
) -> impl Fn(ServiceRequest, Next<B>) -> MiddlewareFuture<B> + 'static {
    move |req, next| {
        let refused = authorize(&authenticator, &req).map(|principal| {
            req.extensions_mut().insert(principal);
        });
        Box::pin(async move {
            match refused {
                Ok(()) => next
                    .call(req)
                    .await
                    .map(ServiceResponse::map_into_left_body),
                Err(refusal) => Ok(req.error_response(refusal).map_into_right_body()),
            }
        })
    }
}

fn authorize(authenticator: &Authenticator, req: &ServiceRequest) -> Result<Principal, ApiError> {
    let principal = authenticator.authenticate(req.request()).map_err(|err| {
        tracing::info!(path = req.path(), %err, "request refused");
        ApiError::Unauthorized
    })?;
    if !principal.can_read() {
        return Err(ApiError::Forbidden { scope: SCOPE_READ });
    }
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !read_only && !principal.can_trade() {
        tracing::info!(principal = %principal.name, path = req.path(), "request refused: no trade scope");
        return Err(ApiError::Forbidden { scope: SCOPE_TRADE });
    }
    Ok(principal)
}
