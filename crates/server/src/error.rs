//! The REST API's error: one place maps every failure to an HTTP status and a JSON body.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use cryptobot_domain::DomainError;
use cryptobot_services::ServiceError;
use serde::Serialize;

/// A failed REST request. The body is always `{"error": "<message>", "code": "<stable code>"}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A service rejected or failed the request.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The request itself is malformed (bad JSON, bad query, bad path).
    #[error("{message}")]
    BadRequest {
        /// Stable code, e.g. `invalid_json`.
        code: &'static str,
        /// Human-readable detail.
        message: String,
    },
    /// The body is larger than the limit.
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is not `application/json`.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// No route matches.
    #[error("no such resource")]
    NotFound,
    /// The route exists but does not take this method.
    #[error("method not allowed on this resource")]
    MethodNotAllowed,
    /// A request to the WebSocket endpoint that is not a WebSocket handshake (actix-ws refused it
    /// with 400, or 426 for a version other than 13).
    #[error("not a WebSocket upgrade request: {reason}")]
    InvalidUpgrade {
        /// 400 or 426.
        status: StatusCode,
        /// What the handshake lacked, as actix-http words it.
        reason: String,
    },
    /// Authentication is on and the request carries no valid token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The token is valid but lacks the scope the request needs.
    #[error("this token lacks the {scope} scope")]
    Forbidden {
        /// The missing scope, e.g. `trade`.
        scope: &'static str,
    },
    /// The client's address sent more than `server.rest_rate_per_ip` requests per second.
    #[error("too many requests from this address; retry after the Retry-After delay")]
    RateLimited,
}

impl From<DomainError> for ApiError {
    fn from(err: DomainError) -> Self {
        Self::Service(err.into())
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    code: &'a str,
}

impl ApiError {
    /// Returns the stable code put in the body.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Service(err) => err.code(),
            Self::BadRequest { code, .. } => code,
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::NotFound => "not_found",
            Self::InvalidUpgrade { .. } => "invalid_upgrade",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden { .. } => "forbidden",
            Self::RateLimited => "rate_limited",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Service(err) => match err {
                ServiceError::Domain(
                    DomainError::InvalidSymbol(_)
                    | DomainError::InvalidClientOrderId
                    | DomainError::InvalidDecimal { .. }
                    | DomainError::SizeRequired
                    | DomainError::InvalidLimit { .. }
                    | DomainError::InvalidStatus,
                ) => StatusCode::BAD_REQUEST,
                ServiceError::Domain(_)
                | ServiceError::OrderTooSmall { .. }
                | ServiceError::InsufficientFunds { .. }
                | ServiceError::InsufficientPosition { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                ServiceError::UnknownSymbol(_)
                | ServiceError::NoPosition(_)
                | ServiceError::UnknownOrder(_) => StatusCode::NOT_FOUND,
                ServiceError::DuplicateClientOrderId(_)
                | ServiceError::OrderNotOpen { .. }
                | ServiceError::PostOnlyWouldCross { .. }
                | ServiceError::TooManyOrders { .. } => StatusCode::CONFLICT,
                ServiceError::NoPrice(_)
                | ServiceError::Unavailable(_)
                | ServiceError::Fenced { .. } => StatusCode::SERVICE_UNAVAILABLE,
                ServiceError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
                ServiceError::Remote { code, .. } => remote_status(code),
            },
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::InvalidUpgrade { status, .. } => *status,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = match self {
            // Storage details stay in the log; the client learns only that it failed.
            Self::Service(ServiceError::Storage(detail)) => {
                tracing::error!(%detail, "storage failure while serving a request");
                "storage failure; the command was not executed".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, Self::Unauthorized) {
            response.insert_header((actix_web::http::header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.json(ErrorBody {
            error: message,
            code: self.code(),
        })
    }
}

/// The status of an error the engine returned for a command forwarded by a gateway node: the
/// same as the engine itself would answer for that code.
fn remote_status(code: &str) -> StatusCode {
    match code {
        "invalid_symbol"
        | "invalid_client_order_id"
        | "invalid_decimal"
        | "invalid_payload"
        | "invalid_limit"
        | "invalid_query" => StatusCode::BAD_REQUEST,
        "invalid_size"
        | "invalid_levels"
        | "invalid_order"
        | "order_too_small"
        | "insufficient_funds"
        | "insufficient_position" => StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_symbol" | "no_position" | "unknown_order" => StatusCode::NOT_FOUND,
        "duplicate_client_order_id"
        | "order_not_open"
        | "post_only_would_cross"
        | "too_many_orders" => StatusCode::CONFLICT,
        "no_price" | "unavailable" | "engine_fenced" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::fixtures;
    use rust_decimal::Decimal;

    use super::*;

    #[test]
    fn maps_service_errors_to_statuses() {
        let cases = [
            // TC0: malformed input
            (
                ServiceError::Domain(DomainError::InvalidSymbol("x".into())),
                400,
            ),
            // TC1: business rule
            (
                ServiceError::InsufficientFunds {
                    needed: Decimal::ONE,
                    available: Decimal::ZERO,
                },
                422,
            ),
            (
                ServiceError::UnknownSymbol(fixtures::symbol("DOGEUSDT")),
                404,
            ),
            (
                ServiceError::DuplicateClientOrderId(
                    cryptobot_domain::ClientOrderId::parse("a").unwrap(),
                ),
                409,
            ),
            (ServiceError::Unavailable("stopping".into()), 503),
            (ServiceError::Storage("disk".into()), 500),
            (
                ServiceError::Fenced {
                    held: 1,
                    current: 2,
                },
                503,
            ),
            // TC2: orders
            (
                ServiceError::Domain(DomainError::InvalidOrder("x".into())),
                422,
            ),
            (
                ServiceError::Domain(DomainError::InvalidLimit { max: 1 }),
                400,
            ),
            (ServiceError::Domain(DomainError::InvalidStatus), 400),
            (
                ServiceError::UnknownOrder(cryptobot_domain::OrderRef::Id(1)),
                404,
            ),
            (
                ServiceError::OrderNotOpen {
                    id: 1,
                    status: cryptobot_domain::OrderStatus::Filled,
                },
                409,
            ),
            (
                ServiceError::PostOnlyWouldCross {
                    side: "buy",
                    price: Decimal::ONE,
                    against: Decimal::ONE,
                },
                409,
            ),
            (ServiceError::TooManyOrders { max: 1 }, 409),
        ];
        for (err, status) in cases {
            // A gateway node answers an engine's error with the same status as the engine.
            let remote = ServiceError::Remote {
                code: err.code(),
                message: String::new(),
                client_error: err.is_client_error(),
            };
            assert_eq!(ApiError::from(err).status_code().as_u16(), status);
            assert_eq!(ApiError::from(remote).status_code().as_u16(), status);
        }
    }

    #[test]
    fn storage_details_are_not_sent_to_clients() {
        let response =
            ApiError::from(ServiceError::Storage("/secret/path: disk I/O".into())).error_response();
        let body = actix_web::body::to_bytes(response.into_body());
        let body = futures_executor_block(body);
        assert!(!body.contains("/secret/path"), "{body}");
        assert!(body.contains("storage_error"), "{body}");
    }

    fn futures_executor_block<
        F: std::future::Future<Output = Result<actix_web::web::Bytes, E>>,
        E,
    >(
        fut: F,
    ) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = runtime.block_on(fut).ok().unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }
}
