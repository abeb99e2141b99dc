//! The REST access log: one `info` line per HTTP request that is not a WebSocket upgrade (those
//! have their own connect and close lines), written when the answer is ready.
//!
//! Fields: `method`, `path` (without the query string, which may carry `?token=`), `status`,
//! `duration_ms`, `client` (the address found through `ws.trusted_proxies`) and `principal` (the
//! token's name, or `-` before authentication, e.g. a 429). Target `cryptobot_server::access`, so
//! `RUST_LOG=cryptobot_server::access=off,info` turns it off alone.
//!
//! The same middleware feeds `cryptobot_http_request_seconds{route,method,status}`: `route` is
//! the matched pattern (`/api/v1/orders/{id}`, never the raw path, `unmatched` when no route
//! matched) and `method` one of the standard methods (`other` otherwise), so the label sets stay
//! bounded whatever clients send.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use cryptobot_access::{IpRange, Principal, client_ip};
use prometheus::HistogramVec;

/// What the middleware's closure returns.
type LoggedFuture<B> = Pin<Box<dyn Future<Output = Result<ServiceResponse<B>, actix_web::Error>>>>;

/// The `method` label: the standard methods by name, anything else `other`.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Builds the access-log middleware (for `wrap(from_fn(..))`), the client address read through
/// `trusted` proxies; each request's duration goes into `durations`.
pub fn log_requests<B: MessageBody + 'static>(
    trusted: Arc<[IpRange]>,
    durations: HistogramVec,
) -> impl Fn(ServiceRequest, Next<B>) -> LoggedFuture<B> + 'static {
    move |req, next| {
        let trusted = Arc::clone(&trusted);
        let durations = durations.clone();
        Box::pin(async move {
            let upgrade = req.headers().contains_key(actix_web::http::header::UPGRADE);
            let started = Instant::now();
            let method = req.method().clone();
            let path = req.path().to_owned();
            let route = req.match_pattern();
            let client = client_ip(req.request(), &trusted);
            let result = next.call(req).await;
            if upgrade {
                return result;
            }
            let status = match &result {
                Ok(response) => response.status().as_u16(),
                Err(err) => err.as_response_error().status_code().as_u16(),
            };
            let principal = result.as_ref().ok().and_then(|response| {
                response
                    .request()
                    .extensions()
                    .get::<Principal>()
                    .map(|principal| principal.name.clone())
            });
            let took = started.elapsed();
            durations
                .with_label_values(&[
                    route.as_deref().unwrap_or("unmatched"),
                    method_label(&method),
                    &status.to_string(),
                ])
                .observe(took.as_secs_f64());
            tracing::info!(
                target: "cryptobot_server::access",
                method = method.as_str(),
                path = path.as_str(),
                status,
                duration_ms = took.as_secs_f64() * 1000.0,
                client = client.map_or_else(|| "-".to_owned(), |ip| ip.to_string()).as_str(),
                principal = principal.as_deref().unwrap_or("-"),
                "request"
            );
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::Method;

    use super::*;

    #[test]
    fn methods_outside_the_standard_ones_share_one_label() {
        // TC0: the standard methods by name
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        // TC1: anything a client makes up: one bounded label
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(method_label(&Method::TRACE), "other");
    }
}
