//! Per-client-address rate of REST requests, checked before authentication so that guessing
//! tokens is limited too. The client address and the limiter are the access crate's, as the
//! gateway's (`ws.trusted_proxies`).

use std::sync::Arc;

use actix_web::ResponseError;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use cryptobot_access::{IpRange, IpRateLimiter, client_ip, retry_after_secs};

use crate::auth::MiddlewareFuture;
use crate::error::ApiError;

/// The REST limiter and how to find the client's address; shared by every worker.
#[derive(Debug)]
pub struct RestRateLimit {
    /// `None` when unlimited (`server.rest_rate_per_ip = 0`).
    limiter: Option<IpRateLimiter>,
    trusted_proxies: Vec<IpRange>,
}

impl RestRateLimit {
    /// `per_sec` requests per second with bursts of `burst` per address; 0 = unlimited.
    #[must_use]
    pub fn new(per_sec: u32, burst: u32, trusted_proxies: Vec<IpRange>) -> Self {
        Self {
            limiter: IpRateLimiter::new(per_sec, burst),
            trusted_proxies,
        }
    }
}

/// Builds the rate-limit middleware (for `wrap(from_fn(..))`) around `limit`: answers 429
/// `rate_limited` with `Retry-After` when the client's address is over the rate; the handler does
/// not run. Every answer, refused or not, carries `RateLimit-Limit` (the burst),
/// `RateLimit-Remaining` (requests this address may still send at once) and `RateLimit-Reset`
/// (seconds until the whole burst is back), as in the IETF `RateLimit` header draft. With an
/// unlimited [`RestRateLimit`] nothing is limited or announced.
pub fn limit_rest_rate<B: MessageBody + 'static>(
    limit: Arc<RestRateLimit>,
) -> impl Fn(ServiceRequest, Next<B>) -> MiddlewareFuture<B> + 'static {
    move |req, next| {
        let checked = limit.limiter.as_ref().and_then(|limiter| {
            let ip = client_ip(req.request(), &limit.trusted_proxies)?;
            Some((limiter.burst(), limiter.check_quota(ip)))
        });
        Box::pin(answer(checked, req, next))
    }
}

/// Passes the request on or refuses it, per `checked` (the burst and the quota, `None` when
/// unlimited), and announces the quota on the answer.
async fn answer<B: MessageBody>(
    checked: Option<(u32, Result<cryptobot_access::Quota, std::time::Duration>)>,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let (limit, quota) = match checked {
        None => {
            return next
                .call(req)
                .await
                .map(ServiceResponse::map_into_left_body);
        }
        Some(checked) => checked,
    };
    let (remaining, reset, refused) = match quota {
        Ok(quota) => (quota.remaining, quota.reset, None),
        Err(wait) => (0, wait, Some(wait)),
    };
    let mut response = match refused {
        Some(wait) => {
            let mut response = ApiError::RateLimited.error_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(retry_after_secs(wait)),
            );
            req.into_response(response).map_into_right_body()
        }
        // Authentication inside answers its refusals as responses (not errors), so they get the
        // headers too.
        None => next.call(req).await?.map_into_left_body(),
    };
    let headers = response.headers_mut();
    for (name, value) in [
        ("ratelimit-limit", u64::from(limit)),
        ("ratelimit-remaining", u64::from(remaining)),
        ("ratelimit-reset", reset_secs(reset)),
    ] {
        headers.insert(
            header::HeaderName::from_static(name),
            header::HeaderValue::from(value),
        );
    }
    Ok(response)
}

/// Whole seconds, rounded up (0 only when nothing is used).
fn reset_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}
