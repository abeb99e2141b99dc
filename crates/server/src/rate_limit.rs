//! Per-client-address rate of REST requests, checked before authentication so that guessing
//! tokens is limited too. The client address is found as the gateway finds it (`ws.trusted_proxies`).

use std::net::IpAddr;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};
use cryptobot_ws_gateway::client_ip;
use cryptobot_ws_gateway::limits::{IpRateLimiter, retry_after_secs};

use crate::error::ApiError;

/// The REST limiter and how to find the client's address; shared by every worker.
#[derive(Debug)]
pub struct RestRateLimit {
    /// `None` when unlimited (`server.rest_rate_per_ip = 0`).
    limiter: Option<IpRateLimiter>,
    trusted_proxies: Vec<IpAddr>,
}

impl RestRateLimit {
    /// `per_sec` requests per second with bursts of `burst` per address; 0 = unlimited.
    #[must_use]
    pub fn new(per_sec: u32, burst: u32, trusted_proxies: Vec<IpAddr>) -> Self {
        Self {
            limiter: IpRateLimiter::new(per_sec, burst),
            trusted_proxies,
        }
    }
}

/// Answers 429 `rate_limited` with `Retry-After` when the client's address is over the rate; the
/// handler does not run. Every answer, refused or not, carries `RateLimit-Limit` (the burst),
/// `RateLimit-Remaining` (requests this address may still send at once) and `RateLimit-Reset`
/// (seconds until the whole burst is back), as in the IETF `RateLimit` header draft. Without a
/// [`RestRateLimit`] in the app data, or with an unlimited one, nothing is limited or announced.
///
/// # Errors
/// Only those of the wrapped service.
pub async fn limit_rest_rate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let checked = req
        .app_data::<web::Data<RestRateLimit>>()
        .and_then(|limit| {
            let limiter = limit.limiter.as_ref()?;
            let ip = client_ip(req.request(), &limit.trusted_proxies)?;
            Some((limiter.burst(), limiter.check_quota(ip)))
        });
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
